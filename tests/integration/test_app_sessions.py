"""The app's own Flask-SQLAlchemy session follows the cutover (hrp_data.cutover.routing).

The example app (tests/e2e/example_app) keeps its own models and db.session; with
`HrpCutover().init_app(app, db=db)` its writes reach the current primary through the
write gate and its reads follow a flip within a second.
"""

from __future__ import annotations

import datetime as dt
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
from hrp_data.cutover.dual_write import Cutover
from hrp_data.flip.move import move
from hrp_data.cutover.phases import Phase
from hrp_data.schema.install import upgrade
from hrp_data.web import HrpCutover
from tests.conftest import MAINTENANCE
from tests.e2e.example_app.app import create_app
from tests.e2e.example_app.models import Race, db
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
    with Cutover(settings_for(legacy_file, postgres_url)) as cutover:
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
    with Cutover(settings_for(legacy_file, postgres_url)).start() as cutover:
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
