"""SQL that vouches for stored SQLite values: the ones the conversion rules accept, told in SQLite.

`vouched(kind, expression, ...)` is a SQL condition on one column's stored
value that holds only where `adapters.convert` accepts the value for that
kind (the backfill's encoder: hrp_data.backfill.legacy_rows). It is sound, not
complete: it may fail to vouch for a value the rules accept (then Python
converts it and finds it clean), but never vouches for one they refuse. So a
scan that converts in Python only the rows some column cannot be vouched for
finds exactly the rejects a conversion of every row would. What SQLite can
tell, per kind:

- NULL: fine unless the column is required (null_in_required_column);
- INTEGER: an integer (SQLite's are 64-bit, so within BIGINT);
- REAL: a real (SQLite stores no NaN, and the rules keep infinities), or an
  integer of at most 2**53 in magnitude (a double holds it exactly);
- TEXT: text with no NUL byte, every byte ASCII (GLOB reads any byte of
  0x80 or more as a character of 0x80 or more, so a non-ASCII value, valid
  UTF-8 or not, is left to Python);
- BOOLEAN: the integers 0 and 1, text true/false in any ASCII case;
- TIMESTAMP: text spelled 'YYYY-MM-DD HH:MM:SS' with an optional fraction of
  1..6 digits, a real date and time (SQLite's datetime(..., '+0 days') spells a
  day that does not exist otherwise), not in year 0000; an epoch integer within
  years 1..9999;
- DATE: text 'YYYY-MM-DD', a real date (date(..., '+0 days')), not year 0000;
- BLOB: a blob;
- NUMERIC: an integer (NUMERIC(p,s): of fewer than p - s digits), a finite
  real (NUMERIC(p,s): never, Python counts its digits);
- JSON: text for which `json_vouched` (a Python function registered on the
  connection, `register`) finds the spelling the rules take as it is.
"""

from __future__ import annotations

import sqlite3

import orjson

from adapters.convert import BIG_FLOAT_MARK, Kind, spaced_json

__all__ = ["JSON_FUNCTION", "json_vouched", "register", "vouched"]

JSON_FUNCTION = "hrp_cutover_json_vouched"

DOUBLE_EXACT = 2**53
"""Integers up to this magnitude are exact as doubles."""
EPOCH_RANGE = (-62_135_596_800, 253_402_300_799)
"""Epoch seconds of 0001-01-01 00:00:00 and 9999-12-31 23:59:59 UTC."""
DOUBLE_MAX = "1.7976931348623157e308"
_D = "[0-9]"
_DATE_SHAPE = f"{_D * 4}-[01]{_D}-[0-3]{_D}"
_TIMESTAMP_SHAPE = f"{_DATE_SHAPE} [0-2]{_D}:[0-5]{_D}:[0-5]{_D}"
_NOT_ASCII = "'*[^' || char(1) || '-' || char(127) || ']*'"
"""A GLOB pattern matching text holding a character outside 0x01..0x7F (the text has no NUL: checked first)."""


def _no_nul(expression: str) -> str:
    return f"instr(CAST({expression} AS BLOB), x'00') = 0"


def _valid_day(e: str, size: int, spell: str) -> str:
    """Text of `size` characters in the shape of a date (and time) is a real one: the month, the
    hour and days up to 28 by comparison; days 29..31 by SQLite spelling the value back the same
    (`spell`(..., '+0 days') moves a day that does not exist into the next month)."""
    return (
        f"substr({e}, 1, {size}) = {e} AND substr({e}, 6, 2) BETWEEN '01' AND '12'"
        + (f" AND substr({e}, 12, 2) < '24'" if size > 10 else "")
        + f" AND CASE WHEN substr({e}, 9, 2) BETWEEN '01' AND '28' THEN 1 ELSE {spell}({e}, '+0 days') IS {e} END"
    )


def _timestamp_text(e: str) -> str:
    """The legacy spelling (checked by comparisons, the cheapest); with a fraction (rarer), the 19
    characters before it spelled back the same by datetime(), the rest 1..6 digits."""
    head = f"substr({e}, 1, 19)"
    return (
        f"({e} >= '0001' AND ({e} GLOB '{_TIMESTAMP_SHAPE}' AND {_valid_day(e, 19, 'datetime')}"
        f" OR {e} GLOB '{_TIMESTAMP_SHAPE}.[0-9]*' AND {_no_nul(e)} AND length(CAST({e} AS BLOB)) BETWEEN 21 AND 26"
        f" AND NOT substr({e}, 21) GLOB '*[^0-9]*' AND datetime({head}, '+0 days') IS {head}))"
    )


def _numeric_integer(precision: int | None, scale: int | None) -> str:
    if precision is None:
        return "1"
    whole = precision - (scale or 0)
    if whole <= 0:  # fits_numeric counts zero as one digit before the point
        return "0"
    if whole >= 19:  # every 64-bit integer has at most 19 digits
        return "1"
    bound = 10**whole - 1
    return f"{{e}} BETWEEN -{bound} AND {bound}"


def vouched(kind: Kind, expression: str, *, required: bool = False, precision: int | None = None,
            scale: int | None = None) -> str:
    """A SQL condition (never NULL) on the stored value `expression` that holds only where the
    conversion rules of `kind` accept it (NUMERIC(precision, scale) held to its digits; `required`:
    NULL refused). JSON needs `register(connection)`."""
    e = expression
    by_class: dict[str, str] = {"null": "0" if required else "1"}
    kind = Kind(kind)
    if kind is Kind.INTEGER:
        by_class["integer"] = "1"
    elif kind is Kind.REAL:
        by_class["real"] = "1"
        by_class["integer"] = f"{e} BETWEEN -{DOUBLE_EXACT} AND {DOUBLE_EXACT}"
    elif kind is Kind.TEXT:
        by_class["text"] = f"({_no_nul(e)} AND NOT {e} GLOB {_NOT_ASCII})"
    elif kind is Kind.BOOLEAN:
        by_class["integer"] = f"{e} IN (0, 1)"
        by_class["text"] = f"lower({e}) IN ('true', 'false')"
    elif kind is Kind.TIMESTAMP:
        by_class["integer"] = f"{e} BETWEEN {EPOCH_RANGE[0]} AND {EPOCH_RANGE[1]}"
        by_class["text"] = _timestamp_text(e)
    elif kind is Kind.DATE:
        by_class["text"] = f"({e} >= '0001' AND {e} GLOB '{_DATE_SHAPE}' AND {_valid_day(e, 10, 'date')})"
    elif kind is Kind.BLOB:
        by_class["blob"] = "1"
    elif kind is Kind.NUMERIC:
        by_class["integer"] = _numeric_integer(precision, scale).format(e=e)
        if precision is None:
            by_class["real"] = f"{e} BETWEEN -{DOUBLE_MAX} AND {DOUBLE_MAX}"
    elif kind is Kind.JSON:
        by_class["text"] = f"{JSON_FUNCTION}(CAST({e} AS BLOB))"
    null = by_class.pop("null")
    cases = " ".join(f"WHEN typeof({e}) = '{name}' AND {condition} THEN 1" for name, condition in by_class.items())
    # conditions of WHEN, never of THEN: SQLite stops at the first false term only where it jumps
    return f"(CASE WHEN {e} IS NULL THEN {null} {cases} ELSE 0 END)"


def json_vouched(data: bytes) -> bool:
    """Whether JSON text stored as these bytes (read as UTF-8) goes through adapters.convert.json_text
    as it is: an ASCII object or array without a backslash, spelled as a serializer spells it
    (convert._canonical_document, whose test this is, taken on the bytes). Never raises."""
    try:
        if data[:1] not in (b"{", b"[") or not data.isascii() or b"\\" in data:
            return False
        compact = orjson.dumps(orjson.loads(data))
        if BIG_FLOAT_MARK.encode() in compact:
            return False
        return compact == data or spaced_json(compact) == data
    except Exception:  # noqa: BLE001 - not vouched: Python's conversion names the reason
        return False


def register(connection: sqlite3.Connection) -> None:
    """Make `connection` know the functions vouched() conditions call."""
    connection.create_function(JSON_FUNCTION, 1, lambda data: 1 if type(data) is bytes and json_vouched(data) else 0,
                               deterministic=True)
