"""The app's own Flask-SQLAlchemy session follows the cutover (hrp_data.cutover.routing).

The example app (tests/e2e/example_app) keeps its own models and db.session; with
`HrpCutover().init_app(app, db=db)` its writes reach the current primary through the
write gate and its reads follow a flip within a second.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import threading
import time

import psycopg2
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from hrp_data.flip import move as flip
from hrp_data.cutover.routing import sessionmaker_for
from hrp_data.cutover.assemble import open_cutover
from hrp_data.flip.move import move
from hrp_data.flip.readiness import checklist
from hrp_data.cutover.phases import Phase
from hrp_data.schema.install import upgrade
from hrp_data.web import HrpCutover
from tests.conftest import MAINTENANCE
from tests.e2e.example_app.app import create_app
from tests.e2e.example_app.models import Race, db
from shadow.report import build_report, mismatch_summary, render_html, render_json, render_text
from tests.integration.cutover_helpers import assert_equal, settings_for, wait_drained


@pytest.fixture
def app(legacy_file, postgres_url):
    upgrade(postgres_url)
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{legacy_file}", "HRP_POSTGRES_URL": postgres_url})
    yield app
    HrpCutover.state(app).close()


@pytest.fixture
def operator(legacy_file, postgres_url):
    """Another process's Cutover, as the operator's CLI has: its own phase cache, no applier."""
    with open_cutover(settings_for(legacy_file, postgres_url)) as cutover:
        yield cutover


def _pg(postgres_url: str, sql: str, *params):
    url = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg2.connect(url, options=MAINTENANCE) as connection, connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else None


def _sqlite(path, sql: str, *params):
    connection = sqlite3.connect(path)
    try:
        with connection:
            return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def _add_race(client, name: str, **extra) -> dict:
    response = client.post("/races", json={"race_name": name, "track_name": "Ascot", "distance": 1200.5,
                                           "race_date": "2025-03-01", "weather": {"wind": "N"}, **extra})
    response.close()  # its shadow samples are queued when its response closes
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def test_orm_writes_in_dual_write_land_in_sqlite_and_are_captured_to_postgres(app, operator, legacy_file, postgres_url):
    move(operator, Phase.DUAL_WRITE)
    client = app.test_client()
    race = _add_race(client, "Derby")
    horse = client.post("/horses", json={"horse_name": "Shadowfax", "age": 4}).get_json()
    assert client.post(f"/races/{race['id']}/predictions",
                       json={"horse_id": horse["id"], "confidence": 0.75, "features": {"a": 1}}).status_code == 201
    assert client.patch(f"/races/{race['id']}", json={"status": "finished"}).status_code == 200
    assert client.get("/reports/tracks").get_json() == [{"track_name": "Ascot", "races": 1, "average_distance": 1200.5}]
    assert _sqlite(legacy_file, "SELECT race_name, status FROM races") == [("Derby", "finished")]
    wait_drained(HrpCutover.state(app).cutover)
    assert_equal(legacy_file, postgres_url)


def test_after_a_flip_the_apps_reads_and_writes_go_to_postgres_within_a_second(app, operator, legacy_file, postgres_url):
    client = app.test_client()
    move(operator, Phase.DUAL_WRITE)
    before = _add_race(client, "before")
    move(operator, Phase.SHADOW)
    with app.app_context():
        sqlite_race = db.session.get(Race, before["id"])
        sqlite_types = {name: type(getattr(sqlite_race, name)) for name in ("created_at", "race_date", "weather_conditions", "distance")}
    wait_drained(HrpCutover.state(app).cutover)
    assert_equal(legacy_file, postgres_url)

    move(operator, Phase.POSTGRES_PRIMARY)
    flipped = time.monotonic()
    after = _add_race(client, "after flip")
    assert _pg(postgres_url, "SELECT race_name FROM races WHERE id = %s", after["id"]) == [("after flip",)]
    while client.get("/races?limit=1").get_json()[0]["id"] != after["id"]:
        assert time.monotonic() - flipped < 1.0, "the app's reads did not follow the flip within a second"
        time.sleep(0.02)
    with app.app_context():
        race = db.session.get(Race, before["id"])
        assert race.created_at.tzinfo is None
        assert {name: type(getattr(race, name)) for name in sqlite_types} == sqlite_types
        assert db.session.execute(sa.text("SELECT version()")).scalar().startswith("PostgreSQL")
    wait_drained(HrpCutover.state(app).cutover)
    assert _sqlite(legacy_file, "SELECT race_name FROM races WHERE id = ?", after["id"]) == [("after flip",)]


def test_a_write_started_during_the_hold_waits_and_lands_on_the_new_primary(app, operator, legacy_file, postgres_url, monkeypatch):
    client = app.test_client()
    move(operator, Phase.DUAL_WRITE)
    move(operator, Phase.SHADOW)
    outcome: dict = {}

    def write() -> None:
        outcome["started"] = time.monotonic()
        response = app.test_client().post("/races", json={"race_name": "during the hold"})
        outcome["status"], outcome["body"], outcome["ended"] = response.status_code, response.get_json(), time.monotonic()

    writer = threading.Thread(target=write)

    def hold(point: str) -> None:
        if point == "drained":
            writer.start()
            time.sleep(0.5)
            outcome["waited_in_hold"] = writer.is_alive()

    monkeypatch.setattr(flip, "fault_at", hold)
    move(operator, Phase.POSTGRES_PRIMARY)
    writer.join(30)
    assert outcome["waited_in_hold"] and outcome["status"] == 201
    assert _pg(postgres_url, "SELECT race_name FROM races WHERE id = %s", outcome["body"]["id"]) == [("during the hold",)]
    cutover = HrpCutover.state(app).cutover
    wait_drained(cutover)
    assert_equal(legacy_file, postgres_url)
    assert client.get(f"/races/{outcome['body']['id']}").status_code == 200


def test_rollback_returns_the_apps_session_to_sqlite(app, operator, legacy_file, postgres_url):
    client = app.test_client()
    for target in (Phase.DUAL_WRITE, Phase.SHADOW, Phase.POSTGRES_PRIMARY):
        move(operator, target)
    on_postgres = _add_race(client, "on postgres")
    move(operator, Phase.SHADOW)
    back = _add_race(client, "after rollback")
    assert back["id"] > on_postgres["id"]
    assert _sqlite(legacy_file, "SELECT race_name FROM races WHERE id = ?", back["id"]) == [("after rollback",)]
    time.sleep(0.6)  # the read cache
    with app.app_context():
        assert db.session.execute(sa.text("SELECT sqlite_version()")).scalar()
        assert db.session.get(Race, on_postgres["id"]).race_name == "on postgres"
    wait_drained(HrpCutover.state(app).cutover)
    assert_equal(legacy_file, postgres_url)


def test_after_the_flip_the_guard_refuses_writes_that_bypass_the_routing(app, operator, legacy_file, postgres_url):
    client = app.test_client()
    for target in (Phase.DUAL_WRITE, Phase.SHADOW):
        move(operator, target)
    race = _add_race(client, "guarded")
    wait_drained(HrpCutover.state(app).cutover)
    move(operator, Phase.POSTGRES_PRIMARY)
    with pytest.raises(sqlite3.DatabaseError, match="hrp-cutover guard"):
        _sqlite(legacy_file, "UPDATE races SET status = 'cancelled' WHERE id = ?", race["id"])
    with app.app_context(), pytest.raises(sa.exc.DatabaseError, match="hrp-cutover guard"):
        with db.engine.begin() as connection:  # the app's own engine, past the routing
            connection.execute(sa.text("UPDATE races SET status = 'cancelled' WHERE id = :id"), {"id": race["id"]})
    assert _sqlite(legacy_file, "SELECT status FROM races WHERE id = ?", race["id"]) == [("scheduled",)]
    assert _pg(postgres_url, "SELECT status FROM races WHERE id = %s", race["id"]) == [("scheduled",)]
    assert client.patch(f"/races/{race['id']}", json={"status": "cancelled"}).status_code == 200
    assert _pg(postgres_url, "SELECT status FROM races WHERE id = %s", race["id"]) == [("cancelled",)]


class Base(DeclarativeBase):
    pass


class Horse(Base):
    __tablename__ = "horses"
    id: Mapped[int] = mapped_column(primary_key=True)
    horse_name: Mapped[str]
    created_at: Mapped[dt.datetime | None] = mapped_column(default=lambda: dt.datetime(2025, 1, 2, 3, 4, 5))


def test_a_plain_sqlalchemy_sessionmaker_follows_the_phase(legacy_file, postgres_url):
    upgrade(postgres_url)
    with open_cutover(settings_for(legacy_file, postgres_url)).start() as cutover:
        Session = sessionmaker_for(cutover)
        for target in (Phase.DUAL_WRITE, Phase.SHADOW, Phase.POSTGRES_PRIMARY):
            move(cutover, target)
        with Session() as session:
            session.add(Horse(horse_name="Plain"))
            session.commit()
        with Session() as session:
            horse = session.scalars(sa.select(Horse)).one()
            assert (horse.horse_name, horse.created_at) == ("Plain", dt.datetime(2025, 1, 2, 3, 4, 5))
            assert session.execute(sa.text("SELECT current_database()")).scalar() == make_url(postgres_url).database
        with Session() as session:
            session.add(Horse(horse_name="Rolled back"))
            session.rollback()
        assert _pg(postgres_url, "SELECT horse_name FROM horses") == [("Plain",)]
        wait_drained(cutover)
        assert_equal(legacy_file, postgres_url)


# -- shadow reads of the app's own statements ------------------------------------------------------


def _get(client, path: str):
    """GET and close the response: a request's shadow samples are queued when its response closes."""
    response = client.get(path)
    response.close()
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def _shadow_report(app) -> dict:
    cutover = HrpCutover.state(app).cutover
    cutover.shadow.flush()
    return build_report(cutover.sqlite)


@pytest.fixture
def in_shadow(app, operator, legacy_file, postgres_url):
    """The example app in the shadow phase with two races carried to PostgreSQL."""
    client = app.test_client()
    move(operator, Phase.DUAL_WRITE)
    races = [_add_race(client, "Derby"), _add_race(client, "Oaks", track_name="York")]
    move(operator, Phase.SHADOW)
    wait_drained(HrpCutover.state(app).cutover)
    time.sleep(0.6)  # the app's phase cache
    return client, races


def test_the_apps_orm_reads_are_compared_under_their_entity(in_shadow, app):
    client, races = in_shadow
    _get(client, "/races?limit=5")
    _get(client, f"/races/{races[0]['id']}")
    _get(client, "/horses")
    _get(client, "/reports/tracks")
    report = _shadow_report(app)
    by_type = report["by_read_type"]
    orm_races = [name for name in by_type if re.fullmatch(r"orm:Race#[0-9a-f]{6}", name)]
    assert len(orm_races) == 2, by_type  # the list and the get
    assert all(by_type[name]["matched"] >= 1 and by_type[name]["table"] == "races" for name in orm_races)
    assert any(re.fullmatch(r"orm:Prediction#[0-9a-f]{6}", name) for name in by_type)  # race.predictions, lazily
    assert any(re.fullmatch(r"orm:Horse#[0-9a-f]{6}", name) for name in by_type)
    assert any(re.fullmatch(r"sql:races#[0-9a-f]{6}", name) for name in by_type), by_type  # the text() report
    assert report["totals"]["mismatched"] == 0 and report["totals"]["errors"] == 0, report["totals"]
    assert report["totals"]["compared"] == sum(r["compared"] for r in by_type.values()) >= 5


def test_a_rate_of_its_own_samples_the_apps_statements_of_that_read_type_only(in_shadow, app):
    """With a rate per read type (HRP_SHADOW_SAMPLES) the request describes a statement to pick its
    rate; without one the worker describes it: the read types reported are the same either way."""
    client, races = in_shadow
    lab = HrpCutover.state(app).cutover.shadow.lab
    _get(client, f"/races/{races[0]['id']}")
    described_later = set(_shadow_report(app)["by_read_type"])
    lab.set_sample("orm:Race", 0.0)
    try:
        _get(client, f"/races/{races[0]['id']}")
        by_type = _shadow_report(app)["by_read_type"]
    finally:
        lab.set_sample("orm:Race", None)
    assert set(by_type) == described_later, (by_type, described_later)
    counted = {name: r["compared"] for name, r in by_type.items()}
    assert [counted[name] for name in sorted(counted) if name.startswith("orm:Race#")] == [1], counted
    assert [counted[name] for name in sorted(counted) if name.startswith("orm:Prediction#")] == [2], counted


def test_a_value_changed_in_postgres_is_a_mismatch_of_the_entity_read(in_shadow, app, postgres_url):
    client, races = in_shadow
    _pg(postgres_url, "UPDATE races SET track_name = 'Planted' WHERE id = %s", races[1]["id"])
    assert _get(client, f"/races/{races[1]['id']}")["track_name"] == "York"  # the primary answers
    report = _shadow_report(app)
    mismatched = {name for name, r in report["by_read_type"].items() if r["mismatched"]}
    assert len(mismatched) == 1 and re.fullmatch(r"orm:Race#[0-9a-f]{6}", mismatched.pop())
    example = report["examples"][0]
    assert (example["table"], example["key"], example["column"]) == ("races", [races[1]["id"]], "track_name")
    assert (example["primary"], example["secondary"]) == ("York", "Planted")


def test_a_sqlite_only_query_is_a_candidate_error_not_a_mismatch(in_shadow, app, operator):
    client, _ = in_shadow
    assert _get(client, "/reports/years") == {"2025": 2}
    report = _shadow_report(app)
    assert report["totals"]["mismatched"] == 0 and report["totals"]["errors"] == 0
    assert report["totals"]["candidate_errors"] == 1
    (failing,) = report["candidate_errors"]
    assert re.fullmatch(r"sql:races#[0-9a-f]{6}", failing["read_type"])
    assert failing["fingerprint"] == failing["read_type"][-6:]
    assert failing["error_class"] == "UndefinedFunction" and "strftime" in failing["error"]
    assert "strftime" in failing["statement"] and failing["secondary_db"] == "postgres"
    assert mismatch_summary(operator.sqlite, 3600)["mismatches"] == 0
    text = render_text(report)
    assert failing["read_type"] in text.split("candidate errors (")[1]
    assert failing["read_type"] in render_html(report)
    checks = {check.name: check for check in checklist(operator, Phase.POSTGRES_PRIMARY)}
    assert checks["app_queries"].ok and checks["app_queries"].detail.startswith("warning:")
    assert failing["read_type"] in checks["app_queries"].detail


def test_after_the_flip_a_sqlite_only_query_the_primary_refuses_is_a_candidate_error_not_a_mismatch(
    in_shadow, app, operator, legacy_file, postgres_url
):
    """Once PostgreSQL is the primary the app's SQLite-only query fails there (the app gets its
    error) and runs on SQLite: not a difference of data, so it must not count against the
    rollback's shadow check (the rollback is what puts that query right again)."""
    client, _ = in_shadow
    wait_drained(HrpCutover.state(app).cutover)
    move(operator, Phase.POSTGRES_PRIMARY)
    time.sleep(0.6)  # the app's phase cache
    response = client.get("/reports/years")
    response.close()
    assert response.status_code == 500  # the app's own query fails on its new primary
    report = _shadow_report(app)
    assert report["totals"]["mismatched"] == 0 and report["totals"]["errors"] == 0, report["totals"]
    assert report["totals"]["candidate_errors"] == 1
    (failing,) = report["candidate_errors"]
    assert failing["error_class"] == "UndefinedFunction" and "strftime" in failing["error"]
    assert (failing["secondary_db"], failing["primary_db"]) == ("postgres", "sqlite")  # refused by, ran on
    assert mismatch_summary(operator.sqlite, 3600)["mismatches"] == 0
    assert report["differences"] == {} or not any(d["count"] for d in report["differences"].values())
    checks = {check.name: check for check in checklist(operator, Phase.SHADOW)}
    assert "app_queries" not in checks  # it fails on PostgreSQL, not on SQLite, the rollback's primary


def test_reads_inside_a_write_transaction_are_not_shadowed(in_shadow, app):
    _, races = in_shadow
    with app.app_context():
        race = db.session.get(Race, races[0]["id"])
        race.status = "running"
        db.session.flush()
        db.session.execute(sa.select(Race).where(Race.track_name == "York")).scalars().all()
        db.session.execute(sa.text("SELECT count(*) FROM races")).scalar()
        db.session.commit()
    report = _shadow_report(app)
    assert report["totals"]["compared"] == 1, report["by_read_type"]  # only the get before the write


def test_no_secret_value_of_an_apps_query_reaches_the_store_or_the_report(in_shadow, app, legacy_file, postgres_url):
    client, _ = in_shadow
    _sqlite(legacy_file, "INSERT INTO users (id, username, email, password_hash) VALUES (7, 'ann', 'a@x', 'hash-one')")
    HrpCutover.state(app).cutover.applier.notify()
    deadline = time.monotonic() + 10
    while not _pg(postgres_url, "SELECT id FROM users WHERE id = 7"):
        assert time.monotonic() < deadline, "the applier did not carry the user"
        time.sleep(0.05)
    _pg(postgres_url, "UPDATE users SET password_hash = 'hash-two', username = 'bob' WHERE id = 7")
    with app.app_context():
        db.session.execute(
            sa.text("SELECT id, username, password_hash AS reset_token FROM users WHERE password_hash <> :secret"),
            {"secret": "param-secret"},
        ).all()
        db.session.execute(sa.text("SELECT id, strftime('%Y', 'now') FROM users WHERE password_hash <> :p"),
                           {"p": "param-secret"}).all()
    report = _shadow_report(app)
    assert report["totals"]["mismatched"] == 1 and report["totals"]["candidate_errors"] == 1
    columns = {(e["column"], json.dumps(e["primary"]), json.dumps(e["secondary"])) for e in report["examples"]}
    assert ("username", '"ann"', '"bob"') in columns
    assert any(column == "reset_token" and "sha256:" in primary for column, primary, _ in columns)
    stored = "\n".join(" ".join(map(str, row)) for row in _sqlite(legacy_file, "SELECT * FROM hrp_cutover_mismatches"))
    stored += "\n".join(" ".join(map(str, row)) for row in _sqlite(legacy_file, "SELECT * FROM hrp_cutover_candidate_errors"))
    for shown in (stored, render_text(report), render_json(report), render_html(report)):
        assert "hash-one" not in shown and "hash-two" not in shown and "param-secret" not in shown
