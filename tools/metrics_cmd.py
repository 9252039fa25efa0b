"""The `metrics` command: the cutover's numbers once, in the Prometheus text format."""

from __future__ import annotations

import click

from tools.cli import domain_errors, open_cutover, pass_context, postgres_option


@click.command()
@postgres_option
@pass_context
def metrics(ctx, postgres_url: str | None) -> None:
    """Print the metrics once in the Prometheus text format (for cron and node_exporter's textfile collector)."""
    from hrp_data.cutover.metrics import exposition

    with domain_errors(), open_cutover(ctx, postgres_url, finish_moves=False) as cutover:
        text = exposition(cutover).decode()
    click.echo(text, nl=False)


COMMANDS = [metrics]
