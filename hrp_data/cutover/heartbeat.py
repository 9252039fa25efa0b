"""Each app process's applier state, kept in the SQLite file so `status` and the dashboard see all workers.

Every worker reports, every couple of seconds, its circuit breaker, what it
applied, its lag and the phase it sees; after a phase change the dashboard
shows each worker's phase catching up (within a second).
"""

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
    updated_at REAL NOT NULL,
    phase TEXT)"""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def install(engine: sa.Engine) -> None:
    with writing(engine) as connection:
        connection.exec_driver_sql(DDL)
        columns = {row[1] for row in connection.exec_driver_sql(f"PRAGMA table_info({WORKERS_TABLE})")}
        if "phase" not in columns:  # a file from before workers reported their phase
            connection.exec_driver_sql(f"ALTER TABLE {WORKERS_TABLE} ADD COLUMN phase TEXT")


def beat(engine: sa.Engine, *, breaker: str, applied: int, failed: int, lag: dict, phase: str | None = None) -> None:
    """Record this process's applier state (and forget workers silent for a long time)."""
    now = time.time()
    with writing(engine) as connection:
        connection.exec_driver_sql(
            f"INSERT OR REPLACE INTO {WORKERS_TABLE}"
            " (worker, breaker, applied, failed, lag_p50_s, lag_p99_s, updated_at, phase)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (worker_name(), breaker, applied, failed, lag.get("p50"), lag.get("p99"), now, phase),
        )
        connection.exec_driver_sql(f"DELETE FROM {WORKERS_TABLE} WHERE updated_at < ?", (now - 3600,))


def workers(engine: sa.Engine) -> list[dict]:
    """Workers that reported within FRESH_S seconds."""
    with reading(engine) as connection:
        rows = connection.exec_driver_sql(
            f"SELECT worker, phase, breaker, applied, failed, lag_p50_s, lag_p99_s, updated_at"
            f" FROM {WORKERS_TABLE} WHERE updated_at >= ? ORDER BY worker",
            (time.time() - FRESH_S,),
        ).mappings().all()
    return [dict(row) for row in rows]
