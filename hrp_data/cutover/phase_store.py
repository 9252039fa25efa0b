"""The phase record: where every process of the app reads the current phase.

It lives in the SQLite file, which all workers share (table hrp_cutover_phase,
one row with a version), with every change kept in hrp_cutover_phase_audit.
A change is a compare-and-set on the version, so two operators flipping at
once cannot both win. Readers cache the phase for at most CACHE_SECONDS, so a
change is noticed within a second without a restart; writers re-read it inside
their transaction (see hrp_data.cutover.dual_write).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime as dt
import getpass
import os
import socket
import threading
import time

import sqlalchemy as sa

from hrp_data.cutover.phases import PHASES, Phase, PhaseRow

CACHE_SECONDS = 0.5
PHASE_TABLE = "hrp_cutover_phase"
AUDIT_TABLE = "hrp_cutover_phase_audit"

DDL = [
    f"""CREATE TABLE IF NOT EXISTS {PHASE_TABLE} (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        phase TEXT NOT NULL,
        version INTEGER NOT NULL,
        changed_at TEXT NOT NULL,
        changed_by TEXT NOT NULL)""",
    f"""CREATE TABLE IF NOT EXISTS {AUDIT_TABLE} (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        from_phase TEXT,
        to_phase TEXT NOT NULL,
        version INTEGER NOT NULL,
        at TEXT NOT NULL,
        by TEXT NOT NULL,
        hold_ms REAL,
        forced INTEGER NOT NULL DEFAULT 0,
        skipped TEXT)""",
]


class PhaseConflict(RuntimeError):
    """Somebody else changed the phase first."""


@dataclasses.dataclass(frozen=True)
class PhaseRecord:
    phase: Phase
    version: int
    changed_at: str
    changed_by: str


_web_user: contextvars.ContextVar[str | None] = contextvars.ContextVar("hrp_cutover_web_user", default=None)


@contextlib.contextmanager
def acting_for(web_user: str):
    """Changes made inside are recorded as made by `web_user` (a dashboard user), through this process."""
    token = _web_user.set(web_user)
    try:
        yield
    finally:
        _web_user.reset(token)


def operator() -> str:
    """Who is making a change: user@host (pid), after the dashboard user it acts for, if any."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    process = f"{user}@{socket.gethostname()} pid {os.getpid()}"
    web_user = _web_user.get()
    return process if web_user is None else f"{web_user} via {process}"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def install(sqlite_engine: sa.Engine, initial: Phase) -> None:
    """Create the phase record and its audit in the SQLite file, seeded with `initial` the first time."""
    with sqlite_engine.execution_options(sqlite_begin="IMMEDIATE").begin() as connection:
        for statement in DDL:
            connection.exec_driver_sql(statement)
        if PhaseStore.read(connection) is None:
            connection.exec_driver_sql(
                f"INSERT INTO {PHASE_TABLE} (id, phase, version, changed_at, changed_by)"
                " VALUES (1, ?, 1, ?, ?)",
                (initial.value, _now(), operator()),
            )
            PhaseStore._audit(connection, None, initial, 1, None, False, None)


class PhaseStore:
    """Reads and changes the phase record in the SQLite file (created by `install`)."""

    def __init__(self, sqlite_engine: sa.Engine):
        self.engine = sqlite_engine
        self._cached: tuple[float, PhaseRecord] | None = None
        self._lock = threading.Lock()

    @staticmethod
    def read(connection: sa.Connection) -> PhaseRecord | None:
        """The record as this connection's transaction sees it."""
        row = connection.exec_driver_sql(
            f"SELECT phase, version, changed_at, changed_by FROM {PHASE_TABLE} WHERE id = 1"
        ).first()
        return None if row is None else PhaseRecord(Phase(row[0]), row[1], row[2], row[3])

    def current(self, *, fresh: bool = False) -> PhaseRecord:
        """The record, at most CACHE_SECONDS old (or read now when `fresh`).

        A record's age counts from when its read began (a read that began before a move's commit
        sees the old phase, however late it ends), and a read never replaces a later one's record."""
        with self._lock:
            if not fresh and self._cached and time.monotonic() - self._cached[0] < CACHE_SECONDS:
                return self._cached[1]
        started = time.monotonic()
        with self.engine.connect() as connection:
            record = self.read(connection)
            connection.rollback()
        with self._lock:
            if not self._cached or self._cached[0] <= started:
                self._cached = (started, record)
        return record

    def row(self, *, fresh: bool = False) -> PhaseRow:
        """The phase table's row of the current phase (what each part of the process follows)."""
        return PHASES[self.current(fresh=fresh).phase]

    def compare_and_set(
        self,
        connection: sa.Connection,
        expected: PhaseRecord,
        target: Phase,
        *,
        hold_ms: float | None = None,
        forced: bool = False,
        skipped: str | None = None,
    ) -> PhaseRecord:
        """Inside the caller's write transaction: move to `target` if still at `expected`."""
        changed_at, by = _now(), operator()
        result = connection.exec_driver_sql(
            f"UPDATE {PHASE_TABLE} SET phase = ?, version = version + 1, changed_at = ?,"
            " changed_by = ? WHERE id = 1 AND version = ?",
            (target.value, changed_at, by, expected.version),
        )
        if result.rowcount != 1:
            now = self.read(connection)
            raise PhaseConflict(
                f"the phase changed meanwhile (now {now.phase.value}, version {now.version});"
                " re-run the command to act on the current phase"
            )
        self._audit(connection, expected.phase, target, expected.version + 1, hold_ms, forced, skipped)
        with self._lock:
            self._cached = None
        return PhaseRecord(target, expected.version + 1, changed_at, by)

    @staticmethod
    def _audit(connection, from_phase, to_phase, version, hold_ms, forced, skipped) -> None:
        connection.exec_driver_sql(
            f"INSERT INTO {AUDIT_TABLE} (from_phase, to_phase, version, at, by, hold_ms, forced, skipped)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                from_phase.value if from_phase else None,
                to_phase.value,
                version,
                _now(),
                operator(),
                hold_ms,
                1 if forced else 0,
                skipped,
            ),
        )

    def history(self, limit: int = 20) -> list[dict]:
        with self.engine.connect() as connection:
            rows = connection.exec_driver_sql(
                f"SELECT from_phase, to_phase, version, at, by, hold_ms, forced, skipped"
                f" FROM {AUDIT_TABLE} ORDER BY id DESC LIMIT ?",
                (limit,),
            ).mappings().all()
        return [dict(row) for row in rows]
