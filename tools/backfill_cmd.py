"""The `backup`, `assess`, `backfill` and `quarantine` commands: copy the legacy rows, safely."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from hrp_data.settings import SettingsError
from shadow.redact import redact_table_key
from tools.cli import (
    BadSetting, console, domain_errors, operator_settings, parse_tables, pass_context, postgres_option, require_session,
    settings_from,
)

EXIT_INTERRUPTED = 130


def _sqlite_file(ctx) -> Path:
    """The legacy file, which must exist and hold every HRP table and column (else a one-line error)."""
    try:
        return Path(settings_from(ctx).require_sqlite_file())
    except SettingsError as error:
        raise BadSetting(str(error)) from None


# -- backup -------------------------------------------------------------------


@click.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the backup (default: hrp_cutover_backups/ beside the SQLite file).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@pass_context
def backup(ctx, out_dir: Path | None, as_json: bool) -> None:
    """Snapshot the live SQLite file online (backup API), check it, write a manifest beside it."""
    from hrp_data.backfill.backup import BackupError
    from hrp_data.backfill.backup import backup as take_backup

    path = _sqlite_file(ctx)
    try:
        manifest = take_backup(path, out_dir)
    except BackupError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(manifest.as_json() | {"manifest": manifest.manifest_path}, indent=2))
        return
    rows = sum(manifest.row_counts.values())
    click.echo(
        f"backup {manifest.path}: {manifest.size / 1e6:.1f} MB, {rows} rows, integrity ok,"
        f" sha256 {manifest.sha256[:16]}…; manifest {manifest.manifest_path}"
    )


# -- assess -------------------------------------------------------------------


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--sample-rows", type=click.IntRange(min=0), default=5000, show_default=True,
              help="Rows per table timed for the estimate.")
@click.option("--full-integrity-check", is_flag=True,
              help="PRAGMA integrity_check (every index entry matched with its row) instead of quick_check"
                   " and index entry counts; about seven times longer.")
@pass_context
def assess(ctx, as_json: bool, sample_rows: int, full_integrity_check: bool) -> None:
    """Read the legacy file (read-only) and report what the backfill will meet: counts, damage, rejects."""
    from hrp_data.backfill.assess import assess as run_assess

    path = _sqlite_file(ctx)
    try:
        column_types = settings_from(ctx).column_types()
    except SettingsError as error:
        raise BadSetting(str(error)) from None
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console,
                  transient=True, disable=not console.is_terminal) as progress:
        tasks: dict[str, int] = {}

        def step(table: str, done: int, total: int) -> None:
            if table not in tasks:
                tasks[table] = progress.add_task(f"census {table}", total=total)
            progress.update(tasks[table], completed=done)

        try:
            report = run_assess(path, sample_rows=sample_rows, progress=step, column_types=column_types,
                                full_integrity_check=full_integrity_check)
        except FileNotFoundError as error:
            raise BadSetting(str(error)) from None
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    _print_assessment(report)


def _print_assessment(report: dict) -> None:
    click.echo(f"file            {report['file']} ({report['size'] / 1e6:.1f} MB)")
    check = report["integrity_check"]
    click.echo(f"integrity       {check if check == 'ok' else '; '.join(check)} ({report['integrity_check_kind']})")
    fk = report["foreign_key_check"]
    detail = ", ".join(f"{pair}: {n}" for pair, n in fk["by_table"].items())
    click.echo(f"foreign keys    {fk['violations']} violation(s){': ' + detail if detail else ''}")
    click.echo(f"{'table':<16}{'rows':>10}{'rejected':>10}{'est. s':>9}")
    for name, info in report["tables"].items():
        click.echo(f"{name:<16}{info['rows']:>10}{info['rejected_rows']:>10}"
                   f"{report['estimate']['tables'][name]['seconds']:>9.1f}")
    for orphan in report["orphans"]:
        if orphan["rows"]:
            click.echo(f"orphans         {orphan['table']}.{orphan['column']} -> {orphan['parent']}:"
                       f" {orphan['rows']} row(s), e.g. {orphan['examples']}")
    for item in report["rejections"]:
        click.echo(f"rejected        {item['table']}.{item['column']}: {item['reason']} x{item['count']},"
                   f" e.g. key {item['examples'][0]} value {item['example_value']!r}")
    beyond = report["beyond_schema"] or {"extra_columns": [], "extra_tables": []}
    for column in beyond["extra_columns"]:
        click.echo(f"beyond HRP      column {column}: carried from the file's own schema")
    for table in beyond["extra_tables"]:
        click.echo(f"beyond HRP      table {table}: carried from the file's own schema")
    _print_mapping(report)
    click.echo(f"will quarantine about {report['quarantine_rows']} row(s): rejected values plus orphans")
    click.echo(f"estimate        ~{report['estimate']['seconds']:.0f} s ({report['estimate']['basis']})")


def _print_mapping(report: dict) -> None:
    """The type mapping (table, column, SQLite declaration, values, PostgreSQL type, why) and what
    is not carried over."""
    rows = [(m["table"], m["column"] if m["column"] == m["postgres_name"] else f"{m['column']} -> {m['postgres_name']}",
             m["declared"] or "-", m["values"], m["postgres_type"], m["why"]) for m in report["mapping"]]
    heads = ("table", "column", "declared", "values", "postgresql", "why")
    widths = [min(28, max([len(h)] + [len(r[i]) for r in rows])) for i, h in enumerate(heads[:-1])]
    click.echo("mapping         " + "  ".join(h.ljust(w) for h, w in zip(heads, widths)) + "  why")
    for row in rows:
        click.echo("                " + "  ".join(v.ljust(w) for v, w in zip(row, widths)) + f"  {row[-1]}")
    for item in report.get("suggestions", []):
        click.echo(f"suggest jsonb   {item['table']}.{item['column']}: {item['why']}; to choose it, in hrp-cutover.toml:")
        for line in item["toml"].splitlines():
            click.echo(f"                  {line}")
    for item in report["renamed"]:
        click.echo(f"renamed         {item['sqlite']} -> {item['postgres']} (PostgreSQL holds names of 63 bytes at most)")
    for item in report["keyless_tables"]:
        click.echo(f"no key          {item['table']}: {item['recommendation']}")
    for item in report["not_carried"]:
        where = f"{item['table']}." if item["table"] and item["table"] != item["name"] else ""
        click.echo(f"not carried     {item['what']} {where}{item['name']}: {item['why']}")
        click.echo(f"                  {' '.join(item['sql'].split())}")


# -- backfill -----------------------------------------------------------------


class _RowsPerSecond(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- rows/s" if speed is None else f"{speed:,.0f} rows/s", style="progress.data.speed")


class _ProgressListener:
    """Draws one rich progress bar per table (on stderr)."""

    def __init__(self, bars: Progress):
        self.bars = bars
        self.tasks: dict[str, int] = {}

    def table_started(self, table: str, done: int, total: int) -> None:
        self.tasks[table] = self.bars.add_task(table, total=max(total, 1), completed=done)

    def batch_read(self, table: str, keys) -> None:
        pass

    def progress(self, table: str, done: int, total: int) -> None:
        self.bars.update(self.tasks[table], completed=done, total=max(total, 1))

    def table_finished(self, table: str, stats) -> None:
        task = self.tasks.get(table)
        if task is not None:
            total = max(self.bars.tasks[task].total or 1, stats.read)
            self.bars.update(task, completed=total, total=total)


class _Interrupt:
    """First Ctrl-C: stop at the next batch boundary. Second: the usual KeyboardInterrupt."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.previous = None

    def __enter__(self) -> "_Interrupt":
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()
        console.print("[yellow]stopping at the next batch boundary (Ctrl-C again to abort now)")

    def __exit__(self, *exc_info) -> None:
        signal.signal(signal.SIGINT, self.previous or signal.default_int_handler)


@click.command()
@click.option("--tables", metavar="T,...", help="Only these tables (comma-separated; parents must be done).")
@click.option("--batch-size", type=click.IntRange(min=1), default=10_000, show_default=True, help="Rows per batch.")
@click.option("--max-rows-per-sec", type=click.FloatRange(min=0, min_open=True), help="Throttle (rows read per second).")
@click.option("--restart", is_flag=True, help="Forget the checkpoints and start over (copied rows are kept).")
@click.option("--retry-quarantined", is_flag=True, help="Try the quarantined rows again (after fixing them in SQLite).")
@click.option("--no-backup", is_flag=True, help="Start without a recent backup (not recommended).")
@click.option("--workers", type=click.IntRange(min=0, max=64),
              help="Processes that read and convert (default: one per core, at most 4, for big tables; 0: none).")
@click.option("--leave-extra-columns", is_flag=True,
              help="Obsolete, accepted and ignored: every column of the file is carried (docs/schema.md).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@postgres_option
@pass_context
def backfill(ctx, tables, batch_size, max_rows_per_sec, restart, retry_quarantined, no_backup, workers,
             leave_extra_columns, as_json, postgres_url) -> None:
    """Copy every legacy row into PostgreSQL while the app keeps writing (phase dual_write or shadow).

    Resumable (checkpoints in PostgreSQL), throttleable, never overwrites live
    writes; rows that cannot be copied are quarantined (`hrp-cutover quarantine`).
    Ctrl-C stops at a batch boundary (exit 130); run again to resume.
    """
    import sqlite3
    from concurrent.futures.process import BrokenProcessPool

    import psycopg2

    from hrp_data.cutover.apply import PrimaryMoved
    from hrp_data.backfill.run import BackfillInterrupted, BackfillRefused, Options, run_backfill
    from hrp_data.backfill.backup import BackupError, require_recent
    from hrp_data.cutover.assemble import open_cutover
    from hrp_data.errors import describe_error

    settings = operator_settings(ctx, postgres_url)
    with domain_errors():
        settings.require_postgres()
    require_session(settings, "backfill")
    options = Options(parse_tables(tables, ctx), batch_size, max_rows_per_sec, restart, retry_quarantined, workers,
                      leave_extra_columns)
    path = _sqlite_file(ctx)
    if not no_backup:
        try:
            manifest = require_recent(path, settings.backup_max_age)
        except BackupError as error:
            raise click.ClickException(str(error)) from None
        click.echo(f"backup: {manifest.path} ({manifest.created_at})", err=True)
    progress = Progress(
        TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), _RowsPerSecond(),
        TimeRemainingColumn(), console=console, disable=not console.is_terminal,
    )
    interrupted = None
    with domain_errors(), _Interrupt() as interrupt, open_cutover(settings, bound_calls=False) as cutover:
        with progress:
            try:
                result = run_backfill(cutover, options, listener=_ProgressListener(progress), stop=interrupt.stop)
            except BackfillRefused as error:
                raise click.ClickException(str(error)) from None
            except BackfillInterrupted as error:
                interrupted, result = error, error.result
            except (psycopg2.Error, sqlite3.Error, PrimaryMoved, BrokenProcessPool) as error:
                raise click.ClickException(
                    f"backfill failed: {describe_error(error)}; everything up to the last checkpoint is"
                    " committed: run `hrp-cutover backfill` again to resume"
                ) from None
    _print_summary(result, as_json)
    if interrupted is not None:
        click.echo(str(interrupted), err=True)
        raise SystemExit(EXIT_INTERRUPTED)
    quarantined = sum(s.quarantined for s in result.tables.values())
    if quarantined:
        click.echo(f"{quarantined} row(s) quarantined: see `hrp-cutover quarantine`; fix them in SQLite,"
                   " then `hrp-cutover backfill --retry-quarantined`", err=True)


def _print_summary(result, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
        return
    click.echo(f"{'table':<16}{'read':>10}{'copied':>10}{'present':>10}{'quarant.':>10}{'removed':>9}"
               f"{'seconds':>10}{'rows/s':>10}")
    for name, s in result.tables.items():
        rate = "-" if s.rows_per_s is None else f"{s.rows_per_s:,.0f}"
        click.echo(f"{name:<16}{s.read:>10}{s.copied:>10}{s.present:>10}{s.quarantined:>10}{s.removed:>9}"
                   f"{s.seconds:>10.2f}{rate:>10}")
    click.echo("COMPLETE" if result.complete else "NOT COMPLETE")


# -- quarantine ----------------------------------------------------------------


def quarantine_report(ctx, fmt: str, postgres_url: str | None = None) -> str:
    """The quarantine as text or JSON ({"rows": [...], "live": [...]}): the rows the backfill
    quarantined, and the live changes the applier settled as rejected or holds back (the
    foreign-key action guard's `foreign_key_action`), still in an outbox."""
    from adapters.postgres import create_postgres_engine
    from hrp_data.backfill.quarantine import live_rejections, quarantine_entries

    settings = settings_from(ctx, postgres_url=postgres_url)
    with domain_errors():
        engine = create_postgres_engine(settings.require_postgres())
        sqlite = _existing_sqlite_engine(settings)
        try:
            entries = quarantine_entries(engine)
            live = live_rejections(([("sqlite", sqlite)] if sqlite is not None else []) + [("postgres", engine)])
        finally:
            engine.dispose()
            if sqlite is not None:
                sqlite.dispose()
    tables = _key_tables(settings)
    entries = [e | {"key": redact_table_key(tables.get(e["table"]), e["key"])} for e in entries]
    live = [r | {"key": redact_table_key(tables.get(r["table"]), r["key"])} for r in live]
    if fmt == "json":
        rows = [{k: e[k] for k in ("table", "key", "column", "reason", "value")} for e in entries]
        return json.dumps({"rows": rows, "live": live}, indent=2) + "\n"
    if not entries and not live:
        return "no quarantined rows\n"
    lines = [
        f"{e['table']} {json.dumps(e['key'])} {e['column'] or '-'}: {e['reason']}"
        f" value {e['value']!r}{' (' + e['detail'] + ')' if e['detail'] else ''} since {e['first_seen']}"
        for e in entries
    ]
    if entries:
        keys = len({(e["table"], json.dumps(e["key"])) for e in entries})
        lines.append(f"{keys} row(s) quarantined; fix them in SQLite, then `hrp-cutover backfill --retry-quarantined`")
    lines += [
        f"{r['table']} {json.dumps(r['key'])} {r['column'] or '-'}: {r['reason']}"
        f"{' (' + r['detail'] + ')' if r['detail'] else ''} (live, waiting in {r['database']}'s outbox)"
        for r in live
    ]
    if live:
        lines.append(f"{len(live)} live change(s) rejected by the applier; fix each row where it waits"
                     " (the primary, through the app; for foreign_key_action, the child rows it names),"
                     " and the applier carries it")
    return "\n".join(lines) + "\n"


def _key_tables(settings) -> dict:
    """The file's tables by both their names, for showing a secret key column's value as a fingerprint
    (shadow.redact.redact_table_key); {} without the file."""
    import os

    from sqlalchemy.engine import make_url

    from hrp_data.catalog import catalog_of_file

    database = make_url(settings.sqlite_url).database
    if not database or not os.path.isfile(database):
        return {}
    try:
        catalog = catalog_of_file(database)
    except Exception:  # a file the catalog cannot read: the keys are shown as they are
        return {}
    tables = {name: entry.postgres for name, entry in catalog.tables.items()}
    return tables | {entry.postgres.name: entry.postgres for entry in catalog.tables.values()}


def _existing_sqlite_engine(settings):
    """An engine on the legacy file when it exists (None: the quarantine needs only PostgreSQL)."""
    import os

    from sqlalchemy.engine import make_url

    from adapters.sqlite import create_sqlite_engine

    database = make_url(settings.sqlite_url).database
    if not database or not os.path.isfile(database):
        return None
    return create_sqlite_engine(settings.sqlite_url)


@click.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text for a terminal, json for scripts and the dashboard.")
@postgres_option
@pass_context
def quarantine(ctx, fmt: str, postgres_url: str | None) -> None:
    """List the rows the backfill quarantined (table, key, column, reason, value; secrets fingerprinted)
    and the live changes the applier rejected or holds back (table, key, column, reason, detail)."""
    click.echo(quarantine_report(ctx, fmt, postgres_url), nl=False)


COMMANDS = [backup, assess, backfill, quarantine]
