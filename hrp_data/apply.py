"""The one apply path: make the secondary's row equal to the primary's row, per key.

`apply_keys` is idempotent and used by the outbox applier, `replay`, the
verifier's repair and the backfill's zombie check. For each key it re-reads
the primary row and upserts that full image into the secondary (or deletes
the secondary row when the primary has none), so values produced by the
primary (ids, defaults, timestamps) are the ones the secondary stores, and
replaying a change twice is harmless.

While SQLite is primary, ids are assigned by SQLite and written explicitly to
PostgreSQL; each apply moves the PostgreSQL identity past them, so a flip
never meets a stale sequence.

Convergence under concurrency: all appliers, in every process, first take a
PostgreSQL transaction-level advisory lock per key (sorted, so two appliers
never deadlock) and only then read the primary row. Two applies of one key
therefore run one after the other, and the later one reads the newer image:
a stale image can never overwrite a newer one. The lock is held in
PostgreSQL whichever side is primary; SQLite's write lock is taken only for
the short local write, never while waiting on PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
import structlog

from adapters.binds import Bind, reading, writing
from adapters.convert import Rejected, to_postgres
from adapters.postgres import APPLYING_SETTING, bump_identity
from adapters.types import kind_of
from adapters.upsert import upsert
from hrp_data.errors import describe_error

log = structlog.get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class KeyRef:
    """One row of one table, by primary-key values in key-column order."""

    table: str
    key: tuple[Any, ...]

    @property
    def lock_id(self) -> int:
        digest = hashlib.blake2b(f"{self.table}:{list(self.key)}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)


@dataclasses.dataclass
class ApplyResult:
    applied: list[KeyRef] = dataclasses.field(default_factory=list)
    failed: dict[KeyRef, str] = dataclasses.field(default_factory=dict)
    upserted: int = 0
    deleted: int = 0


def key_refusal(table: sa.Table, key: Sequence[Any]) -> str | None:
    """Why PostgreSQL's key columns cannot hold these legacy key values (None: they can).

    SQLite keeps any storage class in a composite primary key's INTEGER
    column (text, a real, a blob): no such row can exist in PostgreSQL, so it
    is never looked up or deleted there, and writing it fails with this reason.
    """
    for column, value in zip(table.primary_key.columns, key):
        try:
            converted = to_postgres(kind_of(column), value)
        except Rejected as error:
            return f"{column.name}: {error.reason}"
        if converted is None:
            return f"{column.name}: null_in_required_column"
    return None


def _postgres_side(connection: sa.Connection) -> bool:
    return connection.dialect.name == "postgresql"


def _key_clause(table: sa.Table, key: Sequence[Any]) -> sa.ColumnElement[bool]:
    return sa.and_(*(column == value for column, value in zip(table.primary_key.columns, key)))


def read_images(
    connection: sa.Connection, tables: dict[str, sa.Table], refs: Iterable[KeyRef]
) -> dict[KeyRef, dict[str, Any] | None]:
    """The current row for each key (None where the row does not exist, or cannot: see key_refusal)."""
    images: dict[KeyRef, dict[str, Any] | None] = {}
    by_table: dict[str, list[KeyRef]] = {}
    for ref in refs:
        if _postgres_side(connection) and key_refusal(tables[ref.table], ref.key):
            images[ref] = None
            continue
        by_table.setdefault(ref.table, []).append(ref)
    for name, group in by_table.items():
        table = tables[name]
        key_columns = list(table.primary_key.columns)
        for chunk in _chunks(group, 500):
            if len(key_columns) == 1:
                condition = key_columns[0].in_([ref.key[0] for ref in chunk])
            else:
                condition = sa.or_(*(_key_clause(table, ref.key) for ref in chunk))
            found = {
                tuple(row[c.name] for c in key_columns): dict(row)
                for row in connection.execute(sa.select(table).where(condition)).mappings()
            }
            for ref in chunk:
                images[ref] = found.get(tuple(ref.key))
    return images


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _write(connection: sa.Connection, table: sa.Table, ref: KeyRef, image: dict | None) -> str:
    if image is None:
        connection.execute(sa.delete(table).where(_key_clause(table, ref.key)))
        return "deleted"
    connection.execute(upsert(connection.dialect.name, table, image))
    return "upserted"


def write_images(
    connection: sa.Connection,
    tables: dict[str, sa.Table],
    images: dict[KeyRef, dict[str, Any] | None],
    order: Sequence[KeyRef],
) -> ApplyResult:
    """Write images into the secondary.

    Fast path: one multi-row upsert per table (parents first), then one delete
    per table (children first), all inside a savepoint. If anything in it fails
    (a foreign key whose parent has not arrived, a unique key being reused),
    the savepoint is rolled back and the keys are written one by one in
    `order`, each in its own savepoint, so one bad row fails alone. A key
    PostgreSQL cannot hold (key_refusal) has no row there: its delete is done
    already and its upsert fails with the reason.
    """
    refused = ApplyResult()
    if _postgres_side(connection):
        for ref in order:
            reason = key_refusal(tables[ref.table], ref.key)
            if reason is not None and images[ref] is None:
                refused.applied.append(ref)
            elif reason is not None:
                refused.failed[ref] = f"a key PostgreSQL cannot hold ({reason})"
    if refused.applied or refused.failed:
        skip = {*refused.applied, *refused.failed}
        images = {ref: image for ref, image in images.items() if ref not in skip}
        order = [ref for ref in order if ref not in skip]
    result = _write_images(connection, tables, images, order)
    result.applied += refused.applied
    result.failed.update(refused.failed)
    return result


def _write_images(
    connection: sa.Connection,
    tables: dict[str, sa.Table],
    images: dict[KeyRef, dict[str, Any] | None],
    order: Sequence[KeyRef],
) -> ApplyResult:
    if not images:
        return ApplyResult()
    try:
        with connection.begin_nested():
            return _write_bulk(connection, tables, images)
    except sa.exc.SQLAlchemyError as error:
        if _is_disconnect(error):
            raise
    result = ApplyResult()
    for ref in order:
        try:
            with connection.begin_nested():
                outcome = _write(connection, tables[ref.table], ref, images[ref])
        except sa.exc.SQLAlchemyError as error:
            if _is_disconnect(error):
                raise
            result.failed[ref] = describe_error(error)
            continue
        result.applied.append(ref)
        setattr(result, outcome, getattr(result, outcome) + 1)
    return result


def _write_bulk(
    connection: sa.Connection,
    tables: dict[str, sa.Table],
    images: dict[KeyRef, dict[str, Any] | None],
) -> ApplyResult:
    result = ApplyResult()
    upserts: dict[str, list[dict]] = {}
    deletes: dict[str, list[KeyRef]] = {}
    for ref, image in images.items():
        if image is None:
            deletes.setdefault(ref.table, []).append(ref)
        else:
            upserts.setdefault(ref.table, []).append(image)
    for name, table in tables.items():
        for chunk in _chunks(upserts.get(name, []), 500):
            connection.execute(upsert(connection.dialect.name, table, chunk))
            result.upserted += len(chunk)
    for name, table in reversed(tables.items()):
        for chunk in _chunks(deletes.get(name, []), 500):
            connection.execute(sa.delete(table).where(sa.or_(*(_key_clause(table, ref.key) for ref in chunk))))
            result.deleted += len(chunk)
    result.applied = list(images)
    return result


def _is_disconnect(error: Exception) -> bool:
    """Errors about the connection, not the row: the whole batch is retried later."""
    return bool(getattr(error, "connection_invalidated", False)) or isinstance(
        error, (sa.exc.OperationalError, sa.exc.InterfaceError)
    )


def lock_keys(postgres: sa.Connection, refs: Iterable[KeyRef]) -> None:
    """Take the per-key advisory locks, in a fixed order, for this transaction (one round trip)."""
    ids = sorted({ref.lock_id for ref in refs})
    postgres.execute(
        sa.text(
            "SELECT count(pg_advisory_xact_lock(k)) FROM"
            " (SELECT k FROM unnest(CAST(:ids AS bigint[])) AS k ORDER BY k) AS ordered"
        ),
        {"ids": ids},
    )


def mark_applying(postgres: sa.Connection) -> None:
    """This transaction's writes come from the applier: PostgreSQL triggers must not capture them."""
    postgres.execute(sa.text(f"SELECT set_config('{APPLYING_SETTING}', 'on', true)"))


PHASE_LOCK = 0x4852505F43555430
"""Advisory lock id ('HRP_CUT0'): writers and appliers hold it shared, a phase change exclusive."""


class PrimaryMoved(RuntimeError):
    """The phase changed under the applier: its route is stale, the batch is left for later."""


def hold_phase_shared(postgres: sa.Connection) -> None:
    """Wait while a phase change is in progress; hold it off until this transaction ends."""
    postgres.execute(sa.select(sa.func.pg_advisory_xact_lock_shared(PHASE_LOCK)))


def apply_keys(
    refs: Sequence[KeyRef],
    *,
    tables: dict[str, sa.Table],
    primary: Bind,
    secondary: sa.Engine,
    still_primary: Callable[[], bool] | None = None,
) -> ApplyResult:
    """Make the secondary equal to the primary for each key, in the given order.

    `still_primary`, when given, is asked after the phase lock is held: if the
    primary has changed meanwhile, nothing is written and PrimaryMoved is raised.
    The flip, which holds the phase lock itself, passes None.
    """
    if not refs:
        return ApplyResult()
    postgres_is_primary = primary.dialect.name == "postgresql"
    with writing(primary if postgres_is_primary else secondary) as postgres:
        if still_primary is not None:
            hold_phase_shared(postgres)
            if not still_primary():
                raise PrimaryMoved("the primary changed; the applier will take the new route")
        mark_applying(postgres)
        lock_keys(postgres, refs)
        if postgres_is_primary:
            images = read_images(postgres, tables, refs)
            with writing(secondary) as sqlite:
                return write_images(sqlite, tables, images, refs)
        with reading(primary) as sqlite:
            images = read_images(sqlite, tables, refs)
        result = write_images(postgres, tables, images, refs)
        for name in {ref.table for ref in result.applied if images[ref] is not None}:
            if tables[name].autoincrement_column is not None:
                bump_identity(postgres, tables[name])
        return result
