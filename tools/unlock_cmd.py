"""The `unlock` command: show who holds the layer's PostgreSQL locks; end a stale holder's session."""

from __future__ import annotations

import click

from tools.cli import domain_errors, operator_settings, pass_context, postgres_option


@click.command()
@click.option("--pid", type=int, help="End this backend's session, if it holds one of the layer's locks.")
@postgres_option
@pass_context
def unlock(ctx, pid: int | None, postgres_url: str | None) -> None:
    """List the backends holding the layer's advisory locks; with --pid, end that session (safe: nothing
    else is ended, and a live command that loses its lock stops and resumes from its last commit)."""
    from adapters.pooler import TERMINATE_WAIT_S
    from adapters.postgres import create_postgres_engine
    from hrp_data import session_locks

    with domain_errors():
        engine = create_postgres_engine(operator_settings(ctx, postgres_url).require_postgres())
        try:
            with engine.connect() as connection:
                if pid is not None:
                    ended = session_locks.unlock(connection, pid)
                    if ended is None:
                        raise click.ClickException(f"pid {pid} holds no lock of the layer; nothing was ended")
                    if not ended:
                        raise click.ClickException(
                            f"pid {pid} was told to end but still runs after {TERMINATE_WAIT_S} s; run `hrp-cutover unlock` to see"
                            " whether it holds the lock, and ask the PostgreSQL administrator if it does"
                        )
                    click.echo(f"ended pid {pid}: its locks are released")
                    return
                found = session_locks.holders(connection)
        finally:
            engine.dispose()
    if not found:
        click.echo("no lock of the layer is held")
    for holder in found:
        click.echo(holder.describe())


COMMANDS = [unlock]
