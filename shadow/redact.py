"""Secret redaction shared by logs, mismatch records, reports and the dashboard.

A secret is shown as a short fingerprint: enough to tell equal values from
different ones, never enough to recover the value.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

SECRET_KEYS = frozenset({"password_hash", "api_key", "api_secret", "password", "secret"})
SECRET_WORDS = ("password", "passwd", "secret", "token", "apikey", "privatekey", "accesskey", "credential")
"""Any column whose name contains one of these, once lowered and stripped of everything but letters and
digits (`API Key`, `api-key` and `apiKey` all hold `apikey`), looks secret (`looks_secret`)."""
SECRET_NAME_WORDS = frozenset({"pwd", "salt", "otp", "totp", "hotp"})
"""Words too short to look for inside others (`footprint` holds `otp`): a name looks secret when one of
its words, split at anything but a letter or digit and at a lower-to-upper case change, is one of these
(`pwd`, `user_pwd`, `totp_seed`, `PwdHash`, `salt`)."""
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")


def looks_secret(name: str) -> bool:
    """Whether a column is treated as secret by its name alone: a known secret name, one that contains a
    secret word (`reset_token`, `client_secret`, `PasswordHash`, `API Key`, `private_key`,
    `credentials`), or one with a short secret word of its own (`pwd`, `totp_seed`, `salt`)."""
    lowered = name.lower()
    if lowered in SECRET_KEYS:
        return True
    squeezed = "".join(ch for ch in lowered if ch.isalnum())
    if any(word in squeezed for word in SECRET_WORDS):
        return True
    return any(word.lower() in SECRET_NAME_WORDS for word in _WORD.findall(name))


def fingerprint(value: Any) -> str | None:
    """'sha256:<8 hex>' of the value's text; None stays None."""
    if value is None:
        return None
    return "sha256:" + hashlib.sha256(repr(value).encode("utf-8", "surrogatepass")).hexdigest()[:8]


def redact_json(value: Any) -> Any:
    """`value` with every member of a JSON document whose name looks secret (`{"token": ...}`,
    `{"auth": {"client_secret": ...}}`) fingerprinted, at any depth: a dict or list, or JSON text
    (then given back as JSON text, respelled only when a member was hidden); anything else as it is.
    A column's name may be innocent (`payload`, `settings`) and its documents still hold tokens."""
    if isinstance(value, str):
        if not value.lstrip().startswith(("{", "[")):
            return value
        try:
            document = json.loads(value, strict=False)
        except (ValueError, RecursionError):
            return value
        hidden, changed = _hidden_members(document)
        return json.dumps(hidden, ensure_ascii=False, separators=(",", ":")) if changed else value
    if isinstance(value, (dict, list)):
        return _hidden_members(value)[0]
    return value


def _hidden_members(document: Any) -> tuple[Any, bool]:
    if isinstance(document, dict):
        out, changed = {}, False
        for name, member in document.items():
            if isinstance(name, str) and looks_secret(name) and member is not None:
                out[name], changed = fingerprint(member), True
            else:
                out[name], inner = _hidden_members(member)
                changed = changed or inner
        return out, changed
    if isinstance(document, list):
        pairs = [_hidden_members(member) for member in document]
        return [member for member, _ in pairs], any(inner for _, inner in pairs)
    return document, False


def redact_key(key: Iterable[Any], names: Iterable[str], secrets: Iterable[str] = ()) -> list[Any]:
    """A row's key (its values in the order of `names`, the key's columns) with the value of every
    column that looks secret, or is among `secrets`, fingerprinted (a table keyed by its token)."""
    chosen, names, key = set(secrets), list(names), list(key)
    if len(names) != len(key):  # not this table's key: nothing tells which value is which
        return key
    return [fingerprint(value) if name in chosen or looks_secret(name) else value
            for name, value in zip(names, key)]


def redact_table_key(table: Any, key: Iterable[Any]) -> list[Any]:
    """`redact_key` for a key of `table` (an sa.Table; None: the key as it is), by its primary key's
    columns and the columns chosen secret."""
    if table is None:
        return list(key)
    from adapters.catalog import is_secret

    return redact_key(key, [column.name for column in table.primary_key.columns],
                      [column.name for column in table.columns if is_secret(column)])


def redact_row(row: Mapping[str, Any], secrets: Iterable[str] = SECRET_KEYS) -> dict[str, Any]:
    """A copy of `row` with every secret column fingerprinted."""
    secret_names = set(secrets)
    return {k: fingerprint(v) if k in secret_names else redact_json(v) for k, v in row.items()}
