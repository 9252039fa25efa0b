"""SQLite: engine factory with the driver defaults a shared legacy file needs.

Every connection runs in WAL mode with a busy timeout and foreign keys on,
decodes text leniently (invalid UTF-8 survives as lone surrogates, which the
conversion rules reject by name instead of the driver failing the read), and
leaves transaction control to SQLAlchemy. A connection opened with the
execution option `sqlite_begin="IMMEDIATE"` takes the write lock at BEGIN, so
a writer never fails half-way on a lock upgrade.

A legacy app holds the file's lock in its own (deferred) write transactions:
switching the file to WAL and BEGIN IMMEDIATE wait for it, retrying with
backoff, and after `lock_wait_s` fail with `SQLiteLocked`, one line that says
what to do, before anything was written.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import sqlalchemy as sa
import tenacity
from sqlalchemy import event

from adapters.catalog import quote
from adapters.convert import Kind

LOCK_WAIT_S = 30.0
BUSY_TIMEOUT_MS = int(LOCK_WAIT_S * 1000)
T = TypeVar("T")


class SQLiteLocked(sa.exc.OperationalError):
    """Another connection kept the SQLite file locked for longer than the wait allows."""

    def __init__(self, waited_s: float, error: BaseException):
        super().__init__(None, None, error)
        self.waited_s = waited_s

    def __str__(self) -> str:
        return (
            f"the SQLite file stayed locked by another connection's write transaction for more than {self.waited_s:g} s"
            " (HRP_SQLITE_LOCK_WAIT_S); gave up before writing: retry once the app's writes let go"
        )


def _is_locked(error: BaseException) -> bool:
    original = error.orig if isinstance(error, sa.exc.DBAPIError) else error
    return isinstance(original, sqlite3.OperationalError) and "locked" in str(original)


def wait_for_lock(lock_wait_s: float, attempt: Callable[[], T]) -> T:
    """Run `attempt` until it stops failing on a locked file; SQLiteLocked after `lock_wait_s` in all."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(_is_locked),
        wait=tenacity.wait_exponential_jitter(multiplier=0.02, max=0.5),
        stop=tenacity.stop_after_delay(lock_wait_s),
        reraise=True,
    )
    try:
        return retrying(attempt)
    except (sqlite3.OperationalError, sa.exc.OperationalError) as error:
        if isinstance(error, SQLiteLocked) or not _is_locked(error):
            raise
        raise SQLiteLocked(lock_wait_s, error) from error


LAYER_MARK = "hrp_cutover_layer"
"""Every connection of the layer attaches an empty in-memory database by this name; the guard on a
secondary SQLite file lets a write through only on such a connection (the applier, repair,
backfill). An operator's maintenance script passes by running `ATTACH ':memory:' AS hrp_cutover_layer`."""
GUARD_MESSAGE = (
    "hrp-cutover guard: this SQLite file is not the primary database now, so this write would be"
    " lost; write through the app (it writes to the primary), or for maintenance run"
    " ATTACH ':memory:' AS hrp_cutover_layer first (see docs/operations.md)"
)


def decode_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _on_connect(lock_wait_s: float, layer: bool, dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    dbapi_connection.text_factory = decode_text
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {int(lock_wait_s * 1000)}")
    cursor.execute("PRAGMA foreign_keys = ON")
    wait_for_lock(lock_wait_s, lambda: _use_wal(cursor))
    cursor.execute("PRAGMA synchronous = NORMAL")
    if layer:
        cursor.execute(f"ATTACH DATABASE ':memory:' AS {LAYER_MARK}")
    cursor.close()


def _use_wal(cursor: sqlite3.Cursor) -> None:
    """Switch the file to WAL (once; it stays so). Needs the file to itself: fails at once while
    another connection holds a lock in rollback-journal mode, whatever the busy timeout."""
    if cursor.execute("PRAGMA journal_mode").fetchone()[0] not in ("memory", "wal"):
        cursor.execute("PRAGMA journal_mode = WAL")


def _on_begin(lock_wait_s: float, connection: sa.Connection) -> None:
    mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
    wait_for_lock(lock_wait_s, lambda: connection.exec_driver_sql(f"BEGIN {mode}"))


def create_sqlite_engine(url: str, *, lock_wait_s: float = LOCK_WAIT_S, layer: bool = True, **kw: Any) -> sa.Engine:
    """An engine on a SQLite file, safe to share between threads and processes.

    A write transaction waits up to `lock_wait_s` for the file's lock (SQLiteLocked after that).
    `layer=False`: its connections do not carry LAYER_MARK, so the guard refuses their writes
    while the file is not the primary (the app's own sessions, hrp_data.cutover.routing).
    """
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": lock_wait_s},
        **kw,
    )
    event.listen(engine, "connect", functools.partial(_on_connect, lock_wait_s, layer))
    event.listen(engine, "begin", functools.partial(_on_begin, lock_wait_s))
    return engine



EPOCH_NOW = "((julianday('now') - 2440587.5) * 86400.0)"


WIDE_KINDS = (Kind.TEXT, Kind.JSON, Kind.BLOB)
"""The kinds whose values have no bound on their size."""


def stored_width(columns: Iterable[tuple[str, Kind]]) -> str | None:
    """SQL for a row's stored size in SQLite, near enough: the bytes of its text, JSON and blob
    columns, given as (name, kind); None when it has none (its size is bounded). A blob's length()
    is read from its record header, its content left unread; a text's bytes are its length as a
    blob (length() counts characters)."""
    return " + ".join(
        f"ifnull(length({quote(name)}), 0)" if kind is Kind.BLOB else f"ifnull(length(CAST({quote(name)} AS BLOB)), 0)"
        for name, kind in columns if kind in WIDE_KINDS
    ) or None


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _key_expression(table: sa.Table, row: str) -> str:
    """The outbox spelling of a row's key (adapters.outbox): a JSON array, a blob as {"blob": hex}
    (json_array refuses blobs, which would make the legacy app's write fail)."""
    values = []
    for c in table.primary_key.columns:
        value = f'{row}.{quote(c.name)}'
        values.append(f"CASE WHEN typeof({value}) = 'blob' THEN json_object('blob', lower(hex({value})))"
                      f" ELSE {value} END")
    return f"json_array({', '.join(values)})"


def capture_trigger_ddl(table: sa.Table, outbox: str, recorded_as: str | None = None) -> list[str]:
    """CREATE TRIGGER statements recording every insert, update and delete of `table` in `outbox`
    (as `recorded_as`, default the table's name: the catalog's name of the table)."""
    name = table.name
    recorded = _literal(recorded_as or name)
    insert = f'INSERT INTO "{outbox}" (table_name, pk, op, created_at) VALUES'
    new_key, old_key = _key_expression(table, "NEW"), _key_expression(table, "OLD")
    on = quote(name)
    return [
        f'CREATE TRIGGER IF NOT EXISTS {quote(f"{outbox}_{name}_ins")} AFTER INSERT ON {on} BEGIN'
        f" {insert} ({recorded}, {new_key}, 'insert', {EPOCH_NOW}); END",
        f'CREATE TRIGGER IF NOT EXISTS {quote(f"{outbox}_{name}_upd")} AFTER UPDATE ON {on} BEGIN'
        f" {insert} ({recorded}, {new_key}, 'update', {EPOCH_NOW});"
        f' INSERT INTO "{outbox}" (table_name, pk, op, created_at)'
        f" SELECT {recorded}, {old_key}, 'delete', {EPOCH_NOW} WHERE {old_key} IS NOT {new_key}; END",
        f'CREATE TRIGGER IF NOT EXISTS {quote(f"{outbox}_{name}_del")} AFTER DELETE ON {on} BEGIN'
        f" {insert} ({recorded}, {old_key}, 'delete', {EPOCH_NOW}); END",
    ]


def drop_capture_trigger_ddl(table: sa.Table, outbox: str) -> list[str]:
    return [f'DROP TRIGGER IF EXISTS {quote(f"{outbox}_{table.name}_{op}")}' for op in ("ins", "upd", "del")]


GUARD_PREFIX = "hrp_cutover_guard"


def guard_trigger_ddl(table: sa.Table) -> list[str]:
    """BEFORE triggers refusing every insert, update and delete of `table` made outside the layer."""
    name = table.name
    outside = f"NOT EXISTS (SELECT 1 FROM pragma_database_list WHERE name = '{LAYER_MARK}')"
    message = GUARD_MESSAGE.replace("'", "''")
    return [
        f'CREATE TRIGGER IF NOT EXISTS {quote(f"{GUARD_PREFIX}_{name}_{op}")} BEFORE {verb} ON {quote(name)}'
        f" WHEN {outside} BEGIN SELECT RAISE(ABORT, '{message}'); END"
        for op, verb in (("ins", "INSERT"), ("upd", "UPDATE"), ("del", "DELETE"))
    ]


def drop_guard_trigger_ddl(table: sa.Table) -> list[str]:
    return [f'DROP TRIGGER IF EXISTS {quote(f"{GUARD_PREFIX}_{table.name}_{op}")}' for op in ("ins", "upd", "del")]


def trigger_names(connection: sa.Connection) -> set[str]:
    """The names of every trigger in the file."""
    return set(connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'").scalars())


PARKED_TRIGGERS = "hrp_cutover_parked_triggers"
"""The file's own triggers, kept here (name, table, SQL) while the file is the secondary."""


def user_triggers(connection: sa.Connection) -> list[tuple[str, str]]:
    """(name, table) of the file's own triggers (not the layer's)."""
    rows = connection.exec_driver_sql(
        "SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger' ORDER BY name"
    ).all()
    return [(name, table) for name, table in rows if not name.lower().startswith("hrp_cutover_")]


def park_user_triggers(connection: sa.Connection) -> list[str]:
    """While the file is the secondary only the layer writes it, with rows PostgreSQL's writes
    already made whole; the file's own triggers (an audit row, a touched timestamp) would change
    them again and the two sides would differ. Drop them, keeping their SQL, inside the caller's
    transaction (the move's: the guard goes on in the same step). Returns the names parked."""
    connection.exec_driver_sql(
        f"CREATE TABLE IF NOT EXISTS {PARKED_TRIGGERS} (name TEXT PRIMARY KEY, tbl_name TEXT NOT NULL, sql TEXT NOT NULL)"
    )
    parked = []
    for name, table in user_triggers(connection):
        sql = connection.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?",
                                         (name,)).scalar()
        connection.exec_driver_sql(f"INSERT OR REPLACE INTO {PARKED_TRIGGERS} VALUES (?, ?, ?)", (name, table, sql))
        connection.exec_driver_sql(f"DROP TRIGGER {quote(name)}")
        parked.append(name)
    return parked


def restore_user_triggers(connection: sa.Connection) -> dict[str, str]:
    """Put the parked triggers back (the file is the primary again, or on its own), inside the
    caller's transaction. Returns {name: why} of those SQLite refused (a table dropped since):
    they stay parked, never lost, and the move goes on."""
    exists = connection.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (PARKED_TRIGGERS,)
    ).scalar()
    if not exists:
        return {}
    refused = {}
    present = {name for name, _ in user_triggers(connection)}
    for name, sql in connection.exec_driver_sql(f"SELECT name, sql FROM {PARKED_TRIGGERS} ORDER BY name").all():
        connection.exec_driver_sql("SAVEPOINT hrp_cutover_restore")  # whatever the caller's transaction is
        try:
            if name not in present:  # the same migration may have made it again meanwhile
                connection.exec_driver_sql(sql)
            connection.exec_driver_sql(f"DELETE FROM {PARKED_TRIGGERS} WHERE name = ?", (name,))
        except sa.exc.OperationalError as error:
            connection.exec_driver_sql("ROLLBACK TO hrp_cutover_restore")
            refused[name] = str(error.orig)
        connection.exec_driver_sql("RELEASE hrp_cutover_restore")
    return refused


def issued_id(connection: sa.Connection, table: sa.Table) -> int:
    """The largest id AUTOINCREMENT has handed out for `table` (sqlite_sequence; 0: none)."""
    found = connection.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = ?", (table.name,)).scalar()
    return found or 0


def bump_autoincrement(connection: sa.Connection, table: sa.Table, at_least: int = 0) -> None:
    """Set sqlite_sequence for `table` past its largest id and past `at_least` (an id the other
    database has handed out already), so the next insert gets an id never given before."""
    key = next(iter(table.primary_key.columns)).name
    largest = connection.exec_driver_sql(f"SELECT max({quote(key)}) FROM {quote(table.name)}").scalar()
    top = max(largest or 0, at_least)
    if top <= 0:
        return
    current = connection.exec_driver_sql(
        "SELECT seq FROM sqlite_sequence WHERE name = ?", (table.name,)
    ).scalar()
    if current is None:
        connection.exec_driver_sql(
            "INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table.name, top)
        )
    elif current < top:
        connection.exec_driver_sql(
            "UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (top, table.name)
        )
