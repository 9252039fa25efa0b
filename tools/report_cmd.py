"""The `report` command: what the shadow reads found (and, with --quarantine, the backfill's quarantine)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import click

from tools.cli import BadSetting, domain_errors, pass_context, settings_from


def _since(value: str | None) -> float | None:
    from shadow.report import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as error:
        raise BadSetting(f"--since: {error}") from None


def _quarantine_rows(ctx, fmt: str) -> str:
    """The rows the backfill quarantined, from hrp_data.backfill.run.quarantine_rows when it exists."""
    from adapters.postgres import create_postgres_engine
    from shadow.redact import SECRET_KEYS, fingerprint, redact_row

    try:
        backfill = importlib.import_module("hrp_data.backfill.run")
    except ImportError:
        backfill = None
    quarantine_rows = getattr(backfill, "quarantine_rows", None)
    if quarantine_rows is None:
        raise click.ClickException("the quarantine report is not available: hrp_data.backfill.run.quarantine_rows is missing")
    engine = create_postgres_engine(settings_from(ctx).require_postgres())
    try:
        rows = [dict(row) for row in quarantine_rows(engine)]
    finally:
        engine.dispose()
    shown = []
    for row in rows:
        row = redact_row(row)
        if str(row.get("column", "")).lower() in SECRET_KEYS:  # the raw value of a secret column
            row = {k: fingerprint(v) if k in ("raw", "value", "raw_value") else v for k, v in row.items()}
        shown.append(row)
    if fmt == "json":
        return json.dumps({"rows": shown}, indent=2, default=str) + "\n"
    if not shown:
        return "no quarantined rows\n"
    return "".join(json.dumps(row, default=str) + "\n" for row in shown)


@click.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json", "html"]), default="text", show_default=True,
              help="text for a terminal, json for the dashboard and scripts, html for one self-contained page.")
@click.option("--since", metavar="DURATION", help="Only the last DURATION (30s, 15m, 2h, 7d); default all kept.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE instead of stdout.")
@click.option("--quarantine", is_flag=True, help="Report the rows the backfill quarantined instead.")
@pass_context
def report(ctx, fmt: str, since: str | None, out: Path | None, quarantine: bool) -> None:
    """Shadow reads: compared, mismatched and rate per table and read type, top columns, latency."""
    from hrp_data.cutover.shadow_reads import shadow_report
    from shadow.report import RENDERERS

    window = _since(since)
    with domain_errors():
        if quarantine:
            text = _quarantine_rows(ctx, fmt)
        else:
            text = RENDERERS[fmt](shadow_report(settings_from(ctx), window))
    if not text.endswith("\n"):
        text += "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(f"wrote {out}", err=True)


COMMANDS = [report]
