"""The verifier's SQLite side: range hashes of a legacy table, computed in worker processes.

Rendering every SQLite row as row text (hrp_data.verify.range_hash) is the verifier's
Python-bound half, capped at one core by one interpreter. So, as the backfill
reads (hrp_data.backfill.read_pool), worker processes do it, forked from the
backfill's fork server (which has imported the reading layer once: a worker costs
a fork, not an interpreter importing it again): each opens the legacy file
read-only and, for a range of buckets, reads the rows in key order and
returns each bucket's row count and md5. The calling process meanwhile has
PostgreSQL hash its side. A table with few rows is hashed in the calling
process (a pool costs a start-up).

Workers ignore SIGINT and die with the process that started them; a worker
that dies breaks the pool, and the verify ends with BrokenProcessPool
instead of waiting for a range that will never come.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import os
import signal
import sqlite3
from concurrent.futures import Future, ProcessPoolExecutor
from collections.abc import Callable, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

from adapters.catalog import quote
from adapters.convert import Kind
from adapters.sqlite import decode_text
from hrp_data.backfill import legacy_rows
from hrp_data.backfill.read_pool import WORKER_NICE, _die_with_parent, default_workers, worker_context
from hrp_data.verify.json_runs import json_lines
from hrp_data.verify.range_hash import ROW_SEPARATOR, fast_row_renderer, real_block

POOL_MIN_ROWS = 10_000
"""Below this many rows a table is hashed in the calling process."""
PRESTART_BYTES = 4 << 20
"""A file this big starts the workers on entry, so their start-up overlaps the small tables' work; a
smaller one starts them only when a table of POOL_MIN_ROWS comes (a verify of a small file starts none:
the fork server's first start costs about half a second)."""
TASK_BUCKETS = 32
"""Buckets per worker task (about 16,000 rows): small enough to spread a table over the workers, big enough
to amortize a task."""

BucketHashes = dict[int, tuple[int, str]]


@dataclasses.dataclass(frozen=True)
class RangePlan:
    """Buckets [low + i*width, low + (i+1)*width) of a table's first key column (see verify.Buckets)."""

    table: str
    low: int
    width: int
    columns: tuple[str, ...]
    """The file's names of the table's columns, in the catalog's order (with `kinds`)."""
    kinds: tuple[Any, ...]
    keys: tuple[str, ...]
    sqlite_table: str
    """The file's name of the table (`table` is the catalog's)."""

    @classmethod
    def of(cls, table: Any, sqlite_table: Any, low: int, width: int) -> "RangePlan":
        """The plan for a catalog table (`table`) and the same table as the file names it."""
        from adapters.types import kind_of

        return cls(
            table.name, low, width, tuple(c.name for c in sqlite_table.columns),
            tuple(kind_of(c) for c in table.columns), tuple(c.name for c in sqlite_table.primary_key.columns),
            sqlite_table.name,
        )

    def key_bounds(self, first: int, last: int) -> tuple[int, int]:
        """The first and last key of buckets first..last (inclusive), clamped to SQLite's integers."""
        start = self.low + first * self.width
        end = self.low + (last + 1) * self.width - 1
        return max(start, -(2**63)), min(end, 2**63 - 1)


def _range_query(plan: RangePlan) -> str:
    """The rows of one key range in key order; a first key column holding a real between two integers
    is left out (no bucket holds it: verify._odd_keys lists it)."""
    keys = [quote(k) for k in plan.keys]
    return (
        f"SELECT {', '.join(quote(c) for c in plan.columns)} FROM {quote(plan.sqlite_table)}"
        f" WHERE {keys[0]} >= ? AND {keys[0]} <= ? AND typeof({keys[0]}) = 'integer' ORDER BY {', '.join(keys)}"
    )


def _rows(connection: sqlite3.Connection, sql: str, bounds: tuple[int, int]) -> list[tuple]:
    """The rows, decoded by the C decoder; a range holding invalid UTF-8 is read again leniently."""
    connection.text_factory = str
    try:
        return connection.execute(sql, bounds).fetchall()
    except sqlite3.OperationalError as error:
        if "decode" not in str(error):
            raise
        connection.text_factory = decode_text
        return connection.execute(sql, bounds).fetchall()
    finally:
        connection.text_factory = decode_text


def json_positions(kinds: Sequence[Any]) -> tuple[int, ...]:
    """The positions of the JSON columns, which a bucket's text spells apart (bucket_text)."""
    return tuple(i for i, kind in enumerate(kinds) if kind is Kind.JSON)


def real_positions(kinds: Sequence[Any]) -> tuple[int, ...]:
    """The positions of the REAL columns, which a bucket's row texts mark and its blocks spell (bucket_text)."""
    return tuple(i for i, kind in enumerate(kinds) if kind is Kind.REAL)


def bucket_parts(rows: list[tuple], render: Callable[[tuple], str], real_at: tuple[int, ...],
                 json_at: tuple[int, ...]) -> list[str]:
    """A bucket's text, in parts (`bucket_text` joins them): its row texts (`render`: the REAL columns
    marked, the JSON columns left out), newline-joined, in key order; then, if the table has REAL
    columns, a blank line and each one's block (range_hash.real_block: the doubles of the whole column
    at once) joined by ROW_SEPARATOR; then, if it has JSON columns, a blank line and the rows' JSON lines
    (hrp_data.verify.json_runs). PostgreSQL spells the same (verify.run._bucket_text)."""
    parts = ["\n".join(map(render, rows))]
    if real_at:
        parts += ["\n\n", ROW_SEPARATOR.join(real_block(list(map(itemgetter(i), rows))) for i in real_at)]
    if json_at:
        parts += ["\n\n", json_lines([list(map(itemgetter(i), rows)) for i in json_at])]
    return parts


def bucket_text(rows: list[tuple], render: Callable[[tuple], str], real_at: tuple[int, ...],
                json_at: tuple[int, ...]) -> str:
    """A bucket's text (`bucket_parts`)."""
    return "".join(bucket_parts(rows, render, real_at, json_at))


def bucket_digest(rows: list[tuple], render: Callable[[tuple], str], real_at: tuple[int, ...],
                  json_at: tuple[int, ...]) -> str:
    """The md5 of `bucket_text`, fed its parts one by one (UTF-8 spells a text as its parts spelled one
    after the other): the bucket's text is never copied whole."""
    digest = hashlib.md5()
    for part in bucket_parts(rows, render, real_at, json_at):
        digest.update(part.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def hash_buckets(connection: sqlite3.Connection, plan: RangePlan, first: int, last: int) -> BucketHashes:
    """Row count and md5 of the bucket text of each of buckets first..last; an empty bucket has no
    entry. A bucket is one query."""
    json_at, real_at = json_positions(plan.kinds), real_positions(plan.kinds)
    render = _renderers.get(plan.kinds)
    if render is None:
        render = _renderers[plan.kinds] = fast_row_renderer(list(plan.kinds), apart=json_at, marked=real_at)
    sql = _range_query(plan)
    out: BucketHashes = {}
    for bucket in range(first, last + 1):
        rows = _rows(connection, sql, plan.key_bounds(bucket, bucket))
        if rows:
            out[bucket] = len(rows), bucket_digest(rows, render, real_at, json_at)
    return out


_renderers: dict[tuple, Any] = {}
_worker: dict[str, Any] = {}


def _start_worker(path: str, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    os.nice(WORKER_NICE)
    _worker["connection"] = legacy_rows.connect(Path(path))
    gc.freeze()  # a task's rows are garbage by reference counts: no collection walks them (as read_pool's)
    gc.disable()


def _hash_in_worker(plan: RangePlan, first: int, last: int) -> BucketHashes:
    gc.collect()
    return hash_buckets(_worker["connection"], plan, first, last)


class RangeHasher:
    """Range hashes of one legacy file, in worker processes; `close()` ends them."""

    def __init__(self, path: Path, workers: int | None = None, min_rows: int = POOL_MIN_ROWS):
        self.path = path
        self.workers = default_workers() if workers is None else workers
        self.min_rows = min_rows
        self._pool: ProcessPoolExecutor | None = None
        self._connection: sqlite3.Connection | None = None

    def __enter__(self) -> "RangeHasher":
        if self.workers > 0 and self.path.stat().st_size >= PRESTART_BYTES:
            self._start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=worker_context(),
                initializer=_start_worker, initargs=(str(self.path), os.getpid()),
            )
            for _ in range(self.workers):  # the pool starts a process per task: all of them now
                self._pool.submit(os.getpid)
        return self._pool

    def submit(self, plan: RangePlan, buckets: int, rows: int) -> list[tuple[int, Future]]:
        """Start hashing buckets 0..buckets-1; returns (rows expected, future) per task, in key order."""
        if self.workers > 0 and rows >= self.min_rows:
            pool = self._start()
            tasks = []
            for first in range(0, buckets, TASK_BUCKETS):
                last = min(first + TASK_BUCKETS, buckets) - 1
                share = rows * (last - first + 1) // buckets
                tasks.append((share, pool.submit(_hash_in_worker, plan, first, last)))
            return tasks
        if self._connection is None:
            self._connection = legacy_rows.connect(self.path)
        done: Future = Future()
        done.set_result(hash_buckets(self._connection, plan, 0, buckets - 1))
        return [(rows, done)]
