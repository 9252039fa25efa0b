"""The `report` command: what the shadow reads found (and, with --quarantine, the backfill's quarantine)."""

from __future__ import annotations

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
        if quarantine:  # the same listing as `hrp-cutover quarantine`: values fingerprinted once, when stored
            from tools.backfill_cmd import quarantine_report

            text = quarantine_report(ctx, "json" if fmt == "json" else "text")
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
