"""Schema changes during a cutover: seen within a second, capture re-armed, drift named.

The app keeps deploying while a cutover runs, and its migrations run on the
primary. Two things can then go wrong without a word: a table rebuilt the way
Alembic's batch mode does it (create a copy, drop the table, rename the copy)
loses its capture triggers with the dropped table, so later writes to it are
never carried; and a column added on one side only (`ALTER TABLE horses ADD
COLUMN sire`) holds values the other side cannot receive.

`SchemaWatch.check()` runs on the applier's thread every WATCH_S while the
phase has a secondary. It compares a signature of each side's schema (SQLite's
`PRAGMA schema_version`, which changes with every DDL; on PostgreSQL a hash of
the tables' columns and the layer's triggers) with the last one it saw, and on
a change:

1. re-arms capture on the primary for every table that lost it, inside a
   write transaction of the primary that re-reads the phase (a move in flight
   holds that lock, so the two never race) and leaves a move journal's work
   to the move;
2. carries the rows written while capture was missing: `carry(tables)` (the
   verifier with repair on those tables: range hashes find them, the one
   apply path writes them), tried again every WATCH_S until it succeeds; the
   re-arm also resets the evidence (hrp_data.flip.journal), so no move to
   the other side passes its checks before a fresh full verify, even if
   this process dies before its carry;
3. records the column drift between the two live schemas (`column_drift`):
   a column or table on one side only. Verify counts it as a difference and
   the readiness `schema` check refuses a move while there is any;
4. carries a column the app's migration added on SQLite while SQLite is the
   primary: reads the file's catalog again (the any-schema mapping), adds the
   column on PostgreSQL (`ADD COLUMN IF NOT EXISTS`, under the shared phase
   lock and a short lock_timeout), hands the new catalog to the process
   (`adopt`) so the applier carries whole images again, resets the evidence
   and carries the table's rows like a capture gap. Where PostgreSQL refuses
   (the app's role may not alter the table) the drift stays named, with
   `hrp-cutover schema` as the fix;
5. after the flip, carries a column the migration added on PostgreSQL to the
   file the same way (`ALTER TABLE ... ADD COLUMN` in a write transaction of
   the file that re-reads the phase, declared so the file's catalog reads it
   back as the same type: adapters.catalog.sqlite_declaration), so a rollback
   stays possible, and drops in the file a column PostgreSQL dropped (the
   file mirrors the primary; a rename arrives as a drop and an add, its values
   carried with the rows). A type no SQLite declaration maps back (json, uuid,
   arrays...), or a drop SQLite refuses, stays named and the rollback refused;
6. carries a table the migration created on the primary, in either direction
   (`_carry_tables`): created on the secondary, captured on the primary and
   guarded on the secondary, adopted, its rows carried, the evidence reset;
7. carries an index the migration created on the primary, in either direction
   (`_carry_indexes`, compared by hrp_data.cutover.indexes): created on the
   secondary with the same name (on PostgreSQL CONCURRENTLY, outside a
   transaction), dropped there when the primary dropped one the layer carried;
   one that cannot be carried with certainty, or that the secondary refused,
   is kept in `indexes` and listed with its statement (status, readiness).
8. carries a type the migration widened in the file while SQLite is the
   primary (`_carry_types`: NUMERIC(5,2) -> NUMERIC(8,2), INTEGER -> BIGINT,
   REAL -> DOUBLE: adapters.catalog.widens) with `ALTER COLUMN ... TYPE` on
   PostgreSQL; re-reads the catalog on any type change so the applier
   converts by the new type. Another type change is named (verify's
   `column_type_differs`, readiness) until PostgreSQL holds the new type.
A column dropped or renamed on SQLite before the flip is only named: the
flip waits for the same migration on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
import structlog

from adapters import postgres as postgres_adapter
from adapters import sqlite as sqlite_adapter
from adapters.binds import writing
from adapters.catalog import ROWID_COLUMN, Catalog, quote, short_name, sqlite_declaration, user_tables, widens
from hrp_data.catalog import captured, file_catalog
from hrp_data.cutover import outbox
from hrp_data.cutover.apply import PHASE_LOCK
from hrp_data.cutover.indexes import (LAYER_PREFIXES, POSTGRES_MARK, IndexDrift, drop_statement, index_drift,
                                      live_index_drift)
from hrp_data.errors import describe_error, privilege_refused
from hrp_data.flip import journal as move_journal
from hrp_data.cutover.phases import POSTGRES, SQLITE, PhaseRow, other_database
from hrp_data.schema.install import TypeDrift, type_drift

log = structlog.get_logger(__name__)

WATCH_S = 1.0
SQLITE_TRIGGER_SUFFIXES = ("ins", "upd", "del")


@dataclasses.dataclass(frozen=True)
class ColumnDrift:
    """A column (or, with column None, a whole table) that one side has and the other lacks."""

    table: str
    column: str | None
    only_in: str

    def __str__(self) -> str:
        if self.column is None:
            return f"table {self.table} only in {self.only_in}"
        return f"{self.table}.{self.column} only in {self.only_in}"

    def as_dict(self) -> dict:
        return {"table": self.table, "column": self.column, "kind": f"column_only_in_{self.only_in}"}


def _layer(name: str) -> bool:
    return name.startswith(LAYER_PREFIXES)


def live_columns(connection: sa.Connection, tables: Sequence[str]) -> dict[str, list[str]]:
    """The user columns of each of `tables` as the database holds them now (absent: no such table).

    Generated columns are left out on both sides: their values are computed from the others, the
    layer never writes them, and `schema`/`assess` list SQLite's as not carried, with the statement
    that adds one to PostgreSQL (where a generated column of the same name is then not drift either)."""
    found: dict[str, list[str]] = {}
    if connection.dialect.name == "sqlite":
        for name in tables:
            columns = connection.exec_driver_sql(
                "SELECT name FROM pragma_table_xinfo(?) WHERE hidden = 0 ORDER BY cid", (name,)
            ).scalars().all()
            if columns:
                found[name] = [c for c in columns if not _layer(c)]
        return found
    rows = connection.exec_driver_sql(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = ANY(%(names)s) AND is_generated = 'NEVER'"
        " ORDER BY ordinal_position",
        {"names": list(tables)},
    ).all()
    for table, column in rows:
        columns = found.setdefault(table, [])
        if not _layer(column):
            columns.append(column)
    return found


def _declared_types(connection: sa.Connection, tables: Sequence[str]) -> list[tuple[str, str, str]]:
    """(table, column, declared type) of the file's columns of `tables`, as the file declares them now."""
    return [(table, column, declared or "") for table in tables for column, declared in connection.exec_driver_sql(
        "SELECT name, type FROM pragma_table_xinfo(?) WHERE hidden = 0", (table,)).all()]


def column_drift(sqlite_connection: sa.Connection, postgres_connection: sa.Connection,
                 tables: Sequence[str], sqlite_names: Mapping[str, str] | None = None) -> list[ColumnDrift]:
    """Every column or table of `tables` that one live schema has and the other lacks.

    `sqlite_names` maps a catalog name to the file's name of the table where they differ (a name
    PostgreSQL cannot hold: adapters.catalog.short_name, which also names the file's columns there)."""
    sqlite_names = dict(sqlite_names or {})
    in_file = live_columns(sqlite_connection, [sqlite_names.get(t, t) for t in tables])
    sides = {
        SQLITE: {t: [short_name(c) for c in in_file[sqlite_names.get(t, t)]]
                 for t in tables if sqlite_names.get(t, t) in in_file},
        POSTGRES: live_columns(postgres_connection, tables),
    }
    drift: list[ColumnDrift] = []
    for table in tables:
        here, there = sides[SQLITE].get(table), sides[POSTGRES].get(table)
        if here is None and there is None:
            continue
        if here is None or there is None:
            drift.append(ColumnDrift(table, None, SQLITE if there is None else POSTGRES))
            continue
        drift += [ColumnDrift(table, c, SQLITE) for c in here if c not in there]
        drift += [ColumnDrift(table, c, POSTGRES) for c in there if c not in here]
    return drift


def schema_drift(sqlite: sa.Engine, postgres: sa.Engine, tables: Sequence[str],
                 sqlite_names: Mapping[str, str] | None = None) -> list[ColumnDrift]:
    with sqlite.connect() as here, postgres.connect() as there:
        try:
            return column_drift(here, there, tables, sqlite_names)
        finally:
            here.rollback()
            there.rollback()


def _signature(connection: sa.Connection, tables: Sequence[str]) -> str:
    if connection.dialect.name == "sqlite":
        return str(connection.exec_driver_sql("PRAGMA schema_version").scalar())
    rows = connection.exec_driver_sql(
        "SELECT c.relname, c.oid::text, a.attname, a.atttypid::text, coalesce(t.tgname, ''), coalesce(t.tgenabled, '')"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema()"
        " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
        " LEFT JOIN pg_trigger t ON t.tgrelid = c.oid AND NOT t.tgisinternal"
        " WHERE c.relname = ANY(%(names)s) ORDER BY 1, 3, 5",
        {"names": list(tables)},
    ).all()
    every_table = connection.exec_driver_sql(  # a table a migration created is a change too
        "SELECT c.oid::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') ORDER BY c.oid"
    ).scalars().all()
    indexes = connection.exec_driver_sql(  # an index a migration created or dropped is one too
        "SELECT i.indexrelid::text, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema()"
        " WHERE c.relname = ANY(%(names)s) ORDER BY 1",
        {"names": list(tables)},
    ).all()
    return hashlib.blake2b(repr((rows, every_table, indexes)).encode(), digest_size=16).hexdigest()


def _missing(connection: sa.Connection, tables: Sequence[sa.Table], sqlite_prefix: str,
             postgres_trigger: Callable[[sa.Table], str]) -> list[str]:
    """The tables lacking one of the layer's trigger kinds (on PostgreSQL: missing or disabled)."""
    if connection.dialect.name == "sqlite":
        names = sqlite_adapter.trigger_names(connection)
        return [
            t.name for t in tables
            if any(f"{sqlite_prefix}_{t.name}_{suffix}" not in names for suffix in SQLITE_TRIGGER_SUFFIXES)
        ]
    states = postgres_adapter.trigger_states(connection)
    return [t.name for t in tables if not states.get((t.name, postgres_trigger(t)))]


def uncaptured(connection: sa.Connection, tables: Sequence[sa.Table]) -> list[str]:
    """The tables whose capture triggers are missing (or, on PostgreSQL, missing or disabled)."""
    return _missing(connection, tables, outbox.OUTBOX,
                    lambda table: postgres_adapter.capture_trigger_name(table, outbox.OUTBOX))


def unguarded(connection: sa.Connection, tables: Sequence[sa.Table]) -> list[str]:
    """The tables whose guard triggers are missing (or, on PostgreSQL, missing or disabled)."""
    return _missing(connection, tables, sqlite_adapter.GUARD_PREFIX, lambda table: postgres_adapter.GUARD_TRIGGER)


def postgres_columns(connection: sa.Connection, pairs: Sequence[tuple[str, str]]) \
        -> dict[tuple[str, str], tuple[str, bool, str | None]]:
    """(table, column) -> (format_type spelling, NOT NULL, default expression) on PostgreSQL."""
    rows = connection.exec_driver_sql(
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,"
        " pg_get_expr(d.adbin, d.adrelid)"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema()"
        " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
        " LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum"
        " WHERE c.relname = ANY(%(tables)s)",
        {"tables": sorted({table for table, _ in pairs})},
    ).all()
    wanted = set(pairs)
    return {(table, column): (kind, not_null, default)
            for table, column, kind, not_null, default in rows if (table, column) in wanted}


def postgres_only_tables(connection: sa.Connection, known: Collection[str]) -> list[str]:
    """The tables of PostgreSQL's current schema not among `known` (the file's catalog's names; the
    layer's own and its version table left out): after the flip, tables the app's migrations created."""
    names = connection.exec_driver_sql(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
        " ORDER BY c.oid"
    ).scalars().all()
    return [name for name in names if name not in known and not _layer(name)]


def sqlite_table_ddl(connection: sa.Connection, table: str) -> str | None:
    """CREATE TABLE for the file, for a table PostgreSQL holds, declared so that the file's catalog
    reads back the same (or the enforced) types (adapters.catalog.sqlite_declaration); a single
    integer key becomes the rowid (INTEGER PRIMARY KEY). None where a column has no such declaration
    or the table has no primary key. Foreign keys are left out (the file never enforced them)."""
    columns = connection.exec_driver_sql(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid)"
        " FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
        " WHERE a.attrelid = %(table)s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        {"table": quote(table)},
    ).all()
    key = connection.exec_driver_sql(
        "SELECT a.attname FROM pg_index i JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
        " WHERE i.indrelid = %(table)s::regclass AND i.indisprimary ORDER BY k.n",
        {"table": quote(table)},
    ).scalars().all()
    if not key:
        return None
    types = {name: kind for name, kind, _, _ in columns}
    rowid = len(key) == 1 and types[key[0]] in ("integer", "bigint", "smallint")
    parts = []
    for name, kind, not_null, default in columns:
        if rowid and name == key[0]:
            parts.append(f"{quote(name)} INTEGER PRIMARY KEY")
            continue
        declaration = sqlite_declaration(kind, not_null, default)
        if declaration is None:
            return None
        parts.append(f"{quote(name)} {declaration}{' NOT NULL' if not_null and 'NOT NULL' not in declaration else ''}")
    if not rowid:
        parts.append(f"PRIMARY KEY ({', '.join(map(quote, key))})")
    return f"CREATE TABLE {quote(table)} ({', '.join(parts)})"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _drop_invalid(connection: sa.Connection, name: str) -> None:
    """Drop the index `name` (quoted) if a CREATE INDEX CONCURRENTLY left it invalid."""
    invalid = connection.exec_driver_sql(
        f"SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass({_literal(name)})").scalar()
    if invalid:
        connection.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


def _created_reason(tables: Sequence[str]) -> str:
    return f"tables created by a migration: {', '.join(tables)}"


def _carried_reason(carried: Sequence[ColumnDrift]) -> str:
    return f"columns added by a migration: {', '.join(map(str, carried))}"


def sqlite_names(catalog: Catalog) -> dict[str, str]:
    """Catalog name -> the file's name, for the tables whose names differ."""
    return {name: entry.name for name, entry in catalog.tables.items() if entry.name != name}


class SchemaWatch:
    """Watches both schemas from the applier's thread; see the module docstring."""

    def __init__(
        self,
        engines: Callable[[str], sa.Engine],
        phase_row: Callable[[], PhaseRow],
        carry: Callable[[list[str]], object],
        *,
        catalog: Catalog,
        adopt: Callable[[Catalog], object] | None = None,
    ):
        """`adopt(catalog)`: the process takes a catalog read again after a column was carried."""
        self.engines = engines
        self.phase_row = phase_row
        self.carry = carry
        self.adopt = adopt
        self._take(catalog)
        self._seen: dict[str, str] = {}
        self.drift: list[ColumnDrift] = []
        self.indexes: list[IndexDrift] = []
        """The indexes one side holds and the other lacks, not carried (listed with their statement)."""
        self._index_refused: dict[tuple[str, str, str], str] = {}
        self.rearmed: list[str] = []
        self._to_carry: set[str] = set()

    def _take(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.captured = captured(catalog)
        self.tables = list(self.captured.values())
        self.names = [t.name for t in self.tables]

    def check(self) -> list[str]:
        """Look once; returns the tables whose capture was re-armed (and carried)."""
        row = self.phase_row()
        if row.secondary is None:
            self._seen.clear()
            return []
        rearmed: list[str] = []
        if self._changed(row.primary):  # capture lives on the primary: checked even with the secondary away
            self._index_refused.clear()  # a new migration: try again what the secondary refused
            rearmed = self._rearm(row.primary)
            if rearmed:
                log.warning("schema.capture_rearmed", tables=rearmed, primary=row.primary)
                self.rearmed = rearmed
                self._to_carry.update(rearmed)
            self._seen.pop(row.secondary, None)  # compare the two schemas again below
        if self._changed(row.secondary):
            unguarded = self._rearm(row.secondary)  # a rebuild on the secondary took its guard along
            if unguarded:
                log.warning("schema.guard_rearmed", tables=unguarded, secondary=row.secondary)
            drift = schema_drift(self.engines(SQLITE), self.engines(POSTGRES), self.names, sqlite_names(self.catalog))
            if self.adopt is not None:
                drift = self._carry_columns(drift, row.primary) + self._carry_tables(row)
                if row.primary == SQLITE:
                    self._carry_types()
            if drift != self.drift and drift:
                log.warning("schema.drift", differences=[str(d) for d in drift])
            self.drift = drift
            indexes = self._carry_indexes(row) if self.adopt is not None else self._index_drift()
            if indexes != self.indexes and indexes:
                log.warning("schema.indexes_not_carried", indexes=[str(d) for d in indexes])
            self.indexes = indexes
        if self._to_carry:  # until it succeeds (the secondary may be away); the evidence reset holds moves
            tables = sorted(self._to_carry)
            self.carry(tables)
            self._to_carry.difference_update(tables)
        return rearmed

    def _carry_columns(self, drift: list[ColumnDrift], primary: str) -> list[ColumnDrift]:
        """Add on the secondary the columns the app's migration added on the primary; adopt the
        file's catalog read again wherever the file has columns this process's catalog lacks (added
        here, or by another process's watch); queue those tables' rows for carrying. Returns the
        drift left."""
        added = [d for d in drift if d.only_in == primary and d.column is not None]
        dropped = [d for d in drift if d.only_in == SQLITE and d.column is not None] if primary == POSTGRES else []
        behind = self._behind(drift)
        if not added and not dropped and not behind:
            return drift
        if primary == SQLITE:
            fresh = file_catalog(self.engines(SQLITE))  # read once, for the ALTERs and the adoption
            carried = self._add_on_postgres(added, fresh)
        else:
            carried = self._alter_file(added, dropped)
            fresh = file_catalog(self.engines(SQLITE))  # with the columns just added or dropped
        left = [d for d in drift if d not in carried]
        tables = {d.table for d in carried} | behind
        if not tables:
            return left
        self._take(fresh)
        self.adopt(fresh)
        if carried:
            if primary == SQLITE:  # on PostgreSQL's side the reset shared the ALTERs' transaction
                with writing(self.engines(SQLITE)) as sqlite:
                    move_journal.reset_evidence(sqlite, _carried_reason(carried))
            log.warning("schema.columns_carried", columns=[f"{d.table}.{d.column}" for d in carried],
                        to=other_database(primary))
        self._to_carry.update(tables)
        self._seen.pop(other_database(primary), None)
        return left

    def _index_drift(self) -> list[IndexDrift]:
        return live_index_drift(self.engines(SQLITE), self.engines(POSTGRES), self.catalog)

    def _carry_indexes(self, row: PhaseRow) -> list[IndexDrift]:
        """Create on the secondary, with the same name, each index the primary holds and the
        secondary lacks where it can be carried (hrp_data.cutover.indexes); drop on the secondary
        each index the layer carried there that the primary no longer holds. Returns those left:
        an index that cannot be carried with certainty, one the secondary refused (a role that may
        not create it, duplicates), one only the secondary holds that the layer did not make."""
        with self.engines(SQLITE).connect() as here, self.engines(POSTGRES).connect() as there:
            try:
                drift, behind = index_drift(here, there, self.catalog)
            finally:
                here.rollback()
                there.rollback()
        primary, secondary = row.primary, row.secondary
        create = [d for d in drift if d.only_in == primary and d.why is None
                  and (d.table, d.name, d.statement) not in self._index_refused]
        drop = [d for d in drift if d.only_in == secondary and d.carried]
        if not create and not drop:
            return [self._refused(d) for d in drift]
        done = (self._indexes_on_postgres if secondary == POSTGRES else self._indexes_in_file)(
            [(d, d.statement) for d in create]
            + [(d, drop_statement(behind[(secondary, d.name)])) for d in drop])
        if done:
            log.warning("schema.indexes_carried", to=secondary,
                        created=[d.name for d in create if d in done], dropped=[d.name for d in drop if d in done])
        return [self._refused(d) for d in drift if d not in done]

    def _refused(self, change: IndexDrift) -> IndexDrift:
        """`change` with the reason the secondary gave when it refused it, if it did."""
        reason = self._index_refused.get((change.table, change.name, change.statement))
        return dataclasses.replace(change, why=reason) if reason and not change.why else change

    def _index_not_carried(self, change: IndexDrift, error: Exception) -> None:
        reason = f"{other_database(change.only_in)} refused it: {describe_error(error)}"
        self._index_refused[(change.table, change.name, change.statement)] = reason
        log.warning("schema.index_not_carried", index=change.name, table=change.table, error=describe_error(error),
                    fix=f"run on {other_database(change.only_in)}: {change.statement}")

    def _indexes_on_postgres(self, work: list[tuple[IndexDrift, str]]) -> list[IndexDrift]:
        """CREATE INDEX CONCURRENTLY (writes to the table go on while it builds; outside a
        transaction, so no phase lock: an index finished after a flip is still the primary's),
        marked as carried; a build that fails leaves no invalid index behind."""
        done = []
        with self.engines(POSTGRES).connect() as connection:
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            for change, statement in work:
                name = quote(short_name(change.name))
                try:
                    if change.only_in == SQLITE:
                        _drop_invalid(connection, name)  # a build a crash cut short: IF NOT EXISTS keeps it
                    connection.exec_driver_sql(statement)
                    if change.only_in == SQLITE:
                        connection.exec_driver_sql(f"COMMENT ON INDEX {name} IS {_literal(POSTGRES_MARK)}")
                except sa.exc.SQLAlchemyError as error:
                    self._index_not_carried(change, error)
                    if change.only_in == SQLITE:
                        try:  # a failed CONCURRENTLY build leaves an invalid index
                            _drop_invalid(connection, name)
                        except sa.exc.SQLAlchemyError:
                            pass
                    continue
                done.append(change)
        return done

    def _indexes_in_file(self, work: list[tuple[IndexDrift, str]]) -> list[IndexDrift]:
        """CREATE INDEX (marked as carried) or DROP INDEX in the file (`_in_file`); one SQLite refuses
        (duplicates, a column the file lacks) is logged and left."""
        return self._in_file(
            work, sa.exc.SQLAlchemyError, self._index_not_carried,
            lambda error: log.warning("schema.indexes_not_carried", indexes=[d.name for d, _ in work],
                                      error=describe_error(error)),
        )

    def _in_file(self, work: list[tuple[Any, str]], refusals: type[Exception] | tuple,
                 refused: Callable[[Any, Exception], None], locked: Callable[[Exception], None],
                 evidence: Callable[[list], str] | None = None) -> list:
        """Each (change, statement) of `work` in one write transaction of the file that re-reads the
        phase (the file is the secondary: only the layer writes it; a move holds this lock while it
        moves), each in a savepoint. `refused(change, error)` for a statement SQLite refuses
        (`refusals`); `locked(error)` when the file stays locked, looked at again next round. Returns
        the changes done; `evidence(done)`: the reason the verify evidence is reset, if they call for it."""
        done: list = []
        try:
            with writing(self.engines(SQLITE)) as connection:
                if not self._still(POSTGRES):
                    return []  # the phase moved meanwhile: the next look decides again
                for change, statement in work:
                    try:
                        with connection.begin_nested():
                            connection.exec_driver_sql(statement)
                    except refusals as error:
                        refused(change, error)
                        continue
                    done.append(change)
                if done and evidence is not None:
                    move_journal.reset_evidence(connection, evidence(done))
        except sa.exc.SQLAlchemyError as error:
            locked(error)
            self._seen.pop(SQLITE, None)
            return []
        return done

    def _alter_file(self, added: list[ColumnDrift], dropped: list[ColumnDrift]) -> list[ColumnDrift]:
        """After the flip, the file follows PostgreSQL's columns: `ADD COLUMN` for each column
        PostgreSQL got, declared so the file's catalog reads it back as the same type (or the one
        its declaration names and PostgreSQL enforces: adapters.catalog.sqlite_declaration), and
        `DROP COLUMN` for each column PostgreSQL dropped (the file is the secondary: it mirrors the
        primary, whose rows no longer have it; a rename arrives as a drop and an add, its values
        carried with the rows). Returns those done. A type no declaration maps back, or a drop SQLite
        refuses (an indexed or key column), stays named and holds the rollback."""
        if not added and not dropped:
            return []
        with self.engines(POSTGRES).connect() as connection:
            described = postgres_columns(connection, [(d.table, d.column) for d in added])
            connection.rollback()
        names = sqlite_names(self.catalog)
        wanted: list[tuple[ColumnDrift, str]] = []
        for change in added:
            found = described.get((change.table, change.column))
            declaration = sqlite_declaration(*found) if found else None
            if declaration is None:
                log.warning("schema.column_not_carried", column=str(change),
                            postgres_type=found[0] if found else None,
                            fix="add the column to the SQLite file by hand (its type has no SQLite"
                                " declaration the layer reads back the same) before a rollback")
                continue
            wanted.append((change, f"ALTER TABLE {quote(names.get(change.table, change.table))}"
                                   f" ADD COLUMN {quote(change.column)} {declaration}"))
        wanted += [(change, f"ALTER TABLE {quote(names.get(change.table, change.table))}"
                            f" DROP COLUMN {quote(change.column)}") for change in dropped]
        return self._in_file(
            wanted, sa.exc.OperationalError,
            lambda change, error: log.warning(
                "schema.column_not_carried", column=str(change), error=describe_error(error),
                fix="change the SQLite file by hand as the migration changed PostgreSQL"),
            lambda error: log.warning("schema.columns_not_carried", columns=[str(d) for d, _ in wanted],
                                      error=describe_error(error)),
            evidence=_carried_reason,
        )

    def _add_on_postgres(self, added: list[ColumnDrift], fresh: Catalog) -> list[ColumnDrift]:
        """`ALTER TABLE ... ADD COLUMN IF NOT EXISTS` for each, with the file's mapping (`fresh`);
        returns those added."""
        if not added:
            return []
        dialect = self.engines(POSTGRES).dialect
        statements, carried = [], []
        for change in added:
            entry = fresh.tables.get(change.table)
            column = entry.postgres.c.get(change.column) if entry is not None else None
            if column is None or column.primary_key or column.identity is not None:
                continue
            statements.append(
                f"ALTER TABLE {quote(change.table)} ADD COLUMN IF NOT EXISTS"
                f" {sa.schema.CreateColumn(column).compile(dialect=dialect)}"
            )
            carried.append(change)
        if not carried or not self._run_on_postgres(
            statements, "schema.columns_not_carried", columns=[str(d) for d in carried],
            fix="run `hrp-cutover schema` as the tables' owner",
        ):
            return []
        return carried

    @contextlib.contextmanager
    def _altering_postgres(self) -> Iterator[sa.Connection]:
        """A transaction on PostgreSQL for the DDL the watch carries there: under the shared phase
        lock (no move in flight) and a short lock_timeout (the app's queries are not held behind it)."""
        with self.engines(POSTGRES).begin() as connection:
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock_shared(PHASE_LOCK)))
            connection.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
            yield connection

    def _run_on_postgres(self, statements: Sequence[str], event: str, **named) -> bool:
        """Run `statements` in one `_altering_postgres` transaction; on failure log `event` with
        `named` and look again next round, unless the role may not (returns whether they ran)."""
        try:
            with self._altering_postgres() as connection:
                for statement in statements:
                    connection.exec_driver_sql(statement)
        except sa.exc.SQLAlchemyError as error:
            log.warning(event, error=describe_error(error), **named)
            if not privilege_refused(error):  # a lock held too long, PostgreSQL away
                self._seen.pop(POSTGRES, None)
            return False
        return True

    def _carry_types(self) -> list[TypeDrift]:
        """A type the app's migration widened in the file (a batch-mode rebuild: VARCHAR(20) ->
        VARCHAR(200), INTEGER -> BIGINT, ...): `ALTER COLUMN ... TYPE` on PostgreSQL where the new
        type holds every value of the old one (adapters.catalog.widens), under the shared phase lock
        and a short lock_timeout. No value changes, so no row needs carrying. Any other type change
        stays named by verify and readiness (the statement is the migration's to run). Returns those
        carried."""
        with self.engines(POSTGRES).connect() as connection:  # the catalog `_behind` kept as the file declares
            found = type_drift(connection, self.catalog, self.names)
            connection.rollback()
        widened = [d for d in found if widens(d.in_postgres, d.in_file)]
        if not widened or not self._run_on_postgres(
            [f"ALTER TABLE {quote(d.table)} ALTER COLUMN {quote(d.column)} TYPE {d.in_file}" for d in widened],
            "schema.types_not_carried", columns=[str(d) for d in widened],
            fix="run the migration's ALTER COLUMN ... TYPE on PostgreSQL as the tables' owner",
        ):
            return []
        log.warning("schema.types_carried", columns=[f"{d.table}.{d.column}: {d.in_postgres} -> {d.in_file}"
                                                     for d in widened], to=POSTGRES)
        return widened

    def _carry_tables(self, row: PhaseRow) -> list[ColumnDrift]:
        """A table the app's migration created on the primary: created on the secondary with the
        any-schema mapping, captured on the primary and guarded on the secondary, adopted, and its
        rows carried; a table another process carried is adopted. Both compared live (never with
        this process's catalog, which a column's adoption may already have refreshed). Returns the
        new tables not carried (named as drift)."""
        with self.engines(SQLITE).connect() as connection:
            in_file = [name for name, _ in user_tables(connection)]
            connection.rollback()
        held = {short_name(name) for name in in_file}
        with self.engines(POSTGRES).connect() as connection:
            on_postgres = set(sa.inspect(connection).get_table_names())
            postgres_only = postgres_only_tables(connection, held)
            connection.rollback()
        named: list[ColumnDrift] = []
        if row.primary == SQLITE:
            missing = [name for name in in_file if short_name(name) not in on_postgres]
            if missing:
                return self._tables_to_postgres(row, missing)
        elif postgres_only:
            named = self._tables_to_sqlite(row, postgres_only)
        known = {entry.name for entry in self.catalog.tables.values()}
        with self.engines(SQLITE).connect() as connection:
            unknown = [name for name, _ in user_tables(connection) if name not in known]
            connection.rollback()
        if unknown:  # another process (or the step above) created them: this one carries them too
            self._adopt_tables(file_catalog(self.engines(SQLITE)), [], row.secondary)
        return named

    def _tables_to_postgres(self, row: PhaseRow, new: list[str]) -> list[ColumnDrift]:
        fresh = file_catalog(self.engines(SQLITE))
        keys = [key for key, entry in fresh.tables.items() if entry.name in new]
        named = [ColumnDrift(key, None, SQLITE) for key in keys]
        try:
            with self._altering_postgres() as connection:
                present = set(sa.inspect(connection).get_table_names())
                postgres_adapter.create_tables(connection, [fresh.tables[k].postgres for k in keys if k not in present])
                outbox.set_triggers(connection, row.triggers_on(POSTGRES), fresh)  # the secondary's guard
        except sa.exc.SQLAlchemyError as error:
            self._not_carried(named, error)
            return named
        with writing(self.engines(SQLITE)) as connection:  # a move holds this lock while it moves
            if not self._still(SQLITE):
                return named
            outbox.set_triggers(connection, row.triggers_on(SQLITE), fresh)  # capture from now on
            move_journal.reset_evidence(connection, _created_reason(keys))
        self._adopt_tables(fresh, keys, POSTGRES)
        return []

    def _tables_to_sqlite(self, row: PhaseRow, new: list[str]) -> list[ColumnDrift]:
        named = [ColumnDrift(name, None, POSTGRES) for name in new]
        with self.engines(POSTGRES).connect() as connection:
            ddl = {name: sqlite_table_ddl(connection, name) for name in new}
            connection.rollback()
        for name, statement in ddl.items():
            if statement is None:
                log.warning("schema.table_not_carried", table=name,
                            fix="create the table in the SQLite file by hand before a rollback (a column type"
                                " no SQLite declaration reads back the same, or no primary key)")
        carried = [name for name in new if ddl[name] is not None]
        if not carried:
            return named
        try:
            with writing(self.engines(SQLITE)) as connection:  # a move holds this lock while it moves
                if not self._still(POSTGRES):
                    return named
                there = {name for name, _ in user_tables(connection)}  # another process may have been first
                for name in carried:
                    if name not in there:
                        connection.exec_driver_sql(ddl[name])
                fresh = file_catalog(connection)
                outbox.set_triggers(connection, row.triggers_on(SQLITE), fresh)  # the secondary's guard
                move_journal.reset_evidence(connection, _created_reason(carried))
            with self._altering_postgres() as connection:
                outbox.set_triggers(connection, row.triggers_on(POSTGRES), fresh)  # capture from now on
        except sa.exc.SQLAlchemyError as error:
            self._not_carried(named, error)
            return named
        self._adopt_tables(fresh, carried, SQLITE)
        return [d for d in named if d.table not in carried]

    def _still(self, primary: str) -> bool:
        """Inside a write transaction of the file: the phase has not moved and no move is in flight."""
        return self.phase_row().primary == primary and move_journal.current(self.engines(SQLITE)) is None

    def _adopt_tables(self, fresh: Catalog, keys: list[str], to: str) -> None:
        self._take(fresh)
        self.adopt(fresh)
        if keys:
            log.warning("schema.tables_carried", tables=keys, to=to)
        self._to_carry.update(keys)  # the rows written before capture reached them
        self._seen.clear()

    def _not_carried(self, named: list[ColumnDrift], error: Exception) -> None:
        refused = privilege_refused(error)
        log.warning("schema.tables_not_carried", tables=[d.table for d in named], error=describe_error(error),
                    fix="run `hrp-cutover schema` as the tables' owner")
        if not refused:  # a lock held too long, a database away: look again next round
            self._seen.clear()

    def _behind(self, drift: list[ColumnDrift]) -> set[str]:
        """Tables whose live file has columns (that PostgreSQL has too) this process's catalog lacks,
        or lacks columns the catalog has (a migration dropped them: the applier must stop reading them),
        or declares a column with another type than the catalog read (a rebuild changed it: the applier
        must convert by the new one)."""
        names = sqlite_names(self.catalog)
        with self.engines(SQLITE).connect() as connection:
            live = live_columns(connection, [names.get(t, t) for t in self.names])
            declared = {(table, column): kind for table, column, kind in _declared_types(
                connection, [names.get(t, t) for t in self.names])}
            connection.rollback()
        read = {(m.table, m.column): m.declared for entry in self.catalog.tables.values() for m in entry.mapping}
        one_sided = {(d.table, d.column) for d in drift}
        behind = set()
        for table in self.names:
            known = set(self.captured[table].c.keys()) - {ROWID_COLUMN}
            held = {short_name(column) for column in live.get(names.get(table, table), [])}
            if (known - held) or any(c not in known and (table, c) not in one_sided for c in held):
                behind.add(table)
        retyped = {file_table for (file_table, column), kind in declared.items()
                   if read.get((file_table, column), kind) != kind}
        behind |= {t for t in self.names if names.get(t, t) in retyped}
        return behind

    def _changed(self, side: str) -> bool:
        """Whether `side`'s schema signature differs from the last one seen (first look: True)."""
        try:
            with self.engines(side).connect() as connection:
                signature = _signature(connection, self.names)
                connection.rollback()
        except Exception:
            self._seen.pop(side, None)
            raise
        changed = self._seen.get(side) != signature
        self._seen[side] = signature
        return changed

    def _rearm(self, side: str) -> list[str]:
        """Put back the triggers the phase wants on `side` where a schema change took them away;
        returns the tables that lost capture (on the primary) or their guard (on the secondary)."""
        engine = self.engines(side)
        if side == SQLITE:
            with writing(engine) as connection:  # a move holds this lock while it changes triggers
                return self._rearm_in(connection, SQLITE)
        with engine.begin() as connection:
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock_shared(PHASE_LOCK)))  # no move in flight
            return self._rearm_in(connection, POSTGRES)

    def _rearm_in(self, connection: sa.Connection, side: str) -> list[str]:
        row = self.phase_row()
        if row.secondary is None or side not in (row.primary, row.secondary) \
                or move_journal.current(self.engines(SQLITE)) is not None:
            return []  # the phase moved meanwhile, or a move's own steps will set the triggers
        wanted = row.triggers_on(side)
        named = self.captured.on(side)
        catalog_name = {table.name: key for key, table in named.items()}
        if wanted.capture:
            missing = [catalog_name[name] for name in uncaptured(connection, list(named.values()))]
        elif wanted.guard:
            guarded = [named[name] for name in self.catalog.tables]
            missing = [catalog_name[name] for name in unguarded(connection, guarded)]
        else:
            return []
        if not missing:
            return []
        outbox.set_triggers(connection, wanted, self.catalog)
        if wanted.capture:
            reason = f"capture of {', '.join(missing)} was missing after a schema change"
            if side == SQLITE:  # in the same transaction as the re-arm
                move_journal.reset_evidence(connection, reason)
            else:
                with writing(self.engines(SQLITE)) as sqlite:
                    move_journal.reset_evidence(sqlite, reason)
        return missing

    def watch(self) -> None:
        """The applier's periodic call: never raises (a failure is logged and tried again)."""
        try:
            self.check()
        except Exception as error:  # noqa: BLE001 - PostgreSQL away, a lock held: next time
            self._seen.clear()
            log.info("schema.watch_later", error=describe_error(error))
