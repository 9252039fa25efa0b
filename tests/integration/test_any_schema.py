"""Any schema through the CLI, as an operator runs it (issue 18, docs/schema.md).

Per shape of the corpus (tests/schema_corpus.py): assess -> schema --sql ->
schema -> phase set dual_write -> plain sqlite3 writes -> backup -> backfill
-> more writes -> replay -> verify -> phase set shadow -> flip -> a plain
INSERT on PostgreSQL without an id -> replay (the row reaches SQLite with the
same id) -> verify -> rollback -> a plain SQLite write -> replay: then both
databases are compared by this module's own comparer, not the project's
verifier.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
from click.testing import CliRunner

from adapters.catalog import ROWID_COLUMN, quote, short_name
from tests.integration.test_backfill import libpq
from tests.schema_corpus import SHAPE_IDS, SHAPES
from tools.cli import cli

OWN = ("sqlite_", "hrp_cutover_", "hrp_shadow_")


def _cli(path: Path, url: str, *args: str):
    """One command, as its own process would run it (no PostgreSQL wait callback left by another)."""
    psycopg2.extensions.set_wait_callback(None)
    done = CliRunner().invoke(cli, ["--sqlite", f"sqlite:///{path}", "--postgres", url, *args])
    assert done.exit_code == 0, f"{' '.join(args)}: {done.output}"
    return done.output


def _plain_sqlite(path: Path, script: str) -> None:
    """A write by the plain sqlite3 module, outside the layer (as another program of the operator's)."""
    connection = sqlite3.connect(path)
    try:
        connection.executescript(script)
        connection.commit()
    finally:
        connection.close()


# -- the independent comparer ---------------------------------------------------


def _user_tables(connection: sqlite3.Connection) -> list[str]:
    """Ordinary tables (SQLite's own table_list: not a virtual table, not a virtual table's storage)."""
    return [name for (name,) in connection.execute(
        "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' ORDER BY name")
            if not name.lower().startswith(OWN)]


def _comparable(value: Any) -> Any:
    """One value of either database as plain data: numbers as exact decimals, instants as naive UTC."""
    if value is None:
        return None
    if isinstance(value, (bytes, memoryview)):
        return bytes(value)
    if isinstance(value, bool):
        return Decimal(int(value))
    if isinstance(value, (int, Decimal)):
        return Decimal(value).normalize() if value else Decimal(0)
    if isinstance(value, float):
        return Decimal(repr(value + 0.0)).normalize() if value else Decimal(0)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (dict, list)):  # jsonb (the HRP models' JSON columns)
        return json.dumps(value, sort_keys=True)
    if isinstance(value, str):
        if value[:1] in ("{", "["):
            try:
                return json.dumps(json.loads(value), sort_keys=True)
            except ValueError:
                return value
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
        if len(value) > 10:
            return parsed.astimezone(dt.timezone.utc).replace(tzinfo=None) if parsed.tzinfo else parsed
        return value
    return value


def _sqlite_side(path: Path) -> dict[str, list[tuple]]:
    connection = sqlite3.connect(path)
    try:
        out = {}
        for table in _user_tables(connection):
            columns = [row[1] for row in connection.execute("SELECT * FROM pragma_table_xinfo(?) WHERE hidden < 2",
                                                             (table,))]
            keyed = any(row[5] for row in connection.execute("SELECT * FROM pragma_table_info(?)", (table,)))
            select = ", ".join(quote(c) for c in columns)
            if not keyed and "WITHOUT ROWID" not in (connection.execute(
                    "SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0] or "").upper():
                free = next(a for a in ("rowid", "_rowid_", "oid") if a not in {c.lower() for c in columns})
                select = f"{free}, " + select
            rows = connection.execute(f"SELECT {select} FROM {quote(table)}").fetchall()
            out[table] = sorted((tuple(_comparable(v) for v in row) for row in rows), key=repr)
        return out
    finally:
        connection.close()


def _postgres_side(url: str, sqlite_path: Path) -> dict[str, list[tuple]]:
    connection = sqlite3.connect(sqlite_path)
    try:
        layout = {}
        for table in _user_tables(connection):
            columns = [row[1] for row in connection.execute("SELECT * FROM pragma_table_xinfo(?) WHERE hidden < 2",
                                                             (table,))]
            keyed = any(row[5] for row in connection.execute("SELECT * FROM pragma_table_info(?)", (table,)))
            layout[table] = ([ROWID_COLUMN] if not keyed else []) + [short_name(c) for c in columns]
    finally:
        connection.close()
    out = {}
    with psycopg2.connect(libpq(url)) as pg, pg.cursor() as cursor:
        for table, columns in layout.items():
            cursor.execute(f"SELECT {', '.join(quote(c) for c in columns)} FROM {quote(short_name(table))}")
            out[table] = sorted((tuple(_comparable(v) for v in row) for row in cursor.fetchall()), key=repr)
    return out


def assert_same_data(path: Path, url: str) -> None:
    """Every row of every table of the file, value for value, in PostgreSQL: no row or value left behind."""
    sqlite_rows, postgres_rows = _sqlite_side(path), _postgres_side(url, path)
    assert set(sqlite_rows) == set(postgres_rows)
    for table in sqlite_rows:
        assert sqlite_rows[table] == postgres_rows[table], table


# -- the operator's path ------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_a_file_of_another_schema_goes_through_every_cli_step(shape, tmp_path, postgres_url):
    path = tmp_path / "app.db"
    _plain_sqlite(path, shape.ddl + shape.rows)

    assessed = _cli(path, postgres_url, "assess")
    assert "mapping" in assessed and "postgresql" in assessed
    report = json.loads(_cli(path, postgres_url, "assess", "--json"))
    assert report["hrp_file"] is False and report["quarantine_rows"] == 0, report["rejections"]

    printed = _cli(path, postgres_url, "schema", "--sql")
    assert "CREATE TABLE" in printed
    with psycopg2.connect(libpq(postgres_url)) as pg, pg.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert cursor.fetchone()[0] == 0, "--sql runs nothing"
    _cli(path, postgres_url, "schema")
    _cli(path, postgres_url, "phase", "set", "dual_write")

    _plain_sqlite(path, shape.more)
    _cli(path, postgres_url, "backup")
    out = _cli(path, postgres_url, "backfill", "--json")
    done, end = json.JSONDecoder().raw_decode(out[out.index("{"):])
    assert done["complete"], out
    assert not out[out.index("{") + end:].strip(), out
    _plain_sqlite(path, shape.after_backfill)
    _cli(path, postgres_url, "replay")
    _cli(path, postgres_url, "verify")
    assert_same_data(path, postgres_url)

    _cli(path, postgres_url, "phase", "set", "shadow")
    _cli(path, postgres_url, "flip")
    table, values = shape.postgres_insert
    columns = ", ".join(quote(short_name(c)) for c in values)
    with psycopg2.connect(libpq(postgres_url)) as pg, pg.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(short_name(table))} ({columns}) VALUES ({', '.join(['%s'] * len(values))})",
            list(values.values()),
        )
    _cli(path, postgres_url, "replay")
    assert_same_data(path, postgres_url)

    _cli(path, postgres_url, "verify")
    _cli(path, postgres_url, "rollback")
    _plain_sqlite(path, shape.sqlite_write)
    _cli(path, postgres_url, "replay")
    _cli(path, postgres_url, "status")
    assert_same_data(path, postgres_url)


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Pacific/Pago_Pago"])  # UTC+14, UTC-11
def test_now_and_today_defaults_are_utc_in_a_session_of_any_time_zone(tmp_path, postgres_url, zone):
    """SQLite's CURRENT_TIMESTAMP and CURRENT_DATE are UTC. A row PostgreSQL fills by default gets the
    same in a session of another TimeZone (a pooler drops the UTC the layer asks for at connect; the
    app's own connections use the server's): at most hours apart, it would be a different date."""
    path = tmp_path / "app.db"
    _plain_sqlite(path, "CREATE TABLE visits (id INTEGER PRIMARY KEY, note TEXT,"
                        " at_day DATE DEFAULT CURRENT_DATE, at_time DATETIME DEFAULT CURRENT_TIMESTAMP);")
    _cli(path, postgres_url, "schema")
    with psycopg2.connect(libpq(postgres_url), options=f"-c timezone={zone}") as pg, pg.cursor() as cursor:
        cursor.execute("INSERT INTO visits (id, note) VALUES (1, 'by default')"
                       " RETURNING at_day, at_time, (now() AT TIME ZONE 'UTC')")
        day, at, utc_now = cursor.fetchone()
    assert day == utc_now.date() and at == utc_now, (day, at, utc_now)


def test_rows_keyed_by_a_blob_follow_every_change_both_ways(tmp_path, postgres_url):
    """A key held as bytes (a UUID kept as a 16-byte BLOB, a composite key with one): inserts,
    updates and deletes made on PostgreSQL after the flip reach the file, and the file's after the
    rollback reach PostgreSQL; both capture triggers spell the key the same way."""
    path = tmp_path / "app.db"
    first, second, third = (bytes.fromhex(f"{n:02x}" * 16) for n in (1, 2, 3))
    _plain_sqlite(path, "CREATE TABLE tokens (id BLOB PRIMARY KEY, label TEXT);"
                        "CREATE TABLE grants (token BLOB, scope INTEGER, note TEXT, PRIMARY KEY (token, scope));"
                        f"INSERT INTO tokens VALUES (x'{first.hex()}', 'one'), (x'{second.hex()}', 'two');"
                        f"INSERT INTO grants VALUES (x'{first.hex()}', 1, 'read'), (x'{second.hex()}', 2, 'write');")
    for step in (("schema",), ("phase", "set", "dual_write"), ("backfill", "--no-backup"), ("verify",),
                 ("phase", "set", "shadow"), ("flip",)):
        _cli(path, postgres_url, *step)
    with psycopg2.connect(libpq(postgres_url)) as pg, pg.cursor() as cursor:
        cursor.execute("INSERT INTO tokens VALUES (%s, 'three')", (third,))
        cursor.execute("UPDATE tokens SET label = 'uno' WHERE id = %s", (first,))
        cursor.execute("DELETE FROM tokens WHERE id = %s", (second,))
        cursor.execute("UPDATE grants SET note = 'admin' WHERE token = %s AND scope = 1", (first,))
        cursor.execute("DELETE FROM grants WHERE token = %s AND scope = 2", (second,))
    _cli(path, postgres_url, "replay")
    assert_same_data(path, postgres_url)
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT label FROM tokens ORDER BY id").fetchall() == [("uno",), ("three",)]
    _cli(path, postgres_url, "verify")
    _cli(path, postgres_url, "rollback")
    _plain_sqlite(path, f"DELETE FROM tokens WHERE id = x'{third.hex()}'; UPDATE grants SET note = 'none';")
    _cli(path, postgres_url, "replay")
    assert_same_data(path, postgres_url)
