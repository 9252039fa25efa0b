"""Each app process's applier state, kept in the SQLite file so `status` and the dashboard see all workers."""

from __future__ import annotations

import os
import socket
import time

import sqlalchemy as sa

from adapters.binds import reading, writing

WORKERS_TABLE = "hrp_cutover_workers"
FRESH_S = 15.0
DDL = f"""CREATE TABLE IF NOT EXISTS {WORKERS_TABLE} (
    worker TEXT PRIMARY KEY,
    breaker TEXT NOT NULL,
    applied INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    lag_p50_s REAL,
    lag_p99_s REAL,
    updated_at REAL NOT NULL)"""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def install(engine: sa.Engine) -> None:
    with writing(engine) as connection:
        connection.exec_driver_sql(DDL)


def beat(engine: sa.Engine, *, breaker: str, applied: int, failed: int, lag: dict) -> None:
    """Record this process's applier state (and forget workers silent for a long time)."""
    now = time.time()
    with writing(engine) as connection:
        connection.exec_driver_sql(
            f"INSERT OR REPLACE INTO {WORKERS_TABLE}"
            " (worker, breaker, applied, failed, lag_p50_s, lag_p99_s, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (worker_name(), breaker, applied, failed, lag.get("p50"), lag.get("p99"), now),
        )
        connection.exec_driver_sql(f"DELETE FROM {WORKERS_TABLE} WHERE updated_at < ?", (now - 3600,))


def workers(engine: sa.Engine) -> list[dict]:
    """Workers that reported within FRESH_S seconds."""
    with reading(engine) as connection:
        rows = connection.exec_driver_sql(
            f"SELECT worker, breaker, applied, failed, lag_p50_s, lag_p99_s, updated_at"
            f" FROM {WORKERS_TABLE} WHERE updated_at >= ? ORDER BY worker",
            (time.time() - FRESH_S,),
        ).mappings().all()
    return [dict(row) for row in rows]
