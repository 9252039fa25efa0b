"""The guard on the secondary as the operator sees it: `status`, /metrics and the dashboard name the
guarded database; PostgreSQL's refusals are counted, SQLite's are not, and say why."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import psycopg2
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from jinja2 import Environment, FileSystemLoader
from sqlalchemy.engine import make_url

from adapters import sqlite as sqlite_adapter
from hrp_data.cutover.assemble import open_cutover
from hrp_data.cutover.status import SQLITE_UNCOUNTED
from hrp_data.flip.move import move
from hrp_data.cutover.phases import Phase
from hrp_data.schema.install import upgrade
from hrp_data.web.dashboard import overview
from tests.integration.cutover_helpers import settings_for
from tests.integration.test_metrics import scrape
from tools.cli import cli

TEMPLATES = Path(__file__).resolve().parents[2] / "hrp_data" / "web" / "templates"


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _status(legacy_file, postgres_url) -> tuple[dict, str]:
    base = ["--sqlite", str(legacy_file), "--postgres", postgres_url, "status"]
    as_json = CliRunner().invoke(cli, [*base, "--json"])
    text = CliRunner().invoke(cli, base)
    assert as_json.exit_code == 0 and text.exit_code == 0, (as_json.output, text.output)
    return json.loads(as_json.stdout), text.stdout


def _phase_section(data: dict) -> str:
    macro = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True).get_template("hrp_sections.html").module
    return str(macro.phase(data, "token"))


def _refuse_on_postgres(postgres_url, times: int) -> None:
    for _ in range(times):
        with psycopg2.connect(_libpq(postgres_url)) as raw, raw.cursor() as cursor:
            with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="hrp-cutover guard"):
                cursor.execute("UPDATE horses SET horse_name = 'behind the layer'")


@pytest.fixture
def cutover(legacy_file, postgres_url):
    upgrade(postgres_url)
    with open_cutover(settings_for(legacy_file, postgres_url)) as cutover:
        move(cutover, Phase.DUAL_WRITE)
        yield cutover


def test_status_metrics_and_dashboard_show_the_guard_and_postgres_refusals(cutover, legacy_file, postgres_url):
    before, _ = _status(legacy_file, postgres_url)
    counted = before["guard"]["refused"]
    assert before["guard"]["on"] == "postgres" and counted is not None
    _refuse_on_postgres(postgres_url, 3)

    report, text = _status(legacy_file, postgres_url)
    assert report["guard"] == {"on": "postgres", "refused": counted + 3, "uncounted": None}
    assert f"guard      on postgres: writes from outside the layer refused ({counted + 3})" in text
    samples = scrape(legacy_file, postgres_url)
    assert samples[("hrp_cutover_guard_on", (("database", "postgres"),))] == 1
    assert samples[("hrp_cutover_guard_on", (("database", "sqlite"),))] == 0
    assert samples[("hrp_cutover_guard_refused_total", (("database", "postgres"),))] == counted + 3
    assert samples[("hrp_cutover_scrape_failed", (("part", "guard"),))] == 0
    assert samples[("hrp_cutover_scrape_failed", (("part", "guard_refused"),))] == 0
    data = overview(cutover)
    assert data["guard"]["on"] == "postgres" and data["guard"]["refused"] == counted + 3
    section = _phase_section(data)
    assert "on postgres: writes from outside the layer refused" in section
    assert f'<span id="guard-refused">{counted + 3}</span>' in section


def test_after_the_flip_the_sqlite_guard_is_shown_uncounted_with_the_reason(cutover, legacy_file, postgres_url):
    move(cutover, Phase.SHADOW)
    move(cutover, Phase.POSTGRES_PRIMARY)
    with sqlite3.connect(legacy_file) as raw:
        with pytest.raises(sqlite3.IntegrityError, match="hrp-cutover guard"):
            raw.execute("INSERT INTO horses (horse_name) VALUES ('behind the layer')")

    report, text = _status(legacy_file, postgres_url)
    assert report["guard"] == {"on": "sqlite", "refused": None, "uncounted": SQLITE_UNCOUNTED}
    assert f"guard      on sqlite: writes from outside the layer refused ({SQLITE_UNCOUNTED})" in text
    samples = scrape(legacy_file, postgres_url)
    assert samples[("hrp_cutover_guard_on", (("database", "sqlite"),))] == 1
    assert samples[("hrp_cutover_guard_on", (("database", "postgres"),))] == 0
    data = overview(cutover)
    assert data["guard"] == {"on": "sqlite", "refused": None, "uncounted": SQLITE_UNCOUNTED}
    section = _phase_section(data)
    assert "on sqlite: writes from outside the layer refused" in section and "not counted on SQLite" in section
    assert "guard-refused" not in section


def test_the_dashboard_says_off_without_a_guard(legacy_file, postgres_url):
    with open_cutover(settings_for(legacy_file, postgres_url)) as cutover:
        data = overview(cutover)
    assert data["guard"] is None
    assert '<td id="guard">off</td>' in _phase_section(data).replace("\n", "").replace("    ", "")


@pytest.mark.parametrize("explicit", [False, True], ids=["autocommit", "transaction-committed"])
def test_a_refused_statement_leaves_nothing_behind_in_the_file(tmp_path, explicit):
    """Why SQLite's refusals are not counted: the guard's RAISE(ABORT) undoes the whole statement.
    RAISE(FAIL) would keep a counter row written by the trigger, but it keeps every earlier change
    of the statement too: here the note whose own trigger writes a guarded table would stay,
    though its writer got the guard's error."""
    path = tmp_path / "guarded.db"
    with sqlite3.connect(path, isolation_level=None) as raw:
        raw.executescript(
            "CREATE TABLE horses (id INTEGER PRIMARY KEY, horse_name TEXT);"
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);"  # outside the catalog: not guarded
            "CREATE TRIGGER notes_to_horses AFTER INSERT ON notes WHEN NEW.body = 'horse'"
            " BEGIN INSERT INTO horses (horse_name) VALUES ('from a note'); END;"
        )
        horses = sa.Table("horses", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                          sa.Column("horse_name", sa.Text))
        for statement in sqlite_adapter.guard_trigger_ddl(horses):
            raw.execute(statement)
    client = sqlite3.connect(path, isolation_level=None)
    try:
        if explicit:
            client.execute("BEGIN")
        with pytest.raises(sqlite3.IntegrityError, match="hrp-cutover guard"):
            client.execute("INSERT INTO notes (body) VALUES ('first'), ('horse')")
        if explicit:
            client.execute("COMMIT")
    finally:
        client.close()
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT count(*) FROM notes").fetchone()[0] == 0
        assert check.execute("SELECT count(*) FROM horses").fetchone()[0] == 0
