"""Moves under failure: a fault at every point of the move protocol, in both directions.

Each run keeps a ledger of acknowledged writes (through the layer and, on the primary, by plain
SQL outside it), leaves changes waiting in the outbox so the move has to drain them inside its
hold, injects the fault, runs what docs/architecture.md tells the operator to run
(`hrp-cutover recover`, `replay`) and then checks: every acknowledged write is in the primary and
the secondary, the triggers match the phase on both sides, and nothing is left in the journal.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from hrp_data.flip import move as flip, journal as move_journal
from hrp_data.cutover import outbox
from hrp_data.cutover.dual_write import Cutover
from hrp_data.cutover.assemble import open_cutover
from hrp_data.flip.move import move
from hrp_data.cutover.phases import PHASES, POSTGRES, SQLITE, Phase
from hrp_data.schema.install import upgrade
from tests.integration.cutover_helpers import assert_equal, settings_for
from tools.cli import cli


class Injected(RuntimeError):
    pass


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def shadow(legacy_file, postgres_url):
    """A cutover in shadow, both sides equal, no background applier (the outbox waits for the move)."""
    upgrade(postgres_url)
    with open_cutover(settings_for(legacy_file, postgres_url)) as cutover:
        move(cutover, Phase.DUAL_WRITE)
        move(cutover, Phase.SHADOW)
        yield cutover
    flip.fault_at = None


class Ledger:
    """Acknowledged writes, by horse name."""

    def __init__(self):
        self.names: list[str] = []

    def through_layer(self, cutover: Cutover, label: str, count: int = 5) -> None:
        for i in range(count):
            with cutover.writing() as uow:
                uow.horses.add(horse_name=f"{label} {i}")
                uow.commit()
            self.names.append(f"{label} {i}")

    def by_plain_sql(self, legacy_file, postgres_url, primary: str, label: str, count: int = 5) -> None:
        """Writes that do not pass through the layer (a cron job, psql): captured by the triggers."""
        names = [f"{label} {i}" for i in range(count)]
        if primary == SQLITE:
            with sqlite3.connect(legacy_file) as raw:
                raw.executemany("INSERT INTO horses (horse_name) VALUES (?)", [(n,) for n in names])
        else:
            with psycopg2.connect(_libpq(postgres_url)) as raw, raw.cursor() as cursor:
                cursor.executemany("INSERT INTO horses (horse_name) VALUES (%s)", [(n,) for n in names])
        self.names += names

    def assert_everywhere(self, legacy_file, postgres_url) -> None:
        with sqlite3.connect(legacy_file) as raw:
            in_sqlite = {r[0] for r in raw.execute("SELECT horse_name FROM horses")}
        with psycopg2.connect(_libpq(postgres_url)) as raw, raw.cursor() as cursor:
            cursor.execute("SELECT horse_name FROM horses")
            in_postgres = {r[0] for r in cursor.fetchall()}
        assert not set(self.names) - in_sqlite, sorted(set(self.names) - in_sqlite)[:5]
        assert not set(self.names) - in_postgres, sorted(set(self.names) - in_postgres)[:5]


def _prepare(cutover, legacy_file, postgres_url, direction: str) -> tuple[Ledger, Phase, Phase]:
    ledger = Ledger()
    if direction == "rollback":
        move(cutover, Phase.POSTGRES_PRIMARY)
    source = cutover.phase(fresh=True).phase
    ledger.through_layer(cutover, "layer")
    ledger.by_plain_sql(legacy_file, postgres_url, PHASES[source].primary, "outside")
    assert outbox.depth(cutover.engine(PHASES[source].primary)).pending >= 10
    target = Phase.POSTGRES_PRIMARY if direction == "flip" else Phase.SHADOW
    return ledger, source, target


def _cli(legacy_file, postgres_url, *args):
    return CliRunner().invoke(
        cli, ["--sqlite", f"sqlite:///{legacy_file}", "--postgres", postgres_url, *args], catch_exceptions=False
    )


def _assert_consistent(cutover, legacy_file, postgres_url, ledger: Ledger, expected: Phase) -> None:
    """The documented recovery, then: phase, triggers, journal, every write on both sides, equal."""
    recovered = _cli(legacy_file, postgres_url, "recover")
    assert recovered.exit_code == 0, recovered.output
    assert cutover.phase(fresh=True).phase is expected
    assert move_journal.current(cutover.sqlite) is None
    row = PHASES[expected]
    with cutover.sqlite.connect() as connection:
        assert outbox.triggers(connection, cutover.catalog) == row.triggers_on(SQLITE)
    with cutover.postgres.connect() as connection:
        assert outbox.triggers(connection, cutover.catalog) == row.triggers_on(POSTGRES)
    replayed = _cli(legacy_file, postgres_url, "replay")
    assert replayed.exit_code == 0, replayed.output
    ledger.assert_everywhere(legacy_file, postgres_url)
    assert_equal(legacy_file, postgres_url)
    # and the cutover still works: one more write reaches the other side
    ledger.through_layer(cutover, "after", 1)
    assert _cli(legacy_file, postgres_url, "replay").exit_code == 0
    ledger.assert_everywhere(legacy_file, postgres_url)


COMMITTED_AT = flip.FAULT_POINTS.index("phase_committed")


@pytest.mark.parametrize("direction", ["flip", "rollback"])
@pytest.mark.parametrize("point", flip.FAULT_POINTS)
def test_an_exception_at_each_point_of_a_move_loses_nothing(shadow, legacy_file, postgres_url, point, direction):
    cutover = shadow
    ledger, source, target = _prepare(cutover, legacy_file, postgres_url, direction)

    def fault(at: str) -> None:
        if at == point:
            raise Injected(point)

    flip.fault_at = fault
    after_commit = flip.FAULT_POINTS.index(point) >= COMMITTED_AT
    if after_commit:
        move(cutover, target, pre_drain_s=0)  # the phase changed; the rest is finished later
        assert move_journal.current(cutover.sqlite) is not None
    else:
        with pytest.raises(Injected):
            move(cutover, target, pre_drain_s=0)
        assert move_journal.current(cutover.sqlite) is None, "a failed move undoes itself at once"
    flip.fault_at = None
    _assert_consistent(cutover, legacy_file, postgres_url, ledger, target if after_commit else source)


@pytest.mark.parametrize("fails", [False, True], ids=["moves", "fails_after_the_hold_drained"])
def test_changes_written_while_the_mover_holds_the_phase_lock_are_drained_before_the_hold(
    shadow, legacy_file, postgres_url, fails
):
    """Writers on SQLite do not wait for the phase lock; the appliers do. What they write between
    the pre-drain and the hold is drained by the mover before it takes SQLite's write lock, so the
    hold (where every writer on SQLite waits) drains only what is left; and a move that fails
    after that drain has committed changes in PostgreSQL loses nothing."""
    cutover = shadow
    ledger = Ledger()

    def fault(at: str) -> None:
        if at == "journal_started":  # the phase lock is held, the appliers wait, writers go on
            ledger.by_plain_sql(legacy_file, postgres_url, SQLITE, "during the move", count=300)
        if at == "drained" and fails:
            raise Injected(at)

    flip.fault_at = fault
    if fails:
        with pytest.raises(Injected):
            move(cutover, Phase.POSTGRES_PRIMARY)
    else:
        result = move(cutover, Phase.POSTGRES_PRIMARY)
        assert result.drained <= flip.HOLD_DRAIN_TARGET, f"{result.drained} changes drained inside the hold"
    flip.fault_at = None
    _assert_consistent(
        cutover, legacy_file, postgres_url, ledger, Phase.SHADOW if fails else Phase.POSTGRES_PRIMARY
    )


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from hrp_data.flip import move as flip
    from hrp_data.cutover.dual_write import Cutover
    from hrp_data.cutover.assemble import open_cutover
    from hrp_data.cutover.phases import Phase
    from hrp_data.settings import Settings

    point, target = sys.argv[1], Phase(sys.argv[2])
    flip.fault_at = lambda at: os.kill(os.getpid(), signal.SIGKILL) if at == point else None
    settings = Settings(sqlite_url=sys.argv[3], postgres_url=sys.argv[4], phase="sqlite_only").validated()
    with open_cutover(settings) as cutover:
        flip.move(cutover, target, pre_drain_s=0)
    """
)


@pytest.mark.parametrize("direction", ["flip", "rollback"])
@pytest.mark.parametrize("point", flip.FAULT_POINTS)
def test_a_mover_sigkilled_at_each_point_is_finished_by_the_next_command(
    shadow, legacy_file, postgres_url, point, direction
):
    cutover = shadow
    ledger, source, target = _prepare(cutover, legacy_file, postgres_url, direction)
    done = subprocess.run(
        [sys.executable, "-c", KILLER, point, target.value, f"sqlite:///{legacy_file}", postgres_url],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert move_journal.current(cutover.sqlite) is not None
    after_commit = flip.FAULT_POINTS.index(point) >= COMMITTED_AT
    _assert_consistent(cutover, legacy_file, postgres_url, ledger, target if after_commit else source)


def test_the_applier_finishes_a_killed_move_within_seconds(shadow, legacy_file, postgres_url):
    """No operator at all: a running app process's applier finishes the move its mover left."""
    cutover = shadow
    ledger, source, target = _prepare(cutover, legacy_file, postgres_url, "flip")
    done = subprocess.run(
        [sys.executable, "-c", KILLER, "phase_committed", target.value, f"sqlite:///{legacy_file}", postgres_url],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == -signal.SIGKILL
    with open_cutover(settings_for(legacy_file, postgres_url)).start() as app:
        deadline = time.monotonic() + 10
        while move_journal.current(app.sqlite) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert move_journal.current(app.sqlite) is None
        with app.postgres.connect() as connection:
            assert outbox.triggers(connection, app.catalog) == PHASES[target].triggers_on(POSTGRES)
    _assert_consistent(cutover, legacy_file, postgres_url, ledger, target)


def test_a_rollback_beside_a_long_reader_neither_fails_nor_blocks_reads(shadow, legacy_file, postgres_url):
    """Scenario 1a of the issue: a reader holds api_credentials open for seconds during the rollback."""
    cutover = shadow
    ledger, source, target = _prepare(cutover, legacy_file, postgres_url, "rollback")
    reader = psycopg2.connect(_libpq(postgres_url))
    reader_cursor = reader.cursor()
    reader_cursor.execute("SELECT count(*) FROM api_credentials")  # holds ACCESS SHARE until it ends
    blocked: list[float] = []

    def read_while_moving():
        with psycopg2.connect(_libpq(postgres_url)) as other, other.cursor() as cursor:
            for _ in range(20):
                started = time.monotonic()
                cursor.execute("SELECT count(*) FROM api_credentials")
                blocked.append(time.monotonic() - started)
                time.sleep(0.02)

    thread = threading.Thread(target=read_while_moving)
    thread.start()
    try:
        move(cutover, target, pre_drain_s=0)
    finally:
        thread.join()
        reader.rollback()
        reader.close()
    assert max(blocked) < 1.0, "readers were queued behind the move's lock request"
    _assert_consistent(cutover, legacy_file, postgres_url, ledger, target)


def test_a_writer_holding_a_row_lock_fails_the_move_cleanly(shadow, legacy_file, postgres_url):
    """A move that cannot take its trigger lock in time is undone, releasing every lock it took."""
    cutover = shadow
    ledger, source, target = _prepare(cutover, legacy_file, postgres_url, "rollback")
    writer = psycopg2.connect(_libpq(postgres_url))
    writer.cursor().execute("INSERT INTO horses (horse_name) VALUES ('open writer')")  # not committed
    try:
        with pytest.raises(Exception):
            move(cutover, target, pre_drain_s=0)
        assert cutover.phase(fresh=True).phase is source
        with psycopg2.connect(_libpq(postgres_url)) as check, check.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE a.application_name = 'hrp-cutover' AND NOT l.granted"
            )
            assert cursor.fetchone()[0] == 0, "a lock request of the failed move is still queued"
    finally:
        writer.commit()
        writer.close()
    ledger.names.append("open writer")
    _assert_consistent(cutover, legacy_file, postgres_url, ledger, source)


def test_the_guard_refuses_writes_to_the_secondary_and_moves_with_the_phase(shadow, legacy_file, postgres_url):
    cutover = shadow
    Ledger().through_layer(cutover, "present", 3)
    with psycopg2.connect(_libpq(postgres_url)) as raw, raw.cursor() as cursor:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="hrp-cutover guard"):
            cursor.execute("INSERT INTO horses (horse_name) VALUES ('sneaked into postgres')")
    with cutover.postgres.connect() as connection:
        from adapters.postgres import guard_refusals

        assert guard_refusals(connection) >= 1
    move(cutover, Phase.POSTGRES_PRIMARY)
    with sqlite3.connect(legacy_file) as raw:
        before = raw.execute("SELECT count(*) FROM horses").fetchone()[0]
        with pytest.raises(sqlite3.IntegrityError, match="hrp-cutover guard"):
            raw.execute("INSERT INTO horses (horse_name) VALUES ('sneaked into sqlite')")
        with pytest.raises(sqlite3.IntegrityError, match="hrp-cutover guard"):
            raw.execute("UPDATE horses SET horse_name = 'changed behind the layer'")
        assert raw.execute("SELECT count(*) FROM horses").fetchone()[0] == before
    with sqlite3.connect(legacy_file) as raw:  # the documented maintenance bypass
        raw.execute("ATTACH ':memory:' AS hrp_cutover_layer")
        raw.execute("UPDATE horses SET age = age WHERE id = -1")
    with psycopg2.connect(_libpq(postgres_url)) as raw, raw.cursor() as cursor:  # primary: open
        cursor.execute("INSERT INTO horses (horse_name) VALUES ('psql on the primary')")
    status = _cli(legacy_file, postgres_url, "status")
    assert "guard      on sqlite" in status.output
    move(cutover, Phase.SHADOW)
    with psycopg2.connect(_libpq(postgres_url)) as raw, raw.cursor() as cursor:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="hrp-cutover guard"):
            cursor.execute("DELETE FROM horses")
    with sqlite3.connect(legacy_file) as raw:
        raw.execute("INSERT INTO horses (horse_name) VALUES ('sqlite is primary again')")


def test_evidence_from_before_a_failed_move_does_not_count(shadow, legacy_file, postgres_url):
    from hrp_data.flip.readiness import checklist
    from hrp_data.verify.run import verify

    cutover = shadow
    backfill = subprocess.run(  # in its own process: COPY cannot run under this one's call bounds
        [str(Path(sys.executable).parent / "hrp-cutover"), "--sqlite", f"sqlite:///{legacy_file}", "--postgres", postgres_url,
         "backfill", "--no-backup"], capture_output=True, text=True, timeout=300,
    )
    assert backfill.returncode == 0, backfill.stderr[-2000:]
    assert verify(cutover).equal
    check = {c.name: c for c in checklist(cutover, Phase.POSTGRES_PRIMARY)}
    assert check["verify"].ok and check["backfill"].ok

    def fault(at: str) -> None:
        if at == "drained":
            raise Injected(at)

    flip.fault_at = fault
    with pytest.raises(Injected):
        move(cutover, Phase.POSTGRES_PRIMARY)
    flip.fault_at = None
    check = {c.name: c for c in checklist(cutover, Phase.POSTGRES_PRIMARY)}
    assert not check["verify"].ok and "failed" in check["verify"].detail
    assert not check["backfill"].ok and "verify --repair" in check["backfill"].detail
    assert verify(cutover, ["horses"]).equal  # a partial verify is no proof for the whole copy
    check = {c.name: c for c in checklist(cutover, Phase.POSTGRES_PRIMARY)}
    assert not check["verify"].ok and not check["backfill"].ok
    assert verify(cutover).equal  # the documented recovery: a full verify, equal, counts for both
    check = {c.name: c for c in checklist(cutover, Phase.POSTGRES_PRIMARY)}
    assert check["verify"].ok and check["backfill"].ok, (check["verify"], check["backfill"])


def _backfill(legacy_file, postgres_url) -> subprocess.CompletedProcess:
    result = subprocess.run(  # in its own process: COPY cannot run under this one's call bounds
        [str(Path(sys.executable).parent / "hrp-cutover"), "--sqlite", f"sqlite:///{legacy_file}", "--postgres",
         postgres_url, "backfill", "--no-backup"], capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_a_backfill_after_capture_stopped_copies_again(shadow, legacy_file, postgres_url):
    """shadow -> dual_write -> sqlite_only (writes the secondary never sees) -> dual_write -> backfill:
    the second backfill must copy again, not resume past tables its checkpoints call done and then
    vouch for a copy that lacks those writes."""
    from hrp_data.flip.readiness import checklist

    cutover = shadow
    _backfill(legacy_file, postgres_url)
    move(cutover, Phase.DUAL_WRITE)
    move(cutover, Phase.SQLITE_ONLY)
    ledger = Ledger()
    ledger.through_layer(cutover, "while capture was off")
    move(cutover, Phase.DUAL_WRITE)
    check = {c.name: c for c in checklist(cutover, Phase.SHADOW)}
    second = _backfill(legacy_file, postgres_url)
    assert "backfill.copying_again" in second.stderr, second.stderr[-2000:]
    move(cutover, Phase.SHADOW)
    ledger.assert_everywhere(legacy_file, postgres_url)
    check = {c.name: c for c in checklist(cutover, Phase.POSTGRES_PRIMARY)}
    assert check["backfill"].ok, check["backfill"]
    assert "None" not in check["backfill"].detail
    _backfill(legacy_file, postgres_url)  # a third run, with nothing reset since, resumes: copies nothing
    assert {c.name: c for c in checklist(cutover, Phase.POSTGRES_PRIMARY)}["backfill"].ok


def test_repair_is_refused_in_sqlite_only(legacy_file, postgres_url):
    upgrade(postgres_url)
    with open_cutover(settings_for(legacy_file, postgres_url)):
        pass
    result = _cli(legacy_file, postgres_url, "verify", "--repair")
    assert result.exit_code != 0
    assert "repair needs a phase with a secondary" in result.output


def test_looking_for_an_interrupted_move_leaves_no_setting_on_pooled_connections(shadow, legacy_file, postgres_url):
    """The applier looks every second while a move is in flight; the short lock timeout it uses must end
    with its transaction, or the app's next write on that pooled connection times out on any lock."""
    import sqlalchemy as sa

    cutover = shadow
    move_journal.begin(cutover.sqlite, Phase.SHADOW, Phase.POSTGRES_PRIMARY)
    mover = psycopg2.connect(_libpq(postgres_url))
    engine = sa.create_engine(postgres_url, pool_size=1, max_overflow=0)
    try:
        with mover.cursor() as cursor:  # a live mover holds the phase lock
            cursor.execute("SELECT pg_advisory_lock(%s)", (flip.PHASE_LOCK,))
        with pytest.raises(move_journal.MoveInProgress):
            move_journal.finish(cutover.sqlite, engine, cutover.phases, cutover.catalog, wait=False)
        with engine.connect() as connection:  # the one pooled connection
            assert connection.exec_driver_sql("SHOW lock_timeout").scalar() == "0"
    finally:
        mover.close()
        engine.dispose()
        move_journal.clear(cutover.sqlite)


class Writer:
    """Writes through the layer in a thread for as long as a move runs; a write counts as
    acknowledged only when its commit returned (a failed write is the app's 503, not a loss)."""

    def __init__(self, cutover: Cutover, ledger: Ledger, label: str):
        self.cutover, self.ledger, self.label = cutover, ledger, label
        self.stop = threading.Event()
        self.failed = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            name = f"{self.label} {n}"
            n += 1
            try:
                with self.cutover.writing() as uow:
                    uow.horses.add(horse_name=name)
                    uow.commit()
            except Exception:
                self.failed += 1
                time.sleep(0.01)
                continue
            self.ledger.names.append(name)
            time.sleep(0.005)

    def __enter__(self) -> "Writer":
        self.thread.start()
        time.sleep(0.1)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()


@pytest.fixture
def shadow_on_own_server(legacy_file, own_postgres):
    """`shadow`, on a PostgreSQL server this test may stop."""
    upgrade(own_postgres.url)
    with open_cutover(settings_for(legacy_file, own_postgres.url)) as cutover:
        move(cutover, Phase.DUAL_WRITE)
        move(cutover, Phase.SHADOW)
        yield cutover
    flip.fault_at = None


@pytest.mark.parametrize("direction", ["flip", "rollback"])
@pytest.mark.parametrize("point", flip.FAULT_POINTS)
def test_postgres_stopping_at_each_point_of_a_move_under_writes_loses_nothing(
    shadow_on_own_server, legacy_file, own_postgres, point, direction
):
    """Scenario 1d of the issue: PostgreSQL dies (immediate shutdown) inside the move while the app
    writes. Once it is back, the documented recovery leaves every acknowledged write on both sides."""
    cutover, url = shadow_on_own_server, own_postgres.url
    ledger, source, target = _prepare(cutover, legacy_file, url, direction)

    def fault(at: str) -> None:
        if at == point:
            own_postgres.stop()

    flip.fault_at = fault
    with Writer(cutover, ledger, f"during {point}"):
        try:
            move(cutover, target, pre_drain_s=0)
        except Exception:  # the move failed, or its completion was deferred: both are recoverable
            pass
        flip.fault_at = None
        time.sleep(0.3)  # writes go on against the outage (to SQLite while it is the primary)
        own_postgres.start()
        time.sleep(0.3)
    cutover.postgres.dispose()
    phase = cutover.phase(fresh=True).phase
    assert phase in (source, target)  # the phase lives in the file: its commit needs no PostgreSQL
    _assert_consistent(cutover, legacy_file, url, ledger, phase)


def test_a_change_that_does_not_apply_refuses_the_flip_and_moving_again_after_the_fix_loses_nothing(
    shadow, legacy_file, postgres_url
):
    """Scenario 1c: one captured change cannot be written to PostgreSQL (a NUL byte, which PostgreSQL
    text cannot hold). The flip is refused naming it; writes go on; the operator fixes the row as the
    message says and moves again: every acknowledged write is on both sides."""
    from hrp_data.flip.move import DrainFailed

    cutover = shadow
    ledger, source, target = _prepare(cutover, legacy_file, postgres_url, "flip")
    with sqlite3.connect(legacy_file) as raw:
        bad = raw.execute("INSERT INTO horses (horse_name) VALUES (?)", ("nul\x00byte",)).lastrowid
    with Writer(cutover, ledger, "around the refusal"):
        with pytest.raises(DrainFailed) as refused:
            move(cutover, target, pre_drain_s=0)
        assert f"horses [{bad}]" in str(refused.value) and "move again" in str(refused.value)
        assert cutover.phase(fresh=True).phase is source
        with sqlite3.connect(legacy_file) as raw:
            raw.execute("UPDATE horses SET horse_name = 'nul byte fixed' WHERE id = ?", (bad,))
        ledger.names.append("nul byte fixed")
        move(cutover, target, pre_drain_s=0)
    _assert_consistent(cutover, legacy_file, postgres_url, ledger, target)


@pytest.fixture
def shadow_on_small_disk(tmp_path, postgres_url):
    """`shadow`, with the SQLite file on a disk this test may fill."""
    from tests.conftest import create_legacy_file
    from tests.disk import FullDisk

    disk = FullDisk(tmp_path / "disk", size_mb=64)
    path = disk.directory / "hrp_database.db"
    create_legacy_file(path)
    upgrade(postgres_url)
    try:
        with open_cutover(settings_for(path, postgres_url)) as cutover:
            move(cutover, Phase.DUAL_WRITE)
            move(cutover, Phase.SHADOW)
            yield cutover, path, disk
    finally:
        flip.fault_at = None
        disk.close()


@pytest.mark.parametrize("direction", ["flip", "rollback"])
@pytest.mark.parametrize("point", flip.FAULT_POINTS)
def test_the_sqlite_disk_filling_at_each_point_of_a_move_under_writes_loses_nothing(
    shadow_on_small_disk, postgres_url, point, direction
):
    """Scenario 1e: the disk under the SQLite file fills inside the move while the app writes (in the
    rollback direction the issue saw 630 drained changes vanish). Once space is back, the documented
    recovery leaves every acknowledged write on both sides."""
    cutover, path, disk = shadow_on_small_disk
    ledger, source, target = _prepare(cutover, path, postgres_url, direction)

    def fault(at: str) -> None:
        if at == point:
            disk.fill()

    flip.fault_at = fault
    with Writer(cutover, ledger, f"during {point}"):
        try:
            move(cutover, target, pre_drain_s=0)
        except Exception:
            pass
        flip.fault_at = None
        time.sleep(0.3)
        disk.free()
        time.sleep(0.3)
    phase = cutover.phase(fresh=True).phase
    assert phase in (source, target)
    _assert_consistent(cutover, path, postgres_url, ledger, phase)


def test_a_change_that_does_not_apply_refuses_the_rollback_and_moving_again_after_the_fix_loses_nothing(
    tmp_path, postgres_url
):
    """Scenario 1c, rollback direction: after the flip a write on PostgreSQL puts into a NUMERIC
    column a decimal SQLite cannot hold exactly (SQLite would keep the nearest double). The rollback
    is refused naming the key, the phase stays postgres_primary, the other writes made meanwhile
    wait in the outbox; after the fix the message asks for, the rollback carries every one of them."""
    from tests.integration.test_any_schema import _plain_sqlite

    def _cli(*args):  # each command as its own process runs it (the backfill's COPY needs no wait callback)
        psycopg2.extensions.set_wait_callback(None)
        return CliRunner().invoke(cli, ["--sqlite", f"sqlite:///{path}", "--postgres", postgres_url, *args])

    path = tmp_path / "app.db"
    _plain_sqlite(path, "CREATE TABLE orders (id INTEGER PRIMARY KEY, freight NUMERIC, note TEXT);"
                        "INSERT INTO orders VALUES (1, 32.38, 'a'), (2, 11.61, 'b');")
    for step in (("schema",), ("phase", "set", "dual_write"), ("backfill", "--no-backup"), ("verify",),
                 ("phase", "set", "shadow"), ("flip",)):
        done = _cli(*step)
        assert done.exit_code == 0, (step, done.output)
    with psycopg2.connect(_libpq(postgres_url)) as pg, pg.cursor() as cursor:
        cursor.execute("INSERT INTO orders (id, freight, note) SELECT n, n * 1.25, 'before' FROM generate_series(10, 29) n")
        cursor.execute("UPDATE orders SET freight = %s WHERE id = 1", ("58.170000000000000001",))
        cursor.execute("UPDATE orders SET note = 'changed' WHERE id = 2")
    refused = _cli("rollback")
    assert refused.exit_code != 0, refused.output
    assert "orders [1]" in refused.output and "numeric_out_of_range" in refused.output, refused.output
    assert "Traceback" not in refused.output
    status = _cli("status", "--json").output
    assert '"postgres_primary"' in status
    with sqlite3.connect(path) as raw:  # nothing of the refused move reached the file
        assert raw.execute("SELECT count(*) FROM orders").fetchone()[0] == 2
    with psycopg2.connect(_libpq(postgres_url)) as pg, pg.cursor() as cursor:
        cursor.execute("INSERT INTO orders (id, freight, note) SELECT n, n * 0.5, 'after' FROM generate_series(30, 39) n")
        cursor.execute("UPDATE orders SET freight = 58.17 WHERE id = 1")  # the fix
        cursor.execute("SELECT count(*) FROM hrp_cutover_outbox")
        assert cursor.fetchone()[0] >= 32  # every change still waits: none was settled by the refusal
    verified = _cli("verify")  # the failed move reset the evidence: the refusal says to verify again
    assert verified.exit_code == 0, verified.output
    done = _cli("rollback")
    assert done.exit_code == 0, done.output
    with sqlite3.connect(path) as raw:
        rows = dict(raw.execute("SELECT id, freight FROM orders").fetchall())
        notes = dict(raw.execute("SELECT id, note FROM orders").fetchall())
    assert len(rows) == 32 and rows[1] == 58.17 and notes[2] == "changed"
    assert rows[10] == 12.5 and rows[39] == 19.5 and notes[39] == "after"
    verified = _cli("verify")
    assert verified.exit_code == 0, verified.output
