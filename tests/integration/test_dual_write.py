"""Dual-write: phases, outbox capture, applier, convergence, flip and rollback."""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import sqlite3
import subprocess
import threading
import time

import pytest

from hrp_data.cutover import outbox
from hrp_data.cutover.assemble import open_cutover
from hrp_data.flip.move import move
from hrp_data.cutover.phases import MoveRefused, Phase
from hrp_data.schema.install import upgrade
from tests.integration.cutover_helpers import assert_equal, settings_for, wait_drained


@pytest.fixture
def cutover(legacy_file, postgres_url):
    upgrade(postgres_url)
    with open_cutover(settings_for(legacy_file, postgres_url)).start() as cutover:
        yield cutover


def _add_world(cutover, races=3):
    with cutover.writing() as uow:
        user = uow.users.add(username=f"u{random.random()}", email=f"{random.random()}@x", password_hash="h")
        horses = [uow.horses.add(horse_name=f"H{i}") for i in range(3)]
        made = []
        for i in range(races):
            race = uow.races.add(race_name=f"R{i}", race_date=dt.date(2025, 3, 1), distance=1000.5,
                                 weather_conditions={"wind": "N"})
            for horse in horses:
                uow.races.set_runner(race["id"], horse["id"], post_position=1, odds=3.25)
                uow.predictions.add(race_id=race["id"], horse_id=horse["id"], user_id=user["id"],
                                    confidence=0.5, features={"a": 1})
            made.append(race)
        uow.commit()
    return made


def test_sqlite_only_writes_nothing_to_the_outbox(cutover, legacy_file, postgres_url):
    _add_world(cutover)
    assert outbox.depth(cutover.sqlite).pending == 0


def test_dual_write_carries_every_write_to_postgres(cutover, legacy_file, postgres_url):
    move(cutover, Phase.DUAL_WRITE)
    races = _add_world(cutover)
    with cutover.writing() as uow:
        uow.races.update(races[0]["id"], status="finished", distance=1234.5)
        uow.races.delete(races[1]["id"])
        uow.commit()
    wait_drained(cutover)
    assert_equal(legacy_file, postgres_url)


def test_a_write_with_the_sqlite3_shell_reaches_postgres(cutover, legacy_file, postgres_url):
    move(cutover, Phase.DUAL_WRITE)
    subprocess.run(
        ["sqlite3", str(legacy_file)],
        input=".timeout 5000\nINSERT INTO horses (horse_name, age, weight) VALUES ('Shell Horse', 4, 480.5);",
        text=True, check=True,
    )
    wait_drained(cutover)
    assert_equal(legacy_file, postgres_url)
    with cutover.engine("postgres").connect() as connection:
        assert connection.exec_driver_sql("SELECT horse_name FROM horses").scalar() == "Shell Horse"


def test_moves_other_than_one_step_are_refused(cutover):
    with pytest.raises(MoveRefused, match="allowed from sqlite_only: dual_write"):
        move(cutover, Phase.POSTGRES_PRIMARY)


def test_concurrent_writers_on_overlapping_rows_converge(cutover, legacy_file, postgres_url):
    move(cutover, Phase.DUAL_WRITE)
    races = _add_world(cutover, races=5)
    ids = [r["id"] for r in races]
    errors = []

    def writer(seed):
        rng = random.Random(seed)
        try:
            for _ in range(40):
                with cutover.writing() as uow:
                    race_id = rng.choice(ids)
                    action = rng.random()
                    if action < 0.6:
                        uow.races.update(race_id, distance=rng.random() * 3000, status=rng.choice("abc"))
                    elif action < 0.8:
                        new = uow.races.add(race_name=f"w{seed}", distance=rng.random())
                        ids.append(new["id"])
                    else:
                        uow.races.delete(race_id)
                    uow.commit()
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    wait_drained(cutover)
    assert_equal(legacy_file, postgres_url)


def _rollback_writes_a_fresh_id(cutover, legacy_file, postgres_url, above: int) -> None:
    """Roll back to shadow: SQLite's next id is above `above`, and both sides end equal."""
    move(cutover, Phase.SHADOW)
    with cutover.writing() as uow:
        again = uow.races.add(race_name="after rollback")
        uow.commit()
    assert again["id"] > above
    wait_drained(cutover)
    assert_equal(legacy_file, postgres_url)


def test_flip_and_rollback_keep_both_sides_equal_and_ids_fresh(cutover, legacy_file, postgres_url):
    move(cutover, Phase.DUAL_WRITE)
    _add_world(cutover)
    move(cutover, Phase.SHADOW)
    flipped = move(cutover, Phase.POSTGRES_PRIMARY)
    assert flipped.hold_ms >= 0
    with cutover.writing() as uow:
        fresh = uow.races.add(race_name="after flip")
        uow.commit()
    with sqlite3.connect(legacy_file) as raw:
        assert fresh["id"] > raw.execute("SELECT max(id) FROM races WHERE race_name != 'after flip'").fetchone()[0]
    wait_drained(cutover)
    assert_equal(legacy_file, postgres_url)
    _rollback_writes_a_fresh_id(cutover, legacy_file, postgres_url, above=fresh["id"])


def test_ids_of_deleted_rows_are_never_handed_out_again_across_flip_and_rollback(cutover, legacy_file, postgres_url):
    """AUTOINCREMENT never reuses the id of a deleted row; neither may the other database after a move."""
    move(cutover, Phase.DUAL_WRITE)
    with cutover.writing() as uow:
        races = [uow.races.add(race_name=f"R{i}") for i in range(5)]
        uow.commit()
    with cutover.writing() as uow:  # the newest two go: SQLite's sqlite_sequence keeps their ids
        for race in races[3:]:
            uow.races.delete(race["id"])
        uow.commit()
    wait_drained(cutover)
    move(cutover, Phase.SHADOW)
    move(cutover, Phase.POSTGRES_PRIMARY)
    with cutover.writing() as uow:
        fresh = uow.races.add(race_name="after flip")
        uow.commit()
    assert fresh["id"] > races[-1]["id"]
    with cutover.writing() as uow:
        uow.races.delete(fresh["id"])
        uow.commit()
    wait_drained(cutover)
    _rollback_writes_a_fresh_id(cutover, legacy_file, postgres_url, above=fresh["id"])


def test_a_child_written_before_its_parent_arrives_waits_in_the_outbox(cutover, legacy_file, postgres_url):
    """dual_write before the backfill: the race is only in SQLite, the new prediction waits, then lands."""
    with cutover.writing() as uow:  # sqlite_only: an old race PostgreSQL has never seen
        race = uow.races.add(race_name="old race")
        horse = uow.horses.add(horse_name="old horse")
        uow.commit()
    move(cutover, Phase.DUAL_WRITE)
    cutover.applier.stop()
    with cutover.writing() as uow:
        prediction = uow.predictions.add(race_id=race["id"], horse_id=horse["id"], confidence=0.7)
        uow.commit()
    from hrp_data.cutover.replay import replay_outbox

    waiting = replay_outbox(cutover)
    assert waiting.remaining == 1 and "waiting for its parent" in waiting.last_error
    with sqlite3.connect(legacy_file) as raw:  # the parents change: their outbox entries carry them over
        raw.execute("UPDATE races SET race_name = race_name WHERE id = ?", (race["id"],))
        raw.execute("UPDATE horses SET horse_name = horse_name WHERE id = ?", (horse["id"],))
    done = replay_outbox(cutover)
    assert done.remaining == 0, done
    with cutover.engine("postgres").connect() as connection:
        assert connection.exec_driver_sql(
            f"SELECT confidence FROM predictions WHERE id = {prediction['id']}"
        ).scalar() == 0.7


def test_two_operators_cannot_both_win(cutover):
    from hrp_data.cutover.phase_store import PhaseConflict

    stale = cutover.phase(fresh=True)
    move(cutover, Phase.DUAL_WRITE)
    with cutover.sqlite.begin() as connection, pytest.raises(PhaseConflict, match="the phase changed meanwhile"):
        cutover.phases.compare_and_set(connection, stale, Phase.DUAL_WRITE)
    history = cutover.phases.history()
    assert [h["to_phase"] for h in history] == ["dual_write", "sqlite_only"]


def test_another_process_notices_a_flip_within_a_second(cutover, legacy_file, postgres_url):
    with open_cutover(settings_for(legacy_file, postgres_url)) as other:
        assert other.phase().phase is Phase.SQLITE_ONLY
        move(cutover, Phase.DUAL_WRITE)
        time.sleep(1.0)
        assert other.phase().phase is Phase.DUAL_WRITE


def test_flip_under_steady_writes_fails_and_loses_nothing(cutover, legacy_file, postgres_url):
    move(cutover, Phase.DUAL_WRITE)
    _add_world(cutover)
    move(cutover, Phase.SHADOW)
    stop, errors, written = threading.Event(), [], []

    def writer():
        while not stop.is_set():
            try:
                with cutover.writing() as uow:
                    written.append(uow.horses.add(horse_name="steady")["id"])
                    uow.commit()
            except Exception as error:  # asserted below
                errors.append(error)

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        holds = [move(cutover, target).hold_ms for target in (Phase.POSTGRES_PRIMARY, Phase.SHADOW, Phase.POSTGRES_PRIMARY)]
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert len(set(written)) == len(written), "every insert got a fresh id"
    assert all(hold >= 0 for hold in holds)
    wait_drained(cutover)
    assert_equal(legacy_file, postgres_url)
    with cutover.engine("postgres").connect() as connection:
        stored = set(connection.exec_driver_sql("SELECT id FROM horses WHERE horse_name = 'steady'").scalars())
    assert stored == set(written)


@contextlib.contextmanager
def _steady_horse_writes(cutover):
    """dual_write, and a thread adding horses without pause for the block's length (after a second,
    so the applier keeps finding new changes)."""
    move(cutover, Phase.DUAL_WRITE)
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            with cutover.writing() as uow:
                uow.horses.add(horse_name=f"steady {random.random()}")
                uow.commit()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(1.0)
        yield
    finally:
        stop.set()
        thread.join()


def test_the_applier_reports_while_a_steady_load_keeps_it_draining(cutover, legacy_file, postgres_url):
    """Each worker's heartbeat (status, dashboard) stays fresh, with the phase it sees, under writes."""
    from hrp_data.cutover import heartbeat

    with _steady_horse_writes(cutover):
        seen_at = time.time()
        deadline = time.monotonic() + 8
        mine = []
        while time.monotonic() < deadline and not mine:
            mine = [w for w in heartbeat.workers(cutover.sqlite)
                    if w["worker"] == heartbeat.worker_name() and w["updated_at"] >= seen_at]
            time.sleep(0.2)
    assert mine and mine[0]["phase"] == "dual_write"
    assert cutover.applier.counters.applied > 0


def test_the_schema_watch_carries_a_new_column_while_a_steady_load_keeps_the_applier_draining(
    cutover, legacy_file, postgres_url
):
    """The applier looks for schema changes between its drains: a steady load that keeps it draining
    must not keep it from looking. A column the app's migration adds to the file under that load
    reaches PostgreSQL within seconds."""
    with _steady_horse_writes(cutover):
        with sqlite3.connect(legacy_file, timeout=10) as raw:  # the app's migration, as its own program runs it
            raw.execute("ALTER TABLE horses ADD COLUMN sire TEXT")
        deadline = time.monotonic() + 8
        carried = False
        while time.monotonic() < deadline and not carried:
            with cutover.engine("postgres").connect() as connection:
                carried = connection.exec_driver_sql(
                    "SELECT count(*) FROM information_schema.columns WHERE table_name = 'horses' AND column_name = 'sire'"
                ).scalar() == 1
            time.sleep(0.2)
    assert carried, "the column never reached PostgreSQL while the load went on"


def test_a_legacy_write_of_a_key_postgresql_cannot_hold_waits_named_and_drains_when_removed(
    cutover, legacy_file, postgres_url
):
    """The legacy app may write any storage class into race_horses' key (a blob, text, a real):
    the write itself succeeds, the change waits in the outbox with a reason naming the key, and
    removing the row in SQLite drains it (the rows never existed in PostgreSQL)."""
    move(cutover, Phase.DUAL_WRITE)
    _add_world(cutover, races=1)
    wait_drained(cutover)
    cutover.applier.stop()
    odd = [(b"\x00\xab", 1), ("abc", 1), (1.5, 2), (1e19, 1), ("café", 1)]
    with sqlite3.connect(legacy_file) as raw:
        raw.executemany("INSERT INTO race_horses (race_id, horse_id, post_position) VALUES (?, ?, 1)", odd)
    from hrp_data.cutover.replay import replay_outbox

    waiting = replay_outbox(cutover)
    assert waiting.remaining == len(odd) and "a key PostgreSQL cannot hold (race_id: " in waiting.last_error
    with sqlite3.connect(legacy_file) as raw:
        raw.execute("DELETE FROM race_horses WHERE typeof(race_id) != 'integer'")
    done = replay_outbox(cutover)
    assert done.remaining == 0, done
    assert_equal(legacy_file, postgres_url)


def test_building_a_cutover_starts_no_thread_and_start_starts_the_applier(legacy_file, postgres_url):
    """Parts are handed what they need and started by their owner: the constructor starts nothing,
    the shadow workers and the mismatch store's writer start with the first sample."""
    upgrade(postgres_url)
    before = set(threading.enumerate())
    cutover = open_cutover(settings_for(legacy_file, postgres_url))
    try:
        assert [t.name for t in set(threading.enumerate()) - before] == []
        move(cutover, Phase.DUAL_WRITE)
        move(cutover, Phase.SHADOW)
        with cutover.reading() as uow:
            uow.races.list()
        cutover.shadow.flush()
        started = {t.name for t in set(threading.enumerate()) - before}
        assert any(name.startswith("hrp-shadow") for name in started), started
        assert "hrp-applier" not in started
        cutover.start()
        assert "hrp-applier" in {t.name for t in threading.enumerate()}
    finally:
        cutover.close()
