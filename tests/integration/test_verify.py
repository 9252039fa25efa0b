"""The verifier finds every planted difference with table, key and column, and repair fixes it."""

from __future__ import annotations

import json
import threading
import time

import pytest
from click.testing import CliRunner

from hrp_data.cutover.assemble import open_cutover
from hrp_data.flip.move import move
from hrp_data.cutover.phases import Phase
from hrp_data.schema.install import upgrade
from tools.seed import seed_database
from hrp_data.verify.run import verify, verify_and_repair
from tests.integration.cutover_helpers import assert_equal, settings_for, wait_drained
from tools.cli import cli


def build_synced(path, postgres_url) -> None:
    """A seeded legacy file, fully carried to PostgreSQL through dual_write (no backfill needed)."""
    seed_database(path, races=30, seed=7)
    upgrade(postgres_url)
    with open_cutover(settings_for(path, postgres_url)).start() as cutover:
        move(cutover, Phase.DUAL_WRITE)
        from hrp_data.models import TABLES

        with cutover.sqlite.begin() as connection:  # touch every row so the outbox carries it over
            for table in TABLES:
                keys = ", ".join(c.name for c in table.primary_key.columns)
                first = next(c.name for c in table.columns if c.name not in keys.split(", "))
                connection.exec_driver_sql(f'UPDATE "{table.name}" SET "{first}" = "{first}"')
        wait_drained(cutover, timeout=120)
    assert_equal(path, postgres_url)


@pytest.fixture
def synced(tmp_path, clones):
    """A clone of build_synced's state (tests/clones.py), with its cutover started."""
    with clones.clone("synced", build_synced, tmp_path) as (path, postgres_url):
        cutover = open_cutover(settings_for(path, postgres_url)).start()
        yield cutover, path, postgres_url
        cutover.close()


def _pg(cutover, sql: str) -> None:
    with cutover.engine("postgres").begin() as connection:
        connection.exec_driver_sql("SET LOCAL hrp_cutover.maintenance = 'on'")  # a planted difference
        connection.exec_driver_sql(sql)


PLANTED = [
    ("DELETE FROM predictions WHERE id = 5", "predictions", [5], "missing_row", None),
    ("INSERT INTO horses (id, horse_name) VALUES (999999, 'Extra')", "horses", [999999], "extra_row", None),
    ("UPDATE races SET distance = distance + 0.5 WHERE id = 3", "races", [3], "value_differs", "distance"),
    ("UPDATE races SET race_date = race_date + 1 WHERE id = 4", "races", [4], "value_differs", "race_date"),
    ("UPDATE races SET created_at = created_at + interval '1 second' WHERE id = 5", "races", [5], "value_differs", "created_at"),
    ("UPDATE races SET weather_conditions = '{\"wind\": \"planted\"}' WHERE id = 6", "races", [6], "value_differs", "weather_conditions"),
    ("UPDATE races SET track_name = 'Planted Park' WHERE id = 7", "races", [7], "value_differs", "track_name"),
    ("UPDATE horses SET age = 99 WHERE id = 2", "horses", [2], "value_differs", "age"),
    ("UPDATE users SET is_admin = NOT is_admin WHERE id = 1", "users", [1], "value_differs", "is_admin"),
    ("UPDATE users SET password_hash = 'planted-secret-hash' WHERE id = 1", "users", [1], "value_differs", "password_hash"),
    ("UPDATE race_horses SET odds = odds * 2 WHERE race_id = 2 AND horse_id = (SELECT min(horse_id) FROM race_horses WHERE race_id = 2)", "race_horses", None, "value_differs", "odds"),
]


def test_an_equal_pair_verifies_equal(synced):
    cutover, _, _ = synced
    result = verify(cutover)
    assert result.equal, result.as_json()
    assert result.tables["predictions"].rows_primary == result.tables["predictions"].rows_secondary > 0


@pytest.mark.parametrize("sql, table, key, kind, column", PLANTED, ids=[p[4] or p[3] for p in PLANTED])
def test_each_planted_difference_is_found_and_repaired(synced, sql, table, key, kind, column):
    cutover, path, postgres_url = synced
    _pg(cutover, sql)
    first, second = verify_and_repair(cutover, [table])
    assert not first.equal
    found = [e for e in first.examples if e["table"] == table and e["kind"] == kind]
    assert found, first.as_json()
    if key is not None:
        assert found[0]["key"] == key
    if column is not None:
        assert {e["column"] for e in found} == {column}
    assert second is not None and second.equal, second.as_json()
    assert_equal(path, postgres_url)


def test_secrets_never_appear_in_the_report(synced):
    cutover, _, _ = synced
    _pg(cutover, "UPDATE users SET password_hash = 'planted-secret-hash' WHERE id = 1")
    _pg(cutover, "UPDATE api_credentials SET api_secret = 'planted-api-secret' WHERE id = 1")
    result = verify(cutover)
    text = json.dumps(result.as_json(), default=str)
    assert "planted-secret-hash" not in text and "planted-api-secret" not in text
    with cutover.sqlite.connect() as connection:
        stored = connection.exec_driver_sql("SELECT result FROM hrp_cutover_verify_runs").scalars().all()
    assert not any("planted" in s for s in stored)


def test_verify_during_live_writes_reports_no_false_differences(synced):
    cutover, path, postgres_url = synced
    stop = threading.Event()
    errors = []

    def writer():
        i = 0
        while not stop.is_set():
            try:
                with cutover.writing() as uow:
                    uow.races.update(1 + i % 30, distance=1000.0 + i, status="running")
                    uow.horses.add(horse_name=f"live {i}")
                    uow.commit()
            except Exception as error:  # asserted below
                errors.append(error)
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.3)
        result = verify(cutover)
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert result.equal, result.as_json()


def test_cli_exit_codes_and_json(synced):
    cutover, path, postgres_url = synced
    runner = CliRunner()
    args = ["--sqlite", str(path), "--postgres", postgres_url, "verify", "--json"]
    ok = runner.invoke(cli, args)
    assert ok.exit_code == 0, ok.output
    payload = json.loads(ok.stdout)
    assert payload["equal"] is True
    assert set(payload["tables"]["races"]) >= {"rows_primary", "rows_secondary", "missing", "extra", "different", "quarantined", "seconds"}
    _pg(cutover, "DELETE FROM race_horses WHERE race_id = 3")
    bad = runner.invoke(cli, args)
    assert bad.exit_code == 1
    assert json.loads(bad.stdout)["tables"]["race_horses"]["missing"] > 0
    fixed = runner.invoke(cli, args + ["--repair"])
    assert fixed.exit_code == 0, fixed.output
    assert json.loads(fixed.stdout)["repaired"]["upserted"] > 0
    unknown = runner.invoke(cli, ["--sqlite", str(path), "--postgres", postgres_url, "verify", "--tables", "nope"])
    assert unknown.exit_code == 2 and "unknown table nope" in unknown.output


def test_with_no_applier_running_a_pending_change_is_counted_at_once_and_replay_carries_it(synced):
    """The app is stopped: a change waiting in the outbox has nothing to carry it, so the verify does not
    wait out its recheck deadline for it; it counts it as pending, says how to carry it, and after
    `hrp-cutover replay` the pair verifies equal with nothing pending."""
    from hrp_data.cutover import heartbeat
    from hrp_data.verify.run import RECHECK_S

    cutover, path, postgres_url = synced
    cutover.applier.stop()
    with cutover.sqlite.begin() as connection:  # the app's processes have all stopped
        connection.exec_driver_sql(f"DELETE FROM {heartbeat.WORKERS_TABLE}")
    with cutover.writing() as uow:
        uow.races.update(3, distance=1234.5)
        uow.commit()
    runner = CliRunner()
    args = ["--sqlite", str(path), "--postgres", postgres_url, "verify"]
    started = time.monotonic()
    waiting = runner.invoke(cli, [*args, "--json"])
    assert time.monotonic() - started < RECHECK_S, "the verify waited for an applier that does not run"
    assert waiting.exit_code == 0, waiting.output
    assert json.loads(waiting.stdout)["tables"]["races"]["pending"] == 1
    told = runner.invoke(cli, args)
    assert "hrp-cutover replay" in told.output, told.output
    assert runner.invoke(cli, ["--sqlite", str(path), "--postgres", postgres_url, "replay"]).exit_code == 0
    carried = runner.invoke(cli, [*args, "--json"])
    assert carried.exit_code == 0 and json.loads(carried.stdout)["tables"]["races"]["pending"] == 0, carried.output
    assert_equal(path, postgres_url)


def _both_sides_buckets(cutover, table) -> tuple[dict, dict]:
    """Every bucket's count and md5 of `table` on SQLite and on PostgreSQL, bucketed as verify does."""
    import math

    from hrp_data.verify.run import BUCKET_ROWS, Buckets, _postgres_buckets, _sqlite_buckets

    key = table.primary_key.columns.values()[0].name
    with cutover.sqlite.connect() as connection:
        low, high, count = connection.exec_driver_sql(
            f'SELECT min("{key}"), max("{key}"), count(*) FROM "{table.name}"').one()
    buckets_count = max(1, math.ceil(count / BUCKET_ROWS))
    buckets = Buckets(low, max(1, math.ceil((high - low + 1) / buckets_count)))
    return (_sqlite_buckets(cutover.sqlite, table, buckets, buckets_count),
            _postgres_buckets(cutover.engine("postgres"), table, buckets, buckets_count))


def test_range_hashes_agree_on_equal_data(synced):
    """Both sides spell equal rows the same way, so equal ranges are never looked at twice."""
    from hrp_data.models import TABLES

    cutover, _, _ = synced
    for table in TABLES:
        sqlite_side, postgres_side = _both_sides_buckets(cutover, table)
        assert sqlite_side == postgres_side, table.name


def test_a_json_negative_zero_hashes_alike_on_both_sides(synced):
    """SQLite holds {"temp_c": -0.0}, jsonb holds it as 0.0: equal rows, equal range hashes (no closer look)."""
    from hrp_data.models import TABLES

    cutover, path, postgres_url = synced
    with cutover.sqlite.begin() as connection:
        connection.exec_driver_sql(
            """UPDATE races SET weather_conditions = '{"temp_c": -0.0, "wind": "S", "humidity": 54}' WHERE id <= 3""")
        connection.exec_driver_sql("""UPDATE races SET weather_conditions = '{"temp_c":-0.0}' WHERE id = 4""")
    wait_drained(cutover)
    sqlite_side, postgres_side = _both_sides_buckets(cutover, next(t for t in TABLES if t.name == "races"))
    assert sqlite_side == postgres_side
    assert verify(cutover, ["races"], record=False).equal


@pytest.mark.parametrize("stored, held", [('{"temp_c": 0.1000000000000000055511151231257827}', '{"temp_c": 0.1}'),
                                           ("null", "null"), ('"NW"', '"NW"')], ids=["inexact", "null", "string"])
def test_a_json_text_the_rules_refuse_is_not_equal_to_the_document_json_reads_in_it(synced, stored, held):
    """SQLite holds a JSON text the conversion refuses (a number that does not read back as itself, the
    text null, a bare string) and PostgreSQL the document json.loads reads in it (the nearest double,
    jsonb null, a jsonb string): the range hashes differ, and verify does not find the rows equal (the
    shared normalization says they differ; SQLite's change is one the applier refuses)."""
    from hrp_data.models import TABLES

    cutover, _, _ = synced
    with cutover.sqlite.begin() as connection:
        connection.exec_driver_sql("UPDATE races SET weather_conditions = ? WHERE id = 6", (stored,))
    _pg(cutover, f"UPDATE races SET weather_conditions = '{held}' WHERE id = 6")
    sqlite_side, postgres_side = _both_sides_buckets(cutover, next(t for t in TABLES if t.name == "races"))
    assert sqlite_side != postgres_side
    assert not verify(cutover, ["races"], record=False).equal


def test_keys_at_both_ends_of_bigint_are_compared(synced):
    """Ids 2**63 - 1 and -2**63 (SQLite's rowid range is PostgreSQL's bigint): the buckets span
    more than bigint arithmetic holds, and the last bucket ends at the largest key."""
    cutover, path, postgres_url = synced
    with cutover.writing() as uow:
        for race_id in (-(2**63), 2**63 - 1):
            uow.races.add(id=race_id, race_name=f"edge {race_id}")
        uow.commit()
    wait_drained(cutover)
    assert verify(cutover, ["races"]).equal
    _pg(cutover, f"UPDATE races SET race_name = 'planted' WHERE id = {2**63 - 1}")
    _pg(cutover, f"DELETE FROM races WHERE id = {-(2**63)}")
    first, second = verify_and_repair(cutover, ["races"])
    assert {(e["kind"], e["key"][0]) for e in first.examples} == {
        ("value_differs", 2**63 - 1), ("missing_row", -(2**63))}
    assert second is not None and second.equal
