"""The `apply` command: the dedicated applier, one per host, beside the app for the whole cutover."""

from __future__ import annotations

import contextlib
import os
import signal
import threading

import click

from tools.cli import console, domain_errors, open_cutover, pass_context, postgres_option

SHOW_EVERY_S = 1.0


@click.command()
@click.option("--quiet", is_flag=True, help="No live status line (a service manager's log, `serve`'s child).")
@click.option("--nice", "niceness", type=click.IntRange(0, 19), default=0, show_default=True,
              help="Run this much nicer (os.nice): where cores are short, the app's request processes get them"
                   " first and the outbox waits (`serve` starts its applier with 5).")
@postgres_option
@pass_context
def apply(ctx, quiet: bool, niceness: int, postgres_url: str | None) -> None:
    """Carry the outbox to the secondary until stopped (SIGTERM or Ctrl-C). Run one beside the app for
    the whole cutover: while it runs, the app's processes leave the draining to it (their requests
    no longer share an interpreter with it), and they take over the moment it stops."""
    from hrp_data.cutover import applier_lease, outbox

    if niceness:
        os.nice(niceness)
    with domain_errors(), open_cutover(ctx, postgres_url, dedicated=True) as cutover:
        path = applier_lease.for_database(cutover.sqlite.url.database)
        if path is None:
            raise click.ClickException("HRP_SQLITE_URL names no file path; give the legacy file (--sqlite data/hrp_database.db)")
        lease = applier_lease.Lease(path)
        try:
            taken = lease.take()
        except OSError as error:
            raise click.ClickException(
                f"cannot open the applier's lock file {path}: {error.strerror}; run `hrp-cutover apply` as a user"
                " who may write beside the legacy file"
            ) from None
        if not taken:
            raise click.ClickException(
                f"another `hrp-cutover apply` already carries this file's changes ({applier_lease.holder(path) or 'its pid is unknown'},"
                f" {path}); one per host is enough"
            )
        with lease:
            stop = threading.Event()
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: stop.set())
            cutover.start()
            click.echo(f"carrying changes (pid {lease.pid}); the app's applier threads stand aside until this stops"
                       " (SIGTERM or Ctrl-C)")
            counters = cutover.applier.counters
            with contextlib.nullcontext(None) if quiet else console.status("starting") as shown:
                while not stop.wait(SHOW_EVERY_S):
                    if shown is None:
                        continue
                    route = cutover.route()
                    waiting = outbox.depth(route.primary).pending if route is not None else 0
                    lag = counters.lag_percentiles()["p99"]
                    shown.update(
                        f"applied {counters.applied}, failed {counters.failed}, waiting {waiting}"
                        + ("" if lag is None else f", lag p99 {lag * 1000:.0f} ms")
                        + (f", secondary {cutover.applier.breaker_state}" if cutover.applier.breaker_state != "closed" else "")
                    )
            cutover.applier.stop()
    click.echo(f"stopped: applied {counters.applied}, failed {counters.failed}; the app's applier threads carry changes again")


COMMANDS = [apply]
