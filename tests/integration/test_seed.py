"""`hrp-cutover seed`: a legacy-schema file of realistic, deterministic HRP data."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from adapters.convert import Rejected, parse_json, to_postgres
from adapters.types import kind_of
from tools import seed as seed_module
from hrp_data.models import TABLES
from tools.seed import NOW, SeedError, seed_database
from tools.cli import cli

RACES = 200
TABLE_NAMES = [table.name for table in TABLES]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    path = tmp_path_factory.mktemp("seed") / "hrp_database.db"
    counts = seed_database(path, races=RACES, seed=7)
    return path, counts


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _dump_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with _connect(path) as connection:
        for table in TABLES:
            order = ", ".join(column.name for column in table.primary_key.columns)
            digest.update(table.name.encode())
            for row in connection.execute(f"SELECT * FROM {table.name} ORDER BY {order}"):
                digest.update(repr(row).encode())
    return digest.hexdigest()


def test_counts_follow_the_formula(seeded):
    path, counts = seeded
    assert list(counts) == TABLE_NAMES  # parents before children
    assert counts["users"] == RACES // 10
    assert counts["races"] == RACES
    assert counts["horses"] == 2 * RACES
    assert 9 * RACES <= counts["race_horses"] <= 11 * RACES
    assert counts["predictions"] == counts["race_horses"]
    assert 1 <= counts["api_credentials"] <= counts["users"]
    with _connect(path) as connection:
        for table, expected in counts.items():
            assert connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == expected


def test_tiny_seed_still_has_a_user_and_runners(tmp_path):
    counts = seed_database(tmp_path / "tiny.db", races=1, seed=3)
    assert counts["users"] == 1 and counts["races"] == 1 and counts["horses"] == 2
    assert counts["race_horses"] == counts["predictions"] == 2


def test_file_has_exactly_the_legacy_schema_in_wal_mode(seeded, legacy_file):
    path, _ = seeded
    query = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
    with _connect(path) as seeded_db, sqlite3.connect(legacy_file) as legacy:
        assert seeded_db.execute(query).fetchall() == legacy.execute(query).fetchall()
        assert seeded_db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert seeded_db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_same_seed_same_contents_other_seed_other_contents(seeded, tmp_path):
    path, _ = seeded
    again = tmp_path / "again.db"
    other = tmp_path / "other.db"
    seed_database(again, races=RACES, seed=7)
    seed_database(other, races=RACES, seed=8)
    assert _dump_hash(again) == _dump_hash(path)
    assert _dump_hash(other) != _dump_hash(path)


def test_every_value_converts_to_postgres(seeded):
    path, _ = seeded
    rejected = []
    with _connect(path) as connection:
        for table in TABLES:
            columns = list(table.columns)
            names = [row[1] for row in connection.execute(f"PRAGMA table_info({table.name})")]
            assert names == [column.name for column in columns]
            kinds = [kind_of(column) for column in columns]
            for row in connection.execute(f"SELECT * FROM {table.name}"):
                for column, kind, value in zip(columns, kinds, row):
                    try:
                        to_postgres(kind, value)
                    except Rejected as error:
                        rejected.append((table.name, column.name, value, error.reason))
    assert rejected == []


def test_foreign_keys_all_resolve(seeded):
    path, _ = seeded
    with _connect(path) as connection:
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
        orphans = connection.execute(
            "SELECT count(*) FROM predictions p LEFT JOIN race_horses rh"
            " ON rh.race_id = p.race_id AND rh.horse_id = p.horse_id WHERE rh.race_id IS NULL"
        ).fetchone()[0]
        assert orphans == 0  # every prediction is for a runner of its race
        assert connection.execute(
            "SELECT count(*) FROM predictions WHERE user_id IS NULL OR race_id IS NULL"
            " OR horse_id IS NULL"
        ).fetchone()[0] == 0


def test_data_looks_like_the_hrp_app(seeded):
    path, _ = seeded
    now_day = NOW.date().isoformat()
    with _connect(path) as connection:
        connection.row_factory = sqlite3.Row
        users = connection.execute("SELECT * FROM users ORDER BY id").fetchall()
        assert users[0]["is_admin"] == 1
        assert {user["is_admin"] for user in users} <= {0, 1}
        assert len({user["username"] for user in users}) == len(users)
        assert len({user["email"] for user in users}) == len(users)
        for user in users:
            assert re.fullmatch(
                r"(scrypt:32768:8:1\$[A-Za-z0-9]{16}\$[0-9a-f]{128}"
                r"|pbkdf2:sha256:600000\$[A-Za-z0-9]{16}\$[0-9a-f]{64})",
                user["password_hash"],
            )
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", user["created_at"])

        races = connection.execute("SELECT * FROM races ORDER BY id").fetchall()
        assert {race["status"] for race in races} <= {"scheduled", "running", "finished", "cancelled"}
        assert {race["race_type"] for race in races} >= {"flat", "hurdle", "chase"}
        assert all("2023-01-01" <= race["race_date"] <= "2026-12-31" for race in races)
        assert len({race["track_name"] for race in races}) > 20
        assert any(race["distance"] != int(race["distance"]) for race in races)
        for race in races:
            assert isinstance(race["distance"], float) and isinstance(race["prize_money"], float)
            if race["race_date"] < now_day:
                assert race["status"] in ("finished", "cancelled")
            elif race["race_date"] > now_day:
                assert race["status"] == "scheduled"
            if race["weather_conditions"] is not None:
                weather = parse_json(race["weather_conditions"])
                assert set(weather) >= {"temp_c", "wind", "going"}
            assert race["created_at"] <= race["updated_at"]

        finished = connection.execute(
            "SELECT rh.race_id, count(*) AS runners, count(finish_position) AS placed,"
            " min(post_position) AS first, max(post_position) AS last"
            " FROM race_horses rh JOIN races r ON r.id = rh.race_id"
            " WHERE r.status = 'finished' GROUP BY rh.race_id"
        ).fetchall()
        assert finished
        for race in finished:
            assert race["first"] == 1 and race["last"] == race["runners"]
            assert race["placed"] >= 1
        assert connection.execute(
            "SELECT count(*) FROM race_horses rh JOIN races r ON r.id = rh.race_id"
            " WHERE r.status = 'scheduled' AND rh.finish_position IS NOT NULL"
        ).fetchone()[0] == 0

        horses = connection.execute("SELECT * FROM horses").fetchall()
        assert len({horse["horse_name"] for horse in horses}) == len(horses)
        assert all(2 <= horse["age"] <= 12 for horse in horses)
        assert all(isinstance(horse["weight"], float) for horse in horses)
        assert all(
            horse["form"] is None or re.fullmatch(r"[0-9](-[0-9PFU])*", horse["form"])
            for horse in horses
        )

        predictions = connection.execute("SELECT * FROM predictions").fetchall()
        for prediction in predictions:
            assert 0.0 <= prediction["confidence"] <= 1.0
            assert re.fullmatch(r"v\d+\.\d+\.\d+", prediction["algorithm_version"])
            features = json.loads(prediction["features"])
            assert {"odds", "post_position", "field_size", "going"} <= set(features)


def test_refuses_to_overwrite_without_replace(tmp_path):
    path = tmp_path / "hrp_database.db"
    path.write_bytes(b"precious")
    with pytest.raises(SeedError) as raised:
        seed_database(path, races=5, seed=1)
    message = str(raised.value)
    assert str(path) in message and "--force" in message and "\n" not in message
    assert path.read_bytes() == b"precious"
    counts = seed_database(path, races=5, seed=1, replace=True)
    assert counts["races"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hrp_database.db"]


def test_refuses_fewer_than_one_race(tmp_path):
    with pytest.raises(SeedError):
        seed_database(tmp_path / "x.db", races=0)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_build_leaves_nothing_at_the_path(tmp_path, monkeypatch):
    def explode(self, size):
        raise RuntimeError("disk on fire")
        yield  # pragma: no cover

    monkeypatch.setattr(seed_module._Runs, "blocks", explode)
    with pytest.raises(RuntimeError):
        seed_database(tmp_path / "hrp_database.db", races=20, seed=1)
    assert list(tmp_path.iterdir()) == []


def test_cli_seed_prints_counts_and_refuses_an_existing_file(tmp_path):
    path = tmp_path / "demo.db"
    runner = CliRunner()
    result = runner.invoke(cli, ["seed", "--sqlite", str(path), "--races", "50"])
    assert result.exit_code == 0, result.output
    assert "races=50" in result.stdout and "horses=100" in result.stdout
    assert "users=5" in result.stdout

    again = runner.invoke(cli, ["seed", "--sqlite", str(path), "--races", "50"])
    assert again.exit_code == 2
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "--force" in lines[0]

    forced = runner.invoke(cli, ["seed", "--sqlite", str(path), "--races", "50", "--force"])
    assert forced.exit_code == 0, forced.output
