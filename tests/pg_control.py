"""A PostgreSQL server of a test's own, which the test may stop, restart, freeze and thaw.

pgserver runs the server as a user of its own (PostgreSQL refuses root), so
stop/start go through pgserver's pg_ctl as that user, and freeze/thaw send
SIGSTOP/SIGCONT to that server's processes (the postmaster and its children).
SystemPostgres starts a PostgreSQL of the system's packages the same way, for
what needs the standard contrib modules the embedded server lacks (pg_trgm).
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import psutil
import psycopg2
import pgserver
from pgserver._commands import pg_ctl
from sqlalchemy.engine import make_url


def start_pgserver(prefix: str):
    """An embedded server in a fresh directory: (its directory, the server). The directory is a copy of
    this process's template (initdb'd once, fsync off, shut down cleanly), so a server costs a copy and a
    start instead of an initdb: the suite starts one per test that stops or freezes its server."""
    data_dir = tempfile.mkdtemp(prefix=prefix)
    os.rmdir(data_dir)
    subprocess.run(["cp", "-a", _template(), data_dir], check=True)
    for leftover in (Path(data_dir) / ".handle_pids.json", *(Path(data_dir) / "log").glob("*")):
        leftover.unlink()  # the template server's handles and log are not this server's
    return data_dir, pgserver.get_server(data_dir, cleanup_mode="stop")


_templates: dict[int, str] = {}


def _template() -> str:
    """This process's template data directory, made on first use. Processes make theirs one at a time,
    under a file lock: pgserver creates its system user and opens its binaries' modes on first use, and
    two pytest workers doing that at once on a fresh machine left one of them unable to initdb. One more
    try in a new directory covers what a race elsewhere leaves behind."""
    if os.getpid() in _templates:
        return _templates[os.getpid()]
    with open(os.path.join(tempfile.gettempdir(), "hrp-pgserver-start.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for attempt in (1, 2):
            data_dir = tempfile.mkdtemp(prefix="hrp-pg-template-")
            try:
                server = pgserver.get_server(data_dir, cleanup_mode="stop")
                _without_fsync(server)
                server.cleanup()  # a clean shutdown: a copy starts without recovery
                break
            except subprocess.CalledProcessError:
                shutil.rmtree(data_dir, ignore_errors=True)
                if attempt == 2:
                    raise
    _templates[os.getpid()] = data_dir
    atexit.register(shutil.rmtree, data_dir, True)
    return data_dir


def _without_fsync(server) -> None:
    """A test server does not fsync (ALTER SYSTEM, read when a copy of the template starts): a commit
    is in the OS's hands when it returns, which survives any stop or kill of the server the tests make
    (only the machine crashing would lose it), and the suite's thousands of commits stop waiting on the
    disk (about 5x faster each here)."""
    connection = psycopg2.connect(server.get_uri())
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("ALTER SYSTEM SET fsync = off")
    finally:
        connection.close()


class OwnPostgres:
    def __init__(self) -> None:
        data_dir, self.server = start_pgserver("hrp-own-pg-")
        self.data_dir = Path(data_dir)
        self.url = make_url(self.server.get_uri()).set(drivername="postgresql+psycopg2").render_as_string(
            hide_password=False
        )
        self._frozen: list[psutil.Process] = []

    def _processes(self) -> list[psutil.Process]:
        postmaster = psutil.Process(self.server.get_pid())
        return [postmaster, *postmaster.children(recursive=True)]

    def stop(self) -> None:
        pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=self.data_dir, user=self.server.system_user)

    def start(self) -> None:
        self.server.ensure_postgres_running()

    def _signal(self, number: int) -> None:
        for process in self._processes():
            try:
                process.send_signal(number)
            except psutil.NoSuchProcess:  # a backend that ended since the listing
                pass

    def freeze(self) -> None:
        self._frozen = self._processes()
        self._signal(signal.SIGSTOP)

    def processes_left(self) -> list[str]:
        """The server's processes of the last freeze() still alive, with their state (for a failing
        test's message: a stop that left one behind)."""
        left = []
        for process in self._frozen:
            try:
                left.append(f"{process.pid} {process.status()}")
            except psutil.NoSuchProcess:
                pass
        return left

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def close(self) -> None:
        try:
            self.thaw()
        except (psutil.Error, TypeError):
            pass
        self.server.cleanup()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def contrib_bindir() -> Path | None:
    """The binaries of a PostgreSQL from the system's packages whose share holds the standard contrib
    modules (pg_trgm), as production servers have them (RDS, Cloud SQL, Azure); the newest one, or None."""
    found = []
    for bindir in Path("/usr/lib/postgresql").glob("*/bin"):  # Debian and Ubuntu lay them out so
        config = bindir / "pg_config"
        if not (bindir / "postgres").exists() or not config.exists():
            continue
        share = subprocess.run([str(config), "--sharedir"], capture_output=True, text=True).stdout.strip()
        if share and (Path(share) / "extension" / "pg_trgm.control").exists():
            found.append((int(bindir.parent.name) if bindir.parent.name.isdigit() else 0, bindir))
    return max(found)[1] if found else None


class SystemPostgres:
    """A PostgreSQL of the system's packages in a fresh directory, reached by its socket there. As root it
    runs as pgserver's system user (PostgreSQL refuses root); like the suite's servers, without fsync."""

    def __init__(self, bindir: Path, prefix: str = "hrp-contrib-pg-") -> None:
        self.bindir = bindir
        self.data_dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.user = None
        if os.geteuid() == 0:
            from pgserver.utils import ensure_user_exists

            self.user = "pgserver"
            entry = ensure_user_exists(self.user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data_dir), "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8",
                  "-U", "postgres")
        options = f"-c listen_addresses='' -k {self.data_dir} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data_dir), "-o", options, "-l", str(self.data_dir / "server.log"),
                  "-w", "start")
        self.url = f"postgresql://postgres@/postgres?host={self.data_dir}"

    def _run(self, program: str, *args: str) -> None:
        subprocess.run([str(self.bindir / program), *args], check=True, capture_output=True, user=self.user)

    def close(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)
