"""The `bench` command: turn the benchmark figures (artifacts/bench/*.json) into BENCHMARKS.md."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sqlite3
from pathlib import Path

import click

ARTIFACTS = Path("artifacts") / "bench"
SCALE_ARTIFACTS = Path("artifacts") / "bench-scale"
SCALE_BEGIN, SCALE_END = "<!-- scale:begin -->", "<!-- scale:end -->"
SCALE_COMMANDS = ("seed", "backup", "assess", "schema", "phase", "backfill", "verify", "pgloader", "pgloader_retry")

HEADLINES = {
    "dual_write": lambda f: f"dual-write vs single-write latency: p50 x{f['ratio_p50']}, p99 x{f['ratio_p99']} with the"
                            f" applier thread in the writing process; p50 x{f.get('dedicated_ratio_p50')},"
                            f" p99 x{f.get('dedicated_ratio_p99')} with `hrp-cutover apply` beside it",
    "dual_write_http": lambda f: (
        f"{f.get('request')} over HTTP, {f.get('workers')} workers, dual_write vs sqlite_only: with `hrp-cutover apply`"
        f" p50 x{f.get('dual_write_dedicated_ratio_p50')}, p99 x{f.get('dual_write_dedicated_ratio_p99')}; with the"
        f" workers' applier threads p50 x{f.get('dual_write_threads_ratio_p50')}, p99 x{f.get('dual_write_threads_ratio_p99')}"
    ),
    "flip_hold": lambda f: f"flip hold over {f['flips']} flips under load: p50 {f['hold_p50_ms']} ms, max {f['hold_max_ms']} ms, {f['failed_writes']} failed writes",
    "shadow": lambda f: f"shadow-read overhead (sample 1.0), repository call: p50 x{f.get('ratio_p50')}",
    "shadow_orm": lambda f: (
        f"shadow-read overhead (sample 1.0), the app's own ORM reads (example app, GET /races/<id>) p50"
        f" x{f.get('orm_ratio_p50')} against the repository's x{f.get('repository_ratio_p50')} in the same process"
        f" (x{f.get('orm_over_repository')}, 95% interval {f.get('orm_over_repository_ci95')} over"
        f" {f.get('rounds')} rounds; no more than the repository's within {f.get('no_more_margin')}:"
        f" {f.get('orm_costs_no_more')})"
    ),
    "shadow_http": lambda f: (
        f"shadow-read overhead (sample 1.0), {f.get('request')} over HTTP: p50 x{f.get('ratio_p50')}"
        f" ({f.get('p50_ms_without')} -> {f.get('p50_ms_shadow')} ms)"
    ),
    "backfill": lambda f: (
        f"backfill predictions {f.get('predictions_rows_per_s')} rows/s vs bare COPY {f.get('copy_rows_per_s')} rows/s"
        f" (x{f.get('ratio_vs_copy')}; COPY into the fully indexed table: {f.get('copy_with_indexes_rows_per_s')} rows/s);"
        f" whole file {f.get('total_s')} s vs pgloader {f.get('pgloader_s')} s"
    ),
    "verify": lambda f: f"verify {f.get('rows_per_s')} rows/s vs naive fetch-and-compare {f.get('naive_rows_per_s')} rows/s (x{f.get('speedup')})",
    "verify_vs_scan": lambda f: (
        f"verify {f.get('verify_rows_per_s')} rows/s vs a bare SQLite scan {f.get('bare_scan_rows_per_s')} rows/s"
        f" of the same {f.get('rows')} rows (verify takes x{f.get('verify_over_scan')} the scan's time)"
    ),
    "outbox_drain_sqlite": lambda f: (
        f"draining {f.get('rows')} pending changes SQLite -> PostgreSQL: {f.get('rows_per_s')} rows/s,"
        f" last 10% at x{f.get('last_over_first')} the rate of the first"
    ),
    "outbox_drain_postgres": lambda f: (
        f"draining {f.get('rows')} pending changes PostgreSQL -> SQLite: {f.get('rows_per_s')} rows/s,"
        f" last 10% at x{f.get('last_over_first')} the rate of the first"
    ),
    "complex_reads": lambda f: (
        f"complex reads PostgreSQL {f.get('postgres_version')} (pg_trgm: {f.get('pg_trgm')}) vs SQLite,"
        f" right after the backfill: {f.get('summary')}"
    ),
    "complex_reads_under_write_load": lambda f: (
        f"complex reads under write load ({f.get('writes_per_s')} writes/s through the cutover):"
        f" {f.get('summary')}"
    ),
}


def _machine() -> list[str]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return [
        f"- date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
        f"- machine: {platform.node()}, {platform.machine()}, {os.cpu_count()} cores, {cpu}",
        f"- system: {platform.platform()}",
        f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}",
    ]


def _races(n: int) -> str:
    return f"{n:,} races"


def _command_rows(size: dict) -> list[tuple[str, dict]]:
    rows = [(name, size["commands"][name]) for name in SCALE_COMMANDS if name in size.get("commands", {})]
    rows += [(name, size[name]) for name in ("pgloader", "pgloader_retry") if isinstance(size.get(name), dict)]
    return rows


def _outcome(command: dict) -> str:
    if command.get("ok"):
        return "ok"
    failure = str(command.get("failure") or "failed").replace("|", "/").replace("\n", " ")
    code = command.get("exit_code")
    return f"exit {code}: {failure}" if code is not None else failure


def render_scale(sizes: list[dict], run: dict | None) -> str:
    """The "Scale" section of BENCHMARKS.md from artifacts/bench-scale (`make bench-scale`)."""
    run = run or {}
    sizes = sorted(sizes, key=lambda s: s.get("races", 0))
    lines = [SCALE_BEGIN, "## Scale", ""]
    lines += [
        f"Produced by `make bench-scale` (tests/bench/scale.py) in one run, {run.get('date', 'date unknown')}:"
        f" {run.get('machine', 'machine unknown')}, {run.get('system', '')}, Python {run.get('python', '?')},"
        f" SQLite {run.get('sqlite', '?')}, PostgreSQL: {run.get('postgres', '?')}; sizes"
        f" {', '.join(_races(s['races']) for s in sizes)}, {run.get('total_seconds', '?')} s in all.",
        "",
        "Every command runs through the CLI as an operator runs it, one after the other, on a freshly"
        " seeded file (seed 1) and a fresh database; pgloader (its defaults; when they fail, once more"
        " with `prefetch rows = 10000`) loads the same file into another database after ours. Seconds"
        " are wall seconds of the whole command (interpreter start-up included); rows/s are the file's"
        " rows (every table) over them; peak RSS is the largest sum of the RSS of the command's whole"
        " process tree (its worker processes included, the PostgreSQL server not), sampled every 0.2 s.",
        "",
    ]
    if not sizes:
        return "\n".join(lines + ["No figures: `make bench-scale` wrote none.", "", SCALE_END])
    lines += ["### Headlines", ""]
    for size in sizes:
        commands = size.get("commands", {})
        ours = [n for n in ("seed", "backup", "assess", "backfill", "verify") if n in commands]
        failed = [n for n in ours if not commands[n].get("ok")]
        missing = [n for n in ("seed", "backup", "assess", "backfill", "verify") if n not in commands]
        state = "all complete" if not failed and not missing else "; ".join(
            [f"{n} failed ({_outcome(commands[n])})" for n in failed] + [f"{n} not run" for n in missing])
        line = f"- {_races(size['races'])} ({size.get('rows', '?'):,} rows): seed -> backup -> assess -> backfill -> verify: {state}"
        backfill, assess = commands.get("backfill", {}), commands.get("assess", {})
        if "backfill_over_estimate" in size:
            line += (f"; backfill {backfill['seconds']} s against assess's estimate of"
                     f" {size['assess_estimate_seconds']} s (real / estimate x{size['backfill_over_estimate']});"
                     f" assess took {assess.get('seconds')} s (x{size.get('assess_over_backfill')} of the backfill)")
        pgloader = size.get("pgloader")
        if isinstance(pgloader, dict):
            line += f"; pgloader (defaults): {pgloader['seconds']} s" if pgloader.get("ok") else \
                f"; pgloader (defaults): {_outcome(pgloader)}" + (f" after {pgloader['seconds']} s" if "seconds" in pgloader else "")
            retry = size.get("pgloader_retry")
            if isinstance(retry, dict):
                line += f", with `{retry.get('with')}`: " + (f"{retry['seconds']} s" if retry.get("ok") else _outcome(retry))
            if "pgloader_over_backfill" in size:
                line += f" (pgloader / backfill x{size['pgloader_over_backfill']})"
        lines.append(line + ".")
    ratios = run.get("ratios") or {}
    if ratios.get("per_row"):
        lines.append(
            f"- {ratios['of']} (x{ratios['rows']} rows), time per row: "
            + ", ".join(f"{n} x{v}" for n, v in ratios["per_row"].items())
            + "; peak RSS: " + ", ".join(f"{n} x{v}" for n, v in ratios["peak_rss"].items()) + "."
        )
    if run.get("failed"):
        lines.append(f"- failed: {', '.join(run['failed'])}.")
    lines.append("")
    for size in sizes:
        lines += [f"### {_races(size['races'])}", ""]
        counts = size.get("rows_per_table") or {}
        lines += [f"{size.get('rows', '?'):,} rows ({', '.join(f'{t} {n:,}' for t, n in counts.items())});"
                  f" file {size.get('file_mb', '?')} MB, backup {size.get('backup_mb', '?')} MB,"
                  f" PostgreSQL database after the backfill {size.get('database_mb', '?')} MB; started {size.get('started', '?')}.", ""]
        lines += ["| command | seconds | rows/s | µs per row | CPU s | peak RSS MB | load before -> after | outcome |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, command in _command_rows(size):
            load = f"{command.get('load_average_before', ['?'])[0]} -> {command.get('load_average_after', ['?'])[0]}"
            lines.append(
                f"| {name} | {command.get('seconds', '')} | {command.get('rows_per_s', '')} | {command.get('us_per_row', '')}"
                f" | {command.get('cpu_seconds', '')} | {command.get('peak_rss_mb', '')} | {load} | {_outcome(command)} |")
        if "assess_estimate_tables" in size:
            real = {t: v.get("seconds") for t, v in (size.get("backfill_tables") or {}).items()}
            lines += ["", "| table | assess estimate s | backfill s (copy) |", "|---|---|---|"]
            lines += [f"| {t} | {s} | {real.get(t, '')} |" for t, s in size["assess_estimate_tables"].items()]
        lines.append("")
    if ratios.get("per_row"):
        lines += [f"### Ratios: {ratios['of']}", "", "| command | time per row | peak RSS |", "|---|---|---|"]
        lines += [f"| {n} | x{v} | x{ratios['peak_rss'].get(n, '')} |" for n, v in ratios["per_row"].items()]
        lines.append("")
    return "\n".join(lines + [SCALE_END])


def _scale_section(scale_artifacts: Path) -> str | None:
    files = sorted(scale_artifacts.glob("races-*.json"))
    if not files:
        return None
    run = scale_artifacts / "scale.json"
    return render_scale([json.loads(p.read_text()) for p in files], json.loads(run.read_text()) if run.exists() else None)


def _existing_scale(text: str) -> str | None:
    begin, end = text.find(SCALE_BEGIN), text.find(SCALE_END)
    return text[begin:end + len(SCALE_END)] if begin >= 0 and end > begin else None


def splice_scale(text: str, section: str) -> str:
    """`text` with its Scale section replaced by `section` (appended when it has none)."""
    old = _existing_scale(text)
    if old is not None:
        return text.replace(old, section)
    return text.rstrip("\n") + "\n\n" + section + "\n"


def render(figures: dict[str, dict]) -> str:
    lines = ["# Benchmarks", "", "Produced by `make bench` in one run on one machine:", "", *_machine(), ""]
    lines += ["## Headlines", ""]
    for name, figure in figures.items():
        headline = HEADLINES.get(name)
        try:
            lines.append(f"- {headline(figure) if headline else name}")
        except (KeyError, TypeError):
            lines.append(f"- {name}")
    lines.append("")
    for name, figure in figures.items():
        lines += [f"## {name}", "", "| figure | value |", "|---|---|"]
        lines += [f"| {key} | {json.dumps(value) if isinstance(value, (dict, list)) else value} |" for key, value in figure.items()]
        lines.append("")
    return "\n".join(lines)


@click.command()
@click.option("--artifacts", type=click.Path(file_okay=False, path_type=Path), default=ARTIFACTS, show_default=True)
@click.option("--scale-artifacts", type=click.Path(file_okay=False, path_type=Path), default=SCALE_ARTIFACTS,
              show_default=True, help="Figures of `make bench-scale`.")
@click.option("--scale-only", is_flag=True, help="Rewrite only the Scale section (from --scale-artifacts).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("BENCHMARKS.md"), show_default=True)
def bench(artifacts: Path, scale_artifacts: Path, scale_only: bool, out: Path) -> None:
    """Write BENCHMARKS.md from the figures of the last `make bench` run (and `make bench-scale`'s).

    The Scale section comes from --scale-artifacts when they exist, else it is kept as it is in
    --out; with --scale-only nothing else is touched."""
    scale = _scale_section(scale_artifacts)
    existing = out.read_text() if out.exists() else ""
    if scale_only:
        if scale is None:
            raise click.ClickException(f"no scale figures in {scale_artifacts}: run `make bench-scale` first")
        out.write_text(splice_scale(existing, scale) if existing else scale + "\n")
        click.echo(f"wrote the Scale section of {out}")
        return
    files = sorted(artifacts.glob("*.json"))
    if not files:
        raise click.ClickException(f"no benchmark figures in {artifacts}: run `make bench` first")
    figures = {path.stem: json.loads(path.read_text()) for path in files}
    text = render(figures)
    scale = scale or _existing_scale(existing)
    if scale is not None:
        text = splice_scale(text, scale)
    out.write_text(text)
    click.echo(f"wrote {out} ({len(figures)} benchmarks{', and the Scale section' if scale else ''})")


COMMANDS = [bench]
