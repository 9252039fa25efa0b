"""The move journal: a move that spans both databases, recorded so a crash can be finished.

A move commits in two databases, which no transaction spans. The journal row
(hrp_cutover_move in the SQLite file, where the phase lives) says a move is
under way and how far it got; docs/architecture.md has the protocol and what a
crash at each step leaves. Whoever finds the row while no mover holds the
phase lock (every command, every process's applier, `status`) finishes it:

- state `started`: the phase did not change. The triggers of both databases
  are set back to what the phase says, and the move counts as failed: the
  last verify and the backfill's "complete" no longer vouch for anything.
- state `committed`: the phase changed. The triggers are set to what the new
  phase says, and the old primary's outbox entries that the move already
  carried (seq <= `through`, recorded in the same commit as the phase) are
  deleted.

Both are idempotent, so a crash while finishing is finished by the next one.
"""

from __future__ import annotations

import dataclasses
import time

import sqlalchemy as sa
import structlog

from adapters.binds import reading, writing
from adapters.catalog import Catalog
from adapters.outbox import outbox
from adapters.postgres import call_timeout
from hrp_data.cutover import outbox as outbox_store
from hrp_data.cutover.apply import PHASE_LOCK
from hrp_data.errors import describe_error
from hrp_data.cutover.phase_store import PhaseStore, operator
from hrp_data.cutover.phases import PHASES, POSTGRES, SQLITE, Phase

log = structlog.get_logger(__name__)

MOVE_TABLE = "hrp_cutover_move"
EVIDENCE_TABLE = "hrp_cutover_evidence_reset"
DDL_LOCK_TIMEOUT = "3s"
"""How long a move's trigger change waits for an open writer; below the client's call bound, so the
server gives up first and no lock request stays queued in front of readers."""
FINISH_LOCK_WAIT = "2s"

DDL = [
    f"""CREATE TABLE IF NOT EXISTS {MOVE_TABLE} (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        from_phase TEXT NOT NULL,
        to_phase TEXT NOT NULL,
        state TEXT NOT NULL,
        through INTEGER,
        started_at REAL NOT NULL,
        by TEXT NOT NULL)""",
    f"""CREATE TABLE IF NOT EXISTS {EVIDENCE_TABLE} (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        reason TEXT NOT NULL)""",
]


class MoveInProgress(RuntimeError):
    """Another move holds the phase lock, or an interrupted move could not be finished yet."""


@dataclasses.dataclass(frozen=True)
class Marker:
    from_phase: Phase
    to_phase: Phase
    state: str
    through: int | None
    started_at: float
    by: str

    def describe(self) -> str:
        age = time.time() - self.started_at
        return (
            f"move {self.from_phase.value} -> {self.to_phase.value} {self.state}"
            f" {age:.0f} s ago by {self.by}"
        )


def install(connection: sa.Connection) -> None:
    for statement in DDL:
        connection.exec_driver_sql(statement)


def read(connection: sa.Connection) -> Marker | None:
    if not sa.inspect(connection).has_table(MOVE_TABLE):
        return None
    row = connection.exec_driver_sql(
        f"SELECT from_phase, to_phase, state, through, started_at, by FROM {MOVE_TABLE} WHERE id = 1"
    ).first()
    if row is None:
        return None
    return Marker(Phase(row[0]), Phase(row[1]), row[2], row[3], row[4], row[5])


def current(sqlite: sa.Engine) -> Marker | None:
    with reading(sqlite) as connection:
        return read(connection)


def begin(sqlite: sa.Engine, from_phase: Phase, to_phase: Phase) -> None:
    """Record that a move starts (committed before either database changes anything)."""
    with writing(sqlite) as connection:
        install(connection)
        found = read(connection)
        if found is not None:
            raise MoveInProgress(f"an unfinished {found.describe()}: run `hrp-cutover recover` first")
        connection.exec_driver_sql(
            f"INSERT INTO {MOVE_TABLE} (id, from_phase, to_phase, state, through, started_at, by)"
            " VALUES (1, ?, ?, 'started', NULL, ?, ?)",
            (from_phase.value, to_phase.value, time.time(), operator()),
        )


def mark_committed(held_sqlite: sa.Connection, through: int | None) -> None:
    """Inside the transaction that changes the phase: the move is past its point of no return."""
    held_sqlite.exec_driver_sql(
        f"UPDATE {MOVE_TABLE} SET state = 'committed', through = ? WHERE id = 1", (through,)
    )


def clear(sqlite: sa.Engine) -> None:
    with writing(sqlite) as connection:
        connection.exec_driver_sql(f"DELETE FROM {MOVE_TABLE}")


def reset_evidence(connection: sa.Connection, reason: str) -> None:
    """The last verify and the backfill's "complete" no longer vouch for the secondary."""
    install(connection)
    connection.exec_driver_sql(
        f"INSERT INTO {EVIDENCE_TABLE} (at, reason) VALUES (?, ?)", (time.time(), reason)
    )


def evidence_reset(sqlite: sa.Engine) -> tuple[float, str] | None:
    """When evidence was last invalidated, and why (None: never)."""
    with reading(sqlite) as connection:
        if not sa.inspect(connection).has_table(EVIDENCE_TABLE):
            return None
        row = connection.exec_driver_sql(
            f"SELECT at, reason FROM {EVIDENCE_TABLE} ORDER BY id DESC LIMIT 1"
        ).first()
    return None if row is None else (row[0], row[1])


def stops_capture(from_phase: Phase, to_phase: Phase) -> bool:
    """A move after which some database no longer receives the other's changes."""
    return PHASES[from_phase].secondary is not None and PHASES[to_phase].secondary is None


def delete_carried(postgres: sa.Connection, through: int) -> None:
    """Delete the old primary's outbox entries a committed move carried to the new primary."""
    postgres.execute(sa.delete(outbox).where(outbox.c.seq <= through))


def set_postgres_triggers(postgres: sa.Engine, phase: Phase, catalog: Catalog, *, also: Phase | None = None) -> None:
    """PostgreSQL's triggers as `phase` wants them (with `also`: the union of both phases' wants)."""
    wanted = PHASES[phase].triggers_on(POSTGRES)
    if also is not None:
        wanted = wanted.union(PHASES[also].triggers_on(POSTGRES))
    with writing(postgres) as connection:
        connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'")
        outbox_store.set_triggers(connection, wanted, catalog)


def finish(
    sqlite: sa.Engine, postgres: sa.Engine | None, phases: PhaseStore, catalog: Catalog, *, wait: bool = True
) -> Marker | None:
    """Finish an interrupted move if there is one and no mover is alive; return what was finished.

    Raises MoveInProgress when a live mover holds the phase lock (with `wait`, after
    FINISH_LOCK_WAIT), or when PostgreSQL is needed and does not answer.
    """
    marker = current(sqlite)
    if marker is None:
        return None
    if postgres is None or marker.to_phase is Phase.SQLITE_ONLY:
        _finish_sqlite_side(sqlite, phases, marker, catalog)
        return marker
    try:
        with call_timeout(10.0), postgres.connect() as lock:  # the lock is this transaction's: it ends with it
            lock.exec_driver_sql(f"SET LOCAL lock_timeout = '{FINISH_LOCK_WAIT if wait else '1ms'}'")
            got = lock.execute(sa.select(sa.func.pg_try_advisory_xact_lock(PHASE_LOCK))).scalar()
            if not got and wait:
                lock.execute(sa.select(sa.func.pg_advisory_xact_lock(PHASE_LOCK)))
                got = True
            if not got:
                raise MoveInProgress(f"{marker.describe()} and its mover still holds the phase lock")
            try:
                again = current(sqlite)
                if again is not None:
                    _finish_both(sqlite, postgres, phases, again, catalog)
            finally:
                lock.rollback()
    except sa.exc.OperationalError as error:
        if "lock timeout" in str(error) or "LockNotAvailable" in type(getattr(error, "orig", error)).__name__:
            raise MoveInProgress(f"{marker.describe()} and its mover still holds the phase lock") from None
        raise MoveInProgress(
            f"{marker.describe()}; finishing it needs PostgreSQL, which does not answer:"
            f" {describe_error(error)}"
        ) from None
    return marker


def _finish_both(sqlite: sa.Engine, postgres: sa.Engine, phases: PhaseStore, marker: Marker, catalog: Catalog) -> None:
    phase = phases.current(fresh=True).phase
    if marker.state == "committed" and marker.through is not None:
        with writing(postgres) as connection:
            delete_carried(connection, marker.through)
    if phase is not Phase.SQLITE_ONLY:
        set_postgres_triggers(postgres, phase, catalog)
    _finish_sqlite_side(sqlite, phases, marker, catalog)


def _finish_sqlite_side(sqlite: sa.Engine, phases: PhaseStore, marker: Marker, catalog: Catalog) -> None:
    with writing(sqlite) as connection:
        phase = PhaseStore.read(connection).phase
        outbox_store.set_triggers(connection, PHASES[phase].triggers_on(SQLITE), catalog)
        if marker.state == "started":
            reset_evidence(connection, f"a move {marker.from_phase.value} -> {marker.to_phase.value} failed")
        connection.exec_driver_sql(f"DELETE FROM {MOVE_TABLE}")
    log.warning("move.finished_interrupted", move=marker.describe(), phase=phase.value)
