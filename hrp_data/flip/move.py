"""Phase changes without downtime, all-or-nothing across both databases.

A move (flip, rollback, or any allowed step) follows the protocol written
down in docs/architecture.md ("The move protocol"):
0. finish any interrupted move (hrp_data.flip.journal);
1. pre-drain: apply the outbox to the secondary while writes go on;
2. take the phase advisory lock exclusive in PostgreSQL (writers on
   PostgreSQL and every applier wait), then record the move in the journal;
   the lock is transaction-scoped (a transaction of its own, open for the
   whole move), so it can never outlive the mover, behind a pooler or not;
3. PostgreSQL's triggers become the union of what the old and the new phase
   want (capture and guard added, nothing removed), committed: from here on
   no write from outside the layer can reach PostgreSQL uncaptured. Forward,
   the mover drains again (writers on SQLite do not wait for the phase lock,
   the appliers do, so the outbox grew since step 1), with the lock it holds;
4. hold: SQLite's write lock (writers on SQLite wait). Drain what is left.
   Forward (SQLite was primary): each change is committed in PostgreSQL and
   its outbox entry deleted inside the held SQLite transaction. Backward
   (PostgreSQL was primary): PostgreSQL's outbox is locked against inserts,
   every change is written into the held SQLite transaction, and nothing is
   deleted from PostgreSQL's outbox yet;
5. when the primary changes, set the new primary's ids past every id the old
   one handed out; SQLite's triggers become the new phase's; compare-and-set
   the phase, audit it and mark the journal committed with the outbox
   position carried: all in the held SQLite transaction, one commit;
6. after that commit: delete the carried outbox entries in PostgreSQL, set
   PostgreSQL's triggers to exactly the new phase's, clear the journal,
   release the lock.
A failure before step 5's commit leaves the old phase: SQLite rolls back,
PostgreSQL's triggers are set back, the journal is cleared, and the last
verify and backfill stop counting as evidence. A crash anywhere leaves the
journal row, and the next command or applier finishes it (step 6, or the
undo). Locks are always taken PostgreSQL first, then SQLite, by everyone, so
nothing deadlocks; trigger changes wait at most DDL_LOCK_TIMEOUT for open
writers and never block readers.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import sqlalchemy as sa
import structlog

from adapters import postgres as postgres_adapter
from adapters import sqlite as sqlite_adapter
from adapters.binds import Bind, writing
from adapters.catalog import Catalog
from adapters.postgres import call_timeout
from adapters.outbox import decode_key
from hrp_data.flip import journal as move_journal
from hrp_data.cutover import outbox
from hrp_data.cutover.applier import drain_once
from hrp_data.cutover.apply import PHASE_LOCK, KeyRef, apply_keys
from hrp_data.errors import describe_error
from hrp_data.cutover.dual_write import Cutover
from hrp_data.cutover.phase_store import PhaseConflict, PhaseStore
from hrp_data.cutover.phases import PHASES, POSTGRES, SQLITE, Phase, check_move

log = structlog.get_logger(__name__)

PRE_DRAIN_S = 30.0
HOLD_DRAIN_TARGET = 50
"""Pre-drain until at most this many changes wait; the rest are drained inside the hold."""
LOCK_TIMEOUT = "10s"
LOCK_WAIT_S = 15.0


FAULT_POINTS = (
    "journal_started", "postgres_triggers_added", "drained", "before_phase_commit",
    "phase_committed", "outbox_cleaned",
)
fault_at: Callable[[str], None] | None = None
"""Fault injection for the tests (tests/integration/test_move_faults.py): called at each of
FAULT_POINTS with the point's name; it may raise, kill the process or stop a server."""


def _at(point: str) -> None:
    if fault_at is not None:
        fault_at(point)


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


def _drain_all(primary: Bind, secondary: Bind, tables: dict[str, sa.Table]) -> int:
    """Forward: apply every outbox change inside the hold; raise DrainFailed if one does not apply.

    `primary` is the held SQLite transaction: the entries are deleted in it, so they are gone
    only if the phase change commits, and each change is already committed in PostgreSQL.
    """
    drained = 0
    while pending := outbox.due(primary, ignore_backoff=True):
        result = apply_keys(
            [item.ref for item in pending], tables=tables, primary=primary, secondary=secondary
        )
        by_ref = {item.ref: item for item in pending}
        failed = {by_ref[ref]: error for ref, error in result.failed.items()}
        outbox.settle(primary, [by_ref[ref] for ref in result.applied], {})
        drained += len(result.applied)
        if failed:
            _refuse(failed)
    return drained


def _drain_frozen(
    postgres: sa.Engine, frozen: sa.Connection, held_sqlite: sa.Connection, tables: dict[str, sa.Table]
) -> tuple[int, int | None]:
    """Backward: write every change of PostgreSQL's outbox into the held SQLite transaction.

    `frozen` holds PostgreSQL's outbox locked against inserts (the guard is on, so only a
    maintenance session could add one), so the entries read are all there are. Nothing is
    deleted here: the caller deletes entries up to the returned position only after the
    SQLite transaction has committed. Returns (keys carried, highest seq carried).
    """
    frozen.exec_driver_sql(f"SET LOCAL lock_timeout = '{move_journal.DDL_LOCK_TIMEOUT}'")
    frozen.exec_driver_sql(f"LOCK TABLE {outbox.OUTBOX} IN SHARE ROW EXCLUSIVE MODE")
    through = frozen.execute(sa.select(sa.func.max(outbox.outbox.c.seq))).scalar()
    rows = frozen.execute(
        sa.select(outbox.outbox.c.table_name, outbox.outbox.c.pk)
        .group_by(outbox.outbox.c.table_name, outbox.outbox.c.pk)
        .order_by(sa.func.min(outbox.outbox.c.seq))
    ).all()
    refs = [KeyRef(row.table_name, decode_key(row.pk)) for row in rows]
    for start in range(0, len(refs), 500):
        chunk = refs[start : start + 500]
        result = apply_keys(chunk, tables=tables, primary=postgres, secondary=held_sqlite)
        if result.failed:
            _refuse(result.failed)
    return len(refs), through


def _refuse(failed: dict) -> None:
    item, error = next(iter(failed.items()))
    ref = getattr(item, "ref", item)
    raise DrainFailed(
        f"{len(failed)} outbox change(s) do not apply to the secondary"
        f" (first: {ref.table} {list(ref.key)}: {error}); nothing was lost and the phase did"
        " not change: fix them (hrp-cutover status shows the errors) and move again"
    )


def _pre_drain(cutover: Cutover, deadline_s: float, *, locked: bool = False) -> None:
    """Steps 1 and 3: drain while writes go on until at most HOLD_DRAIN_TARGET changes wait.

    `locked`: this mover holds the phase lock exclusive, so the drain must not ask for it
    shared (it would wait for itself); the route cannot change while the lock is held.
    """
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        route = cutover.route()
        if route is None or outbox.depth(route.primary).pending <= HOLD_DRAIN_TARGET:
            return
        if locked:
            route = dataclasses.replace(route, still_primary=None)
        applied, _failed = drain_once(
            route, cutover.applier.breaker, cutover.applier.counters, ignore_backoff=True
        )
        if applied == 0:  # a change that does not apply, the breaker open, or the phase moved
            return


def move(
    cutover: Cutover,
    target: Phase,
    *,
    forced: bool = False,
    skipped: str | None = None,
    pre_drain_s: float = PRE_DRAIN_S,
) -> MoveResult:
    """Change the phase to `target` (an allowed move) without losing or failing writes."""
    move_journal.finish(cutover.sqlite, cutover.postgres, cutover.phases, cutover.catalog)
    record = cutover.phase(fresh=True)
    check_move(record.phase, target)
    abandon_postgres = target is Phase.SQLITE_ONLY
    postgres = None if abandon_postgres else cutover.engine(POSTGRES)
    if postgres is not None:
        with call_timeout(LOCK_WAIT_S):
            outbox.install_tables(postgres)
        if PHASES[record.phase].secondary is not None:
            _pre_drain(cutover, pre_drain_s)
    lock = postgres.connect() if postgres is not None else None
    locked = False
    try:
        if lock is not None:  # transaction-scoped: it ends with this transaction, pooled or not
            lock.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            with call_timeout(LOCK_WAIT_S):
                lock.execute(sa.select(sa.func.pg_advisory_xact_lock(PHASE_LOCK)))
            locked = True
        move_journal.begin(cutover.sqlite, record.phase, target)
        try:
            _at("journal_started")
            with call_timeout(LOCK_WAIT_S):
                new, hold_ms, drained, through = _switch(
                    cutover, postgres, record, target, forced, skipped, catch_up_s=pre_drain_s
                )
        except BaseException as error:
            _undo(cutover, postgres, record, target, error)
            raise
        with call_timeout(LOCK_WAIT_S):
            _complete(cutover, postgres, target, through)
    finally:
        if lock is not None:
            _release(lock, locked)
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


def _release(lock: sa.Connection, locked: bool) -> None:
    """End the lock's transaction, which releases the phase lock; if PostgreSQL does not answer,
    end the session, which ends the transaction."""
    try:
        if locked:
            with call_timeout(LOCK_WAIT_S):
                lock.rollback()
    except sa.exc.SQLAlchemyError:
        lock.invalidate()
    finally:
        lock.close()


def _switch(
    cutover: Cutover, postgres: sa.Engine | None, record, target: Phase, forced: bool, skipped: str | None,
    *, catch_up_s: float,
):
    """Steps 3 to 5: everything up to and including the one commit that changes the phase."""
    source, destination = PHASES[record.phase], PHASES[target]
    if postgres is not None:
        move_journal.set_postgres_triggers(postgres, record.phase, cutover.catalog, also=target)
    _at("postgres_triggers_added")
    if postgres is not None and source.primary == SQLITE and source.secondary == POSTGRES:
        _pre_drain(cutover, catch_up_s, locked=True)
    frozen = postgres.connect() if postgres is not None and source.primary == POSTGRES else None
    try:
        if frozen is not None:
            frozen.begin()
        started = time.monotonic()
        through = None
        with writing(cutover.sqlite) as held:
            now = PhaseStore.read(held)
            if now.version != record.version:
                raise PhaseConflict(
                    f"the phase changed meanwhile (now {now.phase.value}, version {now.version});"
                    " re-run the command to act on the current phase"
                )
            drained = 0
            if abandon := postgres is None:
                held.execute(sa.delete(outbox.outbox))
            elif frozen is not None:
                drained, through = _drain_frozen(postgres, frozen, held, cutover.captured)
            elif source.secondary is not None:
                drained = _drain_all(held, postgres, cutover.captured)
            _at("drained")
            _carry_ids(held, postgres, source, destination, cutover.catalog)
            outbox.set_triggers(held, destination.triggers_on(SQLITE), cutover.catalog)
            if move_journal.stops_capture(record.phase, target) or abandon:
                move_journal.reset_evidence(held, f"the move {record.phase.value} -> {target.value} stopped capture")
            move_journal.mark_committed(held, through)
            hold_ms = (time.monotonic() - started) * 1000
            new = cutover.phases.compare_and_set(
                held, record, target, hold_ms=hold_ms, forced=forced, skipped=skipped
            )
            _at("before_phase_commit")
    finally:
        if frozen is not None:
            frozen.close()
    return new, (time.monotonic() - started) * 1000, drained, through


def _carry_ids(held: sa.Connection, postgres: sa.Engine | None, source, destination, catalog: Catalog) -> None:
    """When the primary changes: the new primary's ids go past every id the old one handed out
    (SQLite's sqlite_sequence only for its AUTOINCREMENT tables; the others take max(rowid) + 1)."""
    if postgres is None or destination.primary == source.primary:
        return
    entries = [entry for entry in catalog.tables.values() if entry.postgres.autoincrement_column is not None]
    with writing(postgres) as pg:
        if destination.primary == POSTGRES:
            for entry in entries:
                issued = sqlite_adapter.issued_id(held, entry.sqlite) if entry.autoincrement else 0
                postgres_adapter.bump_identity(pg, entry.postgres, at_least=issued)
            return
        issued = {entry.name: postgres_adapter.issued_id(pg, entry.postgres) for entry in entries}
    for entry in entries:
        if entry.autoincrement:
            sqlite_adapter.bump_autoincrement(held, entry.sqlite, at_least=issued.get(entry.name, 0))


def _complete(cutover: Cutover, postgres: sa.Engine | None, target: Phase, through: int | None) -> None:
    """Step 6, after the phase committed; on failure the journal row stays and is finished later."""
    try:
        _at("phase_committed")
        if postgres is not None:
            if through is not None:
                with writing(postgres) as connection:
                    move_journal.delete_carried(connection, through)
            _at("outbox_cleaned")
            move_journal.set_postgres_triggers(postgres, target, cutover.catalog)
        move_journal.clear(cutover.sqlite)
    except Exception as error:  # the phase changed; what is left is finished by the next command or applier
        log.warning("move.completion_deferred", to_phase=target.value, error=describe_error(error))


def _undo(cutover: Cutover, postgres: sa.Engine | None, record, target: Phase, error: BaseException) -> None:
    """The phase did not change: set PostgreSQL's triggers back, invalidate evidence, clear the journal."""
    log.warning("move.failed", from_phase=record.phase.value, to_phase=target.value, error=describe_error(error))
    try:
        phase = cutover.phase(fresh=True).phase
        if postgres is not None:
            move_journal.set_postgres_triggers(postgres, phase, cutover.catalog)
        with writing(cutover.sqlite) as connection:
            move_journal.reset_evidence(connection, f"a move {record.phase.value} -> {target.value} failed")
            connection.exec_driver_sql(f"DELETE FROM {move_journal.MOVE_TABLE}")
    except Exception as undo_error:  # the journal row stays; the next command or applier finishes it
        log.warning("move.undo_deferred", error=describe_error(undo_error))
