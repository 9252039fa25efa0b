"""The one place that turns a value from either database into a comparable value.

Shadow comparison and the verifier both call this, so they never disagree
about what "equal" means. By column kind:

- timestamp: the instant, as an ISO string in UTC (naive text is UTC);
- date: 'YYYY-MM-DD';
- boolean: True/False (0/1, 'true'/'false');
- real: a float, with -0.0 equal to 0.0 and Decimal turned into float;
- integer: an int;
- json: canonical text (sorted keys, no spaces, 1.0 written as 1);
- text: the string; blob: the bytes; numeric: the Decimal without trailing zeros.

An app's own Python value of a type SQLAlchemy stores in SQLite as something
else is compared as what SQLite stored: a UUID as its 32 hex digits (Uuid), a
timedelta as the timestamp 1970-01-01 plus it (Interval), a time in a text column as
'HH:MM:SS.ffffff' (Time).

A stored value that does not convert (a hostile legacy value) becomes
`Unconvertible(reason, raw)`, which equals only the same raw value.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from adapters.app_types import INTERVAL_EPOCH, SQLITE_TIME_TEXT
from adapters.convert import Kind, Rejected, to_postgres


@dataclasses.dataclass(frozen=True)
class Unconvertible:
    reason: str
    raw: str


def _canonical_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical_json(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (float, Decimal)):
        number = float(value)
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    return value


def normalize(kind: Kind, value: Any) -> Any:
    """The comparable form of one stored value of a column of `kind`."""
    if value is None:
        return None
    if isinstance(value, uuid.UUID):
        value = value.hex
    elif isinstance(value, dt.timedelta):
        value = INTERVAL_EPOCH + value
    elif isinstance(value, dt.time) and kind is Kind.TEXT:
        value = SQLITE_TIME_TEXT(value)
    try:
        converted = to_postgres(kind, value)
    except Rejected as rejected:
        return Unconvertible(rejected.reason, repr(value))
    if kind is Kind.TIMESTAMP:
        return converted.astimezone(dt.timezone.utc).isoformat()
    if kind is Kind.DATE:
        return converted.isoformat()
    if kind is Kind.REAL:
        return float(converted) + 0.0
    if kind is Kind.JSON:
        return json.dumps(_canonical_json(converted), sort_keys=True, separators=(",", ":"))
    if kind is Kind.NUMERIC:
        return Decimal(0) if converted == 0 else converted.normalize()
    return converted


def normalize_row(row: Mapping[str, Any], kinds: Mapping[str, Kind]) -> dict[str, Any]:
    """The comparable form of a row (only the columns named in `kinds`)."""
    return {column: normalize(kind, row.get(column)) for column, kind in kinds.items()}
