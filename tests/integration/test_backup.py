"""Backup: an online, checked snapshot with a manifest; the backfill refuses without a recent one."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from hrp_data.backfill.backup import BACKUP_DIR, BackupError, backup, newest, require_recent
from shadow.report import parse_duration
from tools.seed import seed_database
from tests.integration.cutover_helpers import sqlite_rows
from tools.cli import cli


@pytest.fixture
def live(tmp_path) -> Path:
    path = tmp_path / "hrp_database.db"
    seed_database(path, races=40, seed=5)
    return path


def _counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as connection:
        return {t: connection.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
                for t in ("users", "races", "horses", "race_horses", "predictions", "api_credentials")}


def test_backup_writes_a_checked_snapshot_and_a_manifest(live):
    manifest = backup(live)
    copy = Path(manifest.path)
    assert copy.parent == live.parent / BACKUP_DIR and copy.is_file()
    assert manifest.size == copy.stat().st_size
    assert manifest.sha256 == hashlib.sha256(copy.read_bytes()).hexdigest()
    assert manifest.row_counts == _counts(live)
    assert manifest.integrity_check == "ok" and manifest.source == str(live.resolve())
    assert 0 <= manifest.age_s < 60
    assert sqlite_rows(copy) == sqlite_rows(live)
    on_disk = json.loads(Path(manifest.manifest_path).read_text())
    assert on_disk == manifest.as_json() and Path(manifest.manifest_path) == copy.with_suffix(".json")
    assert not [p for p in copy.parent.iterdir() if p.name.endswith(".partial")]
    assert newest(live) == manifest


def test_backups_are_the_owners_only(live, tmp_path):
    """A backup holds password hashes and API secrets: 0600 files in a 0700 folder, whatever the umask."""
    previous = os.umask(0o022)
    try:
        made = [backup(live), backup(live, tmp_path / "made" / "here")]
    finally:
        os.umask(previous)
    for manifest in made:
        for path in (Path(manifest.path), Path(manifest.manifest_path)):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE(Path(manifest.path).parent.stat().st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    backup(live, shared)  # a folder the operator made is theirs: left as it is
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755


def test_backup_is_one_consistent_snapshot_while_the_app_writes(live):
    """A writer adds a race and its runner in one transaction, non-stop; no snapshot holds half of one."""
    with sqlite3.connect(live) as setup:
        setup.execute("PRAGMA journal_mode = WAL")
    stop = threading.Event()
    written = []

    def writer() -> None:
        connection = sqlite3.connect(live, timeout=30)
        while not stop.is_set():
            with connection:
                race = connection.execute("INSERT INTO races (race_name) VALUES ('live')").lastrowid
                connection.execute("INSERT INTO race_horses (race_id, horse_id) VALUES (?, 1)", (race,))
            written.append(race)
        connection.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        manifests = [backup(live) for _ in range(3)]
    finally:
        stop.set()
        thread.join()
    assert written
    for manifest in manifests:
        assert manifest.integrity_check == "ok"
        with sqlite3.connect(manifest.path) as copy:
            halves = copy.execute(
                "SELECT count(*) FROM races r WHERE race_name = 'live'"
                " AND NOT EXISTS (SELECT 1 FROM race_horses h WHERE h.race_id = r.id)"
            ).fetchone()[0]
            assert halves == 0
            assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_require_recent_finds_the_newest_usable_backup(live, tmp_path):
    with pytest.raises(BackupError, match="no backup of .* run `hrp-cutover backup` first"):
        require_recent(live, 3600)
    first = backup(live)
    second = backup(live)
    assert require_recent(live, 3600) == second
    Path(second.path).unlink()  # a manifest whose backup is gone does not count
    assert newest(live) == first
    manifest_path = Path(first.manifest_path)
    data = json.loads(manifest_path.read_text())
    data["created_at"] = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)).isoformat()
    manifest_path.write_text(json.dumps(data))
    with pytest.raises(BackupError, match=r"is 2\.0d old \(max 24\.0h, HRP_BACKUP_MAX_AGE\)"):
        require_recent(live, parse_duration("24h"))
    assert require_recent(live, parse_duration("3d")).path == first.path
    other = tmp_path / "other.db"
    seed_database(other, races=2, seed=1)
    with pytest.raises(BackupError, match="no backup of"):
        require_recent(other, 3600)  # a backup of another file in the same folder is not its backup


def test_backup_command(live, tmp_path):
    runner = CliRunner()
    text = runner.invoke(cli, ["--sqlite", str(live), "backup"])
    assert text.exit_code == 0, text.output
    assert text.stdout.startswith("backup ") and "integrity ok" in text.stdout
    out = tmp_path / "elsewhere"
    result = runner.invoke(cli, ["--sqlite", str(live), "backup", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert Path(manifest["path"]).parent == out and Path(manifest["manifest"]).is_file()
    assert set(manifest) >= {"source", "path", "size", "sha256", "row_counts", "integrity_check", "created_at"}
    missing = runner.invoke(cli, ["--sqlite", str(tmp_path / "nope.db"), "backup"])
    assert missing.exit_code == 2  # a bad setting, as for every command
    assert [line for line in missing.output.splitlines() if line.startswith("Error: ") and "does not exist" in line]
