"""The app behind a real PgBouncer in transaction mode, the operator's commands direct (docs/pooling.md)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from adapters.pooler import probe
from hrp_data.cutover.dual_write import Cutover
from hrp_data.cutover.assemble import open_cutover
from hrp_data.cutover.replay import replay_outbox
from hrp_data.schema.install import upgrade
from tools.seed import seed_database
from hrp_data.session_locks import LAYER_LOCKS
from tests.conftest import MAINTENANCE
from tests.integration.cutover_helpers import assert_equal, settings_for
from tools.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def pg_query(url: str, sql: str, params=None) -> list[tuple]:
    connection = psycopg2.connect(libpq(url), options=MAINTENANCE)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    finally:
        connection.close()


def layer_locks(url: str) -> list[tuple]:
    """Every advisory lock of the layer held or awaited on the server, by anybody."""
    return pg_query(
        url,
        "SELECT l.pid, l.granted, a.application_name FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.objsubid = 1"
        " AND ((l.classid::bigint << 32) | l.objid::bigint) = ANY(%s)",
        (list(LAYER_LOCKS),),
    )


def run(path: Path, app_url: str, *args: str, direct: str | None = None):
    """One CLI command, in this process, with the app's URL and (maybe) the operator's direct URL."""
    psycopg2.extensions.set_wait_callback(None)  # a previous command's Cutover bounded every call
    env = {"HRP_SQLITE_URL": f"sqlite:///{path}", "HRP_POSTGRES_URL": app_url, "HRP_POSTGRES_DIRECT_URL": direct}
    return CliRunner().invoke(cli, list(args), env=env)


def refused_in_one_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.output
    assert "HRP_POSTGRES_DIRECT_URL" in lines[0] and "transaction pooler" in lines[0], lines[0]
    return lines[0]


def phase_of(path: Path) -> str:
    """The phase the file records (sqlite_only before the layer first touched it)."""
    with sqlite3.connect(path) as connection:
        if connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'hrp_cutover_phase'").fetchone() is None:
            return "sqlite_only"
        return connection.execute("SELECT phase FROM hrp_cutover_phase").fetchone()[0]


def exists(url: str, table: str) -> bool:
    return pg_query(url, "SELECT to_regclass(%s) IS NOT NULL", (table,))[0][0]


@pytest.fixture
def seeded(tmp_path, postgres_url, pgbouncer):
    path = tmp_path / "hrp_database.db"
    seed_database(path, races=20, seed=5)
    upgrade(postgres_url)
    return path, postgres_url, pgbouncer.url(postgres_url)


def test_the_probe_tells_a_transaction_pooler_from_a_direct_connection(pgbouncer, postgres_url):
    pooled = probe(pgbouncer.url(postgres_url))
    assert pooled.pooled, pooled.evidence
    direct = probe(postgres_url)
    assert not direct.pooled, direct.evidence


def _write_user(cutover: Cutover, name: str) -> int:
    with cutover.writing() as uow:
        user = uow.users.add(username=name, email=f"{name}@x", password_hash="h")
        race = uow.races.add(race_name=f"race of {name}", race_date=dt.date(2025, 3, 1), distance=1000.5,
                             weather_conditions={"wind": "N"})
        uow.commit()
    return user["id"], race["id"]


def test_the_cutover_with_the_app_pooled_and_the_operator_direct(seeded):
    """Long commands and moves given only the pooled URL refuse in one line before changing anything;
    given the direct URL they work; the app's writes work through the pool in every phase; no lock
    of the layer is left once the commands have ended."""
    path, direct, pooled = seeded
    refused_in_one_line(run(path, pooled, "phase", "set", "dual_write"))
    assert phase_of(path) == "sqlite_only" and not exists(direct, "hrp_cutover_outbox")
    result = run(path, pooled, "phase", "set", "dual_write", direct=direct)
    assert result.exit_code == 0, result.output

    with open_cutover(settings_for(path, pooled, phase="dual_write")) as app:  # the app, pooled
        user_id, race_id = _write_user(app, "pooled_dual")
        assert replay_outbox(app).remaining == 0  # the applier's path, through the pool
    assert pg_query(direct, "SELECT username FROM users WHERE id = %s", (user_id,)) == [("pooled_dual",)]

    refused_in_one_line(run(path, pooled, "backfill", "--no-backup"))
    assert not exists(direct, "hrp_cutover_backfill")
    result = run(path, pooled, "backfill", "--no-backup", direct=direct)
    assert result.exit_code == 0 and "COMPLETE" in result.output, result.output
    assert_equal(path, direct)

    refused_in_one_line(run(path, pooled, "verify"))
    result = run(path, pooled, "verify", direct=direct)
    assert result.exit_code == 0 and "EQUAL" in result.output, result.output

    assert run(path, pooled, "phase", "set", "shadow", direct=direct).exit_code == 0
    refused_in_one_line(run(path, pooled, "flip"))
    assert phase_of(path) == "shadow"
    result = run(path, pooled, "flip", "--force", direct=direct)  # shadow reads are not what this test is about
    assert result.exit_code == 0 and "-> postgres_primary" in result.output, result.output

    with open_cutover(settings_for(path, pooled, phase="postgres_primary")) as app:
        user_id, _ = _write_user(app, "pooled_primary")
        with app.writing() as uow:
            uow.races.update(race_id, status="finished")
            uow.commit()
        assert replay_outbox(app).remaining == 0
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT username FROM users WHERE id = ?", (user_id,)).fetchone() == (
            "pooled_primary",)
    result = run(path, pooled, "rollback", "--force", direct=direct)
    assert result.exit_code == 0, result.output
    assert_equal(path, direct)
    assert layer_locks(direct) == []


def test_a_lock_left_on_a_pooled_server_connection_is_named_and_cleared(seeded):
    """The trap of the issue: a session advisory lock taken through the pool stays on a server
    connection after its client left. The next backfill says who holds it and how to clear it;
    `hrp-cutover unlock --pid` ends that session, and the backfill then runs."""
    from hrp_data.backfill.state import RUN_LOCK

    path, direct, pooled = seeded
    assert run(path, pooled, "phase", "set", "dual_write", direct=direct).exit_code == 0
    leaker = psycopg2.connect(libpq(pooled), application_name="leaky-tool")
    leaker.autocommit = True
    with leaker.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s), pg_backend_pid()", (RUN_LOCK,))
        server_pid = cursor.fetchone()[1]
    leaker.close()  # the client is gone; the pool keeps the server connection, and the lock with it
    assert [pid for pid, granted, _ in layer_locks(direct) if granted] == [server_pid]

    result = run(path, pooled, "backfill", "--no-backup", direct=direct)
    assert result.exit_code == 1, result.output
    message = result.output.strip().splitlines()[-1]
    assert "another backfill is running" in message and f"pid {server_pid}" in message, message
    assert f"hrp-cutover unlock --pid {server_pid}" in message, message

    listing = run(path, pooled, "unlock", direct=direct)
    assert listing.exit_code == 0 and f"pid {server_pid}" in listing.output, listing.output
    wrong = run(path, pooled, "unlock", "--pid", "1", direct=direct)
    assert wrong.exit_code == 1 and "holds no lock of the layer" in wrong.output, wrong.output
    cleared = run(path, pooled, "unlock", "--pid", str(server_pid), direct=direct)
    assert cleared.exit_code == 0, cleared.output
    assert layer_locks(direct) == []

    result = run(path, pooled, "backfill", "--no-backup", direct=direct)
    assert result.exit_code == 0 and "COMPLETE" in result.output, result.output
    assert layer_locks(direct) == []


def _killed_at(point: str, path: Path, pooled: str, direct: str, *args: str) -> subprocess.CompletedProcess:
    """`hrp-cutover ARGS` in its own process, SIGKILLed at the move's fault point `point`."""
    code = (
        "import os, signal\n"
        "from hrp_data.flip import move as flip\n"
        f"flip.fault_at = lambda at: at == {point!r} and os.kill(os.getpid(), signal.SIGKILL)\n"
        "from tools.cli import main\n"
        "main()\n"
    )
    env = dict(os.environ, HRP_SQLITE_URL=f"sqlite:///{path}", HRP_POSTGRES_URL=pooled, HRP_POSTGRES_DIRECT_URL=direct)
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def _until_no_layer_lock(url: str, timeout: float = 10.0) -> float:
    started = time.monotonic()
    while layer_locks(url):
        assert time.monotonic() - started < timeout, f"a layer lock outlived its command: {layer_locks(url)}"
        time.sleep(0.05)
    return time.monotonic() - started


def test_killed_commands_leave_no_lock_and_the_next_run_proceeds(seeded):
    """A move SIGKILLed while it holds the phase lock, and a backfill SIGKILLed mid-copy: their
    locks end with their processes, and the next command finishes the move or resumes the copy."""
    path, direct, pooled = seeded
    killed = _killed_at("drained", path, pooled, direct, "phase", "set", "dual_write")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    _until_no_layer_lock(direct)
    result = run(path, pooled, "recover", direct=direct)
    assert result.exit_code == 0 and "finished the interrupted move" in result.output, result.output
    assert run(path, pooled, "phase", "set", "dual_write", direct=direct).exit_code == 0

    env = dict(os.environ, HRP_SQLITE_URL=f"sqlite:///{path}", HRP_POSTGRES_URL=pooled, HRP_POSTGRES_DIRECT_URL=direct)
    backfill = subprocess.Popen(
        [sys.executable, "-c", "from tools.cli import main; main()", "backfill", "--no-backup", "--batch-size", "20",
         "--max-rows-per-sec", "400"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while not (exists(direct, "hrp_cutover_backfill")
               and pg_query(direct, "SELECT coalesce(sum(batches), 0) FROM hrp_cutover_backfill")[0][0] >= 2):
        assert backfill.poll() is None and time.monotonic() < deadline, backfill.communicate()
        time.sleep(0.05)
    assert [name for _, granted, name in layer_locks(direct) if granted] == ["hrp-cutover-backfill"]
    backfill.send_signal(signal.SIGKILL)
    backfill.wait(timeout=10)
    _until_no_layer_lock(direct)
    result = run(path, pooled, "backfill", "--no-backup", direct=direct)
    assert result.exit_code == 0 and "COMPLETE" in result.output, result.output
    assert_equal(path, direct)
    assert layer_locks(direct) == []
