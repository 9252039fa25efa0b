"""flip is refused, naming the reason, for each unmet precondition, and succeeds when all hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hrp_data.flip import readiness
from hrp_data.flip.move import move
from hrp_data.cutover.phases import Phase
from hrp_data.flip.readiness import NotReady, checklist, guarded_move
from hrp_data.verify.run import verify
from hrp_data.cutover.assemble import open_cutover
from tests.integration.cutover_helpers import settings_for, tune
from tests.integration.test_verify import build_synced
from tests.integration.test_verify import synced  # noqa: F401  (fixture)
from tools.cli import cli


def build_ready(path, postgres_url) -> None:
    """A synced pair in phase shadow, backfilled, shadow reads compared, a fresh equal verify:
    every check passes."""
    build_synced(path, postgres_url)
    backfill = subprocess.run(
        [str(Path(sys.executable).parent / "hrp-cutover"), "--sqlite", str(path), "--postgres", postgres_url,
         "backfill", "--no-backup"],
        capture_output=True, text=True,
    )
    assert backfill.returncode == 0, backfill.stderr
    with open_cutover(settings_for(path, postgres_url)).start() as cutover:
        tune(cutover, shadow_min_reads=20)
        move(cutover, Phase.SHADOW)
        with cutover.reading() as uow:
            for race_id in range(1, 31):
                uow.races.get(race_id)
        assert verify(cutover).equal
        assert _failed(cutover) == {}


@pytest.fixture
def ready(tmp_path, clones, monkeypatch):
    """A clone of build_ready's state (tests/clones.py), with its cutover started."""
    monkeypatch.setenv("HRP_SHADOW_MIN_READS", "20")  # for the commands run below
    with clones.clone("ready", build_ready, tmp_path) as (path, postgres_url):
        cutover = open_cutover(settings_for(path, postgres_url)).start()
        tune(cutover, shadow_min_reads=20)
        yield cutover, path, postgres_url
        cutover.close()


def _failed(cutover) -> dict:
    return {c.name: c.detail for c in checklist(cutover, Phase.POSTGRES_PRIMARY) if not c.ok}


def _pg(cutover, sql: str) -> None:
    with cutover.engine("postgres").begin() as connection:
        connection.exec_driver_sql("SET LOCAL hrp_cutover.maintenance = 'on'")  # a planted difference
        connection.exec_driver_sql(sql)


def test_all_checks_pass_and_the_flip_succeeds(ready):
    cutover, path, postgres_url = ready
    assert _failed(cutover) == {}
    runner = CliRunner()
    base = ["--sqlite", str(path), "--postgres", postgres_url]
    checked = runner.invoke(cli, base + ["flip", "--check"])
    assert checked.exit_code == 0, checked.output
    assert "[x] verify" in checked.output
    flipped = runner.invoke(cli, base + ["flip"])
    assert flipped.exit_code == 0, flipped.output
    assert "shadow -> postgres_primary" in flipped.output and "writes held" in flipped.output
    assert cutover.phase(fresh=True).phase is Phase.POSTGRES_PRIMARY


def test_a_move_that_is_not_allowed_is_refused(synced):  # noqa: F811
    cutover, _, _ = synced
    with pytest.raises(NotReady, match="move: cannot move from dual_write to postgres_primary"):
        guarded_move(cutover, Phase.POSTGRES_PRIMARY)


def test_flip_force_from_a_phase_two_steps_away_says_force_does_not_help(synced):  # noqa: F811
    cutover, path, postgres_url = synced
    result = CliRunner().invoke(cli, ["--sqlite", str(path), "--postgres", postgres_url, "flip", "--force"])
    assert result.exit_code != 0
    assert "cannot move from dual_write to postgres_primary" in result.output
    assert "--force does not change that" in result.output and "--force skips" not in result.output
    assert cutover.phase(fresh=True).phase is Phase.DUAL_WRITE


def test_refused_without_a_verify(synced):  # noqa: F811
    cutover, _, _ = synced
    move(cutover, Phase.SHADOW)
    assert "no full verify yet" in _failed(cutover)["verify"]


def test_refused_when_the_last_verify_is_too_old(ready, monkeypatch):
    cutover, _, _ = ready
    tune(cutover, verify_max_age=-1.0)
    assert "old" in _failed(cutover)["verify"]


def test_refused_when_the_last_verify_found_differences(ready):
    cutover, _, _ = ready
    _pg(cutover, "UPDATE horses SET age = 77 WHERE id = 1")
    assert not verify(cutover).equal
    assert "found differences" in _failed(cutover)["verify"]


def test_refused_on_schema_drift(ready):
    cutover, _, _ = ready
    _pg(cutover, "DROP INDEX ix_races_status")
    assert "ix_races_status" in _failed(cutover)["schema"]


def test_indexes_an_unfinished_backfill_holds_back_are_named_with_the_way_out(ready):
    cutover, _, _ = ready
    from hrp_data.backfill import holds as backfill_holds

    raw = cutover.engine("postgres").raw_connection()
    try:
        with raw.cursor() as cursor:
            backfill_holds.install(cursor)
            held = backfill_holds.hold_indexes(cursor, "predictions")
        raw.commit()
    finally:
        raw.close()
    assert "ix_predictions_features" in held
    message = _failed(cutover)["schema"]
    assert f"{len(held)} index(es) held back by an unfinished backfill: run `hrp-cutover backfill`" in message
    assert backfill_holds.held_indexes(cutover.engine("postgres")) == sorted(held)


def test_refused_when_the_outbox_is_deep(ready, monkeypatch):
    cutover, _, _ = ready
    monkeypatch.setattr(readiness, "OUTBOX_THRESHOLD", 2)
    cutover.applier.stop()
    for i in range(5):
        with cutover.writing() as uow:
            uow.horses.add(horse_name=f"queued {i}")
            uow.commit()
    assert "5 pending" in _failed(cutover)["outbox"]


def test_refused_with_unvalidated_foreign_keys(ready):
    cutover, _, _ = ready
    _pg(cutover, "ALTER TABLE predictions DROP CONSTRAINT fk_predictions_race_id_races;"
                 " ALTER TABLE predictions ADD CONSTRAINT fk_predictions_race_id_races"
                 " FOREIGN KEY (race_id) REFERENCES races (id) NOT VALID")
    assert "fk_predictions_race_id_races" in _failed(cutover)["foreign_keys"]


def test_refused_with_a_sequence_behind_the_ids(ready):
    cutover, _, _ = ready
    _pg(cutover, "SELECT setval(pg_get_serial_sequence('races', 'id'), 1)")
    assert "races next 2" in _failed(cutover)["sequences"]


def test_force_moves_anyway_says_so_and_is_audited(ready):
    cutover, path, postgres_url = ready
    _pg(cutover, "DROP INDEX ix_races_status")
    runner = CliRunner()
    base = ["--sqlite", str(path), "--postgres", postgres_url]
    refused = runner.invoke(cli, base + ["flip"])
    assert refused.exit_code == 1 and "schema:" in refused.output
    forced = runner.invoke(cli, base + ["flip", "--force"])
    assert forced.exit_code == 0, forced.output
    assert "FORCED" in forced.output and "schema" in forced.output
    last = cutover.phases.history(1)[0]
    assert last["forced"] == 1 and "schema" in last["skipped"]


def test_rollback_has_the_same_preflight_in_reverse(ready):
    cutover, path, postgres_url = ready
    guarded_move(cutover, Phase.POSTGRES_PRIMARY)
    with cutover.writing() as uow:
        uow.horses.add(horse_name="written on postgres")
        uow.commit()
    result = CliRunner().invoke(cli, ["--sqlite", str(path), "--postgres", postgres_url, "rollback"])
    assert result.exit_code == 0, result.output
    assert "postgres_primary -> shadow" in result.output
    assert cutover.phase(fresh=True).phase is Phase.SHADOW


def test_refused_until_the_backfill_is_complete(synced):  # noqa: F811
    cutover, _, _ = synced
    move(cutover, Phase.SHADOW)
    assert "run `hrp-cutover backfill`" in _failed(cutover)["backfill"]


def test_refused_with_quarantined_rows_unless_accepted(ready):
    cutover, path, postgres_url = ready
    _pg(cutover, "INSERT INTO hrp_cutover_quarantine (table_name, key, column_name, reason, value)"
                 " VALUES ('races', '[999]', 'distance', 'text_in_real_column', 'N/A')")
    assert "1 quarantined row" in _failed(cutover)["quarantine"]
    accepted = {c.name: c.ok for c in checklist(cutover, Phase.POSTGRES_PRIMARY, accept_quarantine=True)}
    assert accepted["quarantine"] is True
    result = CliRunner().invoke(cli, ["--sqlite", str(path), "--postgres", postgres_url, "flip", "--accept-quarantine"])
    assert result.exit_code == 0, result.output


def test_refused_without_enough_shadow_reads(synced, monkeypatch):  # noqa: F811
    cutover, _, _ = synced
    tune(cutover, shadow_min_reads=1000)
    move(cutover, Phase.SHADOW)
    assert "too few shadow reads" in _failed(cutover)["shadow"]


def test_the_backfill_leaves_every_loaded_table_vacuumed_and_analyzed(tmp_path, postgres_url, monkeypatch):
    """Right after the backfill the planner has statistics and the visibility map is set (index-only
    scans), so the app's first reads after the flip are fast; the checklist says so. (Built here, not
    cloned: a database made from a template starts with no vacuum or analyze counted.)"""
    monkeypatch.setenv("HRP_SHADOW_MIN_READS", "20")
    path = tmp_path / "hrp.db"
    build_ready(path, postgres_url)
    cutover = open_cutover(settings_for(path, postgres_url)).start()
    tune(cutover, shadow_min_reads=20)
    try:
        _statistics_after_the_backfill(cutover)
    finally:
        cutover.close()


def _statistics_after_the_backfill(cutover) -> None:
    statistics = {c.name: c for c in checklist(cutover, Phase.POSTGRES_PRIMARY)}["statistics"]
    assert statistics.ok and statistics.detail == "every loaded table vacuumed and analyzed", statistics.detail
    with cutover.engine("postgres").connect() as connection:
        all_visible = connection.exec_driver_sql(
            "SELECT relallvisible >= relpages AND relpages > 0 FROM pg_class WHERE relname = 'predictions'"
        ).scalar()
    assert all_visible
    _pg(cutover, "CREATE TABLE IF NOT EXISTS scratch_unused (x int)")  # not an HRP table: not listed
    _pg(cutover, "SELECT pg_stat_reset()")
    statistics = {c.name: c for c in checklist(cutover, Phase.POSTGRES_PRIMARY)}["statistics"]
    assert statistics.ok and statistics.detail.startswith("warning: not yet vacuumed/analyzed"), statistics.detail
    assert "predictions (vacuum and analyze)" in statistics.detail
