"""The `hrp-cutover` command line: one click group, one small command per service.

The group reads settings once (environment, then flags), configures logging
once, and hands commands a `Context`. Each command parses its options, calls
one service in hrp_data, renders with rich, and turns domain errors into a
one-line `click.ClickException` (exit code 2 for bad settings or input).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click
from rich.console import Console

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
    try:
        return Settings.from_env(
            dataclasses.asdict(ctx.settings) | {k: v for k, v in overrides.items() if v is not None}
        )
    except SettingsError as error:
        raise BadSetting(str(error)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--sqlite", "sqlite_url", metavar="URL", help="SQLite URL (HRP_SQLITE_URL).")
@click.option("--postgres", "postgres_url", metavar="URL", help="PostgreSQL URL (HRP_POSTGRES_URL).")
@click.option("--log-format", type=str, help="json or console (HRP_LOG_FORMAT).")
@click.pass_context
def cli(click_ctx: click.Context, sqlite_url, postgres_url, log_format) -> None:
    """Move the HRP app from SQLite to PostgreSQL with zero downtime."""
    try:
        settings = Settings.from_env(
            sqlite_url=_as_sqlite_url(sqlite_url), postgres_url=postgres_url, log_format=log_format
        )
    except SettingsError as error:
        raise BadSetting(str(error)) from None
    configure_logging(settings.log_format, settings.log_level)
    click_ctx.obj = Context(settings=settings)


def _as_sqlite_url(value: str | None) -> str | None:
    """Accept a plain file path where a SQLite URL is expected."""
    if value is None or value.startswith("sqlite:"):
        return value
    return f"sqlite:///{Path(value).resolve()}"


@cli.command()
@click.option("--sqlite", "path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to create the legacy-schema file.")
@click.option("--races", type=click.IntRange(min=1), required=True, help="Number of races.")
@click.option("--seed", "seed", type=int, default=1, show_default=True, help="Random seed.")
@click.option("--force", is_flag=True, help="Replace an existing file.")
def seed(path: Path, races: int, seed: int, force: bool) -> None:
    """Create a legacy-schema SQLite file filled with realistic HRP data."""
    from hrp_data.seed import SeedError, seed_database

    try:
        counts = seed_database(path, races=races, seed=seed, replace=force, console=console)
    except SeedError as error:
        raise BadSetting(str(error)) from None
    click.echo(" ".join(f"{table}={count}" for table, count in counts.items()))


@cli.command()
@click.option("--postgres", "postgres_url", metavar="URL", help="PostgreSQL URL (HRP_POSTGRES_URL).")
@pass_context
def schema(ctx: Context, postgres_url: str | None) -> None:
    """Create or upgrade the PostgreSQL schema (Alembic head); idempotent."""
    from hrp_data.schema import upgrade

    settings = settings_from(ctx, postgres_url=postgres_url)
    try:
        url = settings.require_postgres()
    except SettingsError as error:
        raise BadSetting(str(error)) from None
    result = upgrade(url)
    click.echo(result.message)


def main() -> None:
    cli(prog_name="hrp-cutover")


if __name__ == "__main__":
    sys.exit(main())
