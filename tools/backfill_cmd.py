"""Placeholder for the `backfill` command while it is being built (hidden from --help)."""

import click


@click.command(hidden=True)
def backfill() -> None:
    raise click.ClickException("backfill is not available yet")


COMMANDS = [backfill]
