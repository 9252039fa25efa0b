"""Placeholder for the `serve` command while it is being built (hidden from --help)."""

import click


@click.command(hidden=True)
def serve() -> None:
    raise click.ClickException("serve is not available yet")


COMMANDS = [serve]
