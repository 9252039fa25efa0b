"""A real PgBouncer (the Debian package) in front of a test PostgreSQL, in transaction pooling mode.

Installed by `make test`'s set-up step (tools/setup/system_packages.sh; the tests never skip it). PgBouncer
refuses to run as root, so as root it runs as the user that owns the
server's socket directory (pgserver's own user), which may open that socket.
It listens on a free TCP port of 127.0.0.1; its files live in a temporary
directory removed on close.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy.engine import make_url

def pgbouncer_binary() -> str:
    """The pgbouncer program; raises RuntimeError naming the set-up step when it is missing."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")
    if found is None:
        raise RuntimeError("pgbouncer is missing: run `make system-packages` (tools/setup/system_packages.sh)")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PgBouncer:
    def __init__(self, server_url: str, *, pool_mode: str = "transaction", pool_size: int = 4) -> None:
        binary = pgbouncer_binary()
        self.server = make_url(server_url)
        host = self.server.query.get("host") or self.server.host or "127.0.0.1"
        self.dir = Path(tempfile.mkdtemp(prefix="hrp-pgbouncer-"))
        self.port = _free_port()
        target = f"host={host} port={self.server.port or 5432}"
        if self.server.password:
            target += f" user={self.server.username} password={self.server.password}"
        (self.dir / "userlist.txt").write_text(f'"{self.server.username}" ""\n')
        (self.dir / "pgbouncer.ini").write_text(
            f"[databases]\n* = {target}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.dir / 'userlist.txt'}\n"
            f"pool_mode = {pool_mode}\ndefault_pool_size = {pool_size}\nmax_client_conn = 200\n"
            "ignore_startup_parameters = options,extra_float_digits\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\npidfile = {self.dir / 'pgbouncer.pid'}\n"
        )
        command = [binary, "-d"]
        if os.geteuid() == 0:
            owner = os.stat(host).st_uid if host.startswith("/") else pwd.getpwnam("nobody").pw_uid
            user = pwd.getpwuid(owner).pw_name
            shutil.chown(self.dir, user)
            for path in self.dir.iterdir():
                shutil.chown(path, user)
            command += ["-u", user]
        started = subprocess.run([*command, str(self.dir / "pgbouncer.ini")], capture_output=True, text=True)
        if started.returncode != 0:
            raise RuntimeError(f"pgbouncer did not start: {started.stderr or self.log()}")
        self._wait_listening()

    def _wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"pgbouncer does not listen on {self.port}: {self.log()}")

    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text()[-2000:] if path.exists() else ""

    def url(self, database_url: str) -> str:
        """`database_url`'s database, reached through this PgBouncer."""
        direct = make_url(database_url)
        return direct.set(host="127.0.0.1", port=self.port, password=None, query={}).render_as_string(
            hide_password=False
        )

    def pid(self) -> int | None:
        path = self.dir / "pgbouncer.pid"
        return int(path.read_text()) if path.exists() else None

    def close(self) -> None:
        pid = self.pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    os.kill(pid, 0)
                    time.sleep(0.05)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
