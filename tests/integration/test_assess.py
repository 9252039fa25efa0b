"""Assess: a read-only census of the legacy file that names, in advance, what the backfill will quarantine."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from unittest import mock

from click.testing import CliRunner

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hrp_data.backfill import assess as assess_module
from hrp_data.backfill import read_pool
from hrp_data.backfill.assess import assess
from hrp_data.catalog import file_catalog
from tests.examples import examples
from tools.seed import seed_database
from tests.integration.test_backfill import HOSTILE, plant_hostile
from tools.cli import cli

FOREIGN_KEY_REASONS = {"orphan_foreign_key", "parent_quarantined", "parent_missing"}


def _fingerprint(path: Path) -> tuple:
    siblings = sorted(p.name for p in path.parent.iterdir())
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns, siblings


@pytest.mark.parametrize("small,processes", [(False, False), (True, False), (True, True)],
                         ids=["whole", "key-ranges-of-2-fetches-of-3", "in-worker-processes"])
def test_census_names_every_planted_value_and_orphan(legacy_file, small, processes, monkeypatch):
    """The same census whether each table's suspects come in one fetch of one pass, or the
    tables are cut into key ranges of about 2 rows (censused side by side) and their suspects
    fetched 3 at a time, in threads or in the backfill's worker processes (a big file's way)."""
    plant_hostile(legacy_file)
    before = _fingerprint(legacy_file)
    if small:
        monkeypatch.setattr(assess_module, "PAGE", 3)
        monkeypatch.setattr(assess_module, "CHUNK_ROWS", 2)
    monkeypatch.setattr(read_pool, "POOL_MIN_ROWS", 0 if processes else 10**9)
    started = mock.patch.object(read_pool, "worker_pool", wraps=read_pool.worker_pool)
    with started as worker_pool:
        report = assess(legacy_file, sample_rows=100)
    assert worker_pool.called == processes
    assert _fingerprint(legacy_file) == before  # read-only: not a byte, not a journal file

    planted = {(t, c, r): k for (t, k, c), r in HOSTILE.items() if r not in FOREIGN_KEY_REASONS}
    census = {(i["table"], i["column"], i["reason"]): i for i in report["rejections"]}
    assert set(census) == set(planted)
    for key, item in census.items():
        assert item["count"] == 1 and item["examples"] == [list(planted[key])], key
    assert census[("races", "distance", "text_in_real_column")]["example_value"] == "N/A"
    assert census[("users", "password_hash", "blob_in_text_column")]["example_value"].startswith("sha256:")
    values = {key: value for key, value in report.items() if key != "mapping"}  # mapping names api_secret
    assert "cret" not in json.dumps(values)  # the NUL-bearing api_key is fingerprinted

    orphans = {(o["table"], o["column"]): o for o in report["orphans"]}
    assert {k: o["rows"] for k, o in orphans.items() if o["rows"]} == {
        ("race_horses", "horse_id"): 1, ("predictions", "race_id"): 1, ("api_credentials", "user_id"): 1,
    }
    assert orphans[("race_horses", "horse_id")]["examples"] == [[1, 999]]
    assert report["foreign_key_check"]["violations"] == 3
    assert report["integrity_check"] == "ok"
    assert report["tables"]["races"] == {"rows": 9, "rejected_rows": 8}
    assert report["tables"]["predictions"] == {"rows": 5, "rejected_rows": 1}
    assert report["quarantine_rows"] == sum(1 for r in HOSTILE.values() if r not in FOREIGN_KEY_REASONS) + 3
    assert report["estimate"]["tables"]["races"]["sample_rows"] == 9 and report["estimate"]["seconds"] >= 0


def test_a_clean_seeded_file_has_nothing_to_quarantine(tmp_path):
    path = tmp_path / "hrp_database.db"
    counts = seed_database(path, races=60, seed=2)
    report = assess(path)
    assert {name: t["rows"] for name, t in report["tables"].items()} == counts
    assert report["rejections"] == [] and report["quarantine_rows"] == 0
    assert all(o["rows"] == 0 for o in report["orphans"])
    assert report["estimate"]["seconds"] > 0


def _swap_index_roots(path: Path, first: str, second: str) -> None:
    """Damage `path` the way quick_check does not see: two indexes trade their b-trees (every page
    still used once), so `first` lost its table's entries and `second` holds another table's."""
    with sqlite3.connect(path) as raw:
        roots = dict(raw.execute("SELECT name, rootpage FROM sqlite_master WHERE name IN (?, ?)", (first, second)))
        raw.execute("PRAGMA writable_schema = ON")
        raw.execute("UPDATE sqlite_master SET rootpage = ? WHERE name = ?", (roots[second], first))
        raw.execute("UPDATE sqlite_master SET rootpage = ? WHERE name = ?", (roots[first], second))
    raw.close()


@pytest.mark.parametrize("full", [False, True], ids=["quick_check-and-index-counts", "integrity_check"])
def test_an_index_that_lost_its_entries_is_reported_as_damage(tmp_path, full):
    path = tmp_path / "hrp_database.db"
    seed_database(path, races=30, seed=3)
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        raw.execute("CREATE INDEX ix_notes_body ON notes (body)")
        raw.execute("CREATE INDEX ix_races_live ON races (track_name) WHERE track_name IS NOT NULL")
    raw.close()
    assert assess(path, sample_rows=0)["integrity_check"] == "ok"
    _swap_index_roots(path, "ix_races_live", "ix_notes_body")
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA quick_check").fetchall() == [("ok",)], "the damage quick_check alone misses"
    raw.close()

    report = assess(path, sample_rows=0, full_integrity_check=full)

    damage = " ".join(report["integrity_check"])
    assert report["integrity_check_kind"] == ("integrity_check" if full else assess_module.QUICK_CHECK)
    assert "ix_races_live" in damage and "ix_notes_body" in damage, damage
    if not full:
        assert "index ix_races_live on races holds 0 entries for 30 rows" in damage
    result = CliRunner().invoke(cli, ["--sqlite", str(path), "assess"] + (["--full-integrity-check"] if full else []))
    assert result.exit_code == 0 and "ix_races_live" in result.stdout, result.output


def test_assess_command(legacy_file):
    plant_hostile(legacy_file)
    runner = CliRunner()
    result = runner.invoke(cli, ["--sqlite", str(legacy_file), "assess", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["foreign_key_check"]["violations"] == 3
    text = runner.invoke(cli, ["--sqlite", str(legacy_file), "assess"])
    assert text.exit_code == 0, text.output
    assert "rejected        races.distance: text_in_real_column x1, e.g. key [17] value 'N/A'" in text.stdout
    assert "orphans         predictions.race_id -> races.id: 1 row(s), e.g. [[2]]" in text.stdout


REFERENCES = st.none() | st.integers(-2, 6) | st.sampled_from([1.0, 2.5, 3.0, 1e20, "1", " 2", "2.0", "abc", "01", "3x", "", "4 "]) \
    | st.binary(max_size=2)


@settings(max_examples=examples(100), deadline=None)
@given(values=st.lists(REFERENCES, max_size=10), declared=st.sampled_from(["INTEGER", "TEXT", "", "REAL", "NUMERIC", "BLOB"]))
def test_orphans_read_from_foreign_key_check_are_the_anti_joins(tmp_path_factory, values, declared):
    """A one-column key onto a rowid: the rows PRAGMA foreign_key_check names are the ones the
    anti-join finds, whatever the child stores (text, reals, blobs) under whatever affinity."""
    path = tmp_path_factory.mktemp("keys") / "app.db"
    with sqlite3.connect(path) as raw:
        raw.executescript(f"CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT);"
                          f" CREATE TABLE child (id INTEGER PRIMARY KEY, pid {declared} REFERENCES parent (id));"
                          " INSERT INTO parent (id) VALUES (1), (2), (3), (4), (5);")
        raw.executemany("INSERT INTO child (pid) VALUES (?)", [(value,) for value in values])
    connection = assess_module._read_only(path)
    try:
        catalog = file_catalog(connection)
        violations = connection.execute("PRAGMA foreign_key_check").fetchall()
        read = assess_module._orphans(connection, catalog, violations)
        with mock.patch.object(assess_module, "_declared_keys", lambda connection, table: {}):
            joined = assess_module._orphans(connection, catalog, violations)
    finally:
        connection.close()
    assert len(joined) == 1 and read == joined
