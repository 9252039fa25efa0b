"""Idempotency keys: a write sent twice with the same key takes effect once.

A client that loses its connection before the answer (the worker serving it
died) cannot know whether its write committed. With an `Idempotency-Key` it
may simply send the request again: the key, a fingerprint of the request and
the response (status and body) are stored in the same transaction as the
write, on the database the write commits to, so a repeat finds them and gets
the stored response instead of writing again.

The table (`hrp_cutover_idempotency`, the same shape in both databases) is
captured by the outbox triggers like the HRP tables and carried to the
secondary by the one apply path; a flip drains the outbox inside its hold, so
a repeat that arrives after the primary changed finds its key on the new
primary. Its key is a 63-bit hash of (scope, key), an integer as the triggers
spell keys; the scope and key are stored too and compared. Keys expire after
TTL_S; expired rows are purged in small batches by later keyed writes.

The fingerprint is an HMAC of the request (method, path, scope, body) under
the app's secret, so it never lets anyone test guesses of a password sent in
a body. Stored bodies must hold no secret: callers redact them first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import time

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

KEYS_TABLE = "hrp_cutover_idempotency"
TTL_S = 24 * 3600.0
MAX_KEY_LENGTH = 255
PURGE_BATCH = 1000
PURGE_EVERY_S = 1.0

metadata = sa.MetaData()

keys = sa.Table(
    KEYS_TABLE,
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("idem_key", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_hrp_cutover_idempotency_created_at", "created_at"),
)

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
_last_purge = 0.0


class BadKey(ValueError):
    """The header is not a usable key; the message is one line."""


@dataclasses.dataclass(frozen=True)
class Stored:
    """A response already given for this key."""

    fingerprint: str
    status: int
    body: str


def check_key(raw: str) -> str:
    """The key as sent, if it is 1 to MAX_KEY_LENGTH printable ASCII characters."""
    if not 1 <= len(raw) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in raw) or not raw.strip():
        raise BadKey(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters")
    return raw


def key_id(scope: str, key: str) -> int:
    digest = hashlib.blake2b(f"{scope}\n{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def fingerprint(secret: bytes, *, method: str, path: str, scope: str, body: bytes) -> str:
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    for part in (method.encode(), path.encode(), scope.encode()):
        mac.update(len(part).to_bytes(4, "big") + part)
    mac.update(body)
    return mac.hexdigest()


def install(connection: sa.Connection) -> None:
    """Create the table if it is missing (idempotent)."""
    metadata.create_all(connection, checkfirst=True)


def claim(connection: sa.Connection, scope: str, key: str, print_: str, *, now: float | None = None) -> Stored | None:
    """Take the key for this transaction (None), or the response stored for it.

    The claim is an insert: a concurrent transaction with the same key waits
    for this one (PostgreSQL's unique index; SQLite's write lock) and then
    sees what it stored. An expired row is taken over in place.
    """
    now = time.time() if now is None else now
    ident = key_id(scope, key)
    row = {"id": ident, "scope": scope, "idem_key": key, "fingerprint": print_, "status": 0, "body": "",
           "created_at": now}
    statement = _INSERTS[connection.dialect.name](keys).values(row)
    statement = statement.on_conflict_do_update(
        index_elements=["id"],
        set_={name: statement.excluded[name] for name in row if name != "id"},
        where=keys.c.created_at < now - TTL_S,
    ).returning(keys.c.id)
    if connection.execute(statement).first() is not None:
        return None
    found = connection.execute(
        sa.select(keys.c.scope, keys.c.idem_key, keys.c.fingerprint, keys.c.status, keys.c.body).where(keys.c.id == ident)
    ).one()
    if (found.scope, found.idem_key) != (scope, key):  # a 63-bit hash collision: never replay another's answer
        return Stored("", 0, "")
    return Stored(found.fingerprint, found.status, found.body)


def record(connection: sa.Connection, scope: str, key: str, status: int, body: str) -> None:
    """Store the response of the claimed key (same transaction as the write)."""
    connection.execute(sa.update(keys).where(keys.c.id == key_id(scope, key)).values(status=status, body=body))
    purge_expired(connection)


def purge_expired(connection: sa.Connection, *, now: float | None = None, force: bool = False) -> int:
    """Delete up to PURGE_BATCH expired keys, at most every PURGE_EVERY_S per process; how many."""
    global _last_purge
    now = time.time() if now is None else now
    if not force and now - _last_purge < PURGE_EVERY_S:
        return 0
    _last_purge = now
    expired = sa.select(keys.c.id).where(keys.c.created_at < now - TTL_S).limit(PURGE_BATCH)
    return connection.execute(sa.delete(keys).where(keys.c.id.in_(expired))).rowcount
