"""hrp_data.verify.ranges: the range hashers are forked from the backfill's fork server and hash as the
calling process does (a SQLite file, no PostgreSQL)."""

from __future__ import annotations

import sqlite3

import psutil

from adapters.convert import Kind
from hrp_data.verify.ranges import RangeHasher, RangePlan


def forked_workers() -> list[psutil.Process]:
    """The children of this process's fork server (hrp_data.backfill.read_pool.worker_context)."""
    servers = [p for p in psutil.Process().children() if "multiprocessing.forkserver" in " ".join(p.cmdline())]
    return [worker for server in servers for worker in server.children()]


def test_range_hashers_are_forked_from_the_fork_server_and_hash_as_the_calling_process(tmp_path):
    path = tmp_path / "legacy.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, doc TEXT, score REAL)")
    connection.executemany("INSERT INTO t VALUES (?, ?, ?, ?)",
                           [(i, f"n{i}", '{"b": %d, "a": "x"}' % i if i % 7 else None, i / 3) for i in range(1, 501)])
    connection.commit()
    connection.close()
    plan = RangePlan("t", 1, 50, ("id", "name", "doc", "score"), (Kind.INTEGER, Kind.TEXT, Kind.JSON, Kind.REAL),
                     ("id",), "t")
    with RangeHasher(path, workers=0) as inline:
        expected = inline.submit(plan, 10, 500)[0][1].result()
    with RangeHasher(path, workers=2, min_rows=0) as hasher:
        tasks = hasher.submit(plan, 10, 500)
        assert len(forked_workers()) == 2
        hashed = {}
        for _, future in tasks:
            hashed.update(future.result())
    assert hashed == expected and len(expected) == 10
    assert not forked_workers()
