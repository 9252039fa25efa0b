"""One bad legacy row never stops replication: its key fails with its reason, the rest goes on."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
from click.testing import CliRunner

from hrp_data.cutover import outbox
from hrp_data.cutover.assemble import open_cutover
from hrp_data.flip.move import move
from hrp_data.cutover.phases import Phase
from hrp_data.cutover.replay import replay_outbox
from hrp_data.schema.install import upgrade
from tests.integration.cutover_helpers import postgres_rows, settings_for, wait_drained
from tools.cli import cli

NUL_REASON = "rejected: nul_byte_in_text (race_name)"


@pytest.fixture
def cutover(legacy_file, postgres_url):
    upgrade(postgres_url)
    with open_cutover(settings_for(legacy_file, postgres_url)).start() as cutover:
        move(cutover, Phase.DUAL_WRITE)
        yield cutover


def _names(postgres_url) -> set[str]:
    return {row[1] for row in postgres_rows(postgres_url)["races"].values()}


def test_a_nul_byte_fails_its_key_only_and_later_writes_are_applied(cutover, legacy_file, postgres_url):
    with cutover.writing() as uow:
        bad = uow.races.add(race_name="bad\x00name")
        uow.commit()
    with sqlite3.connect(legacy_file) as raw:  # the legacy app's own SQL, with a NUL in the middle
        raw.execute("INSERT INTO races (race_name) VALUES (?)", ("also\x00bad",))
    with cutover.writing() as uow:
        good = [uow.races.add(race_name=f"good {n}") for n in range(3)]
        uow.horses.add(horse_name="a horse")
        uow.commit()
    cutover.applier.notify()
    deadline = time.monotonic() + 30
    while not {f"good {n}" for n in range(3)} <= _names(postgres_url):  # the applier, on its own
        assert time.monotonic() < deadline, "the good races never reached PostgreSQL"
        time.sleep(0.1)
    result = replay_outbox(cutover)
    assert result.remaining == 2
    assert [(table, key, reason) for table, key, reason in result.failing] == [
        ("races", (bad["id"],), NUL_REASON),
        ("races", (bad["id"] + 1,), NUL_REASON),
    ]
    assert {race["id"] for race in good} <= set(key[0] for key in postgres_rows(postgres_url)["races"])
    with cutover.writing() as uow:  # fixed in SQLite: the key goes through
        uow.races.update(bad["id"], race_name="fixed")
        uow.commit()
    with sqlite3.connect(legacy_file) as raw:
        raw.execute("DELETE FROM races WHERE id = ?", (bad["id"] + 1,))
    wait_drained(cutover)
    assert "fixed" in _names(postgres_url)


def test_replay_lists_the_failing_key_without_a_traceback(cutover, legacy_file, postgres_url):
    cutover.applier.stop()
    with cutover.writing() as uow:
        bad = uow.races.add(race_name="bad\x00name")
        uow.races.add(race_name="good")
        uow.commit()
    result = CliRunner().invoke(cli, ["--sqlite", str(legacy_file), "--postgres", postgres_url, "replay"])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert f"failing    races [{bad['id']}]: {NUL_REASON}" in result.output
    assert "applied 1; remaining 1" in result.output


def test_the_quarantine_lists_live_keys_the_applier_rejected_without_their_values(cutover, legacy_file, postgres_url):
    planted = "PLANTED-SECRET-7f3a"
    with sqlite3.connect(legacy_file) as raw:  # the legacy app's own SQL
        user = raw.execute("INSERT INTO users (username, email, password_hash) VALUES ('q', 'q@x', 'h')").lastrowid
    wait_drained(cutover)  # the user is in PostgreSQL: the credential below fails on its own value only
    with sqlite3.connect(legacy_file) as raw:
        race = raw.execute("INSERT INTO races (race_name) VALUES (?)", ("live\x00bad",)).lastrowid
        credential = raw.execute(
            "INSERT INTO api_credentials (user_id, service_name, api_key, api_secret) VALUES (?, 'svc', ?, ?)",
            (user, f"{planted}-key\x00", f"{planted}-secret\x00"),
        ).lastrowid
    cutover.applier.notify()
    deadline = time.monotonic() + 30
    while len(outbox.rejected_keys(cutover.sqlite)) < 2:  # the applier, on its own
        assert time.monotonic() < deadline, outbox.depth(cutover.sqlite)
        time.sleep(0.1)
    base = ["--sqlite", str(legacy_file), "--postgres", postgres_url, "quarantine"]
    listed = CliRunner().invoke(cli, [*base, "--format", "json"])
    text = CliRunner().invoke(cli, base)
    assert listed.exit_code == 0 and text.exit_code == 0, (listed.output, text.output)
    live = json.loads(listed.stdout)["live"]
    assert sorted(live, key=lambda r: r["table"]) == [
        {"database": "sqlite", "table": "api_credentials", "key": [credential], "column": "api_key",
         "reason": "nul_byte_in_text", "detail": None},
        {"database": "sqlite", "table": "races", "key": [race], "column": "race_name", "reason": "nul_byte_in_text",
         "detail": None},
    ]
    assert f"races [{race}] race_name: nul_byte_in_text (live, waiting in sqlite's outbox)" in text.stdout
    assert f"api_credentials [{credential}] api_key: nul_byte_in_text" in text.stdout
    assert "2 live change(s) rejected by the applier" in text.stdout
    assert planted not in listed.output + text.output
