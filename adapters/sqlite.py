"""SQLite: engine factory with the driver defaults a shared legacy file needs.

Every connection runs in WAL mode with a busy timeout and foreign keys on,
decodes text leniently (invalid UTF-8 survives as lone surrogates, which the
conversion rules reject by name instead of the driver failing the read), and
leaves transaction control to SQLAlchemy. A connection opened with the
execution option `sqlite_begin="IMMEDIATE"` takes the write lock at BEGIN, so
a writer never fails half-way on a lock upgrade.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

BUSY_TIMEOUT_MS = 30_000


def decode_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    dbapi_connection.text_factory = decode_text
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys = ON")
    if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "memory":
        cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def _on_begin(connection: sa.Connection) -> None:
    mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
    connection.exec_driver_sql(f"BEGIN {mode}")


def create_sqlite_engine(url: str, **kw: Any) -> sa.Engine:
    """An engine on a SQLite file, safe to share between threads and processes."""
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
        **kw,
    )
    event.listen(engine, "connect", _on_connect)
    event.listen(engine, "begin", _on_begin)
    return engine

