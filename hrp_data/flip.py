"""Phase changes without downtime: hold writes briefly, drain, switch, release.

A move (flip, rollback, or any allowed step) runs:
1. pre-drain: apply the outbox to the secondary while writes go on;
2. hold: take the phase advisory lock exclusive in PostgreSQL (writers on
   PostgreSQL and every applier wait), then SQLite's write lock (writers on
   SQLite wait: BEGIN IMMEDIATE with a busy timeout). Locks are always taken
   PostgreSQL first, then SQLite, by everyone, so nothing deadlocks;
3. drain what is left, inside the hold, until the outbox is empty;
4. when the primary changes: set the new primary's ids past the largest id
   and past every id the old primary has handed out, deleted rows' included
   (PostgreSQL identities, or SQLite's sqlite_sequence: AUTOINCREMENT never
   gives an id twice, and neither may the other database after a move);
5. move change capture (the outbox triggers) to the new primary;
6. compare-and-set the phase record and write the audit row, in the same
   SQLite transaction that holds the writers;
7. release. Held writers re-read the phase and go to the new primary.
Writes are held, never failed; the hold time is measured and returned.
"""

from __future__ import annotations

import dataclasses
import time

import sqlalchemy as sa
import structlog

from adapters import postgres as postgres_adapter
from adapters import sqlite as sqlite_adapter
from adapters.binds import Bind, writing
from adapters.postgres import call_timeout
from hrp_data import outbox
from hrp_data.applier import drain_once
from hrp_data.apply import PHASE_LOCK, apply_keys
from hrp_data.dual_write import Cutover
from hrp_data.models import TABLES
from hrp_data.phase_store import PhaseConflict, PhaseStore
from hrp_data.phases import PHASES, POSTGRES, SQLITE, Phase, check_move

log = structlog.get_logger(__name__)

PRE_DRAIN_S = 30.0
HOLD_DRAIN_TARGET = 50
"""Pre-drain until at most this many changes wait; the rest are drained inside the hold."""
LOCK_TIMEOUT = "10s"
LOCK_WAIT_S = 15.0
TABLE_MAP = outbox.CAPTURED_MAP


class DrainFailed(RuntimeError):
    """The outbox could not be emptied inside the hold; the phase did not change."""


@dataclasses.dataclass(frozen=True)
class MoveResult:
    from_phase: Phase
    to_phase: Phase
    version: int
    hold_ms: float
    drained: int
    forced: bool


def _drain_all(primary: Bind, secondary: Bind) -> int:
    """Apply every outbox change (inside the hold); raise DrainFailed if one does not apply."""
    drained = 0
    while pending := outbox.due(primary, ignore_backoff=True):
        result = apply_keys(
            [item.ref for item in pending], tables=TABLE_MAP, primary=primary, secondary=secondary
        )
        by_ref = {item.ref: item for item in pending}
        failed = {by_ref[ref]: error for ref, error in result.failed.items()}
        outbox.settle(primary, [by_ref[ref] for ref in result.applied], failed)
        drained += len(result.applied)
        if failed:
            item, error = next(iter(failed.items()))
            raise DrainFailed(
                f"{len(failed)} outbox change(s) do not apply to the secondary"
                f" (first: {item.ref.table} {list(item.ref.key)}: {error});"
                " fix them (hrp-cutover status shows the errors) and move again"
            )
    return drained


def _pre_drain(cutover: Cutover, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        route = cutover.route()
        if route is None or outbox.depth(route.primary).pending <= HOLD_DRAIN_TARGET:
            return
        applied, failed = drain_once(
            route, cutover.applier.breaker, cutover.applier.counters, ignore_backoff=True
        )
        if applied == 0 and failed:
            return


def _move_capture(held_sqlite: sa.Connection, postgres: sa.Connection | None, target: Phase) -> None:
    """Triggers on the new primary if it has a secondary; none anywhere else."""
    row = PHASES[target]
    if row.captures and row.primary == SQLITE:
        outbox.install_triggers(held_sqlite)
    else:
        outbox.drop_triggers(held_sqlite)
    if postgres is not None:
        if row.captures and row.primary == POSTGRES:
            outbox.install_triggers(postgres)
        else:
            outbox.drop_triggers(postgres)


def move(
    cutover: Cutover,
    target: Phase,
    *,
    forced: bool = False,
    skipped: str | None = None,
    pre_drain_s: float = PRE_DRAIN_S,
) -> MoveResult:
    """Change the phase to `target` (an allowed move) without losing or failing writes."""
    record = cutover.phase(fresh=True)
    check_move(record.phase, target)
    source, destination = PHASES[record.phase], PHASES[target]
    abandon_postgres = target is Phase.SQLITE_ONLY
    postgres = None if abandon_postgres else cutover.engine(POSTGRES)
    if postgres is not None:
        outbox.install_tables(postgres)
        if source.secondary is not None:
            _pre_drain(cutover, pre_drain_s)
    lock = postgres.connect() if postgres is not None else None
    locked = False
    try:
        if lock is not None:
            lock.exec_driver_sql(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
            with call_timeout(LOCK_WAIT_S):
                lock.execute(sa.select(sa.func.pg_advisory_lock(PHASE_LOCK)))
            lock.commit()
            locked = True
        started = time.monotonic()
        with writing(cutover.sqlite) as held:
            now = PhaseStore.read(held)
            if now.version != record.version:
                raise PhaseConflict(
                    f"the phase changed meanwhile (now {now.phase.value}, version {now.version});"
                    " re-run the command to act on the current phase"
                )
            drained = 0
            if abandon_postgres:
                held.execute(sa.delete(outbox.outbox))
            elif source.secondary is not None:
                primary_bind = held if source.primary == SQLITE else postgres
                secondary_bind = postgres if source.primary == SQLITE else held
                drained = _drain_all(primary_bind, secondary_bind)
            issued_by_postgres: dict[str, int] = {}
            if postgres is not None:
                with writing(postgres) as pg:
                    if destination.primary == POSTGRES and source.primary != POSTGRES:
                        for table in TABLES:
                            if table.autoincrement_column is not None:
                                postgres_adapter.bump_identity(
                                    pg, table, at_least=sqlite_adapter.issued_id(held, table)
                                )
                    if destination.primary == SQLITE and source.primary != SQLITE:
                        issued_by_postgres = {
                            t.name: postgres_adapter.issued_id(pg, t) for t in TABLES if t.autoincrement_column is not None
                        }
                    _move_capture(held, pg, target)
            else:
                _move_capture(held, None, target)
            if destination.primary == SQLITE and source.primary != SQLITE:
                for table in TABLES:
                    if table.autoincrement_column is not None:
                        sqlite_adapter.bump_autoincrement(held, table, at_least=issued_by_postgres.get(table.name, 0))
            hold_ms = (time.monotonic() - started) * 1000
            new = cutover.phases.compare_and_set(
                held, record, target, hold_ms=hold_ms, forced=forced, skipped=skipped
            )
    finally:
        if locked:
            lock.execute(sa.select(sa.func.pg_advisory_unlock(PHASE_LOCK)))
            lock.commit()
        if lock is not None:
            lock.close()
    hold_ms = (time.monotonic() - started) * 1000
    log.info(
        "phase.changed",
        from_phase=record.phase.value,
        to_phase=target.value,
        version=new.version,
        hold_ms=round(hold_ms, 1),
        drained=drained,
        forced=forced,
    )
    cutover.applier.notify()
    return MoveResult(record.phase, target, new.version, hold_ms, drained, forced)
