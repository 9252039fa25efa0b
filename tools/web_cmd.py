"""The web commands: `serve` (the HRP app and dashboard: waitress, or gunicorn workers) and `create-admin`."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import click
import structlog

from hrp_data.errors import describe_error
from hrp_data.settings import BACKGROUND_CONNECTIONS, SettingsError
from tools.cli import BadSetting, domain_errors, open_cutover, pass_context, postgres_option, settings_from


log = structlog.get_logger(__name__)

APPLIER_STOP_S = 15.0
"""How long the server waits for its `hrp-cutover apply` child to finish its batch and stop."""
APPLIER_NICE = 5
"""Its child applier runs this much nicer than the request processes: where cores are short, requests
get them first and the outbox waits (a flip's mover drains it in a process of its own)."""


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on (0: any free port; the one chosen is printed).")
@click.option("--threads", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Request threads of each process (at most what HRP_POSTGRES_POOL can serve at once).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="App processes on the port. 1: one waitress process; 2 or more: a gunicorn master "
                   "that restarts a worker that dies.")
@click.option("--applier", type=click.Choice(["process", "threads"]), default="process", show_default=True,
              help="What carries the changes to the secondary: one `hrp-cutover apply` process started beside the"
                   " app (requests share no interpreter with it), or each app process's own thread.")
@postgres_option
@pass_context
def serve(ctx, host: str, port: int, threads: int, workers: int, applier: str, postgres_url: str | None) -> None:
    """Serve the HRP JSON API and the cutover dashboard (/admin/cutover)."""
    settings = settings_from(ctx, postgres_url=postgres_url)
    try:
        settings.session_key()  # production needs HRP_SECRET_KEY: refuse now, not in every worker
    except SettingsError as error:
        raise BadSetting(str(error)) from None
    fitted = settings.request_threads(threads)
    if fitted < threads:
        click.echo(f"{fitted} request threads per process, not {threads}: HRP_POSTGRES_POOL={settings.postgres_pool}"
                   f" allows {2 * settings.postgres_pool} connections, {BACKGROUND_CONNECTIONS} of them for the"
                   " applier; further requests wait in the queue")
        threads = fitted
    beside = _dedicated_applier(settings) if applier == "process" and settings.postgres_url else contextlib.nullcontext()
    with beside:
        if workers == 1:
            _serve_waitress(settings, host, port, threads)
        else:
            _serve_prefork(settings, host, port, threads, workers)


@contextlib.contextmanager
def _dedicated_applier(settings) -> Iterator[None]:
    """`hrp-cutover apply` as this server's child for its life; if it ends (or another one already runs
    on this host), the app's threads carry the changes. The URLs go in its environment, never on its
    command line, where `ps` would show a password."""
    env = {**os.environ, "HRP_SQLITE_URL": settings.sqlite_url, "HRP_POSTGRES_URL": settings.postgres_url}
    process = subprocess.Popen([sys.executable, "-m", "tools", "apply", "--quiet", "--nice", str(APPLIER_NICE)], env=env,
                               stdout=subprocess.DEVNULL)
    server = os.getpid()
    try:
        yield
    finally:
        if os.getpid() == server and process.poll() is None:  # not in a forked worker leaving
            process.terminate()
            try:
                process.wait(APPLIER_STOP_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _address(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _serve_waitress(settings, host: str, port: int, threads: int) -> None:
    from waitress import create_server

    from hrp_data.web import MAX_BODY_BYTES
    from hrp_data.web.extension import HrpCutover
    from hrp_data.web.wsgi import make_app

    app = make_app(settings, configure_logs=False)  # the CLI group configured logging
    try:
        # A body larger than the app takes is refused (413) before it is read, not after.
        server = create_server(app, host=host, port=port, threads=threads, ident="hrp-cutover",
                               max_request_body_size=MAX_BODY_BYTES + 1)  # waitress refuses at >=
    except OSError as error:
        raise BadSetting(f"cannot listen on {host}:{port}: {error.strerror or error}") from None

    def stop(signum, _frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    click.echo(f"serving on {_address(host, server.effective_port)} ({threads} threads)")
    sys.stdout.flush()
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        HrpCutover.state(app).close()


def _serve_prefork(settings, host: str, port: int, threads: int, workers: int) -> None:
    """A gunicorn master on a socket bound here; each worker builds its own app after the fork."""
    from hrp_data.web.prefork import PreforkServer
    from hrp_data.web.extension import HrpCutover
    from hrp_data.web.wsgi import make_app

    try:
        listener = socket.create_server(
            (host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET, backlog=2048
        )
    except OSError as error:
        raise BadSetting(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    chosen = listener.getsockname()[1]

    def ready(count: int) -> None:
        click.echo(f"serving on {_address(host, chosen)} ({count} workers, {threads} threads each)")
        sys.stdout.flush()

    def start_app(app) -> None:
        try:
            HrpCutover.state(app).cutover
        except Exception as error:  # noqa: BLE001 - the first request builds it once the database answers
            log.warning("serve.worker_start_deferred", error=describe_error(error))

    def close_app(app) -> None:
        if app is not None:
            HrpCutover.state(app).close()

    PreforkServer(
        listener,
        lambda: make_app(settings, configure_logs=False),  # logging was configured before the fork
        start_app,
        close_app,
        workers=workers,
        threads=threads,
        ready=ready,
    ).run()  # returns in the master only at shutdown; a worker leaves through SystemExit


@click.command("create-admin")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (one line).")
@click.option("--email", help="E-mail address (default USERNAME@localhost).")
@postgres_option
@pass_context
def create_admin(ctx, username: str, password_stdin: bool, email: str | None, postgres_url: str | None) -> None:
    """Create an admin user (the first one, typically). The password is read from standard input."""
    from hrp_data.cutover.replay import replay_outbox
    from hrp_data.web import services
    from hrp_data.web.validation import USER, Invalid, check

    if not password_stdin:
        raise BadSetting("give the password on standard input with --password-stdin (never as an argument)")
    password = sys.stdin.readline().rstrip("\r\n")
    fields = {"username": username, "email": email or f"{username}@localhost", "password": password}
    try:
        values = {spec.name: check(spec, fields[spec.name]) for spec in USER}
    except Invalid as error:
        raise BadSetting(error.message) from None
    with domain_errors(), open_cutover(ctx, postgres_url) as cutover:
        try:
            user = services.register_user(cutover, **values, is_admin=True)
        except services.Conflict as error:
            raise click.ClickException(str(error)) from None
        if cutover.route() is not None:
            try:
                replay_outbox(cutover)  # carry it to the secondary now; the appliers would anyway
            except Exception:  # noqa: BLE001 - the user exists; the outbox keeps the change
                pass
    click.echo(f"admin {user['username']} created (id {user['id']})")


COMMANDS = [serve, create_admin]
