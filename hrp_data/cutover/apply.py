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

import psycopg2
import sqlalchemy as sa
import structlog

from adapters import pg_copy, unlogged_copy
from adapters.binds import Bind, reading, writing
from adapters.catalog import is_secret, quote, tables_on
from adapters.convert import Kind, Rejected, to_postgres
from adapters.postgres import APPLYING_SETTING, bump_identity
from adapters.sqlite import stored_width
from adapters.types import kind_of, postgres_value
from adapters.upsert import upsert
from hrp_data.errors import describe_error
from shadow.redact import fingerprint, looks_secret, redact_table_key

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
    tables = tables_on(tables, connection.dialect.name)
    for ref in refs:
        if _postgres_side(connection) and key_refusal(tables[ref.table], ref.key):
            images[ref] = None
            continue
        by_table.setdefault(ref.table, []).append(ref)
    for name, group in by_table.items():
        table = tables[name]
        key_columns = list(table.primary_key.columns)
        for chunk in _chunks(group, 500):
            columns = list(table.columns)
            found = {}
            for row in connection.execute(sa.select(table).where(_keys_condition(table, chunk))):
                image = {c.key: value for c, value in zip(columns, row)}
                found[tuple(image[c.key] for c in key_columns)] = image
            for ref in chunk:
                images[ref] = found.get(tuple(ref.key))
    return images


def _keys_condition(table: sa.Table, refs: list[KeyRef]) -> sa.ColumnElement[bool]:
    key_columns = list(table.primary_key.columns)
    if len(key_columns) == 1:
        values = [ref.key[0] for ref in refs]
        condition = key_columns[0].in_([v for v in values if v is not None])
        if None in values:  # SQLite's key (not a rowid) may be NULL; IN never matches it
            condition = sa.or_(condition, key_columns[0].is_(None))
        return condition
    return sa.or_(*(_key_clause(table, ref.key) for ref in refs))


BATCH_BYTES = 32 * 2**20
"""An apply batch read from SQLite holds rows of at most about this many stored bytes (at least one row)."""


def fitting_changes(primary: sa.Engine, tables: dict[str, sa.Table], refs: list[KeyRef]) -> int:
    """How many of `refs`, in order, one batch applies from `primary`: from SQLite, as many as their
    rows' text, JSON and blob columns hold within BATCH_BYTES (adapters.sqlite.stored_width), at least
    one; from PostgreSQL, all of them. A backlog of changes to rows of big blobs or texts is then
    carried a few rows at a time, not 500 of them at once (their images, and again their COPY text,
    in the applying process's memory)."""
    if primary.dialect.name != "sqlite":
        return len(refs)
    sqlite_tables = tables_on(tables, "sqlite")
    sizes: dict[KeyRef, int] = {}
    by_table: dict[str, list[KeyRef]] = {}
    for ref in refs:
        by_table.setdefault(ref.table, []).append(ref)
    with primary.connect() as connection:
        for name, group in by_table.items():
            table = sqlite_tables.get(name)
            width = None if table is None else stored_width(
                (column.name, kind_of(tables[name].c[column.key])) for column in table.columns)
            if width is None:  # bounded rows (or a table apply_keys will name)
                continue
            for chunk in _chunks(group, 500):
                statement = sa.select(*table.primary_key.columns, sa.literal_column(width)).where(
                    _keys_condition(table, chunk))
                for row in connection.execute(statement):
                    sizes[KeyRef(name, tuple(row[:-1]))] = row[-1]
    total = 0
    for count, ref in enumerate(refs):
        total += sizes.get(ref, 0)
        if total > BATCH_BYTES and count > 0:
            return count
    return len(refs)


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def image_refusal(table: sa.Table, image: dict[str, Any]) -> str | None:
    """Why PostgreSQL would refuse this row image (None: it would not), found without sending it.

    The same conversion check as the backfill's (adapters.convert), and NOT
    NULL: PostgreSQL's report of a null in a required column repeats the
    whole row, secrets included, in the server log.
    """
    for name, value in image.items():
        column = table.columns[name]
        if value is None:
            if not column.nullable:
                return f"rejected: null_in_required_column ({name})"
            continue
        try:
            postgres_value(column, value)
        except Rejected as error:
            return f"rejected: {error.reason} ({name})"
    return None


def _parent_lookups(tables: dict[str, sa.Table], table: sa.Table) -> list[sa.ForeignKey]:
    """`table`'s foreign keys whose parent rows are looked up (missing_parents, orphans_in_sqlite):
    one-column keys onto a table of `tables` with a one-column primary key. A composite key is not
    looked up column by column (a row whose key has a NULL part needs no parent at all, MATCH
    SIMPLE; parts present apart are no parent): its rows are sent, and one PostgreSQL refuses for a
    missing parent waits with the refusal, as any refused change does."""
    return [foreign_key for foreign_key in table.foreign_keys
            if len(foreign_key.constraint.elements) == 1
            and foreign_key.column.table.name in tables and len(foreign_key.column.table.primary_key.columns) == 1]


def missing_parents(
    connection: sa.Connection,
    tables: dict[str, sa.Table],
    images: dict[KeyRef, dict[str, Any] | None],
) -> dict[KeyRef, str]:
    """Rows whose parent row PostgreSQL lacks (and this batch does not bring): they wait, unsent.

    Sending them would only fail on the foreign key; they stay in the outbox
    with this reason and are retried when the parent has arrived.
    """
    coming: dict[str, list[dict[str, Any]]] = {}
    for ref, image in images.items():
        if image is not None:
            coming.setdefault(ref.table, []).append(image)
    waiting: dict[KeyRef, str] = {}
    for name, table in tables.items():
        children = [(ref, image) for ref, image in images.items() if ref.table == name and image is not None]
        for foreign_key in _parent_lookups(tables, table) if children else ():
            parent = foreign_key.column
            # the referenced column's values the batch brings (the key, or a unique column of it)
            arriving = {image.get(parent.key) for image in coming.get(parent.table.name, ())}
            wanted = {
                image[foreign_key.parent.key]
                for _ref, image in children
                if image.get(foreign_key.parent.key) is not None
                and image[foreign_key.parent.key] not in arriving
            }
            present = _present(connection, parent, wanted)
            secret = any(looks_secret(c.name) or is_secret(c) for c in (foreign_key.parent, parent))
            for ref, image in children:
                value = image.get(foreign_key.parent.key)
                if value in wanted and value not in present and ref not in waiting:
                    shown = fingerprint(value) if secret else value  # the reason is logged and shown
                    waiting[ref] = f"{WAITING_FOR_PARENT}{parent.table.name}.{parent.name}={shown} in PostgreSQL"
    return waiting


WAITING_FOR_PARENT = "waiting for its parent "
"""The start of the reason missing_parents holds a row back with."""
ORPHAN = "orphan_foreign_key"
"""The reason of a row whose parent neither database holds (the backfill's and assess's word for it)."""


def orphans_in_sqlite(
    sqlite: sa.Connection,
    tables: dict[str, sa.Table],
    images: dict[KeyRef, dict[str, Any] | None],
    failed: dict[KeyRef, str],
) -> dict[KeyRef, str]:
    """Of the rows held back waiting for their parent (missing_parents), those whose parent SQLite,
    the primary, lacks too: a writer with foreign keys off made an orphan, which no wait will
    carry. Each is refused with ORPHAN and the column, as the backfill quarantines such a row (so
    replay, verify, quarantine and the readiness check name it, not a wait that never ends); it is
    retried like any refused change, and applies once its parent is added or it is deleted in SQLite."""
    waiting = [ref for ref, reason in failed.items()
               if reason.startswith(WAITING_FOR_PARENT) and images.get(ref) is not None]
    if not waiting:
        return {}
    pg_tables, sqlite_tables = tables_on(tables, "postgresql"), tables_on(tables, "sqlite")
    wanted: dict[tuple[str, str], set[Any]] = {}
    checks: list[tuple[KeyRef, str, tuple[str, str], Any]] = []
    for ref in waiting:
        for foreign_key in _parent_lookups(pg_tables, pg_tables[ref.table]):
            parent = foreign_key.column
            value = images[ref].get(foreign_key.parent.key)
            if value is None:
                continue
            target = (parent.table.name, parent.key)
            wanted.setdefault(target, set()).add(value)
            checks.append((ref, foreign_key.parent.key, target, value))
    present = {target: _present(sqlite, sqlite_tables[target[0]].c[target[1]], values)
               for target, values in wanted.items()}
    orphans: dict[KeyRef, str] = {}
    for ref, column, target, value in checks:
        if value not in present[target] and ref not in orphans:
            orphans[ref] = f"rejected: {ORPHAN} ({column})"
    return orphans


FOREIGN_KEY_ACTION = "foreign_key_action"
"""The reason of a change action_refusals holds back (hrp_data.backfill.quarantine lists it apart)."""


def action_refusals(
    postgres: sa.Connection,
    sqlite: sa.Connection,
    tables: dict[str, sa.Table],
    images: dict[KeyRef, dict[str, Any] | None],
) -> dict[KeyRef, str]:
    """Deletes (and changes of a referenced column) whose foreign-key action on PostgreSQL would
    change child rows SQLite keeps as they are: they wait, unsent, with the reason.

    SQLite runs ON DELETE / ON UPDATE actions only on a connection with `PRAGMA foreign_keys = ON`;
    a program without it leaves the children as they were. PostgreSQL always runs them, so applying
    the parent's change would cascade (or null) children in silence. It is sent only when no
    child PostgreSQL would touch still references the parent's old values on SQLite (this batch's
    image, else its current row): each is gone there, or references other values, which its own
    change brings. A cascaded delete is followed to the grandchildren, each row once.

    The lookups are batched, one level of the cascade at a time: the parents' referenced values in
    one query per table, their children in one per foreign key, the children's SQLite rows in one
    per table (each in chunks), whatever the number of rows.
    """
    pg_tables = tables_on(tables, "postgresql")
    name_of = {table: name for name, table in pg_tables.items()}
    actions: dict[str, list[sa.ForeignKeyConstraint]] = {}
    for table in pg_tables.values():
        for constraint in table.foreign_key_constraints:
            if (constraint.ondelete or constraint.onupdate) and constraint.referred_table in name_of:
                actions.setdefault(name_of[constraint.referred_table], []).append(constraint)
    changing = {  # tables whose upserted rows can act: an ON UPDATE onto columns beyond the key
        name for name, found in actions.items()
        if any(c.onupdate and not all(e.column.primary_key for e in c.elements) for c in found)
    }
    level = [(ref, ref, image) for ref, image in images.items()
             if ref.table in actions and (image is None or ref.table in changing)]
    if not level:  # the common batch: inserts and updates of rows no action can follow
        return {}
    known = dict(images)
    brought = _brought_children(pg_tables, actions, images)
    held: dict[KeyRef, str] = {}
    followed: set[tuple[KeyRef, KeyRef]] = set()
    while level:
        todo = []
        for origin, ref, image in level:
            if origin not in held and (origin, ref) not in followed:
                followed.add((origin, ref))  # a row met again (a cycle, a row referencing itself) is done
                todo.append((origin, ref, image))
        rows = _referenced_rows(postgres, pg_tables, actions, [ref for _origin, ref, _image in todo])
        checks = []
        for origin, ref, image in todo:
            row = rows.get(ref)
            for constraint in actions[ref.table] if row is not None else ():
                referred = [element.column for element in constraint.elements]
                old = tuple(row[column.key] for column in referred)
                if any(value is None for value in old):
                    continue
                if image is None:
                    action = constraint.ondelete
                elif all(column.primary_key for column in referred) or not constraint.onupdate:
                    continue
                else:
                    new = tuple(to_postgres(kind_of(column), image[column.key]) for column in referred)
                    if new == old:
                        continue
                    action = constraint.onupdate
                action = (action or "NO ACTION").upper()
                if action not in ("NO ACTION", "RESTRICT"):  # those PostgreSQL refuses itself, with its error
                    checks.append((origin, constraint, old, image is None, action))
        children = _referencing_rows(postgres, name_of, [(constraint, old) for _o, constraint, old, _d, _a in checks])
        unread = {child_ref for found in children.values() for child_ref in found.refs() if child_ref not in known}
        known.update(read_images(sqlite, tables, list(unread)))
        level = []
        for origin, constraint, old, deleting, action in checks:
            if origin in held:
                continue
            child_name = name_of[constraint.table]
            refs = children.get(constraint, _Values()).get(old)
            refs += [child_ref for child_ref in brought[constraint].get(old) if child_ref not in refs]
            columns = [column.key for column in constraint.columns]
            for child_ref in refs:
                after = known[child_ref]
                if after is not None and _references(constraint.table, columns, after, old):
                    when = "DELETE" if deleting else "UPDATE"
                    held[origin] = (
                        f"rejected: {FOREIGN_KEY_ACTION} ({constraint.name}: PostgreSQL's ON {when} {action}"
                        f" would change {child_name} {redact_table_key(constraint.table, child_ref.key)}, which SQLite keeps referencing"
                        " the old row: its writer had foreign keys off; make the child rows agree in SQLite)"
                    )
                    break
                if after is None and action == "CASCADE" and deleting and child_name in actions:
                    level.append((origin, child_ref, None))
    return held


class _Values:
    """Lists of child keys by a tuple of values, compared as == compares them (a value Python cannot
    hash, a JSON document, is found by comparing)."""

    def __init__(self) -> None:
        self.hashed: dict[tuple, list[KeyRef]] = {}
        self.loose: list[tuple[tuple, list[KeyRef]]] = []

    def add(self, values: tuple, ref: KeyRef) -> None:
        try:
            self.hashed.setdefault(values, []).append(ref)
        except TypeError:
            for known, refs in self.loose:
                if known == values:
                    refs.append(ref)
                    return
            self.loose.append((values, [ref]))

    def get(self, values: tuple) -> list[KeyRef]:
        try:
            found = list(self.hashed.get(values, ()))
        except TypeError:
            found = []
        return found + [ref for known, refs in self.loose if known == values for ref in refs]

    def refs(self) -> Iterable[KeyRef]:
        for refs in [*self.hashed.values(), *(refs for _values, refs in self.loose)]:
            yield from refs


def _brought_children(
    pg_tables: dict[str, sa.Table],
    actions: dict[str, list[sa.ForeignKeyConstraint]],
    images: dict[KeyRef, dict[str, Any] | None],
) -> dict[sa.ForeignKeyConstraint, _Values]:
    """Per foreign key, the child rows this batch upserts, by the values they reference (as
    PostgreSQL would hold them; a value it cannot hold references nothing)."""
    brought: dict[sa.ForeignKeyConstraint, _Values] = {}
    for constraint in (constraint for found in actions.values() for constraint in found):
        brought[constraint] = _Values()
        child = constraint.table
        for ref, image in images.items():
            if image is None or pg_tables[ref.table] is not child:
                continue
            try:
                values = tuple(to_postgres(kind_of(column), image[column.key]) for column in constraint.columns)
            except Rejected:
                continue
            brought[constraint].add(values, ref)
    return brought


def _referenced_rows(
    postgres: sa.Connection,
    pg_tables: dict[str, sa.Table],
    actions: dict[str, list[sa.ForeignKeyConstraint]],
    refs: list[KeyRef],
) -> dict[KeyRef, dict[str, Any]]:
    """The PostgreSQL values of the columns foreign keys with an action reference, per parent row
    (absent: no such row there, or a key it cannot hold)."""
    rows: dict[KeyRef, dict[str, Any]] = {}
    by_table: dict[str, dict[tuple, KeyRef]] = {}
    for ref in refs:
        table = pg_tables[ref.table]
        if key_refusal(table, ref.key) is None:
            key = tuple(to_postgres(kind_of(column), value) for column, value in zip(table.primary_key.columns, ref.key))
            by_table.setdefault(ref.table, {})[key] = ref
    for name, wanted in by_table.items():
        table = pg_tables[name]
        key_columns = list(table.primary_key.columns)
        referred = list({element.column: None for constraint in actions[name] for element in constraint.elements})
        for chunk in _chunks(list(wanted), 500):
            found = postgres.execute(sa.select(*key_columns, *referred).where(_in(key_columns, chunk)))
            for row in found:
                ref = wanted.get(tuple(row[: len(key_columns)]))
                if ref is not None:
                    rows[ref] = {column.key: value for column, value in zip(referred, row[len(key_columns):])}
    return rows


def _referencing_rows(
    postgres: sa.Connection,
    name_of: dict[sa.Table, str],
    wanted: list[tuple[sa.ForeignKeyConstraint, tuple]],
) -> dict[sa.ForeignKeyConstraint, _Values]:
    """Per foreign key, the child rows in PostgreSQL that reference each of these values."""
    by_constraint: dict[sa.ForeignKeyConstraint, list[tuple]] = {}
    for constraint, values in wanted:
        distinct = by_constraint.setdefault(constraint, [])
        distinct.append(values)
    found: dict[sa.ForeignKeyConstraint, _Values] = {}
    for constraint, values in by_constraint.items():
        child = constraint.table
        key_columns = list(child.primary_key.columns)
        columns = list(constraint.columns)
        found[constraint] = _Values()
        for chunk in _chunks(_distinct(values), 500):
            for row in postgres.execute(sa.select(*key_columns, *columns).where(_in(columns, chunk))):
                found[constraint].add(tuple(row[len(key_columns):]), KeyRef(name_of[child], tuple(row[: len(key_columns)])))
    return found


def _distinct(values: list[tuple]) -> list[tuple]:
    seen = _Values()
    distinct = []
    for value in values:
        if not seen.get(value):
            seen.add(value, KeyRef("", ()))
            distinct.append(value)
    return distinct


def _in(columns: list[sa.Column], values: list[tuple]) -> sa.ColumnElement[bool]:
    """`columns` IN `values` (tuples of as many values)."""
    if len(columns) == 1:
        return columns[0].in_([value[0] for value in values])
    return sa.tuple_(*columns).in_(values)


def _references(child: sa.Table, columns: list[str], image: dict[str, Any], values: tuple) -> bool:
    """Whether the child row image still references `values` (a value PostgreSQL cannot hold does not)."""
    try:
        return tuple(to_postgres(kind_of(child.columns[c]), image[c]) for c in columns) == values
    except Rejected:
        return False


def _present(connection: sa.Connection, column: sa.Column, values: set[Any]) -> set[Any]:
    found: set[Any] = set()
    for chunk in _chunks(sorted(values), 500):
        found.update(connection.execute(sa.select(column).where(column.in_(chunk))).scalars())
    return found


def has_secrets(table: sa.Table) -> bool:
    """Whether a column of `table` holds or looks like a secret (the HRP ones, `client_secret`, `reset_token`...)."""
    return any(looks_secret(column.name) or is_secret(column) for column in table.columns)


def unlogged_upsert(connection: sa.Connection, table: sa.Table, images: list[dict[str, Any]]) -> None:
    """The upsert of `images` without any value in a statement: COPY into a staging table, then
    INSERT ... SELECT ... ON CONFLICT DO UPDATE from it.

    PostgreSQL may log any statement (failing ones by default, every one with
    log_min_duration_statement=0); COPY's data rows are never logged. The
    staging table lives in this transaction only (ON COMMIT DROP, and dropped
    after use), so it works behind a transaction-pooling PgBouncer too.
    """
    columns = list(images[0])
    keys = [column.name for column in table.primary_key.columns]
    column_list = ", ".join(quote(name) for name in columns)
    staging = quote(f"hrp_cutover_stage_{table.name}")
    kinds = [kind_of(table.columns[name]) for name in columns]
    payload = "".join(
        pg_copy.encode_row([_copy_field(kind, image[name]) for kind, name in zip(kinds, columns)])
        for image in images
    ).encode("utf-8")
    changes = ", ".join(f"{quote(name)} = EXCLUDED.{quote(name)}" for name in columns if name not in keys)
    on_conflict = f"DO UPDATE SET {changes}" if changes else "DO NOTHING"
    connection.exec_driver_sql(
        f"CREATE TEMP TABLE {staging} ON COMMIT DROP AS SELECT {column_list} FROM {quote(table.name)} WITH NO DATA"
    )
    unlogged_copy.copy_in(
        connection.connection.dbapi_connection, f"COPY {staging} ({column_list}) FROM STDIN", payload
    )
    connection.exec_driver_sql(
        f"INSERT INTO {quote(table.name)} ({column_list}) OVERRIDING SYSTEM VALUE"
        f" SELECT {column_list} FROM {staging} ON CONFLICT ({', '.join(quote(k) for k in keys)}) {on_conflict}"
    )
    connection.exec_driver_sql(f"DROP TABLE {staging}")


def _copy_field(kind: Kind, value: Any) -> str:
    value = to_postgres(kind, value)
    if value is not None and kind is Kind.JSON:
        return pg_copy.json_field(value)
    return pg_copy.text_field(value)


def _upsert(connection: sa.Connection, table: sa.Table, images: list[dict[str, Any]]) -> None:
    if _postgres_side(connection) and has_secrets(table):
        unlogged_upsert(connection, table, images)
    else:
        connection.execute(upsert(connection.dialect.name, table, images))


def _write(connection: sa.Connection, table: sa.Table, ref: KeyRef, image: dict | None) -> str:
    if image is None:
        connection.execute(sa.delete(table).where(_key_clause(table, ref.key)))
        return "deleted"
    _upsert(connection, table, [image])
    return "upserted"


def postgres_refusals(
    tables: dict[str, sa.Table], images: dict[KeyRef, dict[str, Any] | None], order: Sequence[KeyRef]
) -> ApplyResult:
    """What PostgreSQL is never sent: a key it cannot hold whose primary row is gone is applied
    already (no such row can exist there); one whose primary row exists fails with the key's
    reason; a row image it would refuse (image_refusal) fails with the value's reason."""
    refused = ApplyResult()
    for ref in order:
        reason = key_refusal(tables[ref.table], ref.key)
        image = images[ref]
        if reason is not None and image is None:
            refused.applied.append(ref)
        elif reason is not None:
            refused.failed[ref] = f"a key PostgreSQL cannot hold ({reason})"
        elif image is not None and (reason := image_refusal(tables[ref.table], image)) is not None:
            refused.failed[ref] = reason
    return refused


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
    already and its upsert fails with the reason. On PostgreSQL, a row it
    would refuse (image_refusal) or whose parent it lacks (missing_parents)
    fails with the reason without being sent: a failing statement would be
    logged by the server with its values.
    """
    refused = ApplyResult()
    tables = tables_on(tables, connection.dialect.name)
    if _postgres_side(connection):
        refused = postgres_refusals(tables, images, order)
        sendable = {ref: image for ref, image in images.items() if ref not in refused.failed}
        refused.failed.update(missing_parents(connection, tables, sendable))
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
    except Exception as error:  # any per-row error: the keys are tried one by one below
        _raise_if_disconnect(connection, error)
    result = ApplyResult()
    for ref in order:
        try:
            with connection.begin_nested():
                outcome = _write(connection, tables[ref.table], ref, images[ref])
        except Exception as error:  # ValueError (a NUL), TypeError, driver errors: this key's failure
            _raise_if_disconnect(connection, error)
            result.failed[ref] = _named_column(connection, tables[ref.table], images[ref], describe_error(error))
            continue
        result.applied.append(ref)
        setattr(result, outcome, getattr(result, outcome) + 1)
    return result


def _named_column(connection: sa.Connection, table: sa.Table, image: dict[str, Any] | None, error: str) -> str:
    """A value the secondary's binding refused ("rejected: <reason>", on the way to SQLite) with the
    column that holds it, as image_refusal names it on the way to PostgreSQL."""
    if image is None or not error.startswith("rejected: ") or error.endswith(")"):
        return error
    for name, value in image.items():
        column_type = table.columns[name].type
        if value is None or not isinstance(column_type, sa.types.TypeDecorator):
            continue
        try:
            column_type.process_bind_param(value, connection.dialect)
        except Rejected:
            return f"{error} ({name})"
    return error


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
            _upsert(connection, table, chunk)
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
        error, (sa.exc.OperationalError, sa.exc.InterfaceError, psycopg2.OperationalError, psycopg2.InterfaceError)
    )


def _raise_if_disconnect(connection: sa.Connection, error: Exception) -> None:
    """Re-raise an error about the connection (as SQLAlchemy's, whatever raised it); return otherwise."""
    if not _is_disconnect(error):
        return
    if isinstance(error, sa.exc.SQLAlchemyError):
        raise error
    connection.invalidate()
    raise sa.exc.OperationalError(None, None, error, connection_invalidated=True) from error


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
            held = action_refusals(postgres, sqlite, tables, images)
        result = write_images(
            postgres, tables, {ref: image for ref, image in images.items() if ref not in held},
            [ref for ref in refs if ref not in held],
        )
        result.failed.update(held)
        if any(reason.startswith(WAITING_FOR_PARENT) for reason in result.failed.values()):
            with reading(primary) as sqlite:  # now: a parent written since the images were read counts
                result.failed.update(orphans_in_sqlite(sqlite, tables, images, result.failed))
        for name in {ref.table for ref in result.applied if images[ref] is not None}:
            if tables[name].autoincrement_column is not None:
                bump_identity(postgres, tables[name])
        return result
