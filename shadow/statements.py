"""Shadow reads of an app's own SQL statements: what a statement reads, its rows, their comparison.

An app that keeps its own SQLAlchemy session (ORM queries, `text()`) has no
repository methods to name its reads. Each statement is described once per
process (per SQLAlchemy cache key) as a `StatementRead`:

- its read type: `orm:<Entity>#<fingerprint>` when it selects one mapped entity
  (rows keyed by the entity's primary key), else `sql:<tables read>#<fingerprint>`
  (rows compared in order; sorted first when the statement has no ORDER BY, whose
  order neither database promises);
- the fingerprint: 6 hex digits of the statement's SQL as SQLite's dialect renders it,
  with placeholders for parameters, so it is the same in every process and phase;
- an excerpt of that SQL (string literals masked) for the report.

Parameter values are never part of a read type, an excerpt or a stored record.
Rows become records ({column: value}; an entity's loaded column attributes), and
records are compared by shadow.compare with column kinds from the tables the
caller knows ({table: {column: Kind}}), then from the result's SQLAlchemy types,
else with the comparator's generic normalization. Columns whose names look secret
(`looks_secret`) appear only as fingerprints.

A candidate that fails because the statement itself is not valid on the other
database (a SQLite-only function, GROUP BY leniency, quoting) is not a mismatch:
`unsupported(error)` names its error class, and the laboratory records the
outcome `candidate_error`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import json
import re
import sqlite3
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm, types
from sqlalchemy.engine import ChunkedIteratorResult
from sqlalchemy.orm.attributes import instance_dict
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.sql.elements import Label, TextClause

from adapters.convert import Kind
from adapters.types import kind_of
from shadow.compare import Comparator, Difference, IgnoreRule, ReadType
from shadow.experiment import snapshot
from shadow.redact import looks_secret

ORM, SQL = "orm", "sql"
EXCERPT_CHARS = 300
_DIALECT = sqlite_dialect.dialect()
_SPACE = re.compile(r"\s+")
_LITERAL = re.compile(r"'(?:[^']|'')*'")
_TABLE_REF = re.compile(r"\b(?:from|join|update|into)\s+((?:\"[^\"]+\"|`[^`]+`|\[[^\]]+\]|[\w.]+)"
                        r"(?:\s*(?:as\s+)?\w+)?(?:\s*,\s*(?:\"[^\"]+\"|[\w.]+)(?:\s*(?:as\s+)?\w+)?)*)", re.I)
_NAME = re.compile(r"\"([^\"]+)\"|`([^`]+)`|\[([^\]]+)\]|([\w.]+)")
_ORDER_BY = re.compile(r"\border\s+by\b", re.I)
VOLATILE = re.compile(
    r"\b(?:random|randomblob|now|clock_timestamp|statement_timestamp|gen_random_uuid|uuid_generate_v4)\s*\("
    r"|\bcurrent_(?:timestamp|time|date)\b|\blocaltimestamp\b|'now'",
    re.I,
)
"""SQL whose answer depends on when or how it runs: a random order or value, the current time."""
_WINDOW = re.compile(r"\b(limit|offset|fetch\s+(first|next))\b", re.I)
_CANDIDATE_SQLSTATE_CLASSES = ("42", "22", "0A", "21")
"""PostgreSQL SQLSTATE classes of a statement PostgreSQL will not run as written: syntax or
access rule (42: undefined function, grouping error, undefined column...), data exception
(22: a cast SQLite allows), feature not supported (0A), cardinality (21)."""
_SQLITE_STATEMENT_ERROR = re.compile(
    r"no such (function|column|table)|syntax error|misuse of|wrong number of arguments|ambiguous column|"
    r"unrecognized token|no such collation", re.I)


@dataclasses.dataclass(frozen=True)
class StatementRead(ReadType):
    """A read type for one statement of the app (see the module docstring)."""

    fingerprint: str = ""
    kind: str = SQL
    tables: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    kinds: tuple[tuple[str, Kind | None], ...] = ()
    sql: str = ""
    whole_tables: bool = True
    """Its rows are not told apart by key (a LIMIT window, an aggregate, a row of columns): a
    difference waits until no change is on its way to any of its tables (Laboratory `settled`)."""
    volatile: bool = False
    """Its answer depends on when or how it runs (random(), the current time): two runs of it
    need not agree, so only their shape is compared (`VOLATILE`): both run, as many rows."""

    @property
    def sample_names(self) -> tuple[str, ...]:
        """Names a sample rate may be set under, most specific first (HRP_SHADOW_SAMPLES)."""
        return (self.name, f"{self.kind}#{self.fingerprint}", self.name.partition("#")[0], self.kind)


def fingerprint(sql: str) -> str:
    return hashlib.sha256(_SPACE.sub(" ", sql).strip().lower().encode("utf-8")).hexdigest()[:6]


def excerpt(sql: str) -> str:
    """The statement for the report: one line, string literals masked, cut short."""
    text = _LITERAL.sub("'?'", _SPACE.sub(" ", sql).strip())
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 3] + "..."


def tables_in(sql: str, known: Iterable[str]) -> tuple[str, ...]:
    """The known tables a statement's SQL names after FROM or JOIN, in order of appearance."""
    by_lower = {name.lower(): name for name in known}
    found: list[str] = []
    for match in _TABLE_REF.finditer(sql):
        for name in _NAME.finditer(match.group(1)):
            word = next(g for g in name.groups() if g is not None).split(".")[-1]
            table = by_lower.get(word.lower())
            if table is not None and table not in found:
                found.append(table)
    return tuple(found)


def _kind_of_type(type_: Any) -> Kind | None:
    """The kind of an expression's SQLAlchemy type where it says one (None: generic)."""
    kind = getattr(type_, "kind", None)
    if isinstance(kind, Kind):
        return kind
    for cls, found in ((types.Boolean, Kind.BOOLEAN), (types.Integer, Kind.INTEGER), (types.Float, Kind.REAL),
                       (types.Numeric, Kind.REAL), (types.DateTime, Kind.TIMESTAMP), (types.Date, Kind.DATE),
                       (types.JSON, Kind.JSON)):
        if isinstance(type_, cls):
            return found
    return None


def _column_kind(column: Any, known: Mapping[str, Mapping[str, Kind]]) -> Kind | None:
    base = column.element if isinstance(column, Label) else column
    table = getattr(base, "table", None)
    if isinstance(base, sa.Column) and isinstance(table, sa.Table):
        if isinstance(base.type, types.JSON):  # the app's model reads a document, whatever the file keeps
            return Kind.JSON
        return known.get(table.name, {}).get(base.name) or kind_of(base)
    return _kind_of_type(getattr(column, "type", None))


def _resolved(statement: Any) -> Any:
    return getattr(statement, "_resolved", statement)  # a lambda statement's Select


def describe(statement: Any, known: Mapping[str, Mapping[str, Kind]]) -> StatementRead:
    """The read type of a SELECT (ORM or Core) or a text() statement.

    Args:
        known: {table: {column: Kind}} of the tables the caller knows (the file's catalog).
    """
    statement = _resolved(statement)
    if isinstance(statement, TextClause):
        sql = statement.text
        volatile = bool(VOLATILE.search(sql))
    else:
        compiled = statement.compile(dialect=_DIALECT)
        sql = str(compiled)
        volatile = bool(VOLATILE.search(sql)) or any(  # func.datetime('now') binds its 'now'
            isinstance(value, str) and value.lower() == "now" for value in compiled.params.values())
    print_ = fingerprint(sql)
    tables = tables_in(sql, known)
    ordered = bool(_ORDER_BY.search(sql))
    entity = _single_entity(statement)
    if entity is not None:
        table = entity.local_table.name if isinstance(entity.local_table, sa.Table) else (tables or ("?",))[0]
        kinds = tuple(
            (column.name, _column_kind(column, known))
            for prop in entity.column_attrs for column in prop.columns[:1]
        )
        keys = tuple(column.name for column in entity.primary_key)
        return StatementRead(f"{ORM}:{entity.class_.__name__}#{print_}", table, ordered, print_, ORM,
                             tables or (table,), keys, kinds, excerpt(sql), bool(_WINDOW.search(sql)) or not keys,
                             volatile)
    kinds: tuple[tuple[str, Kind | None], ...] = ()
    selected = getattr(statement, "selected_columns", None)
    if selected is not None:
        kinds = tuple((key, _column_kind(column, known)) for key, column in selected.items())
    name = ",".join(tables) or "?"
    return StatementRead(f"{SQL}:{name}#{print_}", name, ordered, print_, SQL, tables, (), kinds, excerpt(sql),
                         volatile=volatile)


def _single_entity(statement: Any) -> orm.Mapper | None:
    """The mapper when the statement selects exactly one whole mapped entity."""
    descriptions = getattr(statement, "column_descriptions", None)
    if not descriptions or len(descriptions) != 1:
        return None
    expr = descriptions[0].get("expr")
    if expr is None or descriptions[0].get("entity") is None:
        return None
    inspected = sa.inspect(expr, raiseerr=False)
    if isinstance(inspected, orm.Mapper):
        return inspected
    if getattr(inspected, "is_aliased_class", False):
        return inspected.mapper
    return None


# -- rows -------------------------------------------------------------------------------------


_ENTITY_COLUMNS: dict[orm.Mapper, tuple[tuple[str, str], ...]] = {}


def _entity_columns(mapper: orm.Mapper) -> tuple[tuple[str, str], ...]:
    found = _ENTITY_COLUMNS.get(mapper)
    if found is None:
        found = _ENTITY_COLUMNS[mapper] = tuple(
            (prop.key, prop.columns[0].name) for prop in mapper.column_attrs
        )
    return found


class LoadedEntity:
    """What a shadow sample keeps of an entity the app read (`kept_rows`): its class and a copy
    of its instance dict as the read left it (container values of columns that can hold one
    copied too), so the app may change or expire the entity afterwards."""

    __slots__ = ("class_", "loaded")

    def __init__(self, class_: type, loaded: dict[str, Any]):
        self.class_ = class_
        self.loaded = loaded


def _is_entity(value: Any) -> bool:
    return hasattr(value, "_sa_instance_state") or type(value) is LoadedEntity


def entity_record(value: Any) -> dict[str, Any]:
    """An entity's loaded column values by column name (nothing is loaded to make it)."""
    if type(value) is LoadedEntity:
        return _loaded_columns(_entity_columns(sa.inspect(value.class_)), value.loaded)
    state = sa.inspect(value)
    return _loaded_columns(_entity_columns(state.mapper), state.dict)


def _loaded_columns(columns: tuple[tuple[str, str], ...], loaded: dict[str, Any]) -> dict[str, Any]:
    """The values of an instance dict `loaded` by column name, of the `columns` (_entity_columns) it holds."""
    return {name: loaded[key] for key, name in columns if key in loaded}


def records(keys: list[str], rows: Iterable[Any], scalars: bool) -> list[dict[str, Any]]:
    """A result's rows as records: an entity row as the entity's columns, any other row by its keys.

    `scalars`: the rows are single values (an ORM result of one entity), not tuples.
    """
    names = _unique(keys)
    out = []
    for row in rows:
        if scalars:
            row = (row,)
        if len(row) == 1 and _is_entity(row[0]):
            out.append(entity_record(row[0]))
            continue
        record: dict[str, Any] = {}
        for name, value in zip(names, row):
            if _is_entity(value):
                record.update({f"{name}.{column}": v for column, v in entity_record(value).items()})
            else:
                record[name] = value
        out.append(record)
    return out


def _unique(keys: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for key in keys:
        count = seen.get(key, 0)
        seen[key] = count + 1
        out.append(key if count == 0 else f"{key}#{count}")
    return out


def result_records(result: Any) -> list[dict[str, Any]]:
    """All rows of a SQLAlchemy Result as records (consumes it)."""
    frozen = result.freeze()
    return frozen_records(frozen)


def frozen_records(frozen: Any) -> list[dict[str, Any]]:
    keys = list(frozen.metadata.keys)
    return records(keys, frozen.data, bool(getattr(frozen, "_source_supports_scalars", False)))


PREBUFFERED = {"prebuffer_rows": True}
"""Execution options under which the ORM reads every row of a result as it executes the statement
(SQLAlchemy's asyncio session runs every statement so): the result then hands its rows to a sample
and to the app alike, read once (`result_rows`)."""

Rows = tuple[Any, list[Any], bool]
"""A result's rows as `result_rows` reads them: (keys, rows, scalars); `scalars`: each row is a single
value (an ORM result of one entity), not a tuple."""


def result_rows(result: Any) -> tuple[Any, Rows]:
    """Every row of a result the app is about to get, and the result to hand the app in its place.

    An ORM result executed with `PREBUFFERED` holds its rows already: they are taken from it and it
    is handed on as it is (no second result, nothing read twice). Any other result (a text()
    statement's cursor) is frozen, and the app gets a result of the frozen rows.
    """
    context = getattr(result, "context", None)
    options = getattr(context, "execution_options", None)
    if type(result) is ChunkedIteratorResult and options is not None and options.get("prebuffer_rows"):
        chunks = list(result.chunks(None))  # the prebuffered chunks, as many times as asked for
        rows = chunks[0] if len(chunks) == 1 else [row for chunk in chunks for row in chunk]
        return result, (result.keys(), rows, result._source_supports_scalars)
    frozen = result.freeze()
    return frozen(), (frozen.metadata.keys, frozen.data, frozen._source_supports_scalars)


@dataclasses.dataclass(frozen=True)
class KeptRows:
    """What a shadow sample keeps of the app's rows on the request's thread (`kept_rows`); made
    into records on the worker (`kept_records`)."""

    keys: Any
    rows: list[Any]
    scalars: bool
    entity: type | None = None
    """Set when every row is an entity of this class: `rows` are then copies of their instance dicts."""


_IMMUTABLE = (str, int, float, decimal.Decimal, bytes, dt.date, dt.time, dt.timedelta, uuid.UUID, enum.Enum)
_CONTAINER_KEYS: dict[type, tuple[str, ...]] = {}


def _may_hold_container(type_: Any) -> bool:
    try:
        python = type_.python_type
    except (NotImplementedError, AttributeError):
        return True
    return not (isinstance(python, type) and issubclass(python, _IMMUTABLE))


def _container_keys(class_: type) -> tuple[str, ...]:
    """The attributes of a mapped class whose column can hold a dict or a list (JSON, ARRAY, Pickle...)."""
    found = _CONTAINER_KEYS.get(class_)
    if found is None:
        found = _CONTAINER_KEYS[class_] = tuple(
            prop.key for prop in sa.inspect(class_).column_attrs if _may_hold_container(prop.columns[0].type)
        )
    return found


def _kept(value: Any) -> Any:
    state = getattr(value, "_sa_instance_state", None)
    if state is not None:
        class_ = type(value)
        loaded = dict(state.dict)
        for key in _container_keys(class_):
            found = loaded.get(key)
            if isinstance(found, (dict, list)):
                loaded[key] = snapshot(found)
        return LoadedEntity(class_, loaded)
    if isinstance(value, (dict, list)):
        return snapshot(value)
    return value


def kept_rows(rows: Rows) -> KeptRows:
    """The rows `result_rows` read, as a sample keeps them, as cheaply as the request can: each
    entity's instance dict copied (its columns picked and named later, by `kept_records`), a JSON
    document copied, any other value (immutable) as it is."""
    keys, data, scalars = rows
    if scalars and data:
        classes = {type(value) for value in data}
        if len(classes) == 1:
            class_ = classes.pop()
            if hasattr(class_, "_sa_class_manager") and not _container_keys(class_):  # the common case, fast
                return KeptRows(keys, [dict(instance_dict(value)) for value in data], scalars, class_)
    if scalars:
        kept = [_kept(value) for value in data]
    else:
        kept = [tuple(_kept(value) for value in row) for row in data]
    return KeptRows(keys, kept, scalars)


def kept_records(kept: KeptRows) -> list[dict[str, Any]]:
    """The records of rows kept by `kept_rows` (on the shadow worker): as `frozen_records` makes them."""
    if kept.entity is not None:
        columns = _entity_columns(sa.inspect(kept.entity))
        return [_loaded_columns(columns, loaded) for loaded in kept.rows]
    return records(list(kept.keys), kept.rows, kept.scalars)


# -- comparison ---------------------------------------------------------------------------------


COMPARATORS = 2000
"""Comparators kept per process (by read type and columns); the cache starts over when full."""


class StatementComparator:
    """Compares the records two databases answered to one statement, with shadow.compare.

    Args:
        known: {table: {column: Kind}} of the tables the caller knows.
        ignore: columns to skip (table.column rules match the statement's tables).
        secrets: column names whose values appear only as fingerprints (names that
            `looks_secret` are added).
    """

    def __init__(self, known: Mapping[str, Mapping[str, Kind]], *, ignore: Iterable[IgnoreRule] = (),
                 secrets: Iterable[str] = ()):
        self.known = known
        self.ignore = tuple(ignore)
        self.secrets = frozenset(secrets)
        self._comparators: dict[tuple[StatementRead, tuple[str, ...]], Comparator] = {}
        """The comparator of a read type and its records' columns, made once (COMPARATORS at most)."""

    def kinds(self, read: StatementRead, columns: Iterable[str]) -> dict[str, Kind | None]:
        """The kind of each record column: the statement's, else a unique column name of its tables."""
        explicit = dict(read.kinds)
        out: dict[str, Kind | None] = {}
        for column in columns:
            kind = explicit.get(column)
            if kind is None:
                bare = column.rpartition(".")[2]
                found = {self.known.get(t, {}).get(bare) for t in read.tables} - {None}
                kind = found.pop() if len(found) == 1 else None
            out[column] = kind
        return out

    def comparator(self, read: StatementRead, columns: tuple[str, ...]) -> Comparator:
        """The comparator of records of `read` with these columns: their kinds, the ignore rules of
        the statement's tables, the secret columns (made once per read type and columns)."""
        key = (read, columns)
        found = self._comparators.get(key)
        if found is None:
            kinds = {c: k for c, k in self.kinds(read, columns).items() if k is not None}
            ignore = [
                IgnoreRule(read.table, rule.column, rule.reason) for rule in self.ignore
                if rule.table == "*" or rule.table in read.tables
            ]
            secrets = self.secrets | {c for c in columns if looks_secret(c.rpartition(".")[2])}
            found = Comparator({read.table: kinds}, {read.table: read.keys}, ignore=ignore, secrets=secrets)
            if len(self._comparators) >= COMPARATORS:
                self._comparators.clear()
            self._comparators[key] = found
        return found

    def compare(self, read: StatementRead, primary: Any, secondary: Any) -> list[Difference]:
        rows = [r for side in (primary, secondary) if isinstance(side, list) for r in side if isinstance(r, Mapping)]
        columns = tuple(dict.fromkeys(c for row in rows for c in row))
        comparator = self.comparator(read, columns)
        if read.keys:
            primary, secondary = _common_columns(primary, secondary)
        elif not read.ordered and isinstance(primary, list) and isinstance(secondary, list):
            primary, secondary = (sorted(side, key=lambda r: _sort_key(comparator, read.table, r))
                                  for side in (primary, secondary))
        return comparator.compare(read, primary, secondary)


def _common_columns(primary: Any, secondary: Any) -> tuple[Any, Any]:
    """Only the columns both sides loaded: an entity column one side did not load (deferred, or
    expired in the app's session) is no difference in the data (see `entity_record`)."""
    rows = [r for side in (primary, secondary) if isinstance(side, list) for r in side]
    if not rows or not all(isinstance(r, Mapping) for r in rows):
        return primary, secondary
    shared = set(rows[0]).intersection(*rows[1:])
    if all(len(r) == len(shared) for r in rows):
        return primary, secondary

    def cut(side: Any) -> Any:
        return [{k: v for k, v in r.items() if k in shared} for r in side] if isinstance(side, list) else side

    return cut(primary), cut(secondary)


def _sort_key(comparator: Comparator, table: str, row: Any) -> str:
    normalized = comparator.normalize_record(table, row) if isinstance(row, Mapping) else row
    return json.dumps(normalized, sort_keys=True, default=repr)


# -- a statement the other database does not run ------------------------------------------------


def unsupported(error: BaseException) -> str | None:
    """The error class when `error` says the statement itself is not valid on that database
    (a candidate_error), None when it is anything else (connection, timeout, lock...)."""
    original = getattr(error, "orig", None) or error
    code = getattr(original, "pgcode", None)
    if isinstance(code, str):
        return type(original).__name__ if code[:2] in _CANDIDATE_SQLSTATE_CLASSES else None
    if isinstance(original, sqlite3.Error) and _SQLITE_STATEMENT_ERROR.search(str(original)):
        return type(original).__name__
    return None


_QUOTED = re.compile(r"\"(?:[^\"]|\"\")*\"")


def describe_unsupported(error: BaseException) -> str:
    """`<error class> <SQLSTATE>: <message>`, values in data-exception messages masked."""
    original = getattr(error, "orig", None) or error
    code = getattr(original, "pgcode", None)
    diag = getattr(original, "diag", None)
    message = getattr(diag, "message_primary", None) if diag is not None else None
    if not message:
        message = str(original).splitlines()[0] if str(original) else ""
    if isinstance(code, str) and code.startswith("22"):
        message = _QUOTED.sub('"?"', message)
    message = _LITERAL.sub("'?'", message)
    head = f"{type(original).__name__} {code}" if code else type(original).__name__
    return f"{head}: {message}"[:200]
