"""A short read on a warm pooled PostgreSQL connection is one round trip, its statement
(adapters.postgres.ping_when_readable, plain_autocommit), and a connection whose server went
away is still replaced at checkout, without an error."""

from __future__ import annotations

import time

import psycopg2
import pytest
import sqlalchemy as sa

from adapters import postgres
from hrp_data.unit_of_work import UnitOfWork
from tests.conftest import libpq


@pytest.fixture
def engine(postgres_url, monkeypatch):
    made = postgres.create_postgres_engine(postgres_url)
    pings = []
    ping = made.dialect.do_ping
    monkeypatch.setattr(made.dialect, "do_ping", lambda connection: (pings.append(1), ping(connection))[1])
    made.pings = pings
    yield made
    made.dispose()


def _admin(postgres_url: str, sql: str, *params) -> list[tuple]:
    with psycopg2.connect(libpq(postgres_url)) as admin, admin.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def _read(engine: sa.Engine, marker: str) -> int:
    with UnitOfWork(engine, writable=False) as uow:
        return uow.session.execute(sa.text(f"SELECT pg_backend_pid() /* {marker} */")).scalar()


def _last_statement(postgres_url: str, pid: int) -> str:
    return _admin(postgres_url, "SELECT query FROM pg_stat_activity WHERE pid = %s", pid)[0][0]


def test_a_read_only_unit_of_work_sends_its_statement_and_nothing_else(engine, postgres_url):
    """SQLAlchemy's switch into autocommit and back named the isolation level, and psycopg2 then
    sent `SET default_transaction_isolation` at each switch: after the unit of work, the
    backend's last statement was that SET, not the read."""
    pid = _read(engine, "first")
    for turn in range(3):
        assert _read(engine, f"turn {turn}") == pid  # the same pooled connection
        assert _last_statement(postgres_url, pid).endswith(f"/* turn {turn} */")
    assert engine.pings == []  # nothing happened to the socket: no ping either


def test_a_read_only_unit_of_work_reads_in_autocommit_and_a_writable_one_in_a_transaction(engine):
    with UnitOfWork(engine, writable=False) as uow:
        assert uow.session.connection().connection.dbapi_connection.autocommit is True
    with UnitOfWork(engine) as uow:
        connection = uow.session.connection()
        assert connection.connection.dbapi_connection.autocommit is False
        first = connection.exec_driver_sql("SELECT now()").scalar()
        time.sleep(0.01)
        assert connection.exec_driver_sql("SELECT now()").scalar() == first  # one transaction
        assert connection.exec_driver_sql("SHOW transaction_isolation").scalar() == "read committed"
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as connection:
        assert connection.exec_driver_sql("SHOW transaction_isolation").scalar() == "repeatable read"
    with UnitOfWork(engine) as uow:  # the level is the server's default again for the next one
        assert uow.session.connection().exec_driver_sql("SHOW transaction_isolation").scalar() == "read committed"


def test_a_connection_whose_backend_was_terminated_is_replaced_without_an_error(engine, postgres_url):
    """The server's FATAL message and its close make the idle socket readable: the checkout pings,
    the ping fails, and the pool connects again; the unit of work never sees the dead connection."""
    pid = _read(engine, "before")
    _admin(postgres_url, "SELECT pg_terminate_backend(%s)", pid)
    deadline = time.monotonic() + 10
    while _admin(postgres_url, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _read(engine, "after") != pid
    assert len(engine.pings) == 1
