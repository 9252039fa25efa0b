"""A command that writes the SQLite file waits for a legacy app's write transaction instead of failing."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from click.testing import CliRunner

from hrp_data.schema.install import upgrade
from tools.cli import cli


def _hold_write_lock(path, seconds: float, started: threading.Event) -> threading.Thread:
    """A legacy app's deferred write transaction (BEGIN; INSERT) on its own connection, held `seconds`."""

    def hold():
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("BEGIN")
        connection.execute("INSERT INTO horses (horse_name) VALUES ('legacy app')")
        started.set()
        time.sleep(seconds)
        connection.execute("COMMIT")
        connection.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert started.wait(10)
    return thread


def _phase(path) -> tuple[str, int] | None:
    with sqlite3.connect(path) as connection:
        if not connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'hrp_cutover_phase'").fetchone():
            return None
        return connection.execute("SELECT phase, version FROM hrp_cutover_phase").fetchone()


@pytest.fixture(params=["wal", "rollback_journal"])
def pair(request, legacy_file, postgres_url):
    """A legacy file and a migrated PostgreSQL; the file in WAL mode (a command ran before) or
    still in the legacy app's rollback-journal mode (the operator's very first command)."""
    upgrade(postgres_url)
    base = ["--sqlite", str(legacy_file), "--postgres", postgres_url]
    if request.param == "wal":
        shown = CliRunner().invoke(cli, base + ["phase", "show"])
        assert shown.exit_code == 0, shown.output
    return legacy_file, base


def test_phase_set_waits_for_a_legacy_write_transaction_and_succeeds(pair):
    """The legacy app holds its write for 2 s; `phase set dual_write` waits, then moves."""
    path, base = pair
    holder = _hold_write_lock(path, 2.0, threading.Event())
    started = time.monotonic()
    result = CliRunner().invoke(cli, base + ["phase", "set", "dual_write"])
    holder.join()
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started >= 1.5
    assert "sqlite_only -> dual_write" in result.output
    assert _phase(path) == ("dual_write", 2)


def test_phase_set_gives_up_after_the_bound_with_one_line_and_changes_nothing(pair, monkeypatch):
    """With the lock held past HRP_SQLITE_LOCK_WAIT_S, the command fails in one line and writes nothing."""
    path, base = pair
    monkeypatch.setenv("HRP_SQLITE_LOCK_WAIT_S", "1")
    holder = _hold_write_lock(path, 4.0, threading.Event())
    started = time.monotonic()
    result = CliRunner().invoke(cli, base + ["phase", "set", "dual_write"])
    waited = time.monotonic() - started
    holder.join()
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "locked" in lines[0] and "1 s" in lines[0], result.output
    assert 0.8 <= waited < 3.5
    assert _phase(path) in (None, ("sqlite_only", 1))
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'").fetchone()[0] == 0
