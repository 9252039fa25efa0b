"""Backfill: equal after a run, under racing writers and deletes, after SIGKILLs; hostile values quarantined."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import psycopg2
import pytest
import structlog
import structlog.testing
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from tests.conftest import MAINTENANCE
from adapters import outbox as outbox_keys
from adapters.postgres import create_postgres_engine
from hrp_data.backfill import batch_writer, quarantine
from hrp_data.backfill.legacy_rows import Reject
from hrp_data.cutover import outbox
from hrp_data.backfill.assess import assess
from hrp_data.backfill.run import BackfillRefused, Listener, Options, backfill_status, quarantine_rows, run_backfill
from hrp_data.cutover.dual_write import Cutover
from hrp_data.cutover import assemble
from hrp_data.flip.move import move
from hrp_data.cutover.phases import Phase
from hrp_data.cutover.replay import replay_outbox
from hrp_data.schema.install import upgrade
from tools.seed import seed_database
from tests.integration.cutover_helpers import assert_equal, settings_for, wait_drained
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


def open_cutover(path: Path, url: str, *, applier: bool = False, phase: Phase = Phase.DUAL_WRITE) -> Cutover:
    """A Cutover on the file, moved from sqlite_only to dual_write unless `phase` is sqlite_only."""
    cutover = assemble.open_cutover(settings_for(path, url), bound_calls=False)
    if applier:
        cutover.start()
    try:
        if phase is not Phase.SQLITE_ONLY and cutover.phase(fresh=True).phase is Phase.SQLITE_ONLY:
            move(cutover, Phase.DUAL_WRITE)
    except BaseException:
        cutover.close()
        raise
    return cutover


def sqlite_counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as connection:
        return {t: connection.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
                for t in ("users", "races", "horses", "race_horses", "predictions", "api_credentials")}


@pytest.fixture
def seeded(tmp_path, postgres_url):
    path = tmp_path / "hrp_database.db"
    seed_database(path, races=100, seed=11)
    upgrade(postgres_url)
    return path, postgres_url


# -- a plain run ---------------------------------------------------------------


def test_backfill_of_a_seeded_file_ends_equal(seeded):
    """Every row arrives exactly; identities move past the ids; a second run copies nothing."""
    path, url = seeded
    with open_cutover(path, url) as cutover:
        result = run_backfill(cutover, Options(batch_size=300))
        assert result.complete
        for name, count in sqlite_counts(path).items():
            stats = result.tables[name]
            assert (stats.read, stats.copied, stats.present, stats.quarantined) == (count, count, 0, 0), name
        assert_equal(path, url)
        status = backfill_status(cutover.postgres)
        assert status["complete"] and set(status["tables"]) == set(result.tables)
        again = run_backfill(cutover, Options(batch_size=300, restart=True))
        assert again.complete and all(s.copied == 0 and s.present == s.read for s in again.tables.values())
    top = pg_query(url, "SELECT max(id) FROM horses")[0][0]
    fresh = pg_query(url, "INSERT INTO horses (horse_name) VALUES ('after backfill') RETURNING id")[0][0]
    assert fresh > top


def test_pages_read_by_worker_processes_give_the_same_copy(seeded):
    """Reading and converting in two worker processes: every row, the same counts, both sides equal."""
    path, url = seeded
    with open_cutover(path, url) as cutover:
        result = run_backfill(cutover, Options(batch_size=70, workers=2))
    assert result.complete
    for name, count in sqlite_counts(path).items():
        stats = result.tables[name]
        assert (stats.read, stats.copied, stats.present, stats.quarantined) == (count, count, 0, 0), name
    assert_equal(path, url)
    assert not read_pool_workers(psutil.Process())


def read_pool_workers(process: psutil.Process) -> list[psutil.Process]:
    """The backfill's worker processes under `process`: the children of its fork server (read_pool)."""
    servers = [p for p in process.children() if "multiprocessing.forkserver" in " ".join(p.cmdline())]
    return [worker for server in servers for worker in server.children()]


def test_worker_processes_die_with_a_sigkilled_backfill(seeded):
    path, url = seeded
    with open_cutover(path, url):
        pass
    process = _start_backfill(path, url, "--batch-size", "40", "--max-rows-per-sec", "2500", "--workers", "2")
    _wait_for_batches(process, url, 3)
    workers = read_pool_workers(psutil.Process(process.pid))
    assert len(workers) == 2
    workers += [p for p in psutil.Process(process.pid).children() if "multiprocessing.forkserver" in " ".join(p.cmdline())]
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, [" ".join(p.cmdline()) for p in alive]
    with open_cutover(path, url) as cutover:
        assert run_backfill(cutover, Options(batch_size=40, workers=2)).complete
    assert_equal(path, url)


def test_a_worker_process_killed_mid_table_stops_the_run_instead_of_hanging_it(seeded):
    """The OOM killer takes a worker: the run raises (checkpoint committed), the next run ends equal."""
    from concurrent.futures.process import BrokenProcessPool

    path, url = seeded

    class KillAWorker(Listener):
        killed = False

        def batch_read(self, table, keys):
            if table == "predictions" and not self.killed:
                workers = read_pool_workers(psutil.Process())
                workers[0].kill()
                psutil.wait_procs(workers[:1], timeout=10)
                self.killed = True

    with open_cutover(path, url) as cutover:
        with pytest.raises(BrokenProcessPool):
            run_backfill(cutover, Options(batch_size=50, workers=2), listener=KillAWorker())
    assert 0 < _batches(url) < sum(sqlite_counts(path).values()) / 50
    with open_cutover(path, url) as cutover:
        assert run_backfill(cutover, Options(batch_size=50, workers=2)).complete
    assert_equal(path, url)


def test_backfill_never_overwrites_a_newer_live_row(seeded):
    """A row the live path already carried (newer) is kept; the backfill's older image is not applied."""
    path, url = seeded
    with open_cutover(path, url) as cutover:
        with sqlite3.connect(path) as raw:
            raw.execute("UPDATE races SET track_name = 'Live Write' WHERE id = 5")
        replay_outbox(cutover)  # race 5 reaches PostgreSQL first, through the apply path
        pg_query_exec(url, "UPDATE races SET track_name = 'newer in postgres' WHERE id = 5")
        result = run_backfill(cutover, Options(batch_size=40))
        assert result.tables["races"].present == 1
    assert pg_query(url, "SELECT track_name FROM races WHERE id = 5") == [("newer in postgres",)]


def index_names(url: str, table: str) -> set[str]:
    return {row[0] for row in pg_query(url, "SELECT indexname FROM pg_indexes WHERE tablename = %s", (table,))}


def pg_query_exec(url: str, sql: str) -> None:
    connection = psycopg2.connect(libpq(url), options=MAINTENANCE)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(sql)
    finally:
        connection.close()


# -- live writes and deletes racing the copy -------------------------------------


@pytest.mark.parametrize("workers", [0, 2], ids=["one-process", "worker-processes"])
def test_backfill_racing_four_writers_ends_equal(seeded, workers):
    """Inserts, updates and deletes through cutover.writing() during the copy: both sides end equal,
    whether pages are read in the backfill's thread or by worker processes."""
    path, url = seeded
    with open_cutover(path, url, applier=True) as cutover:
        done = threading.Event()
        errors: list[BaseException] = []
        counts = Counter()

        def writer(index: int) -> None:
            rng = random.Random(index)
            try:
                for _ in range(400):
                    if done.is_set() and counts[index] >= 30:
                        return
                    with cutover.writing() as uow:
                        action = rng.random()
                        race_id = rng.randrange(51, 101)
                        if action < 0.35:
                            uow.races.update(race_id, distance=rng.random() * 3000, status=rng.choice(["a", "b"]))
                        elif action < 0.5:
                            uow.predictions.update(rng.randrange(1, 900), confidence=rng.random())
                        elif action < 0.7:
                            race = uow.races.add(race_name=f"live {index}", distance=1000.25,
                                                 weather_conditions={"wind": "N"})
                            uow.predictions.add(race_id=race["id"], horse_id=rng.randrange(1, 200), user_id=1,
                                                features={"w": index})
                            uow.predictions.add(race_id=race_id, horse_id=rng.randrange(1, 200), user_id=1)
                        elif action < 0.8:
                            uow.races.set_runner(race_id, rng.randrange(1, 200), post_position=9, odds=7.5)
                        else:  # deletes: each writer its own races, so no writer refers to another's deleted race
                            uow.races.delete(rng.randrange(1, 12) * 4 + index)
                            uow.horses.update(rng.randrange(1, 200), weight=rng.random() * 600)
                        uow.commit()
                    counts[index] += 1
            except BaseException as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        try:
            result = run_backfill(cutover, Options(batch_size=60, max_rows_per_sec=1500, workers=workers))
        finally:
            done.set()
            for thread in threads:
                thread.join()
        assert errors == []
        assert result.complete and sum(counts.values()) >= 120
        outbox.make_all_due(cutover.sqlite)
        wait_drained(cutover, timeout=60)
    assert_equal(path, url)


class _DeadlockTheOrphanCheck(Listener):
    """Once predictions are copied, another session locks the last orphan row; when the backfill's
    orphan DELETE waits on it, that session asks for the first orphan row (which the DELETE holds):
    a real deadlock, and the backfill (the session with the shorter deadlock_timeout) is the victim."""

    def __init__(self, url: str, first: int, last: int):
        self.url, self.first, self.last = url, first, last
        self.thread: threading.Thread | None = None
        self.errors: list[BaseException] = []
        self.deadlocked = threading.Event()

    def progress(self, table: str, done: int, total: int) -> None:
        if table != "predictions" or done < total or self.thread is not None:
            return
        other = psycopg2.connect(libpq(self.url), options=MAINTENANCE)
        with other.cursor() as cursor:  # held before the orphan check can start
            cursor.execute("SET deadlock_timeout = '60s'")
            cursor.execute("SELECT 1 FROM predictions WHERE id = %s FOR UPDATE", (self.last,))
        self.thread = threading.Thread(target=self._close_the_circle, args=(other,))  # once the DELETE waits on it
        self.thread.start()

    def _close_the_circle(self, other) -> None:
        try:
            with other.cursor() as cursor:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    cursor.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
                    )
                    if cursor.fetchone()[0]:
                        break
                    time.sleep(0.02)
                else:
                    raise AssertionError("the orphan DELETE never waited on the held row")
                cursor.execute("SELECT 1 FROM predictions WHERE id = %s FOR UPDATE", (self.first,))
                self.deadlocked.set()
        except BaseException as error:
            self.errors.append(error)
        finally:
            other.rollback()
            other.close()


def test_a_deadlock_inside_the_orphan_check_runs_the_check_again(seeded):
    """A live apply that deadlocks with the orphan check's DELETE (PostgreSQL aborts the backfill's
    transaction) costs a retry of that transaction, not the run; the orphans still end quarantined."""
    path, url = seeded
    orphans = list(range(100001, 100031))
    with sqlite3.connect(path) as raw:  # the legacy app, foreign keys off
        raw.executemany("INSERT INTO predictions (id, race_id, horse_id, user_id) VALUES (?, 99999, 1, 1)",
                        [(key,) for key in orphans])
    listener = _DeadlockTheOrphanCheck(url, orphans[0], orphans[-1])
    with open_cutover(path, url) as cutover, structlog.testing.capture_logs() as logs:
        result = run_backfill(cutover, Options(batch_size=300), listener=listener)
    listener.thread.join()
    assert [str(e) for e in listener.errors] == [] and listener.deadlocked.is_set()
    assert [e for e in logs if e["event"] == "backfill.transaction_retried"], "the deadlock was not retried"
    assert result.complete and result.tables["predictions"].quarantined == len(orphans)
    held = pg_query(url, "SELECT count(*) FROM predictions WHERE id >= %s", (orphans[0],))[0][0]
    assert held == 0


class _DeleteAfterRead(Listener):
    """Deletes every 7th row of a batch in SQLite right after the backfill read it, and applies the
    deletes to PostgreSQL at once (no-ops there: the rows are not copied yet). Without the re-check the
    merge would resurrect them."""

    def __init__(self, path: Path, cutover: Cutover):
        self.path, self.cutover = path, cutover
        self.deleted: Counter = Counter()

    def batch_read(self, table: str, keys: list) -> None:
        if table not in ("race_horses", "predictions"):
            return
        victims = keys[::7]
        columns = {"race_horses": ("race_id", "horse_id"), "predictions": ("id",)}[table]
        with sqlite3.connect(self.path) as raw:  # the legacy app, foreign keys off
            raw.executemany(
                f"DELETE FROM {table} WHERE " + " AND ".join(f"{c} = ?" for c in columns), victims
            )
        self.deleted[table] += len(victims)
        replay_outbox(self.cutover)
        assert outbox.depth(self.cutover.sqlite).pending == 0


@pytest.mark.parametrize("workers", [0, 2], ids=["one-process", "worker-processes"])
def test_deletes_racing_the_copy_leave_no_zombies(seeded, workers):
    path, url = seeded
    with open_cutover(path, url) as cutover:
        deleter = _DeleteAfterRead(path, cutover)
        result = run_backfill(cutover, Options(batch_size=100, workers=workers), listener=deleter)
        assert deleter.deleted["predictions"] > 20 and deleter.deleted["race_horses"] > 20
        assert result.tables["predictions"].removed == deleter.deleted["predictions"]
        assert result.tables["race_horses"].removed == deleter.deleted["race_horses"]
        assert outbox.depth(cutover.sqlite).pending == 0
    assert_equal(path, url)  # nothing applied since: the backfill itself removed the zombies


@pytest.mark.parametrize("workers", [0, 2], ids=["one-process", "worker-processes"])
def test_a_batch_nothing_wrote_to_since_its_read_is_not_rechecked(seeded, monkeypatch, workers):
    """No write reached SQLite between a batch's read and its commit (the outbox counter did not
    move): it cannot hold a zombie, so its key range is not compared; a write makes it compared."""
    path, url = seeded
    rechecked: list[str] = []
    exact = batch_writer.BatchWriter.recheck_range

    def counting(self, low, high):
        rechecked.append(self.name)
        return exact(self, low, high)

    monkeypatch.setattr(batch_writer.BatchWriter, "recheck_range", counting)

    class OneWrite(Listener):
        def batch_read(self, table, keys):
            if table == "predictions" and "predictions" not in written:
                written.add(table)
                with sqlite3.connect(path) as raw:
                    raw.execute("UPDATE horses SET weight = 1.5 WHERE id = 1")

    written: set[str] = set()
    with open_cutover(path, url) as cutover:
        result = run_backfill(cutover, Options(batch_size=100, workers=workers), listener=OneWrite())
    assert result.complete and written == {"predictions"}
    assert rechecked and set(rechecked) == {"predictions"}, rechecked
    assert len(rechecked) < result.tables["predictions"].read / 100
    with open_cutover(path, url) as cutover:
        replay_outbox(cutover)  # the one write, still in the outbox (no applier here)
    assert_equal(path, url)


def test_without_the_recheck_the_same_race_leaves_zombies(seeded, monkeypatch):
    """The control experiment: the zombie test fails when the re-check is switched off."""
    path, url = seeded
    monkeypatch.setattr(batch_writer.BatchWriter, "recheck_range", lambda self, low, high: 0)
    with open_cutover(path, url) as cutover:
        run_backfill(cutover, Options(batch_size=100, tables=("users", "races", "horses", "race_horses")),
                     listener=_DeleteAfterRead(path, cutover))
    with pytest.raises(AssertionError, match="race_horses: missing in postgres \\[\\], extra \\[\\("):
        assert_equal(path, url)


# -- killed and resumed ------------------------------------------------------------


def _cli_env(path: Path, url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HRP_SQLITE_URL=f"sqlite:///{path}", HRP_POSTGRES_URL=url, HRP_LOG_FORMAT="json")
    return env


def _batches(url: str) -> int:
    try:
        return pg_query(url, "SELECT coalesce(sum(batches), 0) FROM hrp_cutover_backfill")[0][0]
    except psycopg2.errors.UndefinedTable:
        return 0


def _start_backfill(path: Path, url: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", "from tools.cli import main; main()", "backfill", "--no-backup", *args],
        cwd=ROOT, env=_cli_env(path, url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for_batches(process: subprocess.Popen, url: str, at_least: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while _batches(url) < at_least:
        assert process.poll() is None, f"backfill ended early: {process.communicate()}"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.02)


def test_sigkilled_three_times_then_resumed_ends_equal(seeded):
    """SIGKILL at three points (early, mid predictions, mid race_horses: see copy_order); the resumed
    run ends equal, with the counts of an uninterrupted run, and every held index built again."""
    path, url = seeded
    with open_cutover(path, url):
        pass
    for at_least in (3, 20, 45):
        process = _start_backfill(path, url, "--batch-size", "40", "--max-rows-per-sec", "2500")
        _wait_for_batches(process, url, at_least)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert process.returncode == -signal.SIGKILL
    states = dict(pg_query(url, "SELECT table_name, read FROM hrp_cutover_backfill WHERE state = 'copying'"))
    assert 0 < states.get("race_horses", 0) < sqlite_counts(path)["race_horses"]  # the last kill: mid race_horses
    loaded = ("predictions", "race_horses")
    schema_indexes = {t: index_names(url, t) for t in ("races", "horses", "api_credentials")}
    held = dict(pg_query(url, "SELECT index_name, table_name FROM hrp_cutover_backfill_indexes"))
    assert "race_horses" in set(held.values()) <= set(loaded)
    assert not set(held) & set().union(*(index_names(url, t) for t in loaded))
    with open_cutover(path, url) as cutover:
        result = run_backfill(cutover, Options(batch_size=40))
    assert result.complete
    assert pg_query(url, "SELECT count(*) FROM hrp_cutover_backfill_indexes") == [(0,)]
    assert set(held) <= set().union(*(index_names(url, t) for t in loaded))
    assert {"ix_predictions_features", "idx_race_horses_horse"} <= index_names(url, "predictions") | index_names(
        url, "race_horses")
    assert {t: index_names(url, t) for t in schema_indexes} == schema_indexes
    for name, count in sqlite_counts(path).items():
        stats = result.tables[name]
        assert (stats.read, stats.copied, stats.present, stats.quarantined) == (count, count, 0, 0), name
    assert_equal(path, url)


def test_ctrl_c_stops_at_a_batch_boundary_and_resumes(seeded):
    path, url = seeded
    with open_cutover(path, url):
        pass
    process = _start_backfill(path, url, "--batch-size", "50", "--max-rows-per-sec", "400")
    _wait_for_batches(process, url, 2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    message = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert len(message) == 1 and "run `hrp-cutover backfill` again to resume" in message[0]
    assert "checkpoint committed" in message[0]
    partial = pg_query(url, "SELECT sum(read) FROM hrp_cutover_backfill")[0][0]
    assert 0 < partial < sum(sqlite_counts(path).values())
    result = CliRunner().invoke(cli, ["--sqlite", str(path), "--postgres", url, "backfill", "--no-backup", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["complete"] is True
    assert set(summary["tables"]["races"]) >= {"read", "copied", "present", "quarantined", "seconds"}
    assert_equal(path, url)


def test_a_checkpoint_key_spelled_with_spaces_reads_back_the_same(postgres_url):
    """hrp_data.backfill.state: last_key is jsonb, so a key saved as '[3, "a b"]' loads as one saved by encode_key."""
    from hrp_data.backfill import state

    key = (3, "a b", b"\x00\xff", 1e19)
    connection = psycopg2.connect(libpq(postgres_url), options=MAINTENANCE)
    try:
        with connection, connection.cursor() as cursor:
            state.install(cursor)
            for table, spelled in (("old", json.dumps(outbox_keys.key_to_json(key))), ("new", None)):
                state.start_table(cursor, table)
                if spelled is None:
                    state.save_batch(cursor, table, last_key=key, rechecked_key=key, seconds=0.0)
                else:
                    cursor.execute(f"UPDATE {state.STATE_TABLE} SET last_key = %s::jsonb, rechecked_key = %s::jsonb"
                                   " WHERE table_name = %s", (spelled, spelled, table))
            loaded = state.load(cursor)
    finally:
        connection.close()
    assert loaded["old"].last_key == loaded["new"].last_key == key
    assert loaded["old"].rechecked_key == loaded["new"].rechecked_key == key


def test_copy_text_fields_read_back_exactly(postgres_url):
    """adapters.pg_copy: what goes in through COPY comes back bit for bit (-0.0, subnormals, escapes)."""
    from adapters import pg_copy

    values = [
        (1, -0.0, "plain", None, True, dt.date(1, 1, 1), dt.datetime(2025, 1, 14, 9, 30, 0, 1, tzinfo=dt.timezone.utc)),
        (2, 5e-324, EXOTIC_NAME, {"a": [1, 2.5, "\\N"], "é": None}, False, dt.date(9999, 12, 31), None),
        (3, float("inf"), "\\.", [], None, None, None),
        (4, 0.1 + 0.2, "", {"big": 2**62}, None, None, None),
        (5, None, "\\", None, None, None, None),
    ]
    connection = psycopg2.connect(libpq(postgres_url), options=MAINTENANCE)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute("CREATE TABLE t (id bigint, r float8, s text, j jsonb, b boolean, d date, ts timestamptz)")
            pg_copy.copy_in(cursor, "t", ["id", "r", "s", "j", "b", "d", "ts"], pg_copy.encode_rows(values))
            cursor.execute("SELECT id, r, s, j, b, d, ts FROM t ORDER BY id")
            back = cursor.fetchall()
    finally:
        connection.close()
    for sent, got in zip(values, back):
        assert got[2:] == sent[2:]
        assert (got[1] is None and sent[1] is None) or struct.pack(">d", got[1]) == struct.pack(">d", sent[1])
    with pytest.raises(ValueError, match="NUL"):
        pg_copy.encode_rows([("a\x00b",)])


# -- hostile legacy values -----------------------------------------------------------

EXOTIC_NAME = "tab\there\nnew line\\back \\N \\. end\r"
EXOTIC_WEATHER = '{"temp_c": 14.5, "wind": "NW", "note": "caf\\u00e9 \\u2603", "gusts": [1, 2.5e-07]}'

# (table, key, column) -> reason; every other row is valid and must arrive exactly
HOSTILE = {
    ("users", (2,), "username"): "nul_byte_in_text",
    ("users", (3,), "password_hash"): "blob_in_text_column",
    ("users", (4,), "is_admin"): "non_boolean_integer",
    ("races", (17,), "distance"): "text_in_real_column",
    ("races", (18,), "race_date"): "impossible_date",
    ("races", (19,), "created_at"): "empty_timestamp",
    ("races", (20,), "weather_conditions"): "invalid_json",
    ("races", (21,), "track_name"): "invalid_utf8_in_text",
    ("races", (22,), "race_name"): "nul_byte_in_text",
    ("races", (23,), "surface"): "blob_in_text_column",
    ("races", (24,), "weather_conditions"): "non_standard_json",
    ("horses", (3,), "age"): "text_in_integer_column",
    ("race_horses", (1, 999), "horse_id"): "orphan_foreign_key",
    ("race_horses", (17, 1), "race_id"): "parent_quarantined",
    ("predictions", (2,), "race_id"): "orphan_foreign_key",
    ("predictions", (3,), "race_id"): "parent_quarantined",
    ("predictions", (4,), "user_id"): "parent_quarantined",
    ("predictions", (5,), "features"): "empty_json",
    ("api_credentials", (2,), "api_key"): "nul_byte_in_text",
    ("api_credentials", (3,), "user_id"): "orphan_foreign_key",
}


def plant_hostile(path: Path) -> None:
    """Valid rows with awkward values, and one row per kind of damage seen in production files."""
    connection = sqlite3.connect(path)  # foreign keys off, as production ran
    run = connection.execute
    user = "INSERT INTO users (id, username, email, password_hash, is_admin, created_at) VALUES (?, ?, ?, ?, ?, ?)"
    run(user, (1, "ann", "ann@x", "pbkdf2$ann", 1, "2025-01-14 09:30:00"))
    run(user, (2, "bo\x00b", "bob@x", "h2", 0, None))
    run("INSERT INTO users (id, username, email, password_hash) VALUES (3, 'cy', 'cy@x', x'DEADBEEF')")
    run(user, (4, "di", "di@x", "h4", 2, None))
    race = ("INSERT INTO races (id, race_name, race_date, track_name, distance, surface, prize_money,"
            " weather_conditions, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
    run(race, (1, EXOTIC_NAME, "2025-03-01", "Ascot", 5e-324, "turf", -0.0, EXOTIC_WEATHER,
               "2025-01-14 09:30:00.123456", "2025-01-14T09:30:00+02:00"))
    run(race, (17, "R17", "2025-03-01", "Ascot", "N/A", "turf", 1000.0, None, None, None))
    run(race, (18, "R18", "2025-02-30", "Ascot", 1200.0, None, None, None, None, None))
    run(race, (19, "R19", None, None, 0.1 + 0.2, None, None, None, "", None))
    run(race, (20, "R20", None, None, None, None, None, '{"wind": ', None, None))
    run("INSERT INTO races (id, race_name, track_name) VALUES (21, 'R21', CAST(x'41FF42' AS TEXT))")
    run(race, (22, "R\x0022", None, None, None, None, None, None, None, None))
    run("INSERT INTO races (id, race_name, surface) VALUES (23, 'R23', x'CAFE')")
    run(race, (24, "R24", None, None, None, None, None, '{"temp_c": NaN}', None, None))
    horse = "INSERT INTO horses (id, horse_name, age, weight) VALUES (?, ?, ?, ?)"
    run(horse, (1, "Shadowfax", 7, 512.5))
    run(horse, (2, "Ünïcode ☃", 4, 1e300))
    run(horse, (3, "Old", "old", None))
    runner = "INSERT INTO race_horses (race_id, horse_id, post_position, odds) VALUES (?, ?, ?, ?)"
    for row in ((1, 1, 1, 3.25), (1, 2, 2, 0.1), (1, 999, 3, 2.0), (17, 1, 1, 4.0)):
        run(runner, row)
    prediction = ("INSERT INTO predictions (id, race_id, horse_id, user_id, prediction_value, confidence, features)"
                  " VALUES (?, ?, ?, ?, ?, ?, ?)")
    run(prediction, (1, 1, 1, 1, 0.5, 0.30000000000000004, '{"x": 0.1, "big": 123456789012345678}'))
    run(prediction, (2, 999, 1, 1, 0.5, 0.5, None))
    run(prediction, (3, 17, 1, 1, 0.5, 0.5, None))
    run(prediction, (4, 1, 2, 2, 0.5, 0.5, None))
    run(prediction, (5, 1, 2, 1, 0.5, 0.5, ""))
    credential = "INSERT INTO api_credentials (id, user_id, service_name, api_key, api_secret) VALUES (?, ?, ?, ?, ?)"
    run(credential, (1, 1, "odds-feed", "key-1", "secret-1"))
    run(credential, (2, 1, "odds-feed", "se\x00cret-key", "secret-2"))
    run(credential, (3, 77, "odds-feed", "key-3", None))
    connection.commit()
    connection.close()


@pytest.fixture
def hostile(legacy_file, postgres_url):
    plant_hostile(legacy_file)
    upgrade(postgres_url)
    return legacy_file, postgres_url


def _quarantine_map(url: str) -> dict:
    engine = create_postgres_engine(url)
    try:
        return {(r["table"], tuple(r["key"]), r["column"]): r for r in quarantine_rows(engine)}
    finally:
        engine.dispose()


@pytest.mark.parametrize("workers", [0, 2], ids=["one-process", "worker-processes"])
def test_hostile_values_are_converted_exactly_or_quarantined_by_reason(hostile, workers):
    path, url = hostile
    with open_cutover(path, url) as cutover:
        result = run_backfill(cutover, Options(batch_size=3, workers=workers))
    assert result.complete
    found = _quarantine_map(url)
    assert {key: row["reason"] for key, row in found.items()} == HOSTILE
    assert found[("races", (17,), "distance")]["value"] == "N/A"
    assert found[("races", (21,), "track_name")]["value"] == "A\\xffB"
    assert found[("races", (23,), "surface")]["value"] == "x'CAFE'"
    for secret in (("users", (3,), "password_hash"), ("api_credentials", (2,), "api_key")):
        assert found[secret]["value"].startswith("sha256:") and "cret" not in found[secret]["value"]
    assert found[("predictions", (2,), "race_id")]["value"] == "999"
    expected_rows = {"users": 1, "races": 1, "horses": 2, "race_horses": 2, "predictions": 1, "api_credentials": 1}
    for table, count in expected_rows.items():
        assert pg_query(url, f'SELECT count(*) FROM "{table}"')[0][0] == count, table
        assert result.tables[table].quarantined == sum(1 for key in HOSTILE if key[0] == table), table

    race = pg_query(url, "SELECT race_name, distance, prize_money, weather_conditions, created_at, updated_at,"
                         " race_date FROM races WHERE id = 1")[0]
    assert race[0] == EXOTIC_NAME
    with sqlite3.connect(path) as raw:  # SQLite's own value is the reference (it stores -0.0 as 0.0)
        stored = raw.execute("SELECT distance, prize_money FROM races WHERE id = 1").fetchone()
    assert struct.pack(">d", race[1]) == struct.pack(">d", stored[0]) == struct.pack(">d", 5e-324)
    assert struct.pack(">d", race[2]) == struct.pack(">d", stored[1])
    assert race[3] == json.loads(EXOTIC_WEATHER)
    assert race[4] == dt.datetime(2025, 1, 14, 9, 30, 0, 123456, tzinfo=dt.timezone.utc)
    assert race[5] == dt.datetime(2025, 1, 14, 7, 30, tzinfo=dt.timezone.utc)
    assert race[6] == dt.date(2025, 3, 1)
    assert pg_query(url, "SELECT horse_name, weight FROM horses WHERE id = 2") == [("Ünïcode ☃", 1e300)]
    confidence, features = pg_query(url, "SELECT confidence, features FROM predictions WHERE id = 1")[0]
    assert struct.pack(">d", confidence) == struct.pack(">d", 0.30000000000000004)
    assert features == {"x": 0.1, "big": 123456789012345678}
    assert pg_query(url, "SELECT odds FROM race_horses ORDER BY horse_id") == [(3.25,), (0.1,)]
    assert pg_query(url, "SELECT is_admin, password_hash FROM users") == [(True, "pbkdf2$ann")]


def test_a_long_transaction_on_a_table_keeps_its_indexes_instead_of_stalling_it(seeded, monkeypatch):
    """DROP INDEX would queue every query on the table behind a long reader: the backfill waits
    briefly, then loads that table with its indexes."""
    from hrp_data.backfill import holds as backfill_holds

    path, url = seeded
    monkeypatch.setattr(backfill_holds, "HOLD_LOCK_TIMEOUT_MS", 200)
    reader = psycopg2.connect(libpq(url), options=MAINTENANCE)
    try:
        with reader.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM predictions")  # ACCESS SHARE until the transaction ends
        before = index_names(url, "predictions")
        with structlog.testing.capture_logs() as logs, open_cutover(path, url) as cutover:
            result = run_backfill(cutover, Options(batch_size=300))
        assert result.complete
        assert [e["table"] for e in logs if e["event"] == "backfill.indexes_kept"] == ["predictions"]
        assert any(e["event"] == "backfill.indexes_held" and e["table"] == "race_horses" for e in logs)
        assert index_names(url, "predictions") == before
    finally:
        reader.close()
    assert_equal(path, url)


def test_a_role_that_may_not_hold_foreign_keys_still_quarantines_every_orphan(hostile):
    """Without the right to set session_replication_role, foreign keys are checked row by row: same outcome."""
    path, url = hostile
    role = f"hrp_migrator_{os.getpid()}"
    owner_sql = [f"CREATE ROLE {role} LOGIN", f"GRANT CREATE ON SCHEMA public TO {role}"] + [
        f'ALTER TABLE "{t}" OWNER TO {role}'
        for t in ("users", "races", "horses", "race_horses", "predictions", "api_credentials")
    ]
    for sql in owner_sql:
        pg_query_exec(url, sql)
    migrator = make_url(url).set(username=role).render_as_string(hide_password=False)
    try:
        with structlog.testing.capture_logs() as logs, open_cutover(path, migrator) as cutover:
            result = run_backfill(cutover, Options(batch_size=3))
        assert result.complete
        assert any(e["event"] == "backfill.foreign_keys_checked_per_row" for e in logs)
        assert {key: row["reason"] for key, row in _quarantine_map(url).items()} == HOSTILE
        assert pg_query(url, "SELECT count(*) FROM hrp_cutover_backfill_indexes") == [(0,)]
        assert "ix_predictions_features" in index_names(url, "predictions")
    finally:
        pg_query_exec(url, f"REASSIGN OWNED BY {role} TO CURRENT_USER; DROP OWNED BY {role}; DROP ROLE {role}")


def test_fixed_rows_leave_the_quarantine_on_retry(hostile):
    """The operator fixes rows in SQLite; --retry-quarantined copies them and their waiting children."""
    path, url = hostile
    with open_cutover(path, url) as cutover:
        run_backfill(cutover, Options(batch_size=50))
        with sqlite3.connect(path) as raw:
            raw.execute("UPDATE races SET distance = 1200.5 WHERE id = 17")
            raw.execute("UPDATE users SET username = 'bob' WHERE id = 2")
            raw.execute("DELETE FROM predictions WHERE id = 5")
        result = run_backfill(cutover, Options(batch_size=50, retry_quarantined=True))
    found = _quarantine_map(url)
    gone = {("races", (17,), "distance"), ("users", (2,), "username"), ("race_horses", (17, 1), "race_id"),
            ("predictions", (3,), "race_id"), ("predictions", (4,), "user_id"), ("predictions", (5,), "features")}
    assert set(found) == set(HOSTILE) - gone
    assert pg_query(url, "SELECT distance FROM races WHERE id = 17") == [(1200.5,)]
    assert pg_query(url, "SELECT id FROM predictions ORDER BY id") == [(1,), (3,), (4,)]
    assert result.tables["races"].quarantined == 7 and result.tables["predictions"].quarantined == 1


def test_a_row_refused_by_a_constraint_is_quarantined_with_its_name(legacy_file, postgres_url):
    """A unique value PostgreSQL already holds under another key: the row is quarantined (not the batch)."""
    with sqlite3.connect(legacy_file) as raw:
        raw.executemany("INSERT INTO users (id, username, email, password_hash) VALUES (?, ?, ?, 'h')",
                        [(1, "ann", "ann@x"), (2, "dup", "dup@x"), (3, "cy", "cy@x")])
        raw.execute("INSERT INTO predictions (id, user_id, confidence) VALUES (1, 2, 0.5)")
    upgrade(postgres_url)
    pg_query_exec(postgres_url, "INSERT INTO users (id, username, email, password_hash) VALUES (900, 'dup', 'other@x', 'h')")
    with open_cutover(legacy_file, postgres_url) as cutover:
        result = run_backfill(cutover, Options(batch_size=10))
        found = _quarantine_map(postgres_url)
        assert {k: r["reason"] for k, r in found.items()} == {
            ("users", (2,), "username"): "constraint_violation",
            ("predictions", (1,), "user_id"): "parent_quarantined",
        }
        assert found[("users", (2,), "username")]["value"] == "dup"
        assert (result.tables["users"].copied, result.tables["users"].quarantined) == (2, 1)
        pg_query_exec(postgres_url, "DELETE FROM users WHERE id = 900")
        run_backfill(cutover, Options(batch_size=10, retry_quarantined=True))
        assert _quarantine_map(postgres_url) == {}
    assert_equal(legacy_file, postgres_url)


def test_quarantine_json_shape_from_both_commands(legacy_file, postgres_url):
    with sqlite3.connect(legacy_file) as raw:
        raw.execute("INSERT INTO races (id, race_name, distance) VALUES (16, 'ok', 1000.0)")
        raw.execute("INSERT INTO races (id, race_name, distance) VALUES (17, 'bad', 'N/A')")
    upgrade(postgres_url)
    with open_cutover(legacy_file, postgres_url):
        pass
    runner = CliRunner()
    base = ["--sqlite", str(legacy_file), "--postgres", postgres_url]
    assert runner.invoke(cli, base + ["backfill", "--no-backup"]).exit_code == 0
    expected = {"rows": [{"table": "races", "key": [17], "column": "distance",
                          "reason": "text_in_real_column", "value": "N/A"}]}
    own = runner.invoke(cli, base + ["quarantine", "--format", "json"])
    assert own.exit_code == 0 and json.loads(own.stdout) == {**expected, "live": []}
    report = runner.invoke(cli, base + ["report", "--quarantine", "--format", "json"])
    assert report.exit_code == 0 and json.loads(report.stdout) == {**expected, "live": []}
    text = runner.invoke(cli, base + ["quarantine"])
    assert "races [17] distance: text_in_real_column value 'N/A'" in text.stdout


def test_a_quarantined_secret_shows_one_fingerprint_in_both_commands(legacy_file, postgres_url):
    """`quarantine` and `report --quarantine` show the stored fingerprint, never a fingerprint of it."""
    from shadow.redact import fingerprint

    secret = "ASEC-planted\x00secret"
    with sqlite3.connect(legacy_file) as raw:
        raw.execute("INSERT INTO users (id, username, email, password_hash) VALUES (1, 'u', 'u@x', 'h')")
        raw.execute("INSERT INTO api_credentials (id, user_id, service_name, api_key, api_secret)"
                    " VALUES (1, 1, 'svc', 'AKEY', ?)", (secret,))
    upgrade(postgres_url)
    with open_cutover(legacy_file, postgres_url):
        pass
    runner = CliRunner()
    base = ["--sqlite", str(legacy_file), "--postgres", postgres_url]
    assert runner.invoke(cli, base + ["backfill", "--no-backup"]).exit_code == 0
    shown = fingerprint(secret)
    for command in (["quarantine"], ["report", "--quarantine"]):
        text = runner.invoke(cli, base + command)
        listed = runner.invoke(cli, base + command + ["--format", "json"])
        assert text.exit_code == 0 and listed.exit_code == 0, text.output + listed.output
        assert json.loads(listed.stdout)["rows"] == [{"table": "api_credentials", "key": [1], "column": "api_secret",
                                                      "reason": "nul_byte_in_text", "value": shown}]
        assert shown in text.stdout and "planted" not in text.stdout + listed.stdout


# -- refusals and exit codes -----------------------------------------------------------


def _one_line_error(result, code: int, *needles: str) -> None:
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_cli_refusals_are_one_line_with_exit_codes(seeded, monkeypatch):
    path, url = seeded
    runner = CliRunner()
    base = ["--sqlite", str(path), "--postgres", url, "backfill"]
    with open_cutover(path, url, phase=Phase.SQLITE_ONLY):
        pass
    _one_line_error(runner.invoke(cli, base + ["--no-backup"]), 1,
                    "the phase is sqlite_only", "hrp-cutover phase set dual_write")
    _one_line_error(runner.invoke(cli, base), 1, "no backup of", "run `hrp-cutover backup` first")
    monkeypatch.setenv("HRP_BACKUP_MAX_AGE", "soon")
    _one_line_error(runner.invoke(cli, base), 2, "HRP_BACKUP_MAX_AGE")
    monkeypatch.delenv("HRP_BACKUP_MAX_AGE")
    _one_line_error(runner.invoke(cli, base + ["--no-backup", "--tables", "races,nope"]), 2, "unknown table nope")
    _one_line_error(runner.invoke(cli, ["--sqlite", str(path), "backfill", "--no-backup"]), 2, "HRP_POSTGRES_URL")
    with open_cutover(path, url):
        pass
    _one_line_error(runner.invoke(cli, base + ["--no-backup", "--tables", "predictions"]), 1,
                    "predictions needs its parent table", "--tables")
    assert runner.invoke(cli, ["--sqlite", str(path), "backup"]).exit_code == 0
    done = runner.invoke(cli, base + ["--tables", "users,races,horses"])
    assert done.exit_code == 0, done.output
    assert "NOT COMPLETE" in done.stdout
    with open_cutover(path, url) as cutover:
        move(cutover, Phase.SHADOW)
        move(cutover, Phase.POSTGRES_PRIMARY)
    _one_line_error(runner.invoke(cli, base + ["--no-backup"]), 1, "postgres_primary", "rollback")


def test_readiness_needs_a_complete_backfill_and_an_empty_quarantine(legacy_file, postgres_url):
    from hrp_data.flip.readiness import checklist

    with sqlite3.connect(legacy_file) as raw:
        raw.execute("INSERT INTO races (id, race_name, distance) VALUES (16, 'ok', 1000.0)")
        raw.execute("INSERT INTO races (id, race_name, distance) VALUES (17, 'bad', 'N/A')")
    upgrade(postgres_url)
    with open_cutover(legacy_file, postgres_url) as cutover:
        move(cutover, Phase.SHADOW)

        def checks(**kw) -> dict:
            return {c.name: c for c in checklist(cutover, Phase.POSTGRES_PRIMARY, **kw)}

        before = checks()
        assert not before["backfill"].ok and before["backfill"].detail.endswith("run `hrp-cutover backfill`")
        assert "backfill" not in {c.name for c in checklist(cutover, Phase.DUAL_WRITE)}
        run_backfill(cutover)
        after = checks()
        assert after["backfill"].ok
        assert not after["quarantine"].ok and after["quarantine"].detail.startswith("1 quarantined row(s)")
        assert "fix the rest" in after["quarantine"].detail and "parent_missing" not in after["quarantine"].detail
        assert checks(accept_quarantine=True)["quarantine"].ok

        # a row that waited for a parent on its way has nothing to fix: the check says so apart
        with psycopg2.connect(libpq(postgres_url)) as pg, pg.cursor() as cursor:
            quarantine.record(cursor, "predictions", [Reject((77,), "horse_id", quarantine.PARENT_MISSING, "5")])
        waiting = checks()["quarantine"]
        assert not waiting.ok and waiting.detail.startswith("2 quarantined row(s), 1 of them only because their parent")
        assert "`hrp-cutover backfill --retry-quarantined` carries them; see" in waiting.detail, waiting.detail
        with psycopg2.connect(libpq(postgres_url)) as pg, pg.cursor() as cursor:
            cursor.execute(f"DELETE FROM {quarantine.QUARANTINE} WHERE reason <> %s", (quarantine.PARENT_MISSING,))
        only_waiting = checks()["quarantine"].detail
        assert only_waiting.endswith("carries them") and "fix the rest" not in only_waiting, only_waiting


def test_a_process_with_bounded_calls_is_refused(seeded):
    path, url = seeded
    with assemble.open_cutover(settings_for(path, url)) as cutover:  # installs the wait callback
        move(cutover, Phase.DUAL_WRITE)
        with pytest.raises(BackfillRefused, match="wait callback"):
            run_backfill(cutover)


ODD_RUNNER_KEYS = {  # race_horses keys PostgreSQL's BIGINT columns cannot hold -> reason
    ("abc", 1): ("race_id", "text_in_integer_column"),
    (1.5, 2): ("race_id", "real_in_integer_column"),
    (b"\x00", 3): ("race_id", "blob_in_integer_column"),
    (2, "h"): ("horse_id", "text_in_integer_column"),
    (1e19, 1): ("race_id", "real_in_integer_column"),
}


def test_keys_postgresql_cannot_hold_are_quarantined_verified_and_dropped_when_fixed(seeded):
    """SQLite keeps any storage class in a composite primary key: backfill, re-run, verify and
    retry must name those rows, never crash on ordering or arithmetic across types."""
    path, url = seeded
    with sqlite3.connect(path) as raw:
        raw.executemany("INSERT INTO race_horses (race_id, horse_id, post_position) VALUES (?, ?, 1)",
                        list(ODD_RUNNER_KEYS))
    runner = CliRunner()
    base = ["--sqlite", str(path), "--postgres", url]
    with open_cutover(path, url):
        pass
    for extra in ([], [], ["--restart"]):
        done = runner.invoke(cli, base + ["backfill", "--no-backup", "--json", *extra])
        assert done.exit_code == 0, done.output
    listed = json.loads(runner.invoke(cli, base + ["report", "--quarantine", "--format", "json"]).output)["rows"]
    blob = {"blob": "00"}
    expected = {(json.dumps(key_json), column, reason) for key_json, (column, reason) in zip(
        [["abc", 1], [1.5, 2], [blob, 3], [2, "h"], [{"real": "1e+19"}, 1]], ODD_RUNNER_KEYS.values())}
    assert {(json.dumps(r["key"]), r["column"], r["reason"]) for r in listed} == expected

    checked = runner.invoke(cli, base + ["verify", "--json"])
    assert checked.exit_code == 0, checked.output
    verdict = json.loads(checked.output)
    assert verdict["equal"] and verdict["tables"]["race_horses"]["quarantined"] == len(ODD_RUNNER_KEYS)
    psycopg2.extensions.set_wait_callback(None)  # verify bounds this process's calls; the backfill refuses that

    with sqlite3.connect(path) as raw:  # the operator fixes them: gone from the legacy file
        raw.execute("DELETE FROM race_horses WHERE typeof(race_id) != 'integer' OR typeof(horse_id) != 'integer'")
    done = runner.invoke(cli, base + ["backfill", "--no-backup", "--retry-quarantined"])
    assert done.exit_code == 0, done.output
    assert json.loads(runner.invoke(cli, base + ["report", "--quarantine", "--format", "json"]).output) == {"rows": [], "live": []}
    verdict = json.loads(runner.invoke(cli, base + ["verify", "--json"]).output)
    assert verdict["equal"] and verdict["tables"]["race_horses"]["quarantined"] == 0
    assert_equal(path, url)


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_null_in_keys_and_required_columns_is_quarantined_and_skips_no_row(tmp_path, postgres_url, batch_size):
    """A legacy file made without the NOT NULLs: a NULL in a composite key compares as unknown, so
    a keyset walk that met one would skip the rows after it. Each such row is quarantined with
    its reason, the assessment names it in advance, and every other row arrives."""
    from tests.conftest import LEGACY_SCHEMA

    path = tmp_path / "loose.db"
    with sqlite3.connect(path) as raw:
        raw.executescript(LEGACY_SCHEMA.read_text().replace(" UNIQUE NOT NULL", " UNIQUE").replace(" NOT NULL", ""))
        raw.executemany("INSERT INTO races (id, race_name) VALUES (?, ?)", [(4, "R4"), (5, "R5"), (6, None)])
        raw.executemany("INSERT INTO horses (id, horse_name) VALUES (?, ?)", [(1, "H1"), (2, "H2"), (3, "H3")])
        raw.executemany("INSERT INTO race_horses (race_id, horse_id) VALUES (?, ?)", [
            (4, None), (4, 1), (4, 2), (None, 3), (None, None), (5, None), (5, 1), (5, 2), (5, 3),
        ])
    upgrade(postgres_url)
    report = assess(path, sample_rows=10)
    assert report["tables"]["race_horses"]["rejected_rows"] == 4 and report["tables"]["races"]["rejected_rows"] == 1
    with open_cutover(path, postgres_url) as cutover:
        result = run_backfill(cutover, Options(batch_size=batch_size, workers=0))
    assert result.complete
    assert pg_query(postgres_url, "SELECT race_id, horse_id FROM race_horses ORDER BY 1, 2") == [
        (4, 1), (4, 2), (5, 1), (5, 2), (5, 3)]
    found = {(key, column): row["reason"] for (table, key, column), row in _quarantine_map(postgres_url).items()
             if table in ("race_horses", "races")}
    assert found == {
        ((4, None), "horse_id"): "null_in_required_column", ((None, 3), "race_id"): "null_in_required_column",
        ((None, None), "race_id"): "null_in_required_column", ((None, None), "horse_id"): "null_in_required_column",
        ((5, None), "horse_id"): "null_in_required_column", ((6,), "race_name"): "null_in_required_column",
    }
    assert result.tables["race_horses"].quarantined == 4 and result.tables["race_horses"].copied == 5


@pytest.mark.parametrize("workers", [0, 2])
def test_a_backfill_that_loses_postgresql_says_so_in_one_line_and_resumes(tmp_path, own_postgres, workers):
    """PostgreSQL goes away mid-copy (immediate shutdown): the command ends non-zero with one line
    saying how to resume, no traceback; once the server is back the next run ends equal."""
    path, url = tmp_path / "hrp_database.db", own_postgres.url
    seed_database(path, races=100, seed=11)
    upgrade(url)
    with open_cutover(path, url):
        pass
    process = _start_backfill(path, url, "--batch-size", "40", "--max-rows-per-sec", "2500",
                              "--workers", str(workers))
    _wait_for_batches(process, url, 3)
    own_postgres.stop()
    out, err = process.communicate(timeout=60)
    assert process.returncode not in (0, None)
    assert "Traceback" not in err and "Traceback" not in out, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "hrp-cutover backfill" in errors[0], err[-3000:]
    own_postgres.start()
    with open_cutover(path, url) as cutover:
        assert run_backfill(cutover, Options(batch_size=300)).complete
    assert_equal(path, url)
