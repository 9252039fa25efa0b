"""The dedicated applier's lease: while one `hrp-cutover apply` process drains the outbox, the app's
own applier threads stand aside; when it ends, they take over.

An applier thread inside a request process competes with the requests for the process's
interpreter lock and, in the SQLite -> PostgreSQL direction, for the file's write lock (it removes
what it applied): that is what the dual-write p99 pays (BENCHMARKS.md, dual_write). A process of
its own takes both off the request path.

The lease is an exclusive flock(2) on a file beside the legacy file (`<file>.applier.lock`), held
for the dedicated process's life. The kernel releases it the moment that process ends, however it
ends (SIGKILL, the OOM killer), so the app's threads find it free at their next poll: no timeout
to tune, no stale lease to clear. The legacy file is local to its host, and so are the lock and
every process that writes the file. Around a hand-over both may drain for a moment; that is safe,
as every process's applier drains the same outbox concurrently anyway.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

SUFFIX = ".applier.lock"
TAKE_TRIES = 20
"""A probe holds the lock shared for microseconds: `take` tries this many times, TAKE_PAUSE_S apart."""
TAKE_PAUSE_S = 0.05


def lock_path(sqlite_file: str | os.PathLike) -> Path:
    """The lease's file, beside the legacy file (its real path: the app and the operator may name
    the file differently)."""
    return Path(f"{os.path.realpath(sqlite_file)}{SUFFIX}")


def held_elsewhere(path: Path) -> bool:
    """Whether a dedicated applier holds the lease: a non-blocking probe (no lock file, or one this
    process cannot open, means none)."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as error:
        return error.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    else:
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
    finally:
        os.close(handle)


def holder(path: Path) -> str:
    """What the lease's file says about its holder (its pid), or '' when it says nothing."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()[:100]
    except OSError:
        return ""


def for_database(database: str | None) -> Path | None:
    """The lease's file for a SQLite URL's database part; None when that names no file (in memory, a
    `file:` URI): no dedicated applier can serve it."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return lock_path(database)


def dedicated(path: Path | None) -> dict:
    """Whether a dedicated applier holds the lease, and what its file says (status, the dashboard)."""
    running = path is not None and held_elsewhere(path)
    return {"running": running, "holder": (holder(path) or None) if running else None}


class Lease:
    """The lease, taken by the dedicated applier for as long as it runs."""

    def __init__(self, path: Path):
        self.path = path
        self.pid: int | None = None
        self._handle: int | None = None

    def take(self) -> bool:
        """Take the lease; False when another process holds it. Raises OSError when the file cannot
        be made (the directory is not writable)."""
        handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        for attempt in range(TAKE_TRIES):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(handle)
                    raise
                if attempt + 1 < TAKE_TRIES:
                    time.sleep(TAKE_PAUSE_S)
                continue
            os.ftruncate(handle, 0)
            os.pwrite(handle, f"pid {os.getpid()}\n".encode(), 0)
            self._handle = handle
            self.pid = os.getpid()
            return True
        os.close(handle)
        return False

    def release(self) -> None:
        if self._handle is not None:
            os.ftruncate(self._handle, 0)
            os.close(self._handle)  # closing the file releases the lock
            self._handle = None

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
