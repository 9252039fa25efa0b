"""A PostgreSQL server of a test's own, which the test may stop, restart, freeze and thaw.

pgserver runs the server as a user of its own (PostgreSQL refuses root), so
stop/start go through pgserver's pg_ctl as that user, and freeze/thaw send
SIGSTOP/SIGCONT to that server's processes (the postmaster and its children).
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from pathlib import Path

import psutil
import pgserver
from pgserver._commands import pg_ctl
from sqlalchemy.engine import make_url


class OwnPostgres:
    def __init__(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="hrp-own-pg-"))
        self.server = pgserver.get_server(self.data_dir, cleanup_mode="stop")
        self.url = make_url(self.server.get_uri()).set(drivername="postgresql+psycopg2").render_as_string(
            hide_password=False
        )

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
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def close(self) -> None:
        try:
            self.thaw()
        except (psutil.Error, TypeError):
            pass
        self.server.cleanup()
        shutil.rmtree(self.data_dir, ignore_errors=True)
