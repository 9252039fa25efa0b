"""Helpers for the cutover tests: build a Cutover on a legacy file and a migrated PostgreSQL,
and compare both databases row for row (by the test itself, not by the code under test)."""

from __future__ import annotations

import dataclasses

import json
import sqlite3
import struct
import time
from pathlib import Path

import psycopg2
from sqlalchemy.engine import make_url

from tests.conftest import MAINTENANCE, SECRET_KEY
from adapters.convert import Kind, to_postgres
from adapters.types import kind_of
from hrp_data.models import TABLES
from hrp_data.settings import Settings


def settings_for(sqlite_path: Path, postgres_url: str, phase: str = "sqlite_only") -> Settings:
    """The settings of the environment (HRP_*), on this file and this PostgreSQL."""
    return Settings.from_env(
        sqlite_url=f"sqlite:///{sqlite_path}", postgres_url=postgres_url, phase=phase, secret_key=SECRET_KEY
    )


def tune(cutover, **fields) -> None:
    """Change settings of a running cutover that are read at each use (the readiness checks')."""
    cutover.settings = dataclasses.replace(cutover.settings, **fields)


def _comparable(kind: Kind, value):
    if value is None:
        return None
    if kind is Kind.REAL:
        return struct.pack(">d", float(value))
    if kind is Kind.TIMESTAMP:
        return to_postgres(kind, value).timestamp()
    if kind is Kind.JSON:
        return json.dumps(to_postgres(kind, value), sort_keys=True)
    if kind in (Kind.BOOLEAN, Kind.DATE):
        return repr(to_postgres(kind, value))
    return value


def sqlite_rows(path: Path) -> dict[str, dict]:
    """Every row of the six tables, read with plain sqlite3, in comparable form."""
    connection = sqlite3.connect(path)
    try:
        return {table.name: _rows(connection.cursor(), table, "?") for table in TABLES}
    finally:
        connection.close()


def postgres_rows(url: str) -> dict[str, dict]:
    """Every row of the six tables, read with plain psycopg2, in comparable form."""
    connection = psycopg2.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False), options=MAINTENANCE)
    try:
        return {table.name: _rows(connection.cursor(), table, "%s") for table in TABLES}
    finally:
        connection.close()


def _rows(cursor, table, _placeholder) -> dict:
    columns = [c.name for c in table.columns]
    keys = [c.name for c in table.primary_key.columns]
    kinds = [kind_of(c) for c in table.columns]
    cursor.execute(f'SELECT {", ".join(columns)} FROM "{table.name}"')
    out = {}
    for row in cursor.fetchall():
        record = dict(zip(columns, row))
        key = tuple(record[k] for k in keys)
        out[key] = tuple(_comparable(kind, value) for kind, value in zip(kinds, row))
    return out


def assert_equal(sqlite_path: Path, postgres_url: str) -> None:
    left, right = sqlite_rows(sqlite_path), postgres_rows(postgres_url)
    for table in left:
        missing = sorted(set(left[table]) - set(right[table]))[:5]
        extra = sorted(set(right[table]) - set(left[table]))[:5]
        different = [k for k in left[table] if k in right[table] and left[table][k] != right[table][k]][:5]
        assert not (missing or extra or different), (
            f"{table}: missing in postgres {missing}, extra {extra}, different {different}"
        )


def wait_drained(cutover, timeout: float = 30.0) -> None:
    """Wait until the outbox of the current primary is empty."""
    from hrp_data.cutover import outbox

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        route = cutover.route()
        if route is None or outbox.depth(route.primary).pending == 0:
            return
        cutover.applier.notify()
        time.sleep(0.05)
    raise AssertionError(f"outbox not drained after {timeout}s: {outbox.depth(cutover.route().primary)}")
