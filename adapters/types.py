"""Column types that are the legacy declaration on SQLite and the optimized type on PostgreSQL.

Each type carries the `Kind` that `adapters.convert` uses, so the models say
once what a column holds and every layer (ORM, backfill, verifier) converts it
the same way. On SQLite a type renders exactly the legacy declared type
(TIMESTAMP, DATE, BOOLEAN, REAL, TEXT) and stores the legacy spelling; a
legacy value that does not convert is handed back as stored rather than
failing the read (the backfill quarantines it; the app keeps serving).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeDecorator, UserDefinedType

from adapters.convert import Kind, Rejected, fits_numeric, to_postgres, to_sqlite

__all__ = [
    "Timestamp", "NaiveTimestamp", "Day", "ExactReal", "Flag", "JsonDocument", "Bytes", "ExactNumeric", "Key", "kind_of",
    "postgres_value",
]


class _Declared(UserDefinedType):
    """A SQLite column declared with a given type name; values pass through unchanged."""

    cache_ok = True

    def __init__(self, name: str):
        self.name = name

    def get_col_spec(self, **kw: Any) -> str:
        return self.name


class _Converted(TypeDecorator):
    """Legacy declaration on SQLite, `postgres_type` on PostgreSQL, conversion by `kind`."""

    impl = sa.Text
    cache_ok = True
    kind: Kind
    sqlite_name: str
    postgres_type: sa.types.TypeEngine

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(_Declared(self.sqlite_name))
        return dialect.type_descriptor(self.postgres_type)

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = to_postgres(self.kind, value)
        return to_sqlite(self.kind, value) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None or dialect.name != "sqlite":
            return value
        try:
            return to_postgres(self.kind, value)
        except Rejected:
            return value

    @property
    def python_type(self):
        return object


class Timestamp(_Converted):
    """TIMESTAMP text in UTC on SQLite; TIMESTAMPTZ on PostgreSQL."""

    cache_ok = True
    kind = Kind.TIMESTAMP
    sqlite_name = "TIMESTAMP"
    postgres_type = postgresql.TIMESTAMP(timezone=True)

    def process_result_value(self, value, dialect):
        value = super().process_result_value(value, dialect)
        if dialect.name != "sqlite" and value is not None:
            return to_postgres(self.kind, value)
        return value


class NaiveTimestamp(Timestamp):
    """TIMESTAMP text on SQLite; TIMESTAMP WITHOUT TIME ZONE on PostgreSQL holding the UTC wall
    clock. A column the app declared DATETIME/TIMESTAMP: SQLite handed its code naive datetimes
    (SQLAlchemy's SQLite dialect keeps no zone), so after the flip PostgreSQL must too, even to
    code that reads it without this layer. Inside the layer its values are instants (aware, UTC),
    as Timestamp's are: binds are sent as naive UTC, never as a timestamptz the session's
    TimeZone would shift."""

    cache_ok = True
    postgres_type = postgresql.TIMESTAMP(timezone=False)

    def process_bind_param(self, value, dialect):
        value = super().process_bind_param(value, dialect)
        if dialect.name != "sqlite" and value is not None:
            return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value


class Day(_Converted):
    """DATE text 'YYYY-MM-DD' on SQLite; DATE on PostgreSQL."""

    cache_ok = True
    kind = Kind.DATE
    sqlite_name = "DATE"
    postgres_type = sa.Date()


class _NegativeZero:
    """-0.0 for psycopg2: a bare `-0.0` literal is read by PostgreSQL as numeric zero, so type it."""

    def __conform__(self, protocol):
        return self

    def getquoted(self) -> bytes:
        return b"'-0'::float8"


class ExactReal(_Converted):
    """REAL on SQLite; DOUBLE PRECISION on PostgreSQL, so every value is bit-exact (-0.0 too)."""

    cache_ok = True
    kind = Kind.REAL
    sqlite_name = "REAL"
    postgres_type = postgresql.DOUBLE_PRECISION()

    def process_bind_param(self, value, dialect):
        value = super().process_bind_param(value, dialect)
        if dialect.name != "sqlite" and value == 0.0 and math.copysign(1.0, value) < 0:
            return _NegativeZero()
        return value

    def result_processor(self, dialect, coltype):
        """On PostgreSQL the driver's float is the value (process_result_value would hand it back
        as it is): no Python call per value, which a read of thousands of confidences felt."""
        if dialect.name != "sqlite":
            return self.postgres_type.result_processor(dialect, coltype)
        return super().result_processor(dialect, coltype)


class Flag(_Converted):
    """BOOLEAN holding 0/1 on SQLite; BOOLEAN on PostgreSQL."""

    cache_ok = True
    kind = Kind.BOOLEAN
    sqlite_name = "BOOLEAN"
    postgres_type = sa.Boolean()


class JsonDocument(_Converted):
    """JSON text on SQLite; JSONB on PostgreSQL."""

    cache_ok = True
    kind = Kind.JSON
    sqlite_name = "TEXT"
    postgres_type = postgresql.JSONB()


class Bytes(_Converted):
    """BLOB on SQLite; BYTEA on PostgreSQL (read back as bytes, not memoryview)."""

    cache_ok = True
    kind = Kind.BLOB
    sqlite_name = "BLOB"
    postgres_type = postgresql.BYTEA()

    def process_result_value(self, value, dialect):
        if value is not None and dialect.name != "sqlite":
            return bytes(value)
        return super().process_result_value(value, dialect)


class ExactNumeric(_Converted):
    """NUMERIC on SQLite; NUMERIC(precision, scale) on PostgreSQL, a value that would be rounded refused."""

    cache_ok = True
    kind = Kind.NUMERIC

    def __init__(self, precision: int | None = None, scale: int | None = None):
        super().__init__()
        self.precision = precision
        self.scale = scale
        self.sqlite_name = "NUMERIC" if precision is None else f"NUMERIC({precision},{scale or 0})"
        self.postgres_type = sa.Numeric(precision, scale, asdecimal=True)

    def process_bind_param(self, value, dialect):
        if value is not None:
            fits_numeric(to_postgres(self.kind, value), self.precision, self.scale)
        return super().process_bind_param(value, dialect)


def postgres_value(column: sa.Column, raw: Any) -> Any:
    """The PostgreSQL value of a stored value of `column` (raises Rejected), NUMERIC(p,s) held to p and s."""
    value = to_postgres(kind_of(column), raw)
    if value is not None and isinstance(column.type, ExactNumeric):
        fits_numeric(value, column.type.precision, column.type.scale)
    return value


Key = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
"""Primary and foreign keys: INTEGER (the rowid alias) on SQLite, BIGINT on PostgreSQL."""


def kind_of(column: sa.Column) -> Kind:
    """The conversion kind of a table column."""
    kind = getattr(column.type, "kind", None)
    if kind is not None:
        return kind
    if isinstance(column.type, sa.Boolean):
        return Kind.BOOLEAN
    if isinstance(column.type, sa.Integer):
        return Kind.INTEGER
    if isinstance(column.type, (sa.Float, sa.Numeric)):
        return Kind.REAL
    if isinstance(column.type, sa.DateTime):
        return Kind.TIMESTAMP
    if isinstance(column.type, sa.Date):
        return Kind.DATE
    if isinstance(column.type, sa.JSON):
        return Kind.JSON
    if isinstance(column.type, sa.LargeBinary):
        return Kind.BLOB
    return Kind.TEXT
