"""Hostile table and column names and values in the quarantine and the mismatch store: every report
path treats them as data (bound parameters, quoted identifiers, escaped HTML), never as SQL or markup."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

from tests.integration.test_verify import synced  # noqa: F401  (fixture)
from tools.cli import cli

HOSTILE = [
    'races"; DROP TABLE races; --',
    "horses' OR '1'='1",
    "<script>alert('x')</script>",
    "predictions\x00tail",
    "ünïcödé 🐎 \\ backslash",
]


def _table_count(cutover, table: str = "races") -> int:
    with cutover.engine("postgres").connect() as connection:
        return connection.exec_driver_sql(f'SELECT count(*) FROM "{table}"').scalar()


def test_hostile_names_in_the_quarantine(synced):  # noqa: F811
    cutover, path, postgres_url = synced
    runner = CliRunner()
    base = ["--sqlite", str(path), "--postgres", postgres_url]
    backfill = subprocess.run([str(Path(sys.executable).parent / "hrp-cutover"), *base, "backfill", "--no-backup"],
                              capture_output=True, text=True)
    assert backfill.returncode == 0, backfill.stderr
    races_before = _table_count(cutover)
    with cutover.engine("postgres").begin() as connection:
        for n, name in enumerate(HOSTILE):
            clean = name.replace("\x00", "")
            connection.execute(
                sa.text("INSERT INTO hrp_cutover_quarantine (table_name, key, column_name, reason, value)"
                        " VALUES (:t, CAST(:k AS jsonb), :c, :r, :v)"),
                {"t": clean, "k": json.dumps([n]), "c": clean, "r": clean, "v": clean},
            )
    listed = runner.invoke(cli, base + ["quarantine", "--format", "json"])
    assert listed.exit_code in (0, 1), listed.output
    rows = json.loads(listed.stdout)["rows"]
    assert {r["table"] for r in rows} >= {h.replace("\x00", "") for h in HOSTILE}
    text = runner.invoke(cli, base + ["quarantine"])
    assert "Traceback" not in text.output
    verified = runner.invoke(cli, base + ["verify", "--json"])
    assert verified.exit_code == 0, verified.output
    assert _table_count(cutover) == races_before


def test_hostile_names_in_the_mismatch_store_are_escaped_in_reports(synced):  # noqa: F811
    cutover, path, postgres_url = synced
    from shadow.mismatches import DDL, DETAILS_TABLE

    now = time.time()
    with cutover.sqlite.begin() as connection:
        for statement in DDL:
            connection.exec_driver_sql(statement)
        for name in HOSTILE:
            connection.execute(
                sa.text(f"INSERT INTO {DETAILS_TABLE} (at, read_type, table_name, pk, column_name, kind,"
                        " primary_value, secondary_value) VALUES (:at, :rt, :t, :pk, :c, 'value_differs', :v, :v)"),
                {"at": now, "rt": name, "t": name, "pk": json.dumps([1]), "c": name, "v": json.dumps(name)},
            )
    runner = CliRunner()
    base = ["--sqlite", str(path), "--postgres", postgres_url]
    html = runner.invoke(cli, base + ["report", "--format", "html"])
    assert html.exit_code == 0, html.output
    assert "<script>alert(" not in html.stdout
    as_json = runner.invoke(cli, base + ["report", "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    json.loads(as_json.stdout)
    assert _table_count(cutover) > 0
    with cutover.sqlite.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM races").scalar() > 0
