"""Login and registration throttling, shared by every worker process, and a bound on password hashing.

Counters live in the SQLite file (table hrp_cutover_throttle), the layer's own
store that every process of the app shares in every phase (the phase record,
the workers' heartbeats and the session key live there too), so a gunicorn
worker sees the failures the others counted. A counter is a fixed window:
the first hit starts it, HRP_THROTTLE_WINDOW_S later it starts again from 0.

    failed logins per account (a hash of the username)   HRP_LOGIN_FAILURES
    failed logins per client address                     HRP_LOGIN_FAILURES_PER_ADDRESS
    registrations per client address                     HRP_REGISTRATIONS_PER_ADDRESS

A subject at its limit gets `Throttled` (429 with Retry-After, the seconds
left in its window) before any password is hashed. A successful login clears
its account's counter, never its address's. Hashing a password (scrypt, about
100 ms of a core) takes one of HRP_PASSWORD_HASH_SLOTS per process, so a burst
of logins cannot take every core from the requests that only read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import math
import os
import threading
import time
import weakref
from collections.abc import Iterator

import sqlalchemy as sa
import structlog
from flask import request

from adapters.binds import reading, writing
from hrp_data.cutover.dual_write import Cutover
from hrp_data.repositories import Record
from hrp_data.settings import Settings
from hrp_data.web import services
from shadow.redact import fingerprint

THROTTLE_TABLE = "hrp_cutover_throttle"
DDL = [
    f"""CREATE TABLE IF NOT EXISTS {THROTTLE_TABLE} (
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        hits INTEGER NOT NULL,
        window_end REAL NOT NULL,
        PRIMARY KEY (kind, subject))""",
    f"CREATE INDEX IF NOT EXISTS ix_{THROTTLE_TABLE}_window_end ON {THROTTLE_TABLE} (window_end)",
]
HASH_SLOT_WAIT_S = 2.0
"""How long a login or registration waits for a hashing slot before its 503."""

LOGIN_ACCOUNT, LOGIN_ADDRESS, REGISTER_ADDRESS = "login_account", "login_address", "register_address"

log = structlog.get_logger(__name__)

_installed: weakref.WeakSet = weakref.WeakSet()
_install_lock = threading.Lock()


class Throttled(Exception):
    """Too many attempts: try again after `retry_after` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"too many attempts; retry in {retry_after} s")
        self.retry_after = retry_after


class HashingBusy(Exception):
    """Every password-hashing slot of this process stayed busy for HASH_SLOT_WAIT_S."""


def account(username: str) -> str:
    """The subject of an account's counter: a hash, so the table lists no usernames."""
    return hashlib.sha256(username.casefold().encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclasses.dataclass(frozen=True)
class Limit:
    kind: str
    subject: str
    most: int  # hits allowed in one window; 0: no limit


class Throttle:
    """The counters in the SQLite file of `engine`."""

    def __init__(self, engine: sa.Engine, window_s: float):
        self.engine = engine
        self.window_s = window_s
        with _install_lock:
            if engine not in _installed:
                with writing(engine) as connection:
                    for statement in DDL:
                        connection.exec_driver_sql(statement)
                _installed.add(engine)

    def check(self, limits: list[Limit], *, now: float | None = None) -> None:
        """Raise Throttled when any of `limits` is reached in its current window."""
        now = time.time() if now is None else now
        active = [limit for limit in limits if limit.most > 0]
        if not active:
            return
        clauses = " OR ".join("(kind = ? AND subject = ? AND hits >= ?)" for _ in active)
        params = [value for limit in active for value in (limit.kind, limit.subject, limit.most)]
        with reading(self.engine) as connection:
            window_end = connection.exec_driver_sql(
                f"SELECT max(window_end) FROM {THROTTLE_TABLE} WHERE window_end > ? AND ({clauses})",
                (now, *params),
            ).scalar()
        if window_end is not None:
            raise Throttled(max(1, math.ceil(window_end - now)))

    def hit(self, limits: list[Limit], *, now: float | None = None) -> None:
        """Count one attempt against each subject (a new window where the last one ended)."""
        now = time.time() if now is None else now
        with writing(self.engine) as connection:
            for limit in limits:
                connection.exec_driver_sql(
                    f"INSERT INTO {THROTTLE_TABLE} (kind, subject, hits, window_end) VALUES (?, ?, 1, ?)"
                    " ON CONFLICT (kind, subject) DO UPDATE SET"
                    " hits = CASE WHEN window_end <= ? THEN 1 ELSE hits + 1 END,"
                    " window_end = CASE WHEN window_end <= ? THEN excluded.window_end ELSE window_end END",
                    (limit.kind, limit.subject, now + self.window_s, now, now),
                )
            connection.exec_driver_sql(f"DELETE FROM {THROTTLE_TABLE} WHERE window_end <= ?", (now,))

    def clear(self, kind: str, subject: str) -> None:
        with writing(self.engine) as connection:
            connection.exec_driver_sql(f"DELETE FROM {THROTTLE_TABLE} WHERE kind = ? AND subject = ?", (kind, subject))


def client_address() -> str:
    """The request's peer address (behind a reverse proxy, wrap the app in werkzeug's ProxyFix so
    this is the client's, not the proxy's)."""
    return request.remote_addr or "unknown"


def login_limits(settings: Settings, username: str, address: str) -> list[Limit]:
    return [
        Limit(LOGIN_ACCOUNT, account(username), settings.login_failures),
        Limit(LOGIN_ADDRESS, address, settings.login_failures_per_address),
    ]


def register_limits(settings: Settings, address: str) -> list[Limit]:
    return [Limit(REGISTER_ADDRESS, address, settings.registrations_per_address)]


@functools.cache
def _slots(size: int, pid: int) -> threading.BoundedSemaphore:
    return threading.BoundedSemaphore(size)


@contextlib.contextmanager
def hashing_slot(size: int) -> Iterator[None]:
    """One of this process's `size` password-hashing slots, held for the block."""
    slots = _slots(size, os.getpid())
    if not slots.acquire(timeout=HASH_SLOT_WAIT_S):
        raise HashingBusy("every password-hashing slot stayed busy")
    try:
        yield
    finally:
        slots.release()


def login(cutover: Cutover, settings: Settings, username: str, password: str, address: str) -> Record | None:
    """services.authenticate behind the account's and the address's counters: the user, or None
    (counted and logged, the username as a fingerprint, never the password); Throttled at a limit."""
    throttle = Throttle(cutover.sqlite, settings.throttle_window_s)
    limits = login_limits(settings, username, address)
    try:
        throttle.check(limits)
    except Throttled as error:
        log.warning("auth.login_throttled", account=fingerprint(username), address=address, retry_after=error.retry_after)
        raise
    user = services.authenticate(
        cutover, username, password, hashing=hashing(settings)
    )
    if user is None:
        throttle.hit(limits)
        log.warning("auth.login_failed", account=fingerprint(username), address=address)
    else:
        throttle.clear(LOGIN_ACCOUNT, account(username))
    return user


def count_registration(cutover: Cutover, settings: Settings, address: str) -> None:
    """Count one registration attempt against the address; Throttled at its limit. Call it before
    any write transaction of the request opens: it writes the SQLite file, whose write lock an
    Idempotency-Key's transaction holds while SQLite is the primary."""
    throttle = Throttle(cutover.sqlite, settings.throttle_window_s)
    limits = register_limits(settings, address)
    try:
        throttle.check(limits)
    except Throttled as error:
        log.warning("auth.register_throttled", address=address, retry_after=error.retry_after)
        raise
    throttle.hit(limits)


def hashing(settings: Settings) -> services.Hashing:
    return functools.partial(hashing_slot, settings.password_hash_slots)
