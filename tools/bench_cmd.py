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

HEADLINES = {
    "dual_write": lambda f: f"dual-write vs single-write latency: p50 x{f['ratio_p50']}, p99 x{f['ratio_p99']}",
    "flip_hold": lambda f: f"flip hold over {f['flips']} flips under load: p50 {f['hold_p50_ms']} ms, max {f['hold_max_ms']} ms, {f['failed_writes']} failed writes",
    "shadow": lambda f: f"shadow-read overhead (sample 1.0), repository call: p50 x{f.get('ratio_p50')}",
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
    "complex_reads": lambda f: f"complex reads PostgreSQL vs SQLite: {f.get('summary')}",
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
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("BENCHMARKS.md"), show_default=True)
def bench(artifacts: Path, out: Path) -> None:
    """Write BENCHMARKS.md from the figures of the last `make bench` run."""
    files = sorted(artifacts.glob("*.json"))
    if not files:
        raise click.ClickException(f"no benchmark figures in {artifacts}: run `make bench` first")
    figures = {path.stem: json.loads(path.read_text()) for path in files}
    out.write_text(render(figures))
    click.echo(f"wrote {out} ({len(figures)} benchmarks)")


COMMANDS = [bench]
