"""PostgreSQL down while SQLite is primary: an app process starts and serves from SQLite, `status`
shows the SQLite outbox and says PostgreSQL is unreachable, and the changes reach PostgreSQL once it is back."""

from __future__ import annotations

import dataclasses
import sqlite3
import time

from click.testing import CliRunner

from hrp_data.cutover import outbox
from hrp_data.cutover.dual_write import Cutover
from hrp_data.cutover.assemble import open_cutover
from hrp_data.flip.move import move
from hrp_data.cutover.phases import Phase
from hrp_data.schema.install import upgrade
from tests.integration.cutover_helpers import assert_equal, settings_for, wait_drained
from tools.cli import cli

CLOSED_PORT_URL = "postgresql+psycopg2://hrp:secret@127.0.0.1:1/hrp"


def _to_dual_write(legacy_file, postgres_url: str) -> None:
    upgrade(postgres_url)
    with open_cutover(settings_for(legacy_file, postgres_url)) as cutover:
        move(cutover, Phase.DUAL_WRITE)


def _write_horses(cutover: Cutover, count: int) -> list[int]:
    ids = []
    for i in range(count):
        with cutover.writing() as uow:
            ids.append(uow.horses.add(horse_name=f"while away {i}", weight=420.5)["id"])
            uow.commit()
    return ids


def _status(legacy_file, postgres_url: str):
    return CliRunner().invoke(cli, ["--sqlite", str(legacy_file), "--postgres", postgres_url, "status"])


def test_an_app_process_starts_and_serves_with_postgres_on_a_closed_port(legacy_file, postgres_url):
    """Writes and reads go to SQLite; the changes wait in the SQLite outbox."""
    _to_dual_write(legacy_file, postgres_url)
    settings = dataclasses.replace(settings_for(legacy_file, postgres_url), postgres_url=CLOSED_PORT_URL)
    with open_cutover(settings).start() as cutover:
        ids = _write_horses(cutover, 5)
        with cutover.reading() as uow:
            assert [uow.horses.get(i)["horse_name"] for i in ids] == [f"while away {i}" for i in range(5)]
        assert outbox.depth(cutover.sqlite).pending == 5


def test_status_shows_the_sqlite_outbox_and_says_postgres_is_unreachable(legacy_file, postgres_url):
    _to_dual_write(legacy_file, postgres_url)
    with sqlite3.connect(legacy_file) as raw:
        raw.executemany("INSERT INTO horses (horse_name) VALUES (?)", [("a",), ("b",), ("c",)])
    result = _status(legacy_file, CLOSED_PORT_URL)
    assert result.exit_code == 0, result.output
    assert "3 pending" in result.output
    unreachable = [line for line in result.output.splitlines() if line.startswith("postgres")]
    assert len(unreachable) == 1 and "UNREACHABLE: OperationalError" in unreachable[0], result.output
    assert "secret" not in result.output
    reachable = _status(legacy_file, postgres_url)
    assert reachable.exit_code == 0 and "postgres   reachable" in reachable.output, reachable.output


def test_writes_made_while_postgres_is_stopped_reach_it_once_it_is_back(legacy_file, own_postgres):
    """The process starts with the server stopped; once it is back the applier installs the
    outbox tables it needs there (dropped here) and carries every change."""
    _to_dual_write(legacy_file, own_postgres.url)
    with open_cutover(settings_for(legacy_file, own_postgres.url)) as setup:
        with setup.postgres.begin() as connection:
            connection.exec_driver_sql(f"DROP TABLE {outbox.OUTBOX}")
    own_postgres.stop()
    with open_cutover(settings_for(legacy_file, own_postgres.url)).start() as cutover:
        _write_horses(cutover, 20)
        status = _status(legacy_file, own_postgres.url)
        assert status.exit_code == 0, status.output
        assert "20 pending" in status.output and "postgres   UNREACHABLE" in status.output, status.output
        own_postgres.start()
        wait_drained(cutover, timeout=60)
        with cutover.postgres.connect() as connection:
            assert connection.exec_driver_sql(f"SELECT to_regclass('{outbox.OUTBOX}')").scalar() is not None
    assert_equal(legacy_file, own_postgres.url)


def test_an_app_process_starts_and_serves_with_postgres_frozen(legacy_file, own_postgres):
    """A frozen server (SIGSTOP) costs neither the start nor the writes; status says so within its bound."""
    _to_dual_write(legacy_file, own_postgres.url)
    own_postgres.freeze()
    try:
        started = time.monotonic()
        with open_cutover(settings_for(legacy_file, own_postgres.url)).start() as cutover:
            assert time.monotonic() - started < 2.0
            ids = _write_horses(cutover, 5)
            with cutover.reading() as uow:
                assert uow.horses.get(ids[-1])["horse_name"] == "while away 4"
            asked = time.monotonic()
            status = _status(legacy_file, own_postgres.url)
            assert time.monotonic() - asked < 15.0
            assert status.exit_code == 0 and "postgres   UNREACHABLE" in status.output, status.output
            own_postgres.thaw()
            wait_drained(cutover, timeout=60)
    finally:
        own_postgres.thaw()
    assert_equal(legacy_file, own_postgres.url)
