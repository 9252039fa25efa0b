"""Transaction poolers (PgBouncer) in front of PostgreSQL, and who holds an advisory lock.

Behind a pooler in transaction (or statement) mode a client connection is
not a session: each transaction may run on another server connection, so
session state (session advisory locks, temporary tables kept across
transactions, SET without LOCAL) is lost, or, worse, stays behind on a
server connection that the pool hands to somebody else.

`probe(url)` tells whether a URL is such a connection, from what PostgreSQL
itself reports (PgBouncer answers no SHOW of its own on a normal database):
one client connection (A) commits a transaction, then a second client
connection (B) opens a transaction and holds it. Directly, or through a
session pooler, A's backend is A's alone: B never runs on it and A's next
transaction runs on it again. Through a transaction pooler, B is handed the
server connection A just gave back (PgBouncer reuses the most recent one),
or A's next transaction runs on another one. A pooler in statement mode
refuses B's transaction block outright.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping

import sqlalchemy as sa

from adapters.postgres import create_postgres_engine

HOLDERS = 3
"""Clients that hold a transaction open, one after the other, before a same-backend answer counts as direct."""
PROBE_NAME = "hrp-cutover-probe"


@dataclasses.dataclass(frozen=True)
class Probe:
    pooled: bool
    evidence: str


def probe(url: str) -> Probe:
    """Whether `url` reaches PostgreSQL through a transaction or statement pooler; raises
    sqlalchemy's OperationalError when nothing answers."""
    engine = create_postgres_engine(url, application_name=PROBE_NAME, pool_size=1, max_overflow=HOLDERS + 1)
    try:
        return _probe(engine)
    except sa.exc.DBAPIError as error:
        if "statement pooling" in str(error.orig):
            return Probe(True, "it refuses transaction blocks (statement pooling)")
        raise
    finally:
        engine.dispose()


def _probe(engine: sa.Engine) -> Probe:
    with engine.connect() as client:
        first = _pid(client)
        client.commit()
        holders = []
        try:
            for _ in range(HOLDERS):
                holder = engine.connect()
                holders.append(holder)
                if _pid(holder) == first:  # its transaction stays open: that server connection is taken
                    return Probe(True, f"another client's transaction ran on its backend (pid {first})")
                again = _pid(client)
                client.commit()
                if again != first:
                    return Probe(True, f"its backend changed between two transactions (pid {first}, then {again})")
        finally:
            for holder in holders:
                holder.close()
    return Probe(False, f"one backend (pid {first}) served it throughout")


def _pid(connection: sa.Connection) -> int:
    return connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()


# -- advisory locks --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Holder:
    """A backend that holds (or waits for) one of the advisory locks asked about."""

    lock: str
    pid: int
    granted: bool
    application_name: str
    client: str
    state: str | None
    backend_start: dt.datetime | None
    state_change: dt.datetime | None
    transaction_start: dt.datetime | None

    def describe(self) -> str:
        since = self.state_change or self.backend_start
        held = "holds" if self.granted else "waits for"
        return (
            f"pid {self.pid} ({self.application_name or 'no application_name'}, from {self.client})"
            f" {held} the {self.lock} lock, {self.state or 'state unknown'}"
            f"{' since ' + since.isoformat(timespec='seconds') if since else ''}"
            f"{', connected ' + self.backend_start.isoformat(timespec='seconds') if self.backend_start else ''}"
        )


HOLDERS_SQL = """
SELECT l.pid, l.granted, ((l.classid::bigint << 32) | l.objid::bigint) AS key,
       coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local socket'),
       a.state, a.backend_start, a.state_change, a.xact_start
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((l.classid::bigint << 32) | l.objid::bigint) = ANY(%(keys)s) AND l.pid <> pg_backend_pid()
ORDER BY l.granted DESC, a.backend_start
"""


def advisory_holders(connection: sa.Connection, keys: Mapping[int, str]) -> list[Holder]:
    """Every other backend of this database holding or awaiting one of `keys` (bigint key -> name)."""
    rows = connection.exec_driver_sql(HOLDERS_SQL, {"keys": list(keys)}).all()
    return [
        Holder(keys[row[2]], row[0], row[1], row[3], row[4], row[5], row[6], row[7], row[8])
        for row in rows
    ]


TERMINATE_WAIT_S = 10
"""How long `terminate_holder` waits for an ended backend to exit (and release its locks)."""


def terminate_holder(connection: sa.Connection, pid: int, keys: Mapping[int, str]) -> bool | None:
    """End backend `pid` only if it holds one of `keys` (checked in the same statement): None if it holds
    none, True once it has exited, False if it was signalled but still runs after TERMINATE_WAIT_S.
    pg_terminate_backend only signals unless given a timeout, and a signalled backend keeps its locks
    until it is gone."""
    return connection.exec_driver_sql(
        "SELECT pg_terminate_backend(l.pid, %(wait_ms)s) FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted"
        " AND l.objsubid = 1 AND l.pid = %(pid)s AND ((l.classid::bigint << 32) | l.objid::bigint) = ANY(%(keys)s)"
        " LIMIT 1",
        {"pid": pid, "keys": list(keys), "wait_ms": TERMINATE_WAIT_S * 1000},
    ).scalar()
