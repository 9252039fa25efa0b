"""The backfill's pages: a legacy table read and converted a key range at a time, in worker processes.

Converting legacy values (JSON above all) is the Python-bound half of the
backfill, and one process's GIL caps it at one core. So the calling process
only finds where each page ends (a key-only scan of the primary-key index,
`TableReader.page_end`) and worker processes do the rest: each opens the
legacy file read-only and, for a key range (low, high], reads the rows and
converts them into a COPY payload (hrp_data.backfill.legacy_rows). Pages come back in
key order, as many in flight as there are workers plus one, so the batch
writer sees exactly the sequence a single reader would produce.

Workers are forked from a fork server (multiprocessing's forkserver) that
has imported this module once: a worker costs a fork, not an interpreter
importing the layer again (half a second of CPU per worker at every run's
start, more on a busy machine). The server is a child of the
calling process and lives as long as it (it ends when the calling process's
end closes its pipe); the workers are the server's children.

Workers ignore SIGINT (Ctrl-C is the calling process's, which stops at a
batch boundary) and die with the process that started them (a thread of
each waits for its end), so a SIGKILLed backfill leaves no orphans (the fork
server then ends too); a worker that
dies (the OOM killer, a signal) breaks the pool and the page raises
BrokenProcessPool, so the backfill stops with its checkpoint committed
instead of waiting for a page that will never come. With no pool
(`workers` 0, or a table with fewer than `min_rows` rows left) pages are read and
converted in the calling thread, the same way.

A worker runs Python's cycle collector once per page rather than every few
hundred allocations: a page makes hundreds of thousands of objects that all
die by reference count, and the collector's passes over them cost about a
tenth of the conversion. What is left from start-up is frozen out of those
passes (gc.freeze), so each one sees only what the last page left behind.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import dataclasses
import gc
import multiprocessing
import os
import select
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from adapters import vouch
from hrp_data.backfill import legacy_rows
from hrp_data.backfill.legacy_rows import Converted, Key, TableReader
from hrp_data.catalog import file_catalog

POOL_MIN_ROWS = 50_000
"""Below this many rows left to copy, a table is read in the calling thread (a pool costs a start-up)."""

PR_SET_PDEATHSIG = 1
WORKER_NICE = 5
"""Workers run this much nicer than the backfill: when cores are short, PostgreSQL's backends (the
COPY and the index builds, one core each at most) and the live site come first, and the
workers take what is left."""


@dataclasses.dataclass
class Page:
    """One page, read and converted: rows read, the last key read, the payload, and (if asked) the keys."""

    read: int
    high: Key
    converted: Converted
    keys: list[Key] | None
    mark: int | None = None
    """legacy_rows.capture_mark before the page was read (None: not taken)."""


def default_workers() -> int:
    """One worker per core, at most four (PostgreSQL needs cores of its own)."""
    return max(1, min(4, os.cpu_count() or 1))


_worker: dict[str, Any] = {}


def _die_with_parent(starter: int) -> None:
    """SIGKILL this worker when `starter`, the process that started its pool, ends.

    PR_SET_PDEATHSIG watches the worker's parent: the fork server (worker_context), and a fork server
    ends only when every process
    holding its pipe has, the workers included. So a thread of the worker also waits for
    `starter`'s end (a pidfd, Linux 5.3; elsewhere it asks every half second) and kills it."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    try:
        watched = os.pidfd_open(starter)
    except ProcessLookupError:  # it ended before this line
        os._exit(1)
    except (OSError, AttributeError):
        watched = None
    threading.Thread(target=_kill_when_gone, args=(starter, watched), name="starter-watch", daemon=True).start()


def _kill_when_gone(starter: int, watched: int | None) -> None:
    if watched is not None:
        select.select([watched], [], [])  # readable once the process has ended
    else:
        while _alive(starter):
            time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: the pid was reused, so ours has ended
        return False
    return True


def worker_context() -> Any:
    """Workers forked from a server that has imported this module (and the main module, where
    multiprocessing's preload of it works: not on 3.11, whose workers import a main script again).
    The verify's range hashers (hrp_data.verify.ranges) are forked from the same server."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", __name__])
    return context


def _start_worker(path: str, starter: int, column_types: dict[tuple[str, str], str] | None = None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(starter)
    os.nice(WORKER_NICE)
    _worker["connection"] = legacy_rows.connect(Path(path))
    vouch.register(_worker["connection"])  # the functions of the suspects' pass (suspects_between)
    _worker["readers"] = legacy_rows.readers(file_catalog(_worker["connection"], column_types))
    gc.freeze()
    gc.disable()


def worker_pool(path: Path, workers: int, column_types: dict[tuple[str, str], str] | None = None) -> ProcessPoolExecutor:
    """`workers` worker processes on the file at `path`, started now (a pool that knows when one of
    them dies: BrokenProcessPool); `column_types` as for file_catalog. End it with close_pool."""
    pool = ProcessPoolExecutor(
        workers, mp_context=worker_context(), initializer=_start_worker, initargs=(str(path), os.getpid(), column_types),
    )
    for _ in range(workers):  # the pool starts a process per task: all of them now
        pool.submit(os.getpid)
    return pool


def close_pool(pool: ProcessPoolExecutor) -> None:
    """End the workers. A broken pool's survivors are killed first: CPython's shutdown of a
    broken pool signals them SIGTERM and then waits, spinning, until none is alive, and one
    run under load was seen to spin there for good (the backfill then hung, not failed)."""
    if getattr(pool, "_broken", False):
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                process.kill()
    pool.shutdown(wait=True, cancel_futures=True)


def suspects_between(table: str, low: int | None, high: int | None, size: int) -> list[Converted]:
    """In a worker: the rows of `table` whose first key column is in [low, high) that SQLite cannot
    vouch for, converted, `size` at a time (TableReader.suspect_rejects: assess's census)."""
    gc.collect()
    return _worker["readers"][table].suspect_rejects(_worker["connection"], size, low, high)


def _read_range(table: str, low: Key | None, high: Key, with_keys: bool, want_keys: bool) -> Page | None:
    gc.collect()
    reader: TableReader = _worker["readers"][table]
    return _page(reader, reader.rows_between(_worker["connection"], low, high), with_keys, want_keys)


def _page(reader: TableReader, rows: list[tuple], with_keys: bool, want_keys: bool) -> Page | None:
    if not rows:
        return None
    keys = [reader.key_of(row) for row in rows] if want_keys else None
    return Page(len(rows), reader.key_of(rows[-1]), reader.convert(rows, with_keys=with_keys), keys)


class PageReader:
    """Pages of legacy tables for one backfill run; `close()` ends the workers."""

    def __init__(self, path: Path, connection: Any, workers: int, min_rows: int = POOL_MIN_ROWS):
        self.path = path
        self.connection = connection  # the calling thread's own read-only connection
        self.workers = workers
        self.min_rows = min_rows
        self._pool: Any = None

    def start(self) -> None:
        """Start the workers (a process pool that knows when one of them dies: BrokenProcessPool)."""
        if self.workers > 0 and self._pool is None:
            self._pool = worker_pool(self.path, self.workers)

    def close(self) -> None:
        """End the workers (close_pool)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            close_pool(pool)

    def pages(
        self, reader: TableReader, after: Key | None, size: int, remaining: int,
        *, with_keys: bool, want_keys: bool,
    ) -> Iterator[Page]:
        """The pages after key `after`, in key order, `size` rows each (the last may be short)."""
        if self.workers > 0 and remaining >= self.min_rows:
            self.start()
            return self._pooled(reader, after, size, with_keys, want_keys)
        return self._inline(reader, after, size, with_keys, want_keys)

    def _inline(self, reader: TableReader, after: Key | None, size: int, with_keys: bool,
                want_keys: bool) -> Iterator[Page]:
        while True:
            mark = legacy_rows.capture_mark(self.connection)
            high, full = reader.page_end(self.connection, after, size)
            if high is None:
                return
            page = _page(reader, reader.rows_between(self.connection, after, high), with_keys, want_keys)
            if page is not None:
                page.mark = mark
                yield page
            if not full:
                return
            after = high

    def _pooled(self, reader: TableReader, after: Key | None, size: int, with_keys: bool,
                want_keys: bool) -> Iterator[Page]:
        in_flight: collections.deque = collections.deque()
        last = False
        while True:
            while not last and len(in_flight) <= self.workers:
                mark = legacy_rows.capture_mark(self.connection)
                high, full = reader.page_end(self.connection, after, size)
                if high is None:
                    last = True
                    break
                in_flight.append(
                    (mark, self._pool.submit(_read_range, reader.name, after, high, with_keys, want_keys))
                )
                after, last = high, not full
            if not in_flight:
                return
            mark, pending = in_flight.popleft()
            page = pending.result()  # a worker that died raises BrokenProcessPool here, never hangs
            if page is not None:
                page.mark = mark
                yield page
