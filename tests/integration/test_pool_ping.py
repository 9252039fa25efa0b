"""The layer's PostgreSQL pool pings a connection at checkout only after it sat idle
(adapters.postgres.ping_when_idle)."""

from __future__ import annotations

import time

import psycopg2
import pytest
import sqlalchemy as sa

from adapters import postgres
from tests.conftest import libpq


@pytest.fixture
def engine(postgres_url, monkeypatch):
    monkeypatch.setattr(postgres, "PING_AFTER_IDLE_S", 0.3)
    made = postgres.create_postgres_engine(postgres_url)
    pings = []
    ping = made.dialect.do_ping
    monkeypatch.setattr(made.dialect, "do_ping", lambda connection: (pings.append(1), ping(connection))[1])
    made.pings = pings
    yield made
    made.dispose()


def _backend(engine) -> int:
    with engine.connect() as connection:
        return connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()


def _terminate(postgres_url: str, pid: int) -> None:
    with psycopg2.connect(libpq(postgres_url)) as admin, admin.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_connection_back_sooner_is_not_pinged(engine):
    """One ping for the new connection, none for the checkouts right after."""
    pid = _backend(engine)
    assert [_backend(engine) for _ in range(5)] == [pid] * 5
    assert len(engine.pings) == 1


def test_an_idle_connection_whose_server_went_away_is_replaced(engine, postgres_url):
    """After the idle time the ping finds the dead backend, and the pool connects again."""
    pid = _backend(engine)
    _terminate(postgres_url, pid)
    time.sleep(0.4)
    assert _backend(engine) != pid


def test_within_the_idle_time_a_dead_backend_costs_one_error(engine, postgres_url):
    """As when the server dies just after a ping: the statement fails once, the next checkout works."""
    pid = _backend(engine)
    _terminate(postgres_url, pid)
    with pytest.raises(sa.exc.OperationalError):
        _backend(engine)
    assert _backend(engine) != pid
