"""A verify's progress, kept in the SQLite file so that other processes (/metrics, the dashboard) see it.

One row per verify in hrp_cutover_verify_progress: when it started, the
tables and rows it compares, how far it got, and how it ended (`finished`
with whether both sides were equal, or `failed`). The verifier writes the
row when it starts, once its tables are counted, after each table, and in
between at most once per WRITE_EVERY_S. A row left `running` that has not
moved for STALE_S (its process was killed) is reported `interrupted`.
Rows done are the rows of the tables compared plus the share of the current
table already hashed on both sides; a table's rows are the larger of its two
counts. Writing the progress never fails a verify: a write the SQLite file
refuses is logged and skipped.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
import structlog

from adapters.binds import reading, writing

log = structlog.get_logger(__name__)

PROGRESS_TABLE = "hrp_cutover_verify_progress"
WRITE_EVERY_S = 1.0
STALE_S = 300.0
"""Longer than a verify statement's bound (hrp_data.verify.run.STATEMENT_BOUND_S) twice over."""
KEEP = 20
IN_TABLE_MAX = 0.99
"""A table's share while it is compared: 1 only once it is (its differences confirmed)."""

DDL = f"""CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL,
    state TEXT NOT NULL,
    full INTEGER NOT NULL,
    tables_total INTEGER NOT NULL,
    tables_done INTEGER NOT NULL DEFAULT 0,
    rows_total INTEGER NOT NULL DEFAULT 0,
    rows_done INTEGER NOT NULL DEFAULT 0,
    current_table TEXT,
    equal INTEGER,
    process TEXT)"""


class Tracker:
    """Records one verify's progress; its `step` is a verify progress callback (table, stage, done, total)."""

    def __init__(self, engine: sa.Engine, tables: Sequence[str], *, full: bool,
                 clock: Callable[[], float] = time.time):
        self.engine = engine
        self.tables = list(tables)
        self.full = full
        self.clock = clock
        self.rows: dict[str, int] = {}
        self.done: set[str] = set()
        self.current: str | None = None
        self.share = 0.0
        self.id: int | None = None
        self.written = 0.0

    def start(self) -> None:
        now = self.clock()
        process = f"{socket.gethostname()}:{os.getpid()}"
        try:
            with writing(self.engine) as connection:
                connection.exec_driver_sql(DDL)
                self.id = connection.exec_driver_sql(
                    f"INSERT INTO {PROGRESS_TABLE} (started_at, updated_at, state, full, tables_total, process)"
                    " VALUES (?, ?, 'running', ?, ?, ?)",
                    (now, now, 1 if self.full else 0, len(self.tables), process),
                ).lastrowid
                connection.exec_driver_sql(
                    f"DELETE FROM {PROGRESS_TABLE} WHERE id NOT IN"
                    f" (SELECT id FROM {PROGRESS_TABLE} ORDER BY id DESC LIMIT {KEEP})"
                )
        except sa.exc.SQLAlchemyError as error:
            log.warning("verify.progress_not_recorded", error=type(error).__name__)
        self.written = now

    def counted(self, rows: Mapping[str, int]) -> None:
        """The rows of each table to compare (known once the tables are planned)."""
        self.rows = {name: max(0, rows.get(name, 0)) for name in self.tables}
        self._write()

    def step(self, table: str, stage: str, done: int, total: int) -> None:
        if table != self.current:
            self.current, self.share = table, 0.0
        if stage == "hashing" and total > 0:
            self.share = min(done / total, IN_TABLE_MAX)
        if self.clock() - self.written >= WRITE_EVERY_S:
            self._write()

    def table_done(self, table: str) -> None:
        self.done.add(table)
        self.current, self.share = None, 0.0
        self._write()

    def finish(self, *, equal: bool) -> None:
        self._write(state="finished", equal=equal)

    def fail(self) -> None:
        self._write(state="failed")

    def _rows_done(self) -> int:
        done = sum(self.rows.get(name, 0) for name in self.done)
        if self.current is not None:
            done += int(self.rows.get(self.current, 0) * self.share)
        return done

    def _write(self, *, state: str = "running", equal: bool | None = None) -> None:
        if self.id is None:
            return
        now = self.clock()
        try:
            with writing(self.engine) as connection:
                connection.exec_driver_sql(
                    f"UPDATE {PROGRESS_TABLE} SET updated_at = ?, state = ?, tables_done = ?, rows_total = ?,"
                    " rows_done = ?, current_table = ?, equal = ?, finished_at = ? WHERE id = ?",
                    (now, state, len(self.done), sum(self.rows.values()), self._rows_done(), self.current,
                     None if equal is None else int(equal), None if state == "running" else now, self.id),
                )
        except sa.exc.SQLAlchemyError as error:
            log.warning("verify.progress_not_recorded", error=type(error).__name__)
        self.written = now


def latest(engine: sa.Engine, *, now: float | None = None) -> dict[str, Any] | None:
    """The newest verify's progress, None when no verify recorded any:

    {"state": "running" | "finished" | "failed" | "interrupted", "running": bool, "full": bool,
     "started_at", "updated_at", "finished_at" (epoch seconds or None), "tables_total",
     "tables_done", "rows_total", "rows_done", "ratio" (0..1), "current_table", "equal" (None
     until finished)}
    """
    with reading(engine) as connection:
        if not sa.inspect(connection).has_table(PROGRESS_TABLE):
            return None
        row = connection.exec_driver_sql(
            f"SELECT started_at, updated_at, finished_at, state, full, tables_total, tables_done, rows_total,"
            f" rows_done, current_table, equal FROM {PROGRESS_TABLE} ORDER BY id DESC LIMIT 1"
        ).mappings().first()
    if row is None:
        return None
    out = dict(row)
    now = time.time() if now is None else now
    if out["state"] == "running" and now - out["updated_at"] > STALE_S:
        out["state"] = "interrupted"
    out["running"] = out["state"] == "running"
    out["full"] = bool(out["full"])
    out["equal"] = None if out["equal"] is None else bool(out["equal"])
    out["ratio"] = ratio(out)
    return out


def ratio(progress: Mapping[str, Any]) -> float:
    """The share of the verify done: 1.0 once finished; rows done over rows to compare (tables
    compared over tables while no table has rows)."""
    if progress["state"] == "finished":
        return 1.0
    if progress["rows_total"] > 0:
        return min(progress["rows_done"] / progress["rows_total"], 1.0)
    if progress["tables_total"] > 0:
        return progress["tables_done"] / progress["tables_total"]
    return 0.0
