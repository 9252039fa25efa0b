"""Records to JSON-ready values: ISO-8601 UTC datetimes, ISO dates, no secrets."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from typing import Any

from hrp_data.models import SECRET_COLUMNS
from shadow.redact import fingerprint


def plain(value: Any) -> Any:
    """A value as JSON can carry it (datetimes as ISO-8601 in UTC, 'Z')."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):  # a legacy blob, in bytea's hex spelling
        return "\\x" + bytes(value).hex()
    return value


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A record without its secret columns (password hashes, API keys and secrets)."""
    return {k: plain(v) for k, v in record.items() if k not in SECRET_COLUMNS}


def redacted_credential(record: dict[str, Any]) -> dict[str, Any]:
    """A credential as listed after creation: fingerprints in place of the key and secret."""
    out = public(record)
    out["api_key_fingerprint"] = fingerprint(record.get("api_key"))
    out["api_secret_fingerprint"] = fingerprint(record.get("api_secret"))
    return out
