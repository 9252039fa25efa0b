"""The `demo` command (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path

import click

from tools.cli import console


@click.command()
@click.option("--postgres", "postgres_url", metavar="URL", help="A real PostgreSQL instead of the embedded one.")
@click.option("--dir", "workdir", type=click.Path(file_okay=False, path_type=Path), help="Working directory (default: a temporary one).")
@click.option("--races", type=click.IntRange(min=10), default=2000, show_default=True, help="Races to seed.")
@click.option("--keep", is_flag=True, help="Leave the app running and print the dashboard URL.")
def demo(postgres_url: str | None, workdir: Path | None, races: int, keep: bool) -> None:
    """Play the whole cutover on a seeded file while API clients keep reading and writing."""
    from tools.demo import run_demo

    try:
        code = run_demo(
            postgres_url, workdir, races, keep, say=lambda text: console.print(text, markup=False, highlight=False, soft_wrap=True)
        )
    except RuntimeError as error:
        raise click.ClickException(str(error)) from None
    raise SystemExit(code)


COMMANDS = [demo]
