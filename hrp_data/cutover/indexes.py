"""Indexes during a cutover: what each side holds, what one side lacks, and the statement for it.

An index the app's migration creates on the primary is carried to the
secondary with the same name (hrp_data.cutover.schema_watch). This module
reads both sides and compares them, the same way for the watch, `status` and
the readiness `schema` check (nothing is remembered between two looks):

- the file's indexes are those `CREATE INDEX` made (PRAGMA index_list origin
  'c': not the rowid key, not a UNIQUE or PRIMARY KEY of CREATE TABLE, which
  come with their table) on the catalog's tables;
- PostgreSQL's are the indexes of the catalog's tables, without the primary
  key, an index backing a constraint (PRIMARY KEY, UNIQUE, EXCLUDE), the
  layer's own (hrp_cutover_*, hrp_shadow_*) and those the catalog defines
  (for the HRP file the models' indexes, which the file never had); an index
  an unfinished backfill holds back counts as there (the backfill builds it);
- an index is on the other side when that side has an index of the same name
  (a file's name longer than 63 bytes: adapters.catalog.short_name), or one
  on the same columns in the same order and direction (for a unique one: a
  unique index, key or constraint on the same columns);
- an index can be carried when it is a btree on plain columns, not partial,
  with exact comparisons (SQLite BINARY; on PostgreSQL a deterministic
  collation, NULLS DISTINCT, no INCLUDE). Any other one is listed with its own
  definition, to run translated on the other side;
- the layer marks what it carried (a comment on the PostgreSQL index, a
  comment inside the file's CREATE INDEX), so that an index the primary
  dropped is dropped on the secondary only when the layer made it there.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import sqlalchemy as sa

from adapters.catalog import Catalog, quote, short_name

SQLITE = "sqlite"
POSTGRES = "postgres"
LAYER_PREFIXES = ("hrp_cutover_", "hrp_shadow_")
HELD_INDEXES = "hrp_cutover_backfill_indexes"
"""hrp_data.backfill.holds: the indexes a backfill dropped and builds again when it ends."""
POSTGRES_MARK = "hrp-cutover: carried from the SQLite file"
SQLITE_MARK = "/* hrp-cutover: carried from PostgreSQL */"


@dataclasses.dataclass(frozen=True)
class Index:
    """One index as one side holds it; `columns` in the catalog's (PostgreSQL's) column names."""

    side: str
    table: str
    """The catalog's name of the table."""
    name: str
    unique: bool
    columns: tuple[tuple[str, bool], ...]
    """(column, descending) of each key column; empty where `why` says it cannot be carried."""
    definition: str
    why: str | None
    """Why it cannot be carried with certainty; None when it can."""
    carried: bool
    """The layer made it (its mark)."""

    @property
    def other_name(self) -> str:
        """Its name on the other side."""
        return short_name(self.name) if self.side == SQLITE else self.name


@dataclasses.dataclass(frozen=True)
class IndexDrift:
    """An index one side holds and the other lacks, with the statement to run on the other side."""

    table: str
    name: str
    only_in: str
    unique: bool
    statement: str
    why: str | None
    carried: bool = False

    def __str__(self) -> str:
        other = POSTGRES if self.only_in == SQLITE else SQLITE
        text = f"{'unique ' if self.unique else ''}index {self.name} on {self.table} only in {self.only_in}"
        if self.why:
            text += f" ({self.why})"
            return f"{text}; run on {other}, its expression translated where the dialects differ: {self.statement}"
        return f"{text}; run on {other}: {self.statement}"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self) | {"kind": f"index_only_in_{self.only_in}"}


def _layer(name: str) -> bool:
    return name.lower().startswith(LAYER_PREFIXES)


def sqlite_indexes(connection: sa.Connection, catalog: Catalog) -> list[Index]:
    """The file's CREATE INDEX indexes on the catalog's tables."""
    found = []
    for key, entry in catalog.tables.items():
        columns = {row.column: row.postgres_name for row in entry.mapping}
        for _seq, name, unique, origin, partial in connection.exec_driver_sql(
            "SELECT seq, name, \"unique\", origin, partial FROM pragma_index_list(?)", (entry.name,)
        ).all():
            if origin != "c" or _layer(name):
                continue
            parts = connection.exec_driver_sql(
                "SELECT cid, name, \"desc\", coll FROM pragma_index_xinfo(?) WHERE key = 1 ORDER BY seqno", (name,)
            ).all()
            sql = connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)
            ).scalar() or ""
            why = None
            if partial:
                why = "a partial index: its WHERE is SQLite's dialect"
            elif any(cid < 0 for cid, *_ in parts):
                why = "an expression index: its expression is SQLite's dialect"
            elif any((coll or "BINARY").upper() != "BINARY" for *_, coll in parts):
                why = "a collation PostgreSQL does not have (COLLATE NOCASE/RTRIM)"
            elif any(column not in columns for _, column, _, _ in parts):
                why = "a column the catalog does not carry"
            found.append(Index(
                SQLITE, key, name, bool(unique),
                () if why else tuple((columns[column], bool(desc)) for _, column, desc, _ in parts),
                sql, why, SQLITE_MARK in sql,
            ))
    return found


POSTGRES_INDEXES = """
SELECT t.relname, ic.relname, i.indisunique, i.indisprimary,
       EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid
               AND k.contype IN ('p', 'u', 'x')) AS backs_constraint,
       i.indexprs IS NOT NULL, i.indpred IS NOT NULL, am.amname, i.indnkeyatts <> i.indnatts,
       coalesce((to_jsonb(i) ->> 'indnullsnotdistinct')::boolean, false), i.indisvalid,
       pg_get_indexdef(i.indexrelid), coalesce(obj_description(i.indexrelid, 'pg_class'), ''),
       k.columns, k.descending, k.exact
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = current_schema()
JOIN pg_am am ON am.oid = ic.relam
CROSS JOIN LATERAL (
    SELECT array_agg(a.attname::text ORDER BY u.n) AS columns,
           array_agg((i.indoption[u.n - 1] & 1) = 1 ORDER BY u.n) AS descending,
           bool_and(coalesce(co.collisdeterministic, true)) AS exact
    FROM unnest(i.indkey) WITH ORDINALITY AS u(attnum, n)
    LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = u.attnum AND u.attnum > 0
    LEFT JOIN pg_collation co ON co.oid = i.indcollation[u.n - 1]
    WHERE u.n <= i.indnkeyatts
) k
WHERE t.relname = ANY(%(tables)s)
ORDER BY ic.oid
"""


def postgres_indexes(connection: sa.Connection, catalog: Catalog) -> tuple[list[Index], list[Index]]:
    """(every valid index of the catalog's tables, as the other side's match may be any of them;
    the ones a migration may have made: not a key, a constraint's, the layer's or the catalog's own)."""
    defined = {(key, index.name) for key, entry in catalog.tables.items() for index in entry.postgres.indexes}
    every, candidates = [], []
    for (table, name, unique, primary, constraint, expression, partial, method, includes, not_distinct, valid,
         definition, comment, columns, descending, exact) in connection.exec_driver_sql(
            POSTGRES_INDEXES, {"tables": list(catalog.tables)}).all():
        if not valid:
            continue
        why = None
        if expression:
            why = "an expression index"
        elif partial:
            why = "a partial index: its WHERE is PostgreSQL's dialect"
        elif method != "btree":
            why = f"a {method} index: SQLite has only its own b-trees"
        elif includes:
            why = "an index with INCLUDE columns"
        elif not_distinct:
            why = "NULLS NOT DISTINCT: SQLite's unique indexes take NULLs as distinct"
        elif not exact:
            why = "a nondeterministic collation"
        index = Index(POSTGRES, table, name, unique,
                      () if why else tuple(zip(columns, descending)), definition, why, comment == POSTGRES_MARK)
        every.append(index)
        if not (primary or constraint or _layer(name) or (table, name) in defined):
            candidates.append(index)
    return every, candidates


def _matches(index: Index, there: Sequence[Index], keys: set[tuple[str, frozenset]]) -> bool:
    """Whether `there` (the other side's indexes; `keys`: its unique column sets, keys and
    constraints included) holds `index`: by name, or by definition."""
    for other in there:
        if other.table != index.table:
            continue
        if other.name == index.other_name:
            return True
    if index.why:
        return False
    if index.unique:
        return (index.table, frozenset(c for c, _ in index.columns)) in keys
    return any(o.table == index.table and o.columns == index.columns for o in there)


def _unique_keys(connection: sa.Connection, catalog: Catalog, side: str, indexes: Sequence[Index]) \
        -> set[tuple[str, frozenset]]:
    """(table, column set) of every unique index, key and unique constraint on `side`."""
    keys = {(i.table, frozenset(c for c, _ in i.columns)) for i in indexes if i.unique and not i.why}
    for key, entry in catalog.tables.items():
        table = entry.postgres if side == POSTGRES else entry.sqlite
        keys.add((key, frozenset(c.key for c in table.primary_key.columns)))
    if side == SQLITE:
        for key, entry in catalog.tables.items():
            columns = {row.column: row.postgres_name for row in entry.mapping}
            for _seq, name, unique, origin, partial in connection.exec_driver_sql(
                "SELECT seq, name, \"unique\", origin, partial FROM pragma_index_list(?)", (entry.name,)
            ).all():
                if unique and not partial and origin != "c":
                    parts = connection.exec_driver_sql(
                        "SELECT name FROM pragma_index_xinfo(?) WHERE key = 1", (name,)).scalars().all()
                    if all(p in columns for p in parts):
                        keys.add((key, frozenset(columns[p] for p in parts)))
    return keys


_SQLITE_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\[([^\]]*)\]|`((?:[^`]|``)*)`")


def postgres_quoting(sql: str) -> str:
    """SQLite's other identifier quotes, `[name]` and `` `name` ``, as PostgreSQL's `"name"`, outside
    string literals and double-quoted names (which both spell alike)."""
    def requote(match: re.Match) -> str:
        if match.group(1) is not None:
            return quote(match.group(1))
        if match.group(2) is not None:
            return quote(match.group(2).replace("``", "`"))
        return match.group(0)

    return _SQLITE_QUOTED.sub(requote, sql)


def create_statement(index: Index, catalog: Catalog) -> str:
    """What creates `index` on the other side: the translation where it can be carried, else its own
    definition, its names quoted as PostgreSQL quotes them where it is SQLite's (to run translated by
    hand where its expression is in one database's dialect)."""
    if index.why:
        return postgres_quoting(index.definition) if index.side == SQLITE else index.definition
    unique = "UNIQUE " if index.unique else ""
    if index.side == SQLITE:
        columns = ", ".join(f"{quote(c)}{' DESC' if d else ''}" for c, d in index.columns)
        return (f"CREATE {unique}INDEX CONCURRENTLY IF NOT EXISTS {quote(index.other_name)}"
                f" ON {quote(index.table)} ({columns})")
    entry = catalog.tables[index.table]
    names = {row.postgres_name: row.column for row in entry.mapping}
    columns = ", ".join(f"{quote(names.get(c, c))}{' DESC' if d else ''}" for c, d in index.columns)
    return (f"CREATE {unique}INDEX IF NOT EXISTS {quote(index.name)} ON {quote(entry.name)} ({columns})"
            f" {SQLITE_MARK}")


def drop_statement(index: Index) -> str:
    if index.side == SQLITE:
        return f"DROP INDEX IF EXISTS {quote(index.name)}"
    return f"DROP INDEX CONCURRENTLY IF EXISTS {quote(index.name)}"


def index_drift(sqlite_connection: sa.Connection, postgres_connection: sa.Connection,
                catalog: Catalog) -> tuple[list[IndexDrift], dict[tuple[str, str], Index]]:
    """Every index one side holds and the other lacks (see the module docstring), and the
    indexes behind them by (side, name)."""
    in_file = sqlite_indexes(sqlite_connection, catalog)
    every, candidates = postgres_indexes(postgres_connection, catalog)
    file_keys = _unique_keys(sqlite_connection, catalog, SQLITE, in_file)
    postgres_keys = _unique_keys(postgres_connection, catalog, POSTGRES, every)
    drift: list[IndexDrift] = []
    behind: dict[tuple[str, str], Index] = {}
    held = set(postgres_connection.exec_driver_sql(  # a backfill builds these again itself
        f"SELECT index_name FROM {HELD_INDEXES}" if postgres_connection.exec_driver_sql(
            f"SELECT to_regclass('{HELD_INDEXES}') IS NOT NULL").scalar() else "SELECT NULL WHERE false"
    ).scalars())
    for index in in_file:
        if index.other_name in held:
            continue
        if not _matches(index, every, postgres_keys):
            drift.append(IndexDrift(index.table, index.name, SQLITE, index.unique,
                                    create_statement(index, catalog), index.why, index.carried))
            behind[(SQLITE, index.name)] = index
    for index in candidates:
        if not _matches(index, in_file, file_keys):
            drift.append(IndexDrift(index.table, index.name, POSTGRES, index.unique,
                                    create_statement(index, catalog), index.why, index.carried))
            behind[(POSTGRES, index.name)] = index
    return drift, behind


def live_index_drift(sqlite: sa.Engine, postgres: sa.Engine, catalog: Catalog) -> list[IndexDrift]:
    with sqlite.connect() as here, postgres.connect() as there:
        try:
            return index_drift(here, there, catalog)[0]
        finally:
            here.rollback()
            there.rollback()


def refusing(drift: Sequence[IndexDrift], old_primary: str, new_primary: str) -> list[IndexDrift]:
    """The unique indexes the old primary holds and the new one lacks: the new primary would accept
    rows the old one refused, which then cannot go back. A move of the primary waits for them."""
    if old_primary == new_primary:
        return []
    return [d for d in drift if d.unique and d.only_in == old_primary]
