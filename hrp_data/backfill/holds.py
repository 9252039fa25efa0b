"""What the backfill holds back while it loads a table, and gives back after it.

Maintaining secondary indexes row by row (a GIN index on JSONB above all)
and firing a foreign-key trigger per row cost PostgreSQL several times the
load itself; building an index once over the loaded table and checking a
foreign key with one anti-join are cheap. So, for the table being copied:

- Secondary indexes (not the primary key, not a unique index: those keep
  refusing what they must) are dropped, each definition saved first in
  hrp_cutover_backfill_indexes in the same transaction, and built again from
  the saved text after the table's copy. A run killed in between leaves the
  definitions behind and the next run (any table) builds them; until then the
  readiness checklist sees the drift and refuses a flip. While an index is
  built, the applier's writes to that table wait for it (seconds), held in
  the outbox, never lost. The build (and the table's ANALYZE) runs in a
  thread and connection of its own (IndexBuilder), alongside the next
  table's copy.
- Foreign-key checks are skipped for the backfill's own session only
  (`session_replication_role = replica`); the applier's sessions keep them.
  The batch writer then finds the rows whose parent PostgreSQL lacks with one
  anti-join per key (hrp_data.backfill.batch_writer.BatchWriter.quarantine_orphans)
  and quarantines them as a refused foreign key would have. Setting the role
  needs a superuser or, from PostgreSQL 15, `GRANT SET ON PARAMETER
  session_replication_role`; without it the checks stay on and the load is
  slower, never wrong.
"""

from __future__ import annotations

import collections
import functools
import threading
import time
from typing import Any

import psycopg2
import psycopg2.errors
import sqlalchemy as sa
import structlog

from adapters.binds import reading
from adapters.catalog import quote

log = structlog.get_logger(__name__)

HELD_INDEXES = "hrp_cutover_backfill_indexes"
HOLD_LOCK_TIMEOUT_MS = 3000
"""How long dropping a table's indexes may wait for its lock before the table loads with them."""

DDL = f"""
CREATE TABLE IF NOT EXISTS {HELD_INDEXES} (
    index_name text PRIMARY KEY,
    table_name text NOT NULL,
    definition text NOT NULL,
    held_at timestamptz NOT NULL DEFAULT now()
)"""


def install(cursor: Any) -> None:
    """Create the table of held indexes if it is missing (the caller holds the state install lock)."""
    cursor.execute(DDL)


def hold_indexes(cursor: Any, table: str) -> list[str]:
    """Drop `table`'s secondary indexes, saving their definitions (in the caller's transaction).

    DROP INDEX needs the table's ACCESS EXCLUSIVE lock, and while it waits for
    one every other query on the table queues behind it. So it waits at most
    HOLD_LOCK_TIMEOUT_MS (a long transaction on the table, e.g. a verify run):
    then nothing is held, the caller's transaction is rolled back to where it
    was, and the table loads with its indexes (slower, never stuck).
    """
    cursor.execute("SAVEPOINT hrp_hold")
    cursor.execute(f"SET LOCAL lock_timeout = {int(HOLD_LOCK_TIMEOUT_MS)}")
    try:
        held = _drop_secondary_indexes(cursor, table)
    except psycopg2.errors.LockNotAvailable:
        cursor.execute("ROLLBACK TO SAVEPOINT hrp_hold")
        log.warning("backfill.indexes_kept", table=table,
                    detail=f"another session holds a lock on the table for more than {HOLD_LOCK_TIMEOUT_MS} ms")
        held = []
    cursor.execute("RELEASE SAVEPOINT hrp_hold")
    cursor.execute("SET LOCAL lock_timeout TO DEFAULT")
    return held


def _drop_secondary_indexes(cursor: Any, table: str) -> list[str]:
    cursor.execute(
        "SELECT i.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x"
        " JOIN pg_class i ON i.oid = x.indexrelid"
        " WHERE x.indrelid = to_regclass(%s) AND NOT x.indisprimary AND NOT x.indisunique"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)",
        (quote(table),),
    )
    held = cursor.fetchall()
    for name, definition in held:
        cursor.execute(
            f"INSERT INTO {HELD_INDEXES} (index_name, table_name, definition) VALUES (%s, %s, %s)"
            " ON CONFLICT (index_name) DO NOTHING",
            (name, table, definition),
        )
        cursor.execute(f"DROP INDEX {quote(name)}")
    if held:
        log.info("backfill.indexes_held", table=table, indexes=[name for name, _ in held])
    return [name for name, _ in held]


def held(connection: Any, table: str | None = None) -> list[tuple[str, str]]:
    """(name, definition) of the held indexes (of `table`, or all), the slow kinds (GIN, GiST) first."""
    with connection.cursor() as cursor:
        condition, params = ("WHERE table_name = %s", (table,)) if table else ("", ())
        cursor.execute(
            f"SELECT index_name, definition FROM {HELD_INDEXES} {condition}"
            " ORDER BY definition ~ ' USING (gin|gist) ' DESC, held_at, index_name",
            params,
        )
        found = cursor.fetchall()
    connection.commit()
    return found


def restore_index(connection: Any, name: str, definition: str) -> None:
    """Build one held index again (unless it exists) and forget its definition, in one transaction."""
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NULL", (quote(name),))
        if cursor.fetchone()[0]:
            cursor.execute(definition)
        cursor.execute(f"DELETE FROM {HELD_INDEXES} WHERE index_name = %s", (name,))
    connection.commit()
    log.info("backfill.index_built", index=name, seconds=round(time.monotonic() - started, 3))


def restore_indexes(connection: Any, table: str | None = None) -> list[str]:
    """Build every held index (of `table`, or all) again, one transaction each; returns their names."""
    found = held(connection, table)
    for name, definition in found:
        restore_index(connection, name, definition)
    return [name for name, _ in found]


def held_indexes(engine: sa.Engine) -> list[str]:
    """The indexes a backfill dropped and has not built again yet (none before any backfill)."""
    with reading(engine) as connection:
        if not sa.inspect(connection).has_table(HELD_INDEXES):
            return []
        return list(connection.exec_driver_sql(f"SELECT index_name FROM {HELD_INDEXES} ORDER BY index_name").scalars())


def hold_foreign_keys(connection: Any) -> bool:
    """Skip foreign-key triggers for this session; False (checks stay on) where the role may not."""
    with connection.cursor() as cursor:
        try:
            if connection.server_version >= 150000:  # ask first: a refused SET is an ERROR in the server's log
                cursor.execute("SELECT has_parameter_privilege('session_replication_role', 'SET')")
                if not cursor.fetchone()[0]:
                    raise psycopg2.errors.InsufficientPrivilege()
            cursor.execute("SET session_replication_role = replica")
        except psycopg2.errors.InsufficientPrivilege:
            connection.rollback()
            log.warning(
                "backfill.foreign_keys_checked_per_row",
                detail="this role may not set session_replication_role; grant it (see docs/operations.md) for a faster load",
            )
            return False
        connection.commit()
    return True


def check_foreign_keys(connection: Any) -> None:
    """Foreign-key triggers fire again for this session."""
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = origin")
        connection.commit()


class IndexBuilder:
    """Builds a loaded table's held indexes and ANALYZEs it in a thread and connection of its own,
    while the backfill copies the next table (an index build uses one core; the copy, the rest).

    The work is queued index by index (the slow kinds first), then the table's
    ANALYZE. When the copying is over, `join(connection)` lets the caller's
    connection take queued work too, so the last builds share both cores
    instead of leaving one idle (two CREATE INDEX on one table do not block
    each other).
    """

    def __init__(self, connection: Any):
        self.connection = connection
        self.connection.autocommit = False
        self.jobs: collections.deque = collections.deque()
        self.ready = threading.Condition()
        self.closed = False
        self.error: BaseException | None = None
        self.analyzed: set[str] = set()
        self.thread = threading.Thread(target=self._loop, name="backfill-indexes", daemon=True)

    def start(self) -> "IndexBuilder":
        """Start the building thread; returns the builder."""
        self.thread.start()
        return self

    def submit(self, table: str, indexes: list[tuple[str, str]]) -> None:
        """Queue `table`'s held indexes (from `held()`) and then its ANALYZE."""
        self._raise()
        with self.ready:
            self.jobs.extend(functools.partial(restore_index, name=n, definition=d) for n, d in indexes)
            self.jobs.append(functools.partial(self._analyze, table=table))
            self.ready.notify()

    def _analyze(self, connection: Any, table: str) -> None:
        analyze(connection, table)
        self.analyzed.add(table)

    def _next(self, wait: bool):
        with self.ready:
            while not self.jobs and wait and not self.closed:
                self.ready.wait()
            return self.jobs.popleft() if self.jobs else None

    def _run(self, job, connection: Any) -> None:
        if self.error is not None:
            return
        try:
            job(connection)
        except BaseException as error:  # handed to the backfill's thread at join()
            self.error = error

    def _loop(self) -> None:
        while (job := self._next(wait=True)) is not None:
            self._run(job, self.connection)

    def join(self, helper: Any | None = None) -> None:
        """Finish everything submitted (`helper`, a connection of the caller's, takes a share); raise
        what the work met."""
        if helper is not None:
            while (job := self._next(wait=False)) is not None:
                self._run(job, helper)
        self.stop()
        self._raise()

    def stop(self) -> None:
        """Let the thread finish what it was given and end (the connection stays the caller's)."""
        with self.ready:
            self.closed = True
            self.ready.notify_all()
        if self.thread.is_alive():
            self.thread.join()

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error


def analyze(connection: Any, table: str) -> None:
    """VACUUM (ANALYZE) one loaded table (outside a transaction block): fresh statistics for the
    planner, and the visibility map and hint bits set now rather than by the app's first reads
    after the flip (index-only scans need the visibility map)."""
    connection.commit()
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM (ANALYZE) {quote(table)}")
    finally:
        connection.autocommit = False
