"""The legacy file against the HRP contract: unreadable files and missing tables or columns are
refused in one line by every command; what lies beyond the contract is named, never dropped in silence."""

from __future__ import annotations

import json
import sqlite3

import pytest
from click.testing import CliRunner

from tools.seed import seed_database
from tests.integration.test_backfill import open_cutover, pg_query
from tools.cli import cli

COMMANDS = [["assess"], ["backup"], ["backfill", "--no-backup"], ["verify"], ["status"]]


@pytest.fixture
def seeded_file(tmp_path):
    path = tmp_path / "hrp_database.db"
    seed_database(path, races=20, seed=5)
    return path


def _run(path, postgres_url, args):
    return CliRunner().invoke(cli, ["--sqlite", f"sqlite:///{path}", "--postgres", postgres_url, *args])


def _one_line_refusal(done, *needles):
    lines = [line for line in done.output.splitlines() if line.strip()]
    assert done.exit_code == 2, done.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.output
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("damage", ["random bytes", "truncated", "empty"])
def test_a_file_that_is_not_a_readable_database_is_refused_in_one_line(seeded_file, postgres_url, damage):
    data = seeded_file.read_bytes()
    seeded_file.write_bytes({"random bytes": bytes(range(256)) * 40, "truncated": data[:100], "empty": b""}[damage])
    before = seeded_file.read_bytes()
    for args in COMMANDS:
        _one_line_refusal(_run(seeded_file, postgres_url, args), str(seeded_file))
    assert seeded_file.read_bytes() == before


def test_missing_hrp_columns_are_refused_in_one_line(seeded_file, postgres_url, tmp_path):
    """A file holding the HRP tables is the HRP app's: an HRP column missing is an older schema, refused."""
    without_column = tmp_path / "old.db"
    without_column.write_bytes(seeded_file.read_bytes())
    with sqlite3.connect(without_column) as raw:
        raw.execute("ALTER TABLE horses DROP COLUMN owner")
    for args in COMMANDS:
        _one_line_refusal(_run(without_column, postgres_url, args), "lacks the HRP columns horses.owner")


def test_a_file_without_all_hrp_tables_is_moved_by_its_own_catalog(seeded_file, postgres_url):
    """Without api_credentials the file is not the HRP app's: assess maps its own tables, no model on top."""
    with sqlite3.connect(seeded_file) as raw:
        raw.execute("DROP TABLE api_credentials")
    done = _run(seeded_file, postgres_url, ["assess", "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    assert report["hrp_file"] is False and "api_credentials" not in report["tables"]
    assert {"table": "users", "column": "is_admin"}.items() <= next(
        m for m in report["mapping"] if (m["table"], m["column"]) == ("users", "is_admin")
    ).items()


def test_columns_and_tables_beyond_the_schema_are_carried(seeded_file, postgres_url):
    with sqlite3.connect(seeded_file) as raw:
        raw.execute("ALTER TABLE races ADD COLUMN sponsor TEXT")
        raw.execute("UPDATE races SET sponsor = 'Acme'")
        raw.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        raw.execute("INSERT INTO notes (body) VALUES ('first'), ('second')")

    report = json.loads(_run(seeded_file, postgres_url, ["assess", "--json"]).output)
    assert report["beyond_schema"] == {"extra_columns": ["races.sponsor"], "extra_tables": ["notes"]}
    text = _run(seeded_file, postgres_url, ["assess"]).output
    assert "column races.sponsor: carried" in text and "table notes: carried" in text

    made = _run(seeded_file, postgres_url, ["schema"])
    assert made.exit_code == 0, made.output
    assert "races.sponsor" in made.output and "notes" in made.output
    with open_cutover(seeded_file, postgres_url):  # phase dual_write
        pass
    done = _run(seeded_file, postgres_url, ["backfill", "--no-backup", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output[done.output.index("{"):])["complete"]
    assert pg_query(postgres_url, "SELECT count(*), min(sponsor), max(sponsor) FROM races") == [(20, "Acme", "Acme")]
    assert pg_query(postgres_url, "SELECT id, body FROM notes ORDER BY id") == [(1, "first"), (2, "second")]
