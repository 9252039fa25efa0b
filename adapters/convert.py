"""Value conversion between SQLite storage values and PostgreSQL values.

SQLite keeps whatever it is given, whatever the declared type; PostgreSQL does
not. Every column kind has exactly one conversion each way, and a conversion
has exactly two outcomes: the converted value, or a `Rejected` exception whose
`reason` is machine-readable. Nothing is altered quietly: a value PostgreSQL
cannot hold exactly is rejected, never rounded, truncated or guessed.

`to_postgres(kind, raw)` takes a value as SQLite's driver returns it (int,
float, str, bytes or None) and gives the Python value PostgreSQL will store.
`to_sqlite(kind, value)` takes a PostgreSQL value and gives the storage value
the legacy app writes (timestamps as 'YYYY-MM-DD HH:MM:SS', booleans as 0/1,
JSON as text).

The README's conversion table documents every rule in this module.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import re
from decimal import Decimal
from typing import Any

__all__ = ["Kind", "Rejected", "to_postgres", "to_sqlite", "REASONS"]


class Kind(str, enum.Enum):
    """The column kinds of the HRP schema, named for what they hold."""

    INTEGER = "integer"
    REAL = "real"
    TEXT = "text"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"
    DATE = "date"
    JSON = "json"


class Rejected(ValueError):
    """A value that PostgreSQL cannot hold exactly; `reason` says why."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


REASONS = {
    "text_in_integer_column": "text that is not a whole number in an INTEGER column",
    "real_in_integer_column": "a fractional REAL in an INTEGER column",
    "blob_in_integer_column": "a BLOB in an INTEGER column",
    "integer_out_of_range": "a whole number outside PostgreSQL BIGINT",
    "text_in_real_column": "text that is not a number in a REAL column",
    "blob_in_real_column": "a BLOB in a REAL column",
    "nan_in_real_column": "NaN (SQLite turns it into NULL; refused here)",
    "nul_byte_in_text": "text containing a NUL byte (PostgreSQL text cannot)",
    "invalid_utf8_in_text": "text that is not valid UTF-8",
    "blob_in_text_column": "a BLOB in a TEXT column",
    "non_boolean_integer": "an integer other than 0 or 1 in a BOOLEAN column",
    "non_boolean_real": "a REAL in a BOOLEAN column",
    "unparseable_boolean": "text other than true/false in a BOOLEAN column",
    "blob_in_boolean_column": "a BLOB in a BOOLEAN column",
    "empty_timestamp": "an empty string in a TIMESTAMP column",
    "unparseable_timestamp": "text that is not an ISO-8601 timestamp",
    "impossible_date": "a date or time that does not exist (2025-02-30, 25:00)",
    "timestamp_precision_lost": "more than microsecond precision",
    "timestamp_out_of_range": "a year outside 1..9999",
    "fractional_epoch": "an epoch number with more than microsecond precision",
    "blob_in_timestamp_column": "a BLOB in a TIMESTAMP column",
    "empty_date": "an empty string in a DATE column",
    "unparseable_date": "text that is not YYYY-MM-DD",
    "number_in_date_column": "a number in a DATE column",
    "blob_in_date_column": "a BLOB in a DATE column",
    "empty_json": "an empty string in a JSON column",
    "invalid_json": "text that is not valid JSON",
    "non_standard_json": "NaN or Infinity inside JSON (not JSON; JSONB refuses it)",
    "duplicate_json_key": "an object with a repeated key (JSONB keeps only the last)",
    "nul_byte_in_json": "a \\u0000 inside JSON (JSONB refuses it)",
    "lone_surrogate_in_json": "an unpaired \\ud800-\\udfff escape inside JSON",
    "json_number_not_exact": "a JSON number a 64-bit float cannot hold exactly",
    "number_in_json_column": "a number instead of JSON text",
    "blob_in_json_column": "a BLOB in a JSON column",
}

_BIGINT = (-(2**63), 2**63 - 1)
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?"
    r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?",
    re.IGNORECASE,
)
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_BOOL_TEXT = {"true": True, "false": False}


def _is_blob(raw: Any) -> bool:
    return isinstance(raw, (bytes, bytearray, memoryview))


def _text(raw: Any) -> str:
    if _is_blob(raw):
        raise Rejected("blob_in_text_column")
    if not isinstance(raw, str):
        return str(raw)
    if "\x00" in raw:
        raise Rejected("nul_byte_in_text")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise Rejected("invalid_utf8_in_text") from None
    return raw


def _integer(raw: Any) -> int:
    if isinstance(raw, bool):
        return int(raw)
    if isinstance(raw, int):
        if not _BIGINT[0] <= raw <= _BIGINT[1]:
            raise Rejected("integer_out_of_range", str(raw))
        return raw
    if isinstance(raw, float):
        raise Rejected("real_in_integer_column", repr(raw))
    if _is_blob(raw):
        raise Rejected("blob_in_integer_column")
    raise Rejected("text_in_integer_column")


def _real(raw: Any) -> float:
    if isinstance(raw, bool):
        return float(raw)
    if isinstance(raw, int):
        as_float = float(raw)
        if int(as_float) != raw:
            raise Rejected("integer_out_of_range", "not exact as a double")
        return as_float
    if isinstance(raw, float):
        if math.isnan(raw):
            raise Rejected("nan_in_real_column")
        return raw
    if _is_blob(raw):
        raise Rejected("blob_in_real_column")
    raise Rejected("text_in_real_column")


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int):
        if raw in (0, 1):
            return bool(raw)
        raise Rejected("non_boolean_integer", str(raw))
    if isinstance(raw, float):
        raise Rejected("non_boolean_real", repr(raw))
    if _is_blob(raw):
        raise Rejected("blob_in_boolean_column")
    value = _BOOL_TEXT.get(str(raw).strip().lower())
    if value is None:
        raise Rejected("unparseable_boolean")
    return value


def _offset(spelling: str | None) -> dt.timezone:
    if spelling is None or spelling.upper() == "Z":
        return dt.timezone.utc
    sign = -1 if spelling[0] == "-" else 1
    digits = spelling[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
    if hours > 23 or minutes > 59:
        raise Rejected("impossible_date", "offset")
    return dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))


def _from_epoch(raw: int | float) -> dt.datetime:
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise Rejected("timestamp_out_of_range")
        micros = Decimal(raw) * 1_000_000
        if micros != micros.to_integral_value():
            raise Rejected("fractional_epoch", repr(raw))
        micros_int = int(micros)
    else:
        micros_int = raw * 1_000_000
    try:
        return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(
            microseconds=micros_int
        )
    except OverflowError:
        raise Rejected("timestamp_out_of_range") from None


def _timestamp(raw: Any) -> dt.datetime:
    if isinstance(raw, dt.datetime):
        return raw if raw.tzinfo else raw.replace(tzinfo=dt.timezone.utc)
    if isinstance(raw, bool) or _is_blob(raw):
        raise Rejected("blob_in_timestamp_column")
    if isinstance(raw, (int, float)):
        return _from_epoch(raw)
    text = raw.strip()
    if text == "":
        raise Rejected("empty_timestamp")
    match = _TIMESTAMP.fullmatch(text)
    if not match:
        raise Rejected("unparseable_timestamp")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if fraction and len(fraction) > 6:
        if fraction[6:].strip("0"):
            raise Rejected("timestamp_precision_lost", f".{fraction}")
        fraction = fraction[:6]
    if int(year) == 0:
        raise Rejected("timestamp_out_of_range")
    try:
        value = dt.datetime(
            int(year), int(month), int(day),
            int(hour or 0), int(minute or 0), int(second or 0),
            int((fraction or "0").ljust(6, "0")),
            tzinfo=_offset(offset),
        )
        return value.astimezone(dt.timezone.utc)
    except ValueError:
        raise Rejected("impossible_date") from None
    except OverflowError:
        raise Rejected("timestamp_out_of_range") from None


def _date(raw: Any) -> dt.date:
    if isinstance(raw, dt.date) and not isinstance(raw, dt.datetime):
        return raw
    if _is_blob(raw):
        raise Rejected("blob_in_date_column")
    if isinstance(raw, (int, float)):
        raise Rejected("number_in_date_column")
    text = raw.strip()
    if text == "":
        raise Rejected("empty_date")
    if text != raw or not _DATE.fullmatch(text):
        raise Rejected("unparseable_date")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise Rejected("impossible_date") from None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise Rejected("duplicate_json_key")
    return dict(pairs)


def _exact_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value) or Decimal(repr(value)) != Decimal(token):
        raise Rejected("json_number_not_exact", token[:40])
    return value


def _reject_constant(token: str) -> Any:
    raise Rejected("non_standard_json", token)


def _check_strings(value: Any) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise Rejected("nul_byte_in_json")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Rejected("lone_surrogate_in_json") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key)
            _check_strings(item)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item)


def parse_json(text: str) -> Any:
    """Parse JSON text strictly; the one JSON reader of the project."""
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicate_keys,
            parse_float=_exact_float,
            parse_constant=_reject_constant,
        )
    except json.JSONDecodeError:
        raise Rejected("invalid_json") from None
    _check_strings(value)
    return value


def _json(raw: Any) -> Any:
    if _is_blob(raw):
        raise Rejected("blob_in_json_column")
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        raise Rejected("number_in_json_column")
    if not isinstance(raw, str):
        _check_strings(raw)
        return raw
    if raw.strip() == "":
        raise Rejected("empty_json")
    if "\x00" in raw:
        raise Rejected("nul_byte_in_text")
    return parse_json(raw)


_TO_POSTGRES = {
    Kind.INTEGER: _integer,
    Kind.REAL: _real,
    Kind.TEXT: _text,
    Kind.BOOLEAN: _boolean,
    Kind.TIMESTAMP: _timestamp,
    Kind.DATE: _date,
    Kind.JSON: _json,
}


def to_postgres(kind: Kind, raw: Any) -> Any:
    """Convert a SQLite storage value to the value PostgreSQL stores, or raise `Rejected`."""
    if raw is None:
        return None
    return _TO_POSTGRES[kind](raw)


def format_timestamp(value: dt.datetime) -> str:
    """The legacy spelling of a timestamp: UTC, 'YYYY-MM-DD HH:MM:SS[.ffffff]'."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    spelled = value.strftime("%Y-%m-%d %H:%M:%S")
    if value.year < 1000:
        spelled = f"{value.year:04d}" + spelled[spelled.index("-"):]
    return f"{spelled}.{value.microsecond:06d}" if value.microsecond else spelled


def dump_json(value: Any) -> str:
    """The legacy spelling of a JSON document (what json.dumps writes)."""
    return json.dumps(value, ensure_ascii=False)


def to_sqlite(kind: Kind, value: Any) -> Any:
    """Convert a PostgreSQL value to the storage value the legacy app writes."""
    if value is None:
        return None
    if kind is Kind.BOOLEAN:
        return 1 if value else 0
    if kind is Kind.TIMESTAMP:
        return format_timestamp(value)
    if kind is Kind.DATE:
        return value.isoformat()
    if kind is Kind.JSON:
        return dump_json(value)
    if kind is Kind.REAL:
        return float(value)
    return value
