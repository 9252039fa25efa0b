"""Findings of an acceptance run on the public Northwind database (jpwhite3/northwind-SQLite3),
each reduced to the smallest file that shows it. Real PostgreSQL, the operator's CLI steps."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import psycopg2
import psycopg2.extensions
from click.testing import CliRunner

from tests.integration.test_any_schema import _plain_sqlite
from tests.integration.test_backfill import libpq
from tools.cli import cli


def _run(path: Path, url: str, *args: str):
    """One command as its own process would run it; the whole result (exit code and output)."""
    psycopg2.extensions.set_wait_callback(None)
    return CliRunner().invoke(cli, ["--sqlite", f"sqlite:///{path}", "--postgres", url, *args])


def _ok(path: Path, url: str, *args: str) -> str:
    done = _run(path, url, *args)
    assert done.exit_code == 0, f"{' '.join(args)}: {done.output}"
    return done.output


def test_a_blob_in_a_text_key_is_quarantined_and_the_backfill_completes(tmp_path, postgres_url):
    """Northwind's Customers has `CustomerID TEXT PRIMARY KEY`; SQLite lets a BLOB in. `assess`
    rejects it (blob_in_text_column); the backfill crashed instead ("operator does not exist:
    text <= bytea", the blob as a range bound), and every resume crashed the same way."""
    path = tmp_path / "app.db"
    _plain_sqlite(path, "CREATE TABLE [Customers] ([CustomerID] TEXT, [CompanyName] TEXT, PRIMARY KEY (`CustomerID`));"
                        "INSERT INTO Customers VALUES ('ALFKI', 'Alfreds'), ('ANATR', 'Ana'), (X'4142', 'blob key'),"
                        " (NULL, 'null key'), ('AN' || char(0) || 'X', 'nul in key');"
                        "CREATE TABLE [Order Details] (k1 TEXT NOT NULL, k2 TEXT NOT NULL, q INTEGER,"
                        " PRIMARY KEY (k1, k2));"
                        "INSERT INTO [Order Details] VALUES ('a', 'x', 1), ('a', X'00', 2), ('b', 'y', 3);")
    for step in (("schema",), ("phase", "set", "dual_write")):
        _ok(path, postgres_url, *step)
    for batch in ("1", "1000"):
        done = _run(path, postgres_url, "backfill", "--no-backup", "--json", "--batch-size", batch, "--restart")
        assert done.exit_code == 0, done.output
        report, _ = json.JSONDecoder().raw_decode(done.output[done.output.index("{"):])
        assert report["complete"], done.output
    quarantined = _ok(path, postgres_url, "quarantine")
    assert "blob_in_text_column" in quarantined
    with psycopg2.connect(libpq(postgres_url)) as pg, pg.cursor() as cursor:
        cursor.execute('SELECT "CustomerID" FROM "Customers" ORDER BY 1')
        assert cursor.fetchall() == [("ALFKI",), ("ANATR",)]
        cursor.execute('SELECT k1, k2, q FROM "Order Details" ORDER BY 1, 2')
        assert cursor.fetchall() == [("a", "x", 1), ("b", "y", 3)]
    verified = _ok(path, postgres_url, "verify", "--json")
    tables = json.loads(verified[verified.index("{"):])["tables"]
    assert tables["Customers"]["quarantined"] == 3, verified
    assert tables["Customers"]["missing"] == 0
    assert tables["Order Details"]["quarantined"] == 1 and tables["Order Details"]["missing"] == 0


def test_a_postgres_numeric_sqlite_cannot_hold_exactly_is_refused_on_the_way_back(tmp_path, postgres_url):
    """Northwind's `Freight NUMERIC` becomes PostgreSQL numeric. After the flip an UPDATE there to
    58.170000000000000001 was replayed to the file as the double 58.17 ("applied", exit 0): the
    value changed in silence (only the next verify saw it, and --repair wrote 58.17 again). NaN,
    which numeric holds, became NULL. Both wait in the outbox with their reason; nothing is written."""
    path = tmp_path / "app.db"
    _plain_sqlite(path, "CREATE TABLE [Orders] ([OrderID] INTEGER PRIMARY KEY AUTOINCREMENT, [Freight] NUMERIC DEFAULT 0);"
                        "INSERT INTO Orders VALUES (1, 32.38), (2, 11.61), (3, 65.83);")
    for step in (("schema",), ("phase", "set", "dual_write"), ("backfill", "--no-backup"), ("verify",),
                 ("phase", "set", "shadow"), ("flip",)):
        _ok(path, postgres_url, *step)
    with psycopg2.connect(libpq(postgres_url)) as pg, pg.cursor() as cursor:
        cursor.execute('UPDATE "Orders" SET "Freight" = %s WHERE "OrderID" = 1', ("58.170000000000000001",))
        cursor.execute('UPDATE "Orders" SET "Freight" = \'NaN\' WHERE "OrderID" = 2')
        cursor.execute('UPDATE "Orders" SET "Freight" = %s WHERE "OrderID" = 3', ("10.10",))  # a double holds 10.1
    replayed = _run(path, postgres_url, "replay")
    assert replayed.exit_code == 1, replayed.output
    assert "numeric_out_of_range" in replayed.output and "nan_in_numeric_column" in replayed.output
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT OrderID, Freight FROM Orders ORDER BY 1").fetchall() == [
            (1, 32.38), (2, 11.61), (3, 10.1)]
    assert _run(path, postgres_url, "verify").exit_code == 1


def test_verify_is_not_equal_while_the_secondary_refuses_a_change(tmp_path, postgres_url):
    """During dual_write a legacy write put '05/01/1992' into Northwind's `HireDate DATE`: the
    outbox refuses it (unparseable_date), so PostgreSQL keeps the old date. verify counted the key
    as `pending` (a write in flight), printed no such column, said EQUAL, exited 0, and recorded
    the run as equal evidence for the readiness check `verify`."""
    path = tmp_path / "app.db"
    _plain_sqlite(path, "CREATE TABLE [Employees] ([EmployeeID] INTEGER PRIMARY KEY AUTOINCREMENT, [HireDate] DATE);"
                        "INSERT INTO Employees VALUES (1, '1992-05-01'), (2, '1992-08-14');")
    for step in (("schema",), ("phase", "set", "dual_write"), ("backfill", "--no-backup"), ("verify",)):
        _ok(path, postgres_url, *step)
    _plain_sqlite(path, "UPDATE Employees SET HireDate = '05/01/1992' WHERE EmployeeID = 1;")
    assert _run(path, postgres_url, "replay").exit_code == 1
    done = _run(path, postgres_url, "verify", "--json")
    assert done.exit_code == 1, done.output
    result = json.loads(done.output[done.output.index("{"):])
    assert result["equal"] is False
    assert result["tables"]["Employees"]["refused"] == 1 and result["tables"]["Employees"]["pending"] == 0
    assert [e["kind"] for e in result["examples"]] == ["apply_refused"]
    assert "unparseable_date" in result["examples"][0]["error"]
    printed = _run(path, postgres_url, "verify")
    assert printed.exit_code == 1 and "NOT EQUAL" in printed.output and "refused" in printed.output

    _plain_sqlite(path, "UPDATE Employees SET HireDate = '1992-05-01' WHERE EmployeeID = 1;")
    _ok(path, postgres_url, "replay")
    _ok(path, postgres_url, "verify")


def test_generated_columns_do_not_hold_the_cutover_back(tmp_path, postgres_url):
    """A file with generated columns (VIRTUAL and STORED) and no AUTOINCREMENT table (so no
    sqlite_sequence): `assess` crashed on the missing sqlite_sequence, and every move was refused
    because the live schemas "differ" by the generated columns `schema` had listed as not carried.
    They are computed from the other columns, never written by the layer: the cutover goes on,
    and SQLite computes them for the rows PostgreSQL's writes bring back."""
    path = tmp_path / "app.db"
    _plain_sqlite(path, "CREATE TABLE items (id INTEGER PRIMARY KEY, price REAL NOT NULL, qty INTEGER NOT NULL,"
                        " total REAL GENERATED ALWAYS AS (price * qty) VIRTUAL,"
                        " label TEXT GENERATED ALWAYS AS (upper(name)) STORED, name TEXT);"
                        "INSERT INTO items (price, qty, name) VALUES (1.5, 2, 'apple'), (2.25, 4, 'pear');")
    assessed = _ok(path, postgres_url, "assess", "--json")
    assert {item["name"] for item in json.loads(assessed[assessed.index("{"):])["not_carried"]
            if item["what"] == "generated column"} == {"total", "label"}
    for step in (("schema",), ("phase", "set", "dual_write"), ("backfill", "--no-backup"), ("verify",),
                 ("phase", "set", "shadow"), ("flip",)):
        _ok(path, postgres_url, *step)
    with psycopg2.connect(libpq(postgres_url)) as pg, pg.cursor() as cursor:
        cursor.execute("INSERT INTO items (price, qty, name) VALUES (3.0, 3, 'plum')")
    _ok(path, postgres_url, "replay")
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT total, label FROM items WHERE name = 'plum'").fetchone() == (9.0, "PLUM")
    _ok(path, postgres_url, "verify")
    _ok(path, postgres_url, "rollback")
