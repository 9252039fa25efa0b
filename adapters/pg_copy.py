"""Bulk load into PostgreSQL with psycopg2's COPY: text-format encoding, staging and merge.

COPY's text format is one line per row, fields separated by a tab, NULL
spelled `\\N`, and four characters escaped inside a value: backslash, tab,
newline and carriage return (so a value can never end a field, a row, or read
as `\\N` or the end-of-data marker `\\.`). The values are Python values as
psycopg2 would bind them, spelled the way PostgreSQL's input functions read
them back exactly:

- float: `repr()`, the shortest text that reads back as the same double
  (float8in is correctly rounded), so every value is bit-exact, -0.0 and
  subnormals included; infinities as `Infinity`/`-Infinity`; NaN as `NaN`;
- datetime/date: ISO 8601 (`2025-01-14T09:30:00+00:00`; a naive datetime
  is read in the session time zone);
- bool: `t`/`f`; int: decimal; Decimal: `str()`, exact (numeric reads `1E-7`,
  `NaN` and `Infinity`); dict/list: JSON text (for json/jsonb);
- str: as is, escaped. A NUL cannot be sent (PostgreSQL text cannot hold it)
  and raises ValueError.

`copy_in` streams an encoded payload with `cursor.copy_expert`. COPY does
not work under a psycopg2 wait callback (see adapters.postgres), so call it
from a process that has not installed one.

`create_staging` and `insert_missing` are the merge half: rows are copied
into a temporary table with the target's column types and no constraints,
then `INSERT ... SELECT ... ON CONFLICT (key) DO NOTHING` moves them in, so a
row already in the target (written by someone else meanwhile) is kept as is.
Nothing here knows a particular schema.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import math
from collections.abc import Iterable, Sequence
from typing import Any

from adapters.catalog import quote
from adapters.convert import dump_jsonb

__all__ = [
    "NULL",
    "text_field",
    "encode_row",
    "encode_rows",
    "copy_in",
    "create_staging",
    "insert_missing",
]

NULL = "\\N"
COPY_CHUNK = 1 << 20
"""Bytes handed to libpq per read() of the payload."""


ESCAPED = ("\\", "\t", "\n", "\r", "\x00")
"""The characters escape_text changes (backslash, tab, newline, carriage return) or refuses (NUL):
a text holding none of them is its own field."""


def escape_text(text: str) -> str:
    """`text` as a COPY text-format field (raises ValueError on a NUL)."""
    if "\\" in text:
        text = text.replace("\\", "\\\\")
    if "\t" in text:
        text = text.replace("\t", "\\t")
    if "\n" in text:
        text = text.replace("\n", "\\n")
    if "\r" in text:
        text = text.replace("\r", "\\r")
    if "\x00" in text:
        raise ValueError("a NUL character cannot be sent to PostgreSQL text")
    return text


def float_field(value: float) -> str:
    """The exact text of a double for float8 input."""
    if math.isfinite(value):
        return repr(value)
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def json_field(value: Any) -> str:
    """A JSON document (dict, list, or scalar) as the text of a json/jsonb field (adapters.convert.dump_jsonb)."""
    return escape_text(dump_jsonb(value))


def text_field(value: Any) -> str:
    """One Python value as a COPY text-format field."""
    if value is None:
        return NULL
    kind = type(value)
    if kind is str:
        return escape_text(value)
    if kind is bool:
        return "t" if value else "f"
    if kind is int:
        return str(value)
    if kind is float:
        return float_field(value)
    if kind is dt.datetime or kind is dt.date:
        return value.isoformat()
    if kind is dict or kind is list:
        return json_field(value)
    if kind is decimal.Decimal:
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\\\x" + bytes(value).hex()  # bytea hex input, its backslash escaped
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return float_field(float(value))
    if isinstance(value, str):
        return escape_text(str(value))
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    raise TypeError(f"no COPY text spelling for {type(value).__name__}")


def encode_row(fields: Sequence[str]) -> str:
    """A row of already-encoded fields as one COPY line."""
    return "\t".join(fields) + "\n"


def encode_rows(rows: Iterable[Sequence[Any]]) -> bytes:
    """Rows of Python values as a UTF-8 COPY text-format payload."""
    return "".join(encode_row([text_field(v) for v in row]) for row in rows).encode("utf-8")


def copy_in(cursor: Any, table: str, columns: Sequence[str], payload: bytes) -> None:
    """COPY `payload` (text format, UTF-8) into `table` (`columns` in payload order)."""
    column_list = ", ".join(quote(c) for c in columns)
    cursor.copy_expert(
        f"COPY {quote(table)} ({column_list}) FROM STDIN", io.BytesIO(payload), size=COPY_CHUNK
    )


def create_staging(cursor: Any, target: str, staging: str) -> None:
    """A session-local table with `target`'s column types and no constraints, emptied at each commit."""
    cursor.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {quote(staging)} ON COMMIT DELETE ROWS"
        f" AS SELECT * FROM {quote(target)} WITH NO DATA"
    )


def insert_missing(
    cursor: Any,
    staging: str,
    target: str,
    columns: Sequence[str],
    key_columns: Sequence[str],
    where: str | None = None,
    params: Any = None,
) -> int:
    """Move the rows of `staging` whose key `target` lacks into `target`; return how many went in.

    A row whose key is already in `target` is left untouched (ON CONFLICT DO
    NOTHING on the key only: any other constraint violation raises). Identity
    columns take the given values (OVERRIDING SYSTEM VALUE).
    """
    column_list = ", ".join(quote(c) for c in columns)
    keys = ", ".join(quote(c) for c in key_columns)
    condition = f" WHERE {where}" if where else ""
    cursor.execute(
        f"INSERT INTO {quote(target)} ({column_list}) OVERRIDING SYSTEM VALUE"
        f" SELECT {column_list} FROM {quote(staging)}{condition}"
        f" ON CONFLICT ({keys}) DO NOTHING",
        params,
    )
    return cursor.rowcount
