"""Placeholder for the `report` command while it is being built (hidden from --help)."""

import click


@click.command(hidden=True)
def report() -> None:
    raise click.ClickException("report is not available yet")


COMMANDS = [report]
