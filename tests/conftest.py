"""Shared fixtures: a real PostgreSQL (never mocked) and fresh SQLite files.

The server comes from HRP_TEST_POSTGRES_URL if set, else a testcontainers
PostgreSQL when a Docker engine answers, else an embedded pgserver. Every test
that asks for `postgres_url` gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest
from hypothesis import settings
from sqlalchemy.engine import make_url

from tests.examples import THOROUGH


settings.register_profile("thorough", max_examples=THOROUGH)
settings.register_profile("quick", max_examples=THOROUGH // 5)
settings.load_profile("quick")
"""Property tests run a fifth of their examples unless `--hypothesis-profile=thorough` (the Makefile's
layer targets but test-unit pass it) loads the full counts; tests/examples.py scales the explicit ones."""

MAINTENANCE = "-c hrp_cutover.maintenance=on"
"""libpq options for a test's own session that writes a guarded database on purpose (planting a
difference, checking an identity): the maintenance bypass the operations docs describe."""

SECRET_KEY = os.environ.setdefault("HRP_SECRET_KEY", "test-session-key-" + uuid.uuid4().hex)
"""The session key of the apps the tests build and of the servers they start (they inherit the
environment): in production the app refuses to start without one (docs/operations.md)."""

LEGACY_SCHEMA = Path(__file__).resolve().parents[1] / "hrp_data" / "schema" / "legacy_schema.sql"


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def postgres_server_url():
    """URL of a PostgreSQL server's maintenance database, for the whole session."""
    if os.environ.get("HRP_TEST_POSTGRES_URL"):
        yield os.environ["HRP_TEST_POSTGRES_URL"]
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    from tests.pg_control import start_pgserver

    data_dir, server = start_pgserver("hrp-pg-")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


def _admin(server_url: str):
    url = make_url(server_url).set(drivername="postgresql")
    connection = psycopg2.connect(url.render_as_string(hide_password=False))
    connection.autocommit = True
    return connection


@contextlib.contextmanager
def scratch_database(server_url: str, prefix: str = "hrp_test") -> Iterator[str]:
    """A fresh, empty database on the test server; dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = _admin(server_url)
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server_url).set(drivername="postgresql+psycopg2", database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


ROLE_PASSWORD = uuid.uuid4().hex
"""The password of the roles the tests make (a server reached by HRP_TEST_POSTGRES_URL may ask for one)."""


def with_login_passwords(superuser_url: str, names: dict[str, str]) -> None:
    """Give the roles of `names` that exist the tests' password (the URLs carry it)."""
    admin = psycopg2.connect(libpq(superuser_url))
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            for name in names.values():
                cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
                if cursor.fetchone():
                    cursor.execute(f'ALTER ROLE "{name}" PASSWORD %s', (ROLE_PASSWORD,))
    finally:
        admin.close()


@contextlib.contextmanager
def database_of_an_owner(server_url: str):
    """A database owned by a fresh role that may create roles but is not superuser; every role
    made in the test is dropped afterwards (roles belong to the server, not the database)."""
    suffix = uuid.uuid4().hex[:8]
    names = {kind: f"hrp_{kind}_{suffix}" for kind in ("owner", "migrator", "app", "verifier")}
    database = f"hrp_roles_{suffix}"
    admin = psycopg2.connect(libpq(server_url))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE ROLE "{names["owner"]}" LOGIN CREATEROLE NOSUPERUSER PASSWORD %s', (ROLE_PASSWORD,))
        cursor.execute(f'CREATE DATABASE "{database}" OWNER "{names["owner"]}"')
    base = make_url(server_url).set(drivername="postgresql+psycopg2", database=database, password=ROLE_PASSWORD)
    urls = {kind: base.set(username=name).render_as_string(hide_password=False) for kind, name in names.items()}
    urls["superuser"] = make_url(server_url).set(drivername="postgresql+psycopg2", database=database) \
        .render_as_string(hide_password=False)
    try:
        yield names, urls
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            for name in reversed(list(names.values())):
                cursor.execute(f'DROP ROLE IF EXISTS "{name}"')
        admin.close()


@pytest.fixture(scope="session")
def clones(postgres_server_url, tmp_path_factory):
    """States built once per test process and cloned for each test (tests/clones.py)."""
    from tests.clones import Clones

    made = Clones(postgres_server_url, tmp_path_factory.mktemp("templates"))
    yield made
    made.close()


@pytest.fixture
def postgres_url(postgres_server_url):
    """A fresh, empty database on the test server; dropped after the test."""
    with scratch_database(postgres_server_url) as url:
        yield url


@pytest.fixture(autouse=True)
def _unbound_postgres_calls():
    """A Cutover bounds every psycopg2 call of the process; undo that between tests."""
    yield
    psycopg2.extensions.set_wait_callback(None)


@pytest.fixture
def own_postgres():
    """A PostgreSQL server for this test alone (it may be stopped or frozen)."""
    from tests.pg_control import OwnPostgres

    server = OwnPostgres()
    yield server
    server.close()


@pytest.fixture
def legacy_file(tmp_path) -> Path:
    """An empty legacy database created by the sqlite3 shell from the legacy DDL, not by the models."""
    path = tmp_path / "hrp_database.db"
    create_legacy_file(path)
    return path


def create_legacy_file(path: Path) -> None:
    """Run the legacy DDL through the sqlite3 shell (Python's sqlite3 where no shell is installed)."""
    ddl = LEGACY_SCHEMA.read_text()
    if shutil.which("sqlite3"):
        subprocess.run(["sqlite3", str(path)], input=ddl, text=True, check=True)
    else:
        import sqlite3

        with sqlite3.connect(path) as connection:
            connection.executescript(ddl)


@pytest.fixture(scope="session")
def pgbouncer(postgres_server_url):
    """A real PgBouncer in transaction mode in front of the session's server (tests/pgbouncer.py);
    `pgbouncer.url(postgres_url)` reaches a test's database through it."""
    from tests.pgbouncer import PgBouncer

    bouncer = PgBouncer(postgres_server_url)
    yield bouncer
    bouncer.close()
