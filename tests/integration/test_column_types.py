"""Column types the operator chooses (hrp-cutover.toml, `[column-types.<table>] <column> = "jsonb" |
"text"`): assess suggests jsonb where every value is a JSON document and shows the choices, schema
creates them and keeps them in the SQLite file, and every later command reads the file with them,
whatever its working directory."""

from __future__ import annotations

import json
import sqlite3
import tomllib

import psycopg2
import psycopg2.extensions
import pytest
from click.testing import CliRunner

from adapters.catalog import CHOSEN_TYPES_TABLE
from tests.conftest import MAINTENANCE, libpq
from tools.cli import cli

EVENTS = [  # (payload, note, at): payloads spelled as apps write them; `at` as a legacy app kept it
    ('{"kind": "start", "n": 1}', "first", "07/12/2026 10:00"),
    ('{"n":2,"kind":"stop"}', "second", "2026-12-07 10:05:00"),
    (' [1, 2, {"x": null}]', "{not json", "yesterday"),
    ('{"nested": {"a": [true, false]}, "price": 12.50}', None, None),
    (None, "fifth", "2026-12-07"),
]


@pytest.fixture
def app_file(tmp_path):
    path = tmp_path / "events.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, payload TEXT, note TEXT, at DATETIME)")
        raw.executemany("INSERT INTO events (payload, note, at) VALUES (?, ?, ?)", EVENTS)
    return path


def _run(path, url: str, *args: str, types_file=None):
    psycopg2.extensions.set_wait_callback(None)  # the CLI's commands bound their own calls
    env = {"HRP_COLUMN_TYPES_FILE": str(types_file) if types_file else None}
    return CliRunner().invoke(cli, ["--sqlite", f"sqlite:///{path}", "--postgres", url, *args], env=env)


def _ok(path, url: str, *args: str, types_file=None) -> str:
    done = _run(path, url, *args, types_file=types_file)
    assert done.exit_code == 0, f"{' '.join(args)}: {done.output}"
    return done.output


def _types_file(tmp_path, body: str):
    path = tmp_path / "hrp-cutover.toml"
    path.write_text(body)
    return path


def _postgres_types(url: str) -> dict[str, str]:
    with psycopg2.connect(libpq(url)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'events'")
        return dict(cursor.fetchall())


def test_assess_suggests_jsonb_only_where_every_value_is_a_document(app_file, postgres_url):
    report = json.loads(_ok(app_file, postgres_url, "assess", "--json"))
    assert [(s["table"], s["column"], s["values"]) for s in report["suggestions"]] == [("events", "payload", 4)]
    assert tomllib.loads(report["suggestions"][0]["toml"]) == {"column-types": {"events": {"payload": "jsonb"}}}
    assert "suggest jsonb   events.payload" in _ok(app_file, postgres_url, "assess")
    assert {m["column"]: m["postgres_type"] for m in report["mapping"]}["at"] == "timestamp without time zone"
    assert {r["column"] for r in report["rejections"]} == {"at"}  # '07/12/2026 10:00' and 'yesterday'


def test_chosen_types_go_through_the_cutover_and_stay_with_the_file(app_file, postgres_url, tmp_path):
    chosen = _types_file(tmp_path, '[column-types.events]\npayload = "jsonb"\nat = "text"\n')
    report = json.loads(_ok(app_file, postgres_url, "assess", "--json", types_file=chosen))
    types = {m["column"]: (m["postgres_type"], m["why"]) for m in report["mapping"]}
    assert types["payload"][0] == "jsonb" and types["at"][0] == "text" and "chosen" in types["at"][1]
    assert report["rejections"] == [] and report["suggestions"] == []

    assert "column type kept in the SQLite file: events.payload jsonb" in _ok(
        app_file, postgres_url, "schema", types_file=chosen)
    assert _postgres_types(postgres_url)["payload"] == "jsonb"
    assert _postgres_types(postgres_url)["at"] == "text"
    with sqlite3.connect(app_file) as raw:
        assert sorted(raw.execute(f"SELECT table_name, column_name, chosen FROM {CHOSEN_TYPES_TABLE}")) == [
            ("events", "at", "text"), ("events", "payload", "jsonb")]

    # every later command reads the choices from the file: no types file here
    for step in (["phase", "set", "dual_write"], ["backup"], ["backfill"]):
        _ok(app_file, postgres_url, *step)
    with sqlite3.connect(app_file) as raw:  # a live write through the capture, after the backfill
        raw.execute("INSERT INTO events (payload, note, at) VALUES ('{\"late\": [1, 2.5]}', 'late', 'tomorrow')")
    _ok(app_file, postgres_url, "replay")
    assert "EQUAL" in _ok(app_file, postgres_url, "verify")
    with psycopg2.connect(libpq(postgres_url)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT payload -> 'late', at FROM events WHERE note = 'late'")
        assert cursor.fetchone() == ([1, 2.5], "tomorrow")
        cursor.execute("SELECT count(*) FROM events WHERE jsonb_typeof(payload) IN ('object', 'array')")
        assert cursor.fetchone()[0] == 5

    for step in (["phase", "set", "shadow"], ["flip"]):
        _ok(app_file, postgres_url, *step)
    with psycopg2.connect(libpq(postgres_url)) as connection, connection.cursor() as cursor:  # the app, after the flip
        cursor.execute("""INSERT INTO events (payload, note, at) VALUES ('{"b": 1, "a": [null]}', 'pg', 'now-ish')""")
    _ok(app_file, postgres_url, "replay")
    assert "EQUAL" in _ok(app_file, postgres_url, "verify")
    with sqlite3.connect(app_file) as raw:
        payload, at = raw.execute("SELECT payload, at FROM events WHERE note = 'pg'").fetchone()
    assert json.loads(payload) == {"a": [None], "b": 1} and at == "now-ish"


def test_a_value_that_is_not_a_document_is_quarantined_not_changed(app_file, postgres_url, tmp_path):
    chosen = _types_file(tmp_path, '[column-types.events]\nnote = "jsonb"\n')
    report = json.loads(_ok(app_file, postgres_url, "assess", "--json", types_file=chosen))
    assert {(r["column"], r["count"]) for r in report["rejections"] if r["column"] == "note"} == {("note", 4)}


@pytest.mark.parametrize(("body", "named"), [
    ('[column-types.events]\nmissing = "jsonb"\n', "events.missing"),
    ('[column-types.nowhere]\npayload = "jsonb"\n', "nowhere.payload"),
    ('[column-types.events]\nid = "text"\n', "a key column"),
    ('[column-types.events]\npayload = "json"\n', "'json' is not a type"),
    ('[column-types.events\npayload = "jsonb"\n', "not a readable TOML file"),
])
def test_a_bad_choice_is_one_line_and_nothing_is_created(app_file, postgres_url, tmp_path, body, named):
    chosen = _types_file(tmp_path, body)
    for command in (["assess"], ["schema"]):
        done = _run(app_file, postgres_url, *command, types_file=chosen)
        assert done.exit_code == 2, done.output
        assert named in done.output and len(done.output.strip().splitlines()) == 1, done.output
    assert _postgres_types(postgres_url) == {}
    with sqlite3.connect(app_file) as raw:
        assert raw.execute("SELECT count(*) FROM sqlite_master WHERE name = ?", (CHOSEN_TYPES_TABLE,)).fetchone()[0] == 0


def test_a_choice_made_after_postgresql_holds_the_table_is_refused_and_not_kept(app_file, postgres_url, tmp_path):
    _ok(app_file, postgres_url, "schema")
    assert _postgres_types(postgres_url)["payload"] == "text"
    chosen = _types_file(tmp_path, '[column-types.events]\npayload = "jsonb"\n')
    done = _run(app_file, postgres_url, "schema", types_file=chosen)
    assert done.exit_code == 2 and "events.payload" in done.output and "drop that table" in done.output, done.output
    with sqlite3.connect(app_file) as raw:
        assert raw.execute("SELECT count(*) FROM sqlite_master WHERE name = ?", (CHOSEN_TYPES_TABLE,)).fetchone()[0] == 0


def test_a_kept_choice_whose_column_a_migration_dropped_no_longer_applies(app_file, postgres_url, tmp_path):
    """The choices kept in the file are read by every process: one whose column the app's migration
    dropped since must not stop them reading the file (a choice given for assess or schema must)."""
    chosen = _types_file(tmp_path, '[column-types.events]\npayload = "jsonb"\nnote = "text"\n')
    _ok(app_file, postgres_url, "schema", types_file=chosen)
    with sqlite3.connect(app_file) as raw:
        raw.execute("ALTER TABLE events DROP COLUMN note")  # the app's migration
    report = json.loads(_ok(app_file, postgres_url, "assess", "--json"))  # no types file: the kept ones
    assert {m["column"]: m["postgres_type"] for m in report["mapping"]} == {
        "id": "bigint generated by default as identity", "payload": "jsonb", "at": "timestamp without time zone"}
    done = _run(app_file, postgres_url, "assess", types_file=chosen)  # given again, it is named
    assert done.exit_code == 2 and "events.note" in done.output, done.output


def test_a_column_chosen_secret_shows_only_fingerprints(tmp_path, postgres_url):
    """`pin` does not look secret by its name; chosen "secret", its values appear in no output."""
    path = tmp_path / "accounts.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT, pin INTEGER)")
        raw.executemany("INSERT INTO accounts VALUES (?, ?, ?)", [(1, "ann", 48213), (2, "bob", "s3cr3t-pin-text")])
    chosen = _types_file(tmp_path, '[column-types.accounts]\npin = "secret"\n')
    shown = [_ok(path, postgres_url, "assess", types_file=chosen)]
    shown.append(_ok(path, postgres_url, "schema", types_file=chosen))
    for step in (["phase", "set", "dual_write"], ["backup"], ["backfill"]):
        shown.append(_ok(path, postgres_url, *step))
    shown.append(_ok(path, postgres_url, "quarantine"))
    assert any("s3cr3t" not in text and "sha256:" in text for text in shown[-1:]), shown[-1]
    with psycopg2.connect(libpq(postgres_url), options=MAINTENANCE) as connection, connection.cursor() as cursor:
        cursor.execute("UPDATE accounts SET pin = 99117 WHERE id = 1")  # a planted difference
    done = _run(path, postgres_url, "verify", "--json")
    assert done.exit_code != 0 and "pin" in done.output and "sha256:" in done.output, done.output
    shown.append(done.output)
    for text in shown:
        for value in ("48213", "99117", "s3cr3t-pin-text"):
            assert value not in text, (value, text)


def test_a_choice_for_a_column_beyond_the_hrp_models_is_kept_with_the_file(tmp_path, postgres_url):
    """The HRP file grown with a column of its own: the choice for that column is created and kept
    like any other (the models type only their own columns)."""
    from tests.conftest import create_legacy_file

    path = tmp_path / "hrp_database.db"
    create_legacy_file(path)
    with sqlite3.connect(path) as raw:
        raw.execute("ALTER TABLE races ADD COLUMN going TEXT")
        raw.execute("""INSERT INTO races (race_name, going) VALUES ('R1', '{"ground": "soft", "rail": 2}')""")
    chosen = _types_file(tmp_path, '[column-types.races]\ngoing = "jsonb"\n')
    _ok(path, postgres_url, "schema", types_file=chosen)
    with psycopg2.connect(libpq(postgres_url)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT data_type FROM information_schema.columns"
                       " WHERE table_name = 'races' AND column_name = 'going'")
        assert cursor.fetchone() == ("jsonb",)
    with sqlite3.connect(path) as raw:
        assert list(raw.execute(f"SELECT table_name, column_name, chosen FROM {CHOSEN_TYPES_TABLE}")) == [
            ("races", "going", "jsonb")]
    for step in (["phase", "set", "dual_write"], ["backfill", "--no-backup"]):  # no types file: the file's choice
        _ok(path, postgres_url, *step)
    with psycopg2.connect(libpq(postgres_url)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT going -> 'rail' FROM races WHERE race_name = 'R1'")
        assert cursor.fetchone() == (2,)
    assert "EQUAL" in _ok(path, postgres_url, "verify")
