"""The outbox in the primary database: install, read due changes, mark done or failed.

Changes are recorded by triggers on the primary's tables (adapters.sqlite /
adapters.postgres generate them), in the same transaction as the write, so
writes that never pass through this layer (the legacy app's SQL, cron
scripts, the sqlite3 shell) are captured too. A change is done when it is
deleted from the outbox; a failed one stays with its error, its attempt
count and the time of its next attempt (exponential backoff).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import sqlalchemy as sa
import structlog

from adapters import postgres as postgres_adapter
from adapters import sqlite as sqlite_adapter
from adapters.binds import Bind, reading, writing
from adapters.outbox import OUTBOX, decode_key, encode_key, metadata, outbox
from adapters.catalog import Catalog
from hrp_data.catalog import captured
from hrp_data.cutover import idempotency
from hrp_data.cutover.apply import KeyRef
from hrp_data.cutover.phases import Triggers

log = structlog.get_logger(__name__)

UNAVAILABLE = "secondary unavailable: "
"""Prefix of errors about the connection, not the row: retried at once when the secondary is back."""
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
_ADAPTERS = {"sqlite": sqlite_adapter, "postgresql": postgres_adapter}


@dataclasses.dataclass(frozen=True)
class Pending:
    """The changes due for one key: the highest sequence number seen, for marking done."""

    ref: KeyRef
    max_seq: int
    attempts: int
    created_at: float
    pk: str
    """The key as the capture trigger spelled it: entries are deleted by this text."""


@dataclasses.dataclass(frozen=True)
class Depth:
    pending: int
    failing: int
    oldest_age_s: float | None
    last_error: str | None
    refused: int = 0
    """Changes whose latest failure is a refusal of their row or key (REFUSALS), not of
    the database: they wait until the row is fixed where it is, and a move's drain stops on them."""


def install_tables(engine: sa.Engine) -> None:
    """Create the outbox table, its indexes and the idempotency keys it carries, if they are missing (idempotent)."""
    with writing(engine) as connection:
        metadata.create_all(connection, checkfirst=True)
        for index in outbox.indexes:  # an outbox made by an older version lacks the newer indexes
            index.create(connection, checkfirst=True)
        idempotency.install(connection)


def install_triggers(connection: sa.Connection, catalog: Catalog) -> None:
    """Capture every change of the captured tables in this database (idempotent)."""
    set_triggers(connection, Triggers(capture=True, guard=triggers(connection, catalog).guard), catalog)


def drop_triggers(connection: sa.Connection, catalog: Catalog) -> None:
    """Stop capturing (idempotent)."""
    set_triggers(connection, Triggers(capture=False, guard=triggers(connection, catalog).guard), catalog)


def triggers(connection: sa.Connection, catalog: Catalog) -> Triggers:
    """Which of the layer's triggers are on in this database (on: on every captured table)."""
    tables = captured(catalog).on(connection.dialect.name)
    guarded = [tables[name] for name in catalog.tables]
    if connection.dialect.name == "sqlite":
        names = sqlite_adapter.trigger_names(connection)
        capture = all(f"{OUTBOX}_{t.name}_ins" in names for t in tables.values())
        guard = all(f"{sqlite_adapter.GUARD_PREFIX}_{t.name}_ins" in names for t in guarded)
        return Triggers(capture, guard)
    states = postgres_adapter.trigger_states(connection)
    capture = all(states.get((t.name, postgres_adapter.capture_trigger_name(t, OUTBOX))) for t in tables.values())
    guard = all(states.get((t.name, postgres_adapter.GUARD_TRIGGER)) for t in guarded)
    return Triggers(capture, guard)


def set_triggers(connection: sa.Connection, wanted: Triggers, catalog: Catalog) -> None:
    """Make the layer's triggers in this database exactly `wanted` on the catalog's tables (and the
    idempotency keys), idempotent, inside the caller's transaction. On PostgreSQL the triggers are
    created once and then only enabled or disabled, which takes SHARE ROW EXCLUSIVE (waits for open
    writers, never blocks readers); dropping one would take ACCESS EXCLUSIVE and queue every reader
    behind a long transaction."""
    if connection.dialect.name == "sqlite":
        _set_sqlite_triggers(connection, wanted, catalog)
    else:
        _set_postgres_triggers(connection, wanted, catalog)


def _set_sqlite_triggers(connection: sa.Connection, wanted: Triggers, catalog: Catalog) -> None:
    tables = captured(catalog).sqlite
    for name, table in tables.items():
        ddl = (
            sqlite_adapter.capture_trigger_ddl(table, OUTBOX, recorded_as=name)
            if wanted.capture
            else sqlite_adapter.drop_capture_trigger_ddl(table, OUTBOX)
        )
        for statement in ddl:
            connection.exec_driver_sql(statement)
    for name in catalog.tables:
        table = tables[name]
        ddl = sqlite_adapter.guard_trigger_ddl(table) if wanted.guard else sqlite_adapter.drop_guard_trigger_ddl(table)
        for statement in ddl:
            connection.exec_driver_sql(statement)
    if wanted.guard:  # the secondary: the file's own triggers must not change what the layer writes
        parked = sqlite_adapter.park_user_triggers(connection)
        if parked:
            log.info("sqlite.triggers_parked", triggers=parked)
    else:
        refused = sqlite_adapter.restore_user_triggers(connection)
        if refused:
            log.warning("sqlite.triggers_left_parked", triggers=refused,
                        fix=f"recreate them by hand from {sqlite_adapter.PARKED_TRIGGERS}")


def _set_postgres_triggers(connection: sa.Connection, wanted: Triggers, catalog: Catalog) -> None:
    states = postgres_adapter.trigger_states(connection)
    tables = captured(catalog)
    guarded = [tables[name] for name in catalog.tables]
    if wanted.guard and any((t.name, postgres_adapter.GUARD_TRIGGER) not in states for t in guarded):
        for statement in postgres_adapter.guard_function_ddl():
            connection.exec_driver_sql(statement)
    for table in tables.values():
        name = postgres_adapter.capture_trigger_name(table, OUTBOX)
        if wanted.capture and states.get((table.name, name)) is False:  # turned on now: this release's function
            connection.exec_driver_sql(postgres_adapter.capture_function_ddl(table, OUTBOX))
        _toggle(connection, states, table, name, wanted.capture,
                lambda: [postgres_adapter.capture_function_ddl(table, OUTBOX),
                         postgres_adapter.capture_trigger_ddl(table, OUTBOX)])
    for table in guarded:
        _toggle(connection, states, table, postgres_adapter.GUARD_TRIGGER, wanted.guard,
                lambda: [postgres_adapter.guard_trigger_ddl(table)])


def _toggle(connection, states, table: sa.Table, trigger: str, enabled: bool, create) -> None:
    present = states.get((table.name, trigger))
    if present is None:
        if not enabled:
            return
        for statement in create():
            connection.exec_driver_sql(statement)
        return
    if present != enabled:
        postgres_adapter.set_trigger_enabled(connection, table, trigger, enabled)


def due(bind: Bind, *, limit: int = 500, ignore_backoff: bool = False) -> list[Pending]:
    """The oldest due changes, one entry per key, in order of their first change.

    A key is due when none of its entries waits for a later attempt (or
    always, with ignore_backoff). Each call reads a bounded number of rows,
    whatever the outbox's depth: the first `limit` candidate entries through
    the seq and (next_attempt_at, seq) indexes, then every entry of those keys
    through the (table_name, pk) index.
    """
    now = time.time()
    with reading(bind) as connection:
        if connection.execute(_ANY_ENTRY).first() is None:  # the idle poll's whole cost
            return []
        if ignore_backoff:
            candidates = _head_keys(connection, limit)
        else:
            candidates = _fresh_keys(connection, limit, now) | _retried_keys(connection, limit, now)
        groups = _key_groups(connection, candidates)
    if not ignore_backoff:
        groups = [g for g in groups if g.latest_attempt_at <= now]
    groups.sort(key=lambda g: g.first_seq)
    return [
        Pending(KeyRef(g.table_name, decode_key(g.pk)), g.max_seq, g.attempts, g.created_at, g.pk)
        for g in groups[:limit]
    ]


_ANY_ENTRY = sa.select(outbox.c.seq).limit(1)


def _keys(connection: sa.Connection, statement: sa.Select) -> set[tuple[str, str]]:
    return {(row.table_name, row.pk) for row in connection.execute(statement)}


def _head_keys(connection: sa.Connection, limit: int) -> set[tuple[str, str]]:
    """The keys of the first `limit` entries by sequence number."""
    return _keys(connection, sa.select(outbox.c.table_name, outbox.c.pk).order_by(outbox.c.seq).limit(limit))


def _fresh_keys(connection: sa.Connection, limit: int, now: float) -> set[tuple[str, str]]:
    """The keys of the first `limit` entries never tried (or forgiven), skipping keys that wait.

    A waiting key's fresh entries are skipped in the query, not after it, so
    keys in backoff at the head cannot fill every batch and starve the rest.
    """
    waiting = outbox.alias("waiting")
    key_waits = (
        sa.select(1)
        .where(
            waiting.c.table_name == outbox.c.table_name,
            waiting.c.pk == outbox.c.pk,
            waiting.c.next_attempt_at > now,
        )
        .exists()
    )
    return _keys(
        connection,
        sa.select(outbox.c.table_name, outbox.c.pk)
        .where(outbox.c.next_attempt_at == 0, ~key_waits)
        .order_by(outbox.c.seq)
        .limit(limit),
    )


def _retried_keys(connection: sa.Connection, limit: int, now: float) -> set[tuple[str, str]]:
    """The keys of up to `limit` failed entries whose backoff has ended, longest waiting first."""
    return _keys(
        connection,
        sa.select(outbox.c.table_name, outbox.c.pk)
        .where(outbox.c.next_attempt_at > 0, outbox.c.next_attempt_at <= now)
        .order_by(outbox.c.next_attempt_at)
        .limit(limit),
    )


@dataclasses.dataclass(frozen=True)
class _KeyGroup:
    table_name: str
    pk: str
    first_seq: int
    max_seq: int
    attempts: int
    created_at: float
    latest_attempt_at: float


def _key_groups(connection: sa.Connection, keys: set[tuple[str, str]]) -> list[_KeyGroup]:
    """Every entry of these keys, summed up per key (read through the key index)."""
    if not keys:
        return []
    rows = connection.execute(
        sa.select(
            outbox.c.table_name,
            outbox.c.pk,
            sa.func.min(outbox.c.seq),
            sa.func.max(outbox.c.seq),
            sa.func.max(outbox.c.attempts),
            sa.func.min(outbox.c.created_at),
            sa.func.max(outbox.c.next_attempt_at),
        )
        .where(
            outbox.c.table_name.in_({table for table, _ in keys}),
            outbox.c.pk.in_({pk for _, pk in keys}),
        )
        .group_by(outbox.c.table_name, outbox.c.pk)
    ).all()
    return [_KeyGroup(*row) for row in rows if (row[0], row[1]) in keys]


def _entry_clause(item: Pending) -> sa.ColumnElement[bool]:
    return sa.and_(
        outbox.c.table_name == item.ref.table,
        outbox.c.pk == item.pk,
        outbox.c.seq <= item.max_seq,
    )


def _delete_done(connection: sa.Connection, done: Sequence[Pending]) -> None:
    """Delete each done key's entries up to the highest sequence number the batch saw for it.

    Per key, not up to the batch's highest number: on PostgreSQL sequence numbers
    are taken at insert and may commit out of order across keys (within one key
    the row lock keeps them in order), so a lower number of another key may
    still be uncommitted and unapplied.
    """
    if not done:
        return
    rows = [(item.ref.table, item.pk, item.max_seq) for item in done]
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql(
            f"DELETE FROM {OUTBOX} WHERE table_name = ? AND pk = ? AND seq <= ?", rows
        )
        return
    for start in range(0, len(rows), 1000):
        applied = sa.values(
            sa.column("table_name", sa.Text), sa.column("pk", sa.Text), sa.column("max_seq", sa.BigInteger),
            name="applied",
        ).data(rows[start : start + 1000])
        connection.execute(
            sa.delete(outbox).where(
                outbox.c.table_name == applied.c.table_name,
                outbox.c.pk == applied.c.pk,
                outbox.c.seq <= applied.c.max_seq,
            )
        )


def settle(bind: Bind, done: Sequence[Pending], failed: dict[Pending, str]) -> None:
    """Delete the entries that were applied; record the error and next attempt of the others."""
    if not done and not failed:
        return
    now = time.time()
    with writing(bind) as connection:
        _delete_done(connection, done)
        for item, error in failed.items():
            delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** min(item.attempts, 16))
            connection.execute(
                sa.update(outbox)
                .where(_entry_clause(item))
                .values(attempts=outbox.c.attempts + 1, last_error=error, next_attempt_at=now + delay)
            )


def retry_unavailable(bind: Bind) -> None:
    """The secondary answers again: changes that failed only because it was away are due now."""
    with writing(bind) as connection:
        connection.execute(
            sa.update(outbox)
            .where(outbox.c.last_error.startswith(UNAVAILABLE), outbox.c.next_attempt_at > 0)
            .values(next_attempt_at=0)
        )


def make_all_due(bind: Bind) -> None:
    """Forget the backoff of every waiting change (replay by hand)."""
    with writing(bind) as connection:
        connection.execute(sa.update(outbox).values(next_attempt_at=0))


def depth(bind: Bind) -> Depth:
    """How many changes wait, how many have failed at least once (how many of those are refused
    until their row is fixed), the oldest one's age and the latest error."""
    with reading(bind) as connection:
        if not sa.inspect(connection).has_table(OUTBOX):
            return Depth(0, 0, None, None)
        row = connection.execute(
            sa.select(
                sa.func.count(),
                sa.func.count().filter(outbox.c.attempts > 0),
                sa.func.min(outbox.c.created_at),
                sa.func.count().filter(sa.or_(*(outbox.c.last_error.startswith(start, autoescape=True)
                                                for start in REFUSALS))),
            )
        ).one()
        last_error = connection.execute(
            sa.select(outbox.c.last_error)
            .where(outbox.c.last_error.is_not(None))
            .order_by(outbox.c.seq.desc())
            .limit(1)
        ).scalar()
    oldest = None if row[2] is None else max(0.0, time.time() - row[2])
    return Depth(row[0], row[1], oldest, last_error, row[3])


REJECTED = "rejected: "
"""The prefix of the error the applier settles a change with when the conversion rules refuse
its row (hrp_data.cutover.apply.image_refusal, describe_error of a Rejected)."""
KEY_REFUSED = "a key PostgreSQL cannot hold ("
REFUSALS = (REJECTED, KEY_REFUSED)
"""How the errors of a refusal of a row's values or key (not of the database) begin."""


def rejected_keys(bind: Bind) -> list[tuple[str, str, str]]:
    """(table, key as the outbox spells it, error) of every key whose latest failure is a
    refusal of its row's values or key, not of the database (oldest first). The error names the
    reason and the column, never a value (hrp_data.errors.describe_error)."""
    with reading(bind) as connection:
        if not sa.inspect(connection).has_table(OUTBOX):
            return []
        rows = connection.execute(
            sa.select(outbox.c.table_name, outbox.c.pk, outbox.c.last_error)
            .where(outbox.c.last_error.is_not(None))
            .order_by(outbox.c.seq)
        ).all()
    latest: dict[tuple[str, str], str] = {}
    for table, pk, error in rows:
        latest[(table, pk)] = error
    return [(table, pk, error) for (table, pk), error in latest.items()
            if error.startswith(REFUSALS)]


def pending_keys(bind: Bind, refs: Sequence[KeyRef]) -> set[KeyRef]:
    """Which of these keys still have a change waiting in the outbox.

    Matched by spelling: a legacy key holding a real or non-ASCII text may be
    spelled otherwise by SQLite's trigger, and is then not found; such a key
    (text or a real in an INTEGER column) is one PostgreSQL cannot hold, so
    its verdict (missing there) does not depend on it.
    """
    if not refs:
        return set()
    wanted = {(ref.table, encode_key(ref.key)): ref for ref in refs}
    with reading(bind) as connection:
        if not sa.inspect(connection).has_table(OUTBOX):
            return set()
        rows = connection.execute(
            sa.select(outbox.c.table_name, outbox.c.pk)
            .where(outbox.c.pk.in_({pk for _, pk in wanted}))
            .distinct()
        ).all()
    return {wanted[(r.table_name, r.pk)] for r in rows if (r.table_name, r.pk) in wanted}
