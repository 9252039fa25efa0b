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

Binds need nothing: PostgreSQL reads a naive datetime in the session's time
zone (UTC, adapters.postgres) and a JSON text into JSONB.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy import types

from adapters.convert import dump_json, format_timestamp


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
    def result_processor(self, dialect, coltype):
        def integer(value: Any) -> Any:
            return int(value) if isinstance(value, bool) else value

        return integer


def same_types_as_sqlite(engine: sa.Engine) -> sa.Engine:
    """Make `engine` (PostgreSQL, used by nothing else) return the app's types as SQLite does."""
    dialect = engine.dialect
    dialect.colspecs = {
        **dialect.colspecs,
        types.DateTime: _NaiveDateTime,
        types.String: _LegacyText,
        types.Integer: _LegacyInteger,
    }
    return engine
