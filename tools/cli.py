"""The `hrp-cutover` command line: one click group, one small command per service.

The group reads settings once (environment, then flags), configures logging
once, and hands commands a `Context`. Each command parses its options, calls
one service in hrp_data, renders with rich, and turns domain errors into a
one-line `click.ClickException` (exit code 2 for bad settings or input).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import click
import sqlalchemy as sa
from rich.console import Console

from adapters.urls import redact_url
from hrp_data.errors import describe_error
from hrp_data.logs import configure_logging
from hrp_data.settings import Settings, SettingsError

console = Console(stderr=True)


class BadSetting(click.ClickException):
    """A setting or argument with a bad value: one line, exit code 2."""

    exit_code = 2


@dataclasses.dataclass
class Context:
    settings: Settings


pass_context = click.make_pass_decorator(Context)


def settings_from(ctx: Context, **overrides) -> Settings:
    """The group's settings with a command's flags applied, validated."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    try:
        return dataclasses.replace(ctx.settings, **changes).validated()
    except SettingsError as error:
        raise BadSetting(str(error)) from None


class _Commands(click.Group):
    """The CLI's group: a file whose schema no command can carry is bad input wherever it is met."""

    def invoke(self, ctx: click.Context):
        from adapters.catalog import CatalogError

        try:
            return super().invoke(ctx)
        except CatalogError as error:
            raise BadSetting(str(error)) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120, "terminal_width": 120})
@click.option("--sqlite", "sqlite_url", metavar="URL", help="SQLite URL (HRP_SQLITE_URL).")
@click.option("--postgres", "postgres_url", metavar="URL", help="PostgreSQL URL of the app, may be pooled (HRP_POSTGRES_URL).")
@click.option("--postgres-direct", "postgres_direct_url", metavar="URL",
              help="PostgreSQL URL for long commands and moves, never pooled (HRP_POSTGRES_DIRECT_URL; default: --postgres).")
@click.option("--log-format", type=str, help="json or console (HRP_LOG_FORMAT).")
@click.pass_context
def cli(click_ctx: click.Context, sqlite_url, postgres_url, postgres_direct_url, log_format) -> None:
    """Move the HRP app from SQLite to PostgreSQL with zero downtime."""
    try:
        settings = Settings.from_env(
            sqlite_url=_as_sqlite_url(sqlite_url), postgres_url=postgres_url,
            postgres_direct_url=postgres_direct_url, log_format=log_format,
        )
    except SettingsError as error:
        raise BadSetting(str(error)) from None
    configure_logging(settings.log_format, settings.log_level)
    click_ctx.obj = Context(settings=settings)


def _as_sqlite_url(value: str | None) -> str | None:
    """Accept a plain file path where a SQLite URL is expected."""
    if value is None or value.startswith("sqlite:") or "://" in value:
        return value
    if "\x00" in value:
        raise BadSetting("--sqlite contains a NUL byte; give the path of the legacy database file")
    return f"sqlite:///{Path(value).resolve()}"


@cli.command()
@click.option("--sqlite", "path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to create the legacy-schema file.")
@click.option("--races", type=click.IntRange(min=1), required=True, help="Number of races.")
@click.option("--seed", "seed", type=int, default=1, show_default=True, help="Random seed.")
@click.option("--force", is_flag=True, help="Replace an existing file.")
def seed(path: Path, races: int, seed: int, force: bool) -> None:
    """Create a legacy-schema SQLite file filled with realistic HRP data."""
    from tools.seed import SeedError, seed_database

    try:
        counts = seed_database(path, races=races, seed=seed, replace=force, console=console)
    except SeedError as error:
        raise BadSetting(str(error)) from None
    click.echo(" ".join(f"{table}={count}" for table, count in counts.items()))


def parse_tables(option: str | None, ctx: "Context | None" = None) -> tuple[str, ...] | None:
    """A --tables option as known table names, in the given order (None: all tables): the tables of
    the SQLite file's catalog (hrp_data.catalog), or of the HRP models without a readable file."""
    if not option:
        return None
    names = tuple(t.strip() for t in option.split(",") if t.strip())
    known = _known_tables(ctx)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BadSetting(f"unknown table {', '.join(unknown)}; use one of: {', '.join(known)}")
    return names


def _known_tables(ctx: "Context | None") -> list[str]:
    from hrp_data.catalog import catalog_of_file
    from hrp_data.models import TABLES

    if ctx is not None:
        try:
            return list(catalog_of_file(ctx.settings.require_sqlite_file()).tables)
        except (SettingsError, OSError, ValueError):
            pass
    return [t.name for t in TABLES]


@contextlib.contextmanager
def domain_errors() -> Iterator[None]:
    """Turn the services' errors into one-line click errors (2: bad input or setting, 1: refused)."""
    from adapters.sqlite import SQLiteLocked
    from hrp_data.cutover.dual_write import PhaseUnsettled
    from hrp_data.flip.move import DrainFailed
    from hrp_data.flip.journal import MoveInProgress
    from hrp_data.cutover.phase_store import PhaseConflict
    from hrp_data.cutover.phases import MoveRefused
    from hrp_data.schema.install import SchemaError
    from hrp_data.verify.run import RepairRefused

    try:
        yield
    except (SettingsError, MoveRefused, SchemaError) as error:
        raise BadSetting(redact_url(str(error))) from None
    except (PhaseConflict, DrainFailed, PhaseUnsettled, MoveInProgress, RepairRefused, SQLiteLocked) as error:
        raise click.ClickException(redact_url(str(error))) from None
    except sa.exc.OperationalError as error:
        raise click.ClickException(f"database unavailable: {describe_error(error)}") from None


def require_session(settings: Settings, command: str) -> None:
    """Refuse, before anything changes, when the operator's PostgreSQL URL reaches a transaction pooler."""
    from adapters.pooler import probe

    if settings.postgres_url is None:
        return
    try:
        found = probe(settings.postgres_url)
    except sa.exc.SQLAlchemyError:
        return  # nothing answers: the command says so itself, in its own terms
    if found.pooled:
        raise BadSetting(
            f"{command} needs a PostgreSQL session of its own, but {settings.operator_variable} reaches a"
            f" transaction pooler ({found.evidence}); nothing was changed: set HRP_POSTGRES_DIRECT_URL"
            " (or --postgres-direct) to the PostgreSQL server itself, not the pooler"
        )


def operator_settings(ctx: Context, postgres_url: str | None = None, *, session: str | None = None) -> Settings:
    """The settings of a long command or a move: the operator's direct URL (HRP_POSTGRES_DIRECT_URL).

    With `session` (the command's name), refuse when that URL reaches a transaction pooler.
    """
    settings = settings_from(ctx, postgres_url=postgres_url).operator()
    if session is not None:
        require_session(settings, session)
    return settings


def open_cutover(
    ctx: Context, postgres_url: str | None = None, *, finish_moves: bool = True, operator: bool = False,
    session: str | None = None, dedicated: bool = False,
):
    """The Cutover of this CLI process (no background applier: commands drain by themselves).

    A move that a crash interrupted is finished first (docs/architecture.md, the move protocol).
    `operator` (or `session`, the name of a command that needs a session) uses the operator's
    direct URL (docs/pooling.md). `dedicated`: the Cutover of `hrp-cutover apply`.
    """
    from hrp_data.cutover import assemble

    if operator or session is not None:
        settings = operator_settings(ctx, postgres_url, session=session)
    else:
        settings = settings_from(ctx, postgres_url=postgres_url)
    try:
        settings.require_sqlite_file()
    except SettingsError as error:
        raise BadSetting(str(error)) from None
    cutover = assemble.open_cutover(settings, dedicated=dedicated)
    if finish_moves:
        try:
            finished = cutover.finish_interrupted_move(wait=True)
        except BaseException:
            cutover.close()
            raise
        if finished is not None:
            console.print(f"[yellow]finished an interrupted {finished.describe()}")
    return cutover


def _set_direct(click_ctx: click.Context, _param, value: str | None) -> None:
    if value is not None:
        context = click_ctx.find_object(Context)
        context.settings = dataclasses.replace(context.settings, postgres_direct_url=value)


def postgres_option(function):
    """A command's --postgres (the app's URL) and --postgres-direct (the operator's) options."""
    function = click.option(
        "--postgres-direct", metavar="URL", expose_value=False, callback=_set_direct,
        help="PostgreSQL URL for long commands and moves, never pooled (HRP_POSTGRES_DIRECT_URL).",
    )(function)
    return click.option(
        "--postgres", "postgres_url", metavar="URL", help="PostgreSQL URL (HRP_POSTGRES_URL)."
    )(function)


@cli.command()
@postgres_option
@click.option("--sql", "as_sql", is_flag=True,
              help="Print the DDL it would run; run nothing (with --revision-dir: write the revision, run nothing).")
@click.option("--revision-dir", metavar="DIR",
              help="Also write the file's schema as the first Alembic revision of an app without a migration"
                   " history, into DIR (its migrations/versions or alembic/versions).")
@pass_context
def schema(ctx: Context, postgres_url: str | None, as_sql: bool, revision_dir: str | None) -> None:
    """Create the PostgreSQL schema from the SQLite file's own (the HRP tables by their Alembic
    migrations, to head; every other table and column from the file), the layer's own tables, and the
    grants to the app's role (HRP_APP_ROLE) and the verifier's (HRP_VERIFIER_ROLE); idempotent."""
    from hrp_data.catalog import catalog_of_file
    from hrp_data.schema.install import catalog_ddl, install, keep_chosen_types, keep_decided_types, upgrade
    from hrp_data.schema.layer import prepare
    from hrp_data.schema.revision import prepare_revision

    settings = settings_from(ctx, postgres_url=postgres_url)
    catalog = None
    try:
        column_types = settings.column_types()
    except SettingsError as error:
        raise BadSetting(str(error)) from None
    try:
        catalog = catalog_of_file(settings.require_sqlite_file(), column_types)
    except SettingsError as error:
        if as_sql or revision_dir is not None:
            raise BadSetting(str(error)) from None  # no file, no catalog: nothing to print or write
    revision = None
    if revision_dir is not None:
        with domain_errors():  # every refusal before anything is written or run
            revision = prepare_revision(catalog, revision_dir, source=settings.require_sqlite_file())
    if as_sql and revision is not None:
        _write_revision(revision)
        return
    if as_sql:
        for statement in catalog_ddl(catalog):
            click.echo(statement if statement.startswith("--") else f"{statement};")
        for item in catalog.not_carried:
            click.echo(f"-- not carried over: {item.what} {item.name}: {item.why}")
        return
    with domain_errors():
        settings = operator_settings(ctx, postgres_url)
        url = settings.require_postgres()
        result = upgrade(url) if catalog is None else install(url, catalog)
        notes = prepare(url, app_role=settings.app_role, verifier_role=settings.verifier_role)
        if catalog is not None and column_types is not None:
            notes += keep_chosen_types(url, catalog, settings.require_sqlite_file())
        if catalog is not None:
            keep_decided_types(catalog, settings.require_sqlite_file())
    click.echo(result.message)
    for note in notes:
        click.echo(note)
    for item in catalog.not_carried if catalog is not None else ():
        click.echo(f"not carried over: {item.what} {item.name}: {item.why}")
    if revision is not None:
        _write_revision(revision)


def _write_revision(revision) -> None:
    """Write the prepared Alembic revision and say where, and how the app carries on from it."""
    with domain_errors():
        path = revision.write()
    if revision.existing is not None:
        click.echo(f"revision {revision.revision} already holds the file's schema: {path}; nothing written")
    else:
        click.echo(f"revision {revision.revision} written: {path}")
    click.echo(f"once the phase is postgres_only, run on PostgreSQL: alembic stamp {revision.revision}"
               f" (or flask db stamp {revision.revision}); the app's next revision revises it")


@cli.group()
def phase() -> None:
    """Show or set the cutover phase (every app process notices within a second)."""


@phase.command("show")
@pass_context
def phase_show(ctx: Context) -> None:
    """Print the current phase and what it does."""
    from hrp_data.cutover.phases import PHASES, allowed_moves

    with domain_errors(), open_cutover(ctx) as cutover:
        record = cutover.phase(fresh=True)
    row = PHASES[record.phase]
    click.echo(
        f"{record.phase.value} (version {record.version}): primary {row.primary},"
        f" secondary {row.secondary or '-'}, shadow reads {'on' if row.shadow_reads else 'off'};"
        f" allowed moves: {', '.join(p.value for p in allowed_moves(record.phase))}"
    )


def _target(cutover, step: int):
    from hrp_data.cutover.phases import ORDER, MoveRefused

    current = cutover.phase(fresh=True).phase
    index = ORDER.index(current) + step
    if not 0 <= index < len(ORDER):
        raise MoveRefused(f"no phase {'after' if step > 0 else 'before'} {current.value}")
    return ORDER[index]


def _run_move(
    ctx: Context,
    target_name: str | None,
    postgres_url: str | None,
    *,
    step: int = 0,
    check: bool = False,
    force: bool = False,
    accept_quarantine: bool = False,
) -> None:
    from hrp_data.cutover.phases import parse_phase
    from hrp_data.flip.readiness import NotReady, checklist, guarded_move

    with domain_errors():
        named = parse_phase(target_name) if target_name is not None else None
    with domain_errors(), open_cutover(ctx, postgres_url, session="a move") as cutover:
        target = named or _target(cutover, step)
        if check:
            checks = checklist(cutover, target, accept_quarantine=accept_quarantine)
            for item in checks:
                click.echo(f"[{'x' if item.ok else ' '}] {item.name:<14} {item.detail}")
            if not all(item.ok for item in checks):
                raise SystemExit(1)
            return
        try:
            result, checks = guarded_move(cutover, target, force=force, accept_quarantine=accept_quarantine)
        except NotReady as refused:
            raise click.ClickException(str(refused)) from None
    if result.forced:
        console.print(f"[bold red]FORCED: skipped failed checks: {'; '.join(c.name for c in checks if not c.ok)}")
    click.echo(
        f"phase {result.from_phase.value} -> {result.to_phase.value} (version {result.version});"
        f" writes held {result.hold_ms:.1f} ms; {result.drained} outbox changes drained"
    )


move_options = [
    click.option("--check", is_flag=True, help="Print the readiness checklist; change nothing."),
    click.option("--force", is_flag=True, help="Move even if readiness checks fail (said loudly, logged, audited); a move is still one step."),
    click.option("--accept-quarantine", is_flag=True, help="Move although rows are quarantined (they stay behind)."),
]


def with_move_options(function):
    for option in reversed(move_options):
        function = option(function)
    return function


@phase.command("set")
@click.argument("target")
@postgres_option
@with_move_options
@pass_context
def phase_set(ctx: Context, target: str, postgres_url: str | None, **move: bool) -> None:
    """Move to TARGET (one step forward or back), after the readiness checks."""
    _run_move(ctx, target, postgres_url, **move)


@cli.command()
@postgres_option
@with_move_options
@pass_context
def flip(ctx: Context, postgres_url: str | None, **move: bool) -> None:
    """Make PostgreSQL the primary (shadow -> postgres_primary), after the readiness checks."""
    _run_move(ctx, "postgres_primary", postgres_url, **move)


@cli.command()
@postgres_option
@with_move_options
@pass_context
def rollback(ctx: Context, postgres_url: str | None, **move: bool) -> None:
    """Go one phase back (postgres_primary -> shadow: SQLite is the primary again)."""
    _run_move(ctx, None, postgres_url, step=-1, **move)


@cli.command()
@postgres_option
@pass_context
def replay(ctx: Context, postgres_url: str | None) -> None:
    """Drain the outbox to the secondary now, ignoring backoff; exit 1 if changes remain."""
    from hrp_data.cutover.replay import replay_outbox

    from shadow.redact import redact_table_key

    with domain_errors(), open_cutover(ctx, postgres_url, operator=True) as cutover:
        result = replay_outbox(cutover)
        tables = cutover.catalog.postgres_tables()
    click.echo(f"applied {result.applied}; remaining {result.remaining}")
    for table, key, reason in result.failing:  # a table keyed by its token shows the token's fingerprint
        click.echo(f"failing    {table} {redact_table_key(tables.get(table), key)}: {reason}")
    if result.remaining:
        raise click.ClickException(
            f"{result.remaining} change(s) still pending; last error: {result.last_error}"
        )


@cli.command()
@postgres_option
@pass_context
def recover(ctx: Context, postgres_url: str | None) -> None:
    """Finish a move that a crash interrupted (any command does this first; this does only that)."""
    with domain_errors(), open_cutover(ctx, postgres_url, finish_moves=False, operator=True) as cutover:
        finished = cutover.finish_interrupted_move(wait=True)
    click.echo("no interrupted move" if finished is None else f"finished the interrupted {finished.describe()}")


@cli.command()
@postgres_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
def status(ctx: Context, postgres_url: str | None, as_json: bool) -> None:
    """Phase, outbox depth and age, appliers' circuit breakers, last phase change."""
    from hrp_data.cutover.status import (cutover_status, index_drift_of, postgres_reachability, schema_drift_of,
                                         statement_logging)

    with domain_errors(), open_cutover(ctx, postgres_url, finish_moves=False) as cutover:
        report = cutover_status(cutover)
        report["postgres"] = postgres_reachability(cutover, report)
        reachable = report["postgres"] is not None and report["postgres"]["reachable"]
        report["statement_logging"] = statement_logging(cutover) if reachable else []
        report["schema_drift"] = schema_drift_of(cutover) if reachable else []
        report["indexes_not_carried"] = index_drift_of(cutover) if reachable else []
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    box = report["outbox"]
    click.echo(f"phase      {report['phase']} (version {report['version']}), primary {report['primary']}")
    click.echo(
        f"outbox     {box['pending']} pending, {box['failing']} failing"
        + (f" ({box['refused']} refused until their rows are fixed: `hrp-cutover quarantine`)" if box["refused"] else "")
        + f", oldest {box['oldest_age_s'] if box['oldest_age_s'] is not None else '-'} s"
    )
    if report["postgres"] is not None:
        postgres = report["postgres"]
        click.echo(f"postgres   {'reachable' if postgres['reachable'] else 'UNREACHABLE: ' + postgres['error']}")
    dedicated = report["dedicated_applier"]
    click.echo(
        f"applier    `hrp-cutover apply` ({dedicated['holder'] or 'pid unknown'}) carries the changes; the app's threads stand aside"
        if dedicated["running"] else "applier    each app process's own thread (no `hrp-cutover apply` runs)"
    )
    for worker in report["workers"]:
        click.echo(f"worker     {worker['worker']}: breaker {worker['breaker']}, applied {worker['applied']}")
    if report["move_in_progress"]:
        click.echo(f"MOVE       {report['move_in_progress']} (`hrp-cutover recover` finishes it)")
    guard = report["guard"]
    if guard["on"]:
        refused = guard["refused"] if guard["refused"] is not None else guard["uncounted"] or "count unknown"
        click.echo(f"guard      on {guard['on']}: writes from outside the layer refused ({refused})")
    for warning in report["statement_logging"]:
        click.echo(f"logging    warning: PostgreSQL {warning}")
    if report["parked_triggers"]:
        click.echo(f"triggers   {len(report['parked_triggers'])} of the file's own parked while it is the secondary"
                   f" ({', '.join(report['parked_triggers'])}); the rollback puts them back")
    for difference in report["schema_drift"]:
        click.echo(f"SCHEMA     {difference}: moves are refused until both sides match (docs/operations.md)")
    for index in report["indexes_not_carried"]:
        held = " (a unique one: a move of the primary away from it is refused)" if index["unique"] else ""
        click.echo(f"INDEX      {index['text']}{held}")
    if report["last_change"]:
        change = report["last_change"]
        click.echo(f"last move  {change['from_phase']} -> {change['to_phase']} at {change['at']} by {change['by']}")


def _register(module_names: tuple[str, ...]) -> None:
    """Add the commands that live in their own modules (each lists them in COMMANDS)."""
    import importlib

    for name in module_names:
        for command in importlib.import_module(f"tools.{name}").COMMANDS:
            cli.add_command(command)


_register(("apply_cmd", "backfill_cmd", "report_cmd", "web_cmd", "verify_cmd", "bench_cmd", "demo_cmd", "unlock_cmd", "metrics_cmd",
           "roles_cmd"))


def main() -> None:
    cli(prog_name="hrp-cutover")
