"""Secret redaction shared by logs, mismatch records, reports and the dashboard.

A secret is shown as a short fingerprint: enough to tell equal values from
different ones, never enough to recover the value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

SECRET_KEYS = frozenset({"password_hash", "api_key", "api_secret", "password", "secret"})
SECRET_WORDS = ("password", "passwd", "secret", "token", "api_key", "apikey")
"""Any column whose name contains one of these looks secret (an app's own columns: `looks_secret`)."""


def looks_secret(name: str) -> bool:
    """Whether a column of an app's own query is treated as secret: a known secret name, or one
    that contains a secret word (`reset_token`, `client_secret`, `PasswordHash`)."""
    lowered = name.lower()
    return lowered in SECRET_KEYS or any(word in lowered for word in SECRET_WORDS)


def fingerprint(value: Any) -> str | None:
    """'sha256:<8 hex>' of the value's text; None stays None."""
    if value is None:
        return None
    return "sha256:" + hashlib.sha256(repr(value).encode("utf-8", "surrogatepass")).hexdigest()[:8]


def redact_row(row: Mapping[str, Any], secrets: Iterable[str] = SECRET_KEYS) -> dict[str, Any]:
    """A copy of `row` with every secret column fingerprinted."""
    secret_names = set(secrets)
    return {k: fingerprint(v) if k in secret_names else v for k, v in row.items()}
