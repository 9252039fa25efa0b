"""PostgreSQL values typed the way an app's SQLite engine returns them.

An app written against the legacy SQLite file declares its columns with the
generic SQLAlchemy types (`DateTime`, `Text`, `Integer`). On PostgreSQL the
same columns are TIMESTAMPTZ, JSONB and BOOLEAN, and psycopg2 hands back an
aware datetime, a dict and a bool where the app's code has always seen a naive
datetime, a JSON string and an int. `same_types_as_sqlite(engine)` gives one
PostgreSQL engine (its own dialect instance; never the layer's engine, whose
models ask for the optimized types) result processors that give the app what
SQLite gave it:

| app's type                | PostgreSQL returns | the app gets                     |
|---------------------------|--------------------|----------------------------------|
| DateTime (no timezone)    | aware datetime     | naive, in UTC                    |
| String/Text               | dict/list (JSONB)  | the JSON text (json.dumps)       |
| String/Text               | datetime/date      | the legacy text spelling         |
| Integer                   | bool               | 0 or 1                           |
| Integer (`func.sum(col)`) | numeric (Decimal)  | an int when whole, else a float  |
| JSON, over a text column  | the JSON text      | the document (json.loads)        |
| Uuid                      | 32 hex digits text | a UUID (and binds the hex text)  |
| Interval                  | timestamp (epoch + | a timedelta (and binds epoch +   |
|                           | the interval)      | the interval, as SQLite kept it) |
| Time                      | 'HH:MM:SS.ffffff'  | a time (and binds that text)     |
| none (`text()`, untyped   | bool               | 0 or 1                           |
| functions)                | numeric (Decimal)  | an int when whole, else a float  |
|                           | timestamp, date    | the legacy text spelling         |
|                           | bytea (memoryview) | bytes                            |
|                           | dict/list (JSONB)  | the JSON text (json.dumps)       |

A column SQLite gave back untyped is what `db.session.execute(text(...))` and
functions SQLAlchemy knows no type for return: sqlite3's own values (int,
float, str, bytes), by the storage class SQLite kept. A NUMERIC column kept a
whole value as an integer and any other as a real, so a decimal comes back the
same way; an aggregate SQLite computes as a real (`avg`) and PostgreSQL as a
whole decimal comes back as an int equal to it.

Binds need nothing, but for the types SQLAlchemy stores natively on PostgreSQL
and otherwise on SQLite: `Uuid` (SQLite: CHAR(32) hex, moved as text),
`Interval` (SQLite: a DATETIME 1970-01-01 plus the interval, moved as a
timestamp) and `Time` (SQLite: text, moved as text) bind and read as they did
on SQLite, so `db.session.get(Item, a_uuid)` compares text with text and an
insert gives a timestamp column a timestamp. PostgreSQL reads a naive datetime in the session's time zone (UTC,
adapters.postgres) and a JSON text into JSONB.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy import types
from sqlalchemy.dialects import postgresql, sqlite

from adapters.convert import dump_json, format_timestamp


JSON_OIDS = frozenset({114, 3802})
"""json and jsonb: psycopg2 hands their values over parsed (dict, list, str, number)."""
BOOL_OID, BYTEA_OID, DATE_OID, NUMERIC_OID, TIMESTAMP_OIDS = 16, 17, 1082, 1700, frozenset({1114, 1184})
SQLITE_TIME_TEXT = sqlite.TIME().bind_processor(sqlite.dialect())
"""A time as SQLAlchemy's SQLite dialect stores it: 'HH:MM:SS.ffffff'."""
INTERVAL_EPOCH = types.Interval.epoch
"""What SQLAlchemy's Interval adds a timedelta to where the database has no interval type (SQLite)."""


class _NaiveDateTime(types.DateTime):
    def result_processor(self, dialect, coltype):
        if self.timezone:
            return None

        def naive(value: Any) -> Any:
            if isinstance(value, dt.datetime) and value.tzinfo is not None:
                return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
            return value

        return naive


class _LegacyText(types.String):
    def result_processor(self, dialect, coltype):
        if coltype in JSON_OIDS:  # any document, a bare string, number or boolean too, as its text
            return lambda value: None if value is None else dump_json(value)

        def text(value: Any) -> Any:
            if value is None or isinstance(value, str):
                return value
            if isinstance(value, (dict, list)):
                return dump_json(value)
            if isinstance(value, dt.datetime):
                return format_timestamp(value)
            if isinstance(value, dt.date):
                return value.isoformat()
            return value

        return text


class _LegacyInteger(types.Integer):
    """An Integer: 0/1 for a boolean; an int for a decimal (an aggregate SQLAlchemy types by its
    Integer argument, `func.sum(qty)`, is numeric on PostgreSQL, sum(bigint)), as SQLite gave it."""

    def result_processor(self, dialect, coltype):
        def integer(value: Any) -> Any:
            if isinstance(value, bool):
                return int(value)
            if isinstance(value, decimal.Decimal):
                return _sqlite_number(value)
            return value

        return integer


class _LegacyJSON(postgresql.JSON):
    """The app's JSON type over a column PostgreSQL keeps as text (the any-schema mapping of a
    SQLite `JSON` declaration): the document, as SQLite's JSON type gave it (json and jsonb
    columns arrive parsed already)."""

    def result_processor(self, dialect, coltype):
        if coltype in JSON_OIDS:
            return None
        loads = getattr(dialect, "_json_deserializer", None) or json.loads

        def document(value: Any) -> Any:
            return loads(value) if isinstance(value, (str, bytes)) else value

        return document


class _LegacyUuid(types.Uuid):
    """The app's Uuid as SQLite kept it (32 hex digits; the any-schema mapping moves them as text),
    never PostgreSQL's uuid, which a text column cannot be compared with."""

    def __init__(self, as_uuid: bool = True, native_uuid: bool = True):
        super().__init__(as_uuid=as_uuid, native_uuid=False)

    def result_processor(self, dialect, coltype):
        as_uuid = self.as_uuid

        def value_of(value: Any) -> Any:
            if value is None:
                return None
            parsed = value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
            return parsed if as_uuid else str(parsed)

        return value_of


class _LegacyInterval(types.Interval):
    """The app's Interval as SQLite kept it: the timestamp 1970-01-01 plus the interval (the
    any-schema mapping moves a DATETIME as a timestamp without time zone)."""

    def __init__(self, native: bool = True, second_precision: int | None = None, day_precision: int | None = None):
        super().__init__(native=False, second_precision=second_precision, day_precision=day_precision)

    def result_processor(self, dialect, coltype):
        def interval(value: Any) -> Any:
            if value is None or isinstance(value, dt.timedelta):
                return value
            if isinstance(value, str):
                value = dt.datetime.fromisoformat(value)
            if value.tzinfo is not None:
                value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
            return value - INTERVAL_EPOCH

        return interval


class _LegacyTime(types.Time):
    """The app's Time as SQLite kept it: the text 'HH:MM:SS.ffffff' (SQLite's TIME declaration has
    NUMERIC affinity, so the any-schema mapping keeps the text); a time column passes through."""

    def bind_processor(self, dialect):
        return lambda value: SQLITE_TIME_TEXT(value) if isinstance(value, dt.time) else value

    def result_processor(self, dialect, coltype):
        def time(value: Any) -> Any:
            return dt.time.fromisoformat(value) if isinstance(value, str) else value

        return time


def _sqlite_number(value: decimal.Decimal) -> int | float:
    """What SQLite kept for a NUMERIC value: a whole one that fits 64 bits as an integer, else a real."""
    if value.is_finite() and value == value.to_integral_value() and -(2**63) <= value < 2**63:
        return int(value)
    return float(value)


class _Untyped(types.NullType):
    """A value of no known type (`text()` columns, untyped functions): what sqlite3 returns."""

    def result_processor(self, dialect, coltype):
        if coltype == BOOL_OID:
            return lambda value: int(value) if isinstance(value, bool) else value
        if coltype == NUMERIC_OID:
            return lambda value: _sqlite_number(value) if isinstance(value, decimal.Decimal) else value
        if coltype == BYTEA_OID:
            return lambda value: bytes(value) if isinstance(value, memoryview) else value
        if coltype in TIMESTAMP_OIDS or coltype == DATE_OID or coltype in JSON_OIDS:
            return _LegacyText().result_processor(dialect, coltype)
        return None


def same_types_as_sqlite(engine: sa.Engine) -> sa.Engine:
    """Make `engine` (PostgreSQL, used by nothing else) return the app's types as SQLite does."""
    dialect = engine.dialect
    dialect.colspecs = {
        **dialect.colspecs,
        types.DateTime: _NaiveDateTime,
        types.String: _LegacyText,
        types.Integer: _LegacyInteger,
        types.JSON: _LegacyJSON,
        types.Uuid: _LegacyUuid,
        types.Interval: _LegacyInterval,
        types.Time: _LegacyTime,
        types.NullType: _Untyped,
    }
    return engine
