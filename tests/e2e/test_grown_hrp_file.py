"""The HRP file grown as real apps grow (issue 18): columns the models do not know (races.going,
horses.sire) and a table of its own (race_results, with foreign keys to races and horses).

It goes through the operator's CLI path while the HRP app serves it, and nothing is left behind:
an independent comparison (tests/integration/test_any_schema.assert_same_data) finds every row
and value of the file in PostgreSQL; the app's API writes keep the columns it does not know on
both sides.
"""

from __future__ import annotations

import sqlite3

from tools.seed import seed_database
from hrp_data.web import create_app, services
from hrp_data.web.extension import HrpCutover
from tests.e2e.conftest import PASSWORD, login, unique, wait_until
from tests.integration.cutover_helpers import settings_for
from tests.integration.test_any_schema import _cli, _plain_sqlite, assert_same_data
from tests.integration.test_backfill import pg_query

GROWTH = """
ALTER TABLE races ADD COLUMN going TEXT DEFAULT 'good';
UPDATE races SET going = CASE id % 3 WHEN 0 THEN 'soft' WHEN 1 THEN 'firm' ELSE 'good' END;
ALTER TABLE horses ADD COLUMN sire TEXT;
UPDATE horses SET sire = 'Sire of ' || horse_name;
CREATE TABLE race_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    race_id INTEGER NOT NULL REFERENCES races (id) ON DELETE CASCADE,
    horse_id INTEGER NOT NULL REFERENCES horses (id),
    position INTEGER,
    time_s REAL,
    recorded_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
INSERT INTO race_results (race_id, horse_id, position, time_s)
    SELECT race_id, horse_id, finish_position, 60.0 + post_position * 0.37 FROM race_horses
    WHERE finish_position IS NOT NULL;
"""


def _one(sqlite_path, sql, params=()):
    connection = sqlite3.connect(sqlite_path)
    try:
        return connection.execute(sql, params).fetchone()
    finally:
        connection.close()


def test_the_grown_hrp_file_migrates_with_nothing_left_behind(tmp_path, postgres_url, monkeypatch):
    monkeypatch.setenv("HRP_SHADOW_MIN_READS", "1")
    path = tmp_path / "hrp_database.db"
    seed_database(path, races=20, seed=7)
    _plain_sqlite(path, GROWTH)
    results = _one(path, "SELECT count(*) FROM race_results")[0]
    assert results > 0

    report = _cli(path, postgres_url, "assess")
    assert "races.going" in report and "horses.sire" in report and "race_results" in report
    _cli(path, postgres_url, "schema")
    _cli(path, postgres_url, "phase", "set", "dual_write")

    app = create_app(settings_for(path, postgres_url))
    app.config["TESTING"] = True
    state = HrpCutover.state(app)
    cutover = state.cutover
    try:
        admin_name = unique("admin")
        services.register_user(cutover, username=admin_name, email=f"{admin_name}@example.com",
                               password=PASSWORD, is_admin=True)
        admin = app.test_client()
        login(admin, admin_name)

        # the API writes a race and a horse it knows only in part
        patched = admin.patch("/api/races/1", json={"status": "finished"})
        assert patched.status_code == 200, patched.get_json()
        horse = admin.post("/api/horses", json={"horse_name": unique("Horse "), "age": 3})
        assert horse.status_code == 201, horse.get_json()
        assert _one(path, "SELECT going, status FROM races WHERE id = 1") == ("firm", "finished")

        _cli(path, postgres_url, "backup")
        _cli(path, postgres_url, "backfill")
        _plain_sqlite(path, "UPDATE races SET going = 'heavy' WHERE id = 2;"
                            " INSERT INTO race_results (race_id, horse_id, position) VALUES (2, 1, 9);")
        admin.patch("/api/horses/1", json={"age": 9})
        _cli(path, postgres_url, "replay")
        _cli(path, postgres_url, "verify")
        assert_same_data(path, postgres_url)
        assert pg_query(postgres_url, "SELECT going, status FROM races WHERE id = 1") == [("firm", "finished")]
        assert pg_query(postgres_url, "SELECT sire FROM horses WHERE id = 1") == [
            _one(path, "SELECT sire FROM horses WHERE id = 1")]

        _cli(path, postgres_url, "phase", "set", "shadow")
        wait_until(lambda: cutover.phase(fresh=True).phase.value == "shadow", "the app sees phase shadow", 10)
        for race_id in (1, 2, 3):
            assert admin.get(f"/api/races/{race_id}").status_code == 200
        cutover.shadow.flush(timeout=10.0)  # the app's shadow reads reach the store the flip's checks read
        _cli(path, postgres_url, "verify")
        _cli(path, postgres_url, "flip")
        wait_until(lambda: cutover.phase(fresh=True).phase.value == "postgres_primary", "the app sees the flip", 10)

        # PostgreSQL is the primary: the API's write keeps going and sire there, and reaches SQLite whole
        assert admin.patch("/api/races/2", json={"surface": "dirt"}).status_code == 200
        assert admin.patch("/api/horses/2", json={"age": 7}).status_code == 200
        _cli(path, postgres_url, "replay")
        assert _one(path, "SELECT going, surface FROM races WHERE id = 2") == ("heavy", "dirt")
        assert pg_query(postgres_url, "SELECT going FROM races WHERE id = 2") == [("heavy",)]
        assert_same_data(path, postgres_url)

        _cli(path, postgres_url, "verify")
        _cli(path, postgres_url, "rollback")
        _plain_sqlite(path, "UPDATE horses SET sire = 'changed after rollback' WHERE id = 3;")
        _cli(path, postgres_url, "replay")
        assert pg_query(postgres_url, "SELECT sire FROM horses WHERE id = 3") == [("changed after rollback",)]
        assert_same_data(path, postgres_url)
    finally:
        state.close()


def test_the_api_on_a_file_without_the_hrp_tables_says_it_needs_them(tmp_path, postgres_url):
    """Another app's file: the cutover's CLI moves it; the HRP API answers 503 naming why, no SQL error."""
    from tests.schema_corpus import SHAPE_IDS, SHAPES

    shape = SHAPES[SHAPE_IDS.index("mixed_case")]
    path = tmp_path / "other.db"
    _plain_sqlite(path, shape.ddl + shape.rows)
    app = create_app(settings_for(path, postgres_url), applier=False)
    state = HrpCutover.state(app)
    try:
        answer = app.test_client().get("/api/races")
        assert answer.status_code == 503
        assert "needs the HRP tables" in answer.get_json()["error"]
    finally:
        state.close()
