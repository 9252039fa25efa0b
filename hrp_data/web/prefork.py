"""Several app processes behind one port: a gunicorn master that pre-forks worker processes.

`hrp-cutover serve --workers N` (N >= 2) runs this. The listening socket is
bound before the fork and shared, so while one worker is gone (crashed,
SIGKILLed by the OOM killer) the others keep accepting on the same port and
the master forks a replacement. Each worker is a gthread worker with
`threads` request threads, and takes at most that many connections (no
keep-alive): further requests wait in the listening socket's backlog, shared
by all workers, and go to whichever worker frees a thread first, never into
the private queue of a busy one; it builds its own app after the fork, and so its
own Cutover (engines, phase record, applier thread, shadow reads) right away
(so a replacement's applier runs and reports before its first request; if a
database is away then, the first request builds it), and closes it when the
worker exits. Nothing of the app exists in the master.

gunicorn's own log lines (worker booted, worker killed, ...) go through
structlog like every other line of the process, as event "gunicorn".
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import structlog
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

log = structlog.get_logger("gunicorn")


class StructlogLogger(Logger):
    """gunicorn's error log, written by structlog (JSON lines, redaction); no access log."""

    def setup(self, cfg) -> None:
        self.cfg = cfg

    def _emit(self, level: str, msg: Any, args: tuple) -> None:
        text = str(msg) % args if args else str(msg)
        getattr(log, level)("gunicorn", message=text)

    def critical(self, msg, *args, **kwargs) -> None:
        self._emit("critical", msg, args)

    def error(self, msg, *args, **kwargs) -> None:
        self._emit("error", msg, args)

    def warning(self, msg, *args, **kwargs) -> None:
        self._emit("warning", msg, args)

    def info(self, msg, *args, **kwargs) -> None:
        self._emit("info", msg, args)

    def debug(self, msg, *args, **kwargs) -> None:
        self._emit("debug", msg, args)

    def exception(self, msg, *args, **kwargs) -> None:
        self._emit("error", msg, args)

    def log(self, lvl, msg, *args, **kwargs) -> None:
        self._emit("info", msg, args)

    def access(self, resp, req, environ, request_time) -> None:
        pass

    def reopen_files(self) -> None:
        pass

    def close_on_exec(self) -> None:
        pass


class PreforkServer(BaseApplication):
    """gunicorn on an already bound socket; `load()` (in each worker) builds the app.

    `listener` is handed over: gunicorn owns its file descriptor from here on.
    """

    def __init__(
        self,
        listener: socket.socket,
        load_app: Callable[[], Any],
        start_app: Callable[[Any], None],
        close_app: Callable[[Any], None],
        *,
        workers: int,
        threads: int,
        ready: Callable[[int], None],
    ):
        self.load_app = load_app
        self.options = {
            "bind": [f"fd://{listener.detach()}"],
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread",
            "preload_app": False,
            "timeout": 30,
            "graceful_timeout": 20,
            "worker_connections": threads,
            "keepalive": 0,
            "logger_class": StructlogLogger,
            "control_socket_disable": True,
            "proc_name": "hrp-cutover",
            "when_ready": lambda arbiter: ready(workers),
            "post_worker_init": lambda worker: start_app(worker.wsgi),
            "worker_exit": lambda arbiter, worker: close_app(getattr(worker, "wsgi", None)),
        }
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self.load_app()
