"""The JSON API through Flask's test client, in every phase, on real databases.

Each phase gets one app (module-scoped `world`); the last test of each phase checks
that both databases hold the same rows where both are written.
"""

from __future__ import annotations

import datetime as dt
import json

import psycopg2
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import MAINTENANCE
from hrp_data.cutover.phases import Phase
from tests.e2e.conftest import unique
from tests.integration.cutover_helpers import assert_equal, postgres_rows, sqlite_rows, wait_drained


def _ok(response, status=200):
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    return response.get_json()


def _race(world, **fields):
    body = {"race_name": unique("Race "), "race_date": "2025-03-01", "track_name": "Ascot", "distance": 1609.5,
            "weather_conditions": {"wind": "NW", "temp_c": 14.5}, **fields}
    return _ok(world.admin.post("/api/races", json=body), 201)


def _horse(world, **fields):
    return _ok(world.admin.post("/api/horses", json={"horse_name": unique("Horse "), "age": 4, **fields}), 201)


def _is_utc_iso(text: str) -> bool:
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return text.endswith("Z") and parsed.utcoffset() == dt.timedelta(0)


def test_races_crud_with_runners(world):
    race = _race(world, prize_money=25000.0, status="scheduled")
    assert race["race_date"] == "2025-03-01" and race["weather_conditions"] == {"wind": "NW", "temp_c": 14.5}
    assert _is_utc_iso(race["created_at"]) and race["runners"] == []
    horse = _horse(world)
    runner = _ok(world.admin.put(f"/api/races/{race['id']}/runners/{horse['id']}",
                                 json={"post_position": 3, "odds": 4.5}))
    assert runner == {"race_id": race["id"], "horse_id": horse["id"], "post_position": 3, "odds": 4.5,
                      "finish_position": None}
    _ok(world.admin.put(f"/api/races/{race['id']}/runners/{horse['id']}",
                        json={"post_position": 3, "odds": 4.0, "finish_position": 1}))
    got = _ok(world.anon.get(f"/api/races/{race['id']}"))
    assert [r["finish_position"] for r in got["runners"]] == [1] and got["predictions"] == []
    patched = _ok(world.admin.patch(f"/api/races/{race['id']}", json={"status": "finished", "surface": "turf"}))
    assert patched["status"] == "finished" and patched["surface"] == "turf" and len(patched["runners"]) == 1
    assert _ok(world.anon.get(f"/api/races/{race['id']}"))["status"] == "finished"
    assert world.admin.delete(f"/api/races/{race['id']}/runners/{horse['id']}").status_code == 204
    assert world.admin.delete(f"/api/races/{race['id']}/runners/{horse['id']}").status_code == 404
    assert world.admin.delete(f"/api/races/{race['id']}").status_code == 204
    assert world.anon.get(f"/api/races/{race['id']}").status_code == 404
    assert world.admin.patch(f"/api/races/{race['id']}", json={"status": "running"}).status_code == 404
    assert world.admin.delete(f"/api/races/{race['id']}").status_code == 404


def test_race_filters_and_keyset_pagination(world):
    track = unique("Track ")
    made = [_race(world, track_name=track, race_date=f"2025-04-0{i + 1}", status="running" if i % 2 else "scheduled")["id"]
            for i in range(5)]
    seen, cursor, pages = [], None, 0
    while True:
        url = f"/api/races?track={track}&limit=2" + (f"&after={cursor}" if cursor is not None else "")
        page = _ok(world.anon.get(url))
        seen += [r["id"] for r in page["items"]]
        cursor, pages = page["next"], pages + 1
        if cursor is None:
            break
    assert seen == made and pages == 3
    running = _ok(world.anon.get(f"/api/races?track={track}&status=running"))["items"]
    assert [r["id"] for r in running] == made[1::2]
    dated = _ok(world.anon.get(f"/api/races?track={track}&date=2025-04-03"))["items"]
    assert [r["id"] for r in dated] == [made[2]]


def test_horses_crud_and_search(world):
    marker = unique("Zq")
    first = _horse(world, horse_name=f"{marker} Flyer", weight=480.5, jockey="J. Smith", form="1-2-3")
    _horse(world, horse_name=f"Other {marker.lower()} Star")
    _horse(world, horse_name=unique("Unrelated "))
    found = _ok(world.anon.get(f"/api/horses?name={marker}"))
    assert len(found["items"]) == 2 and found["next"] is None
    assert _ok(world.anon.get(f"/api/horses/{first['id']}"))["weight"] == 480.5
    patched = _ok(world.admin.patch(f"/api/horses/{first['id']}", json={"age": 5, "trainer": None}))
    assert patched["age"] == 5 and patched["trainer"] is None and _is_utc_iso(patched["updated_at"])
    assert world.admin.delete(f"/api/horses/{first['id']}").status_code == 204
    assert world.anon.get(f"/api/horses/{first['id']}").status_code == 404
    assert world.admin.patch(f"/api/horses/{first['id']}", json={"age": 6}).status_code == 404


def test_predictions_ordered_by_confidence_and_deleted_by_author(world):
    race, horse, other = _race(world), _horse(world), _horse(world)
    low = _ok(world.user.post("/api/predictions", json={
        "race_id": race["id"], "horse_id": horse["id"], "prediction_value": 0.25, "confidence": 0.3,
        "algorithm_version": "v1", "features": {"speed": [1, 2.5], "going": "soft"}}), 201)
    high = _ok(world.admin.post("/api/predictions", json={
        "race_id": race["id"], "horse_id": other["id"], "confidence": 0.9}), 201)
    assert low["features"] == {"speed": [1, 2.5], "going": "soft"} and _is_utc_iso(low["created_at"])
    listed = _ok(world.anon.get(f"/api/races/{race['id']}/predictions"))["items"]
    assert [p["id"] for p in listed] == [high["id"], low["id"]]
    assert [p["id"] for p in _ok(world.anon.get(f"/api/races/{race['id']}"))["predictions"]] == [high["id"], low["id"]]
    assert world.user.delete(f"/api/predictions/{high['id']}").status_code == 403
    assert world.user.delete(f"/api/predictions/{low['id']}").status_code == 204
    assert world.admin.delete(f"/api/predictions/{high['id']}").status_code == 204
    assert world.admin.delete(f"/api/predictions/{high['id']}").status_code == 404
    assert world.anon.get("/api/races/999999999/predictions").status_code == 404


def test_prediction_for_unknown_race_or_horse_is_404_with_field(world):
    race, horse = _race(world), _horse(world)
    missing_race = world.user.post("/api/predictions", json={"race_id": 987654321, "horse_id": horse["id"]})
    assert missing_race.status_code == 404 and missing_race.get_json()["field"] == "race_id"
    missing_horse = world.user.post("/api/predictions", json={"race_id": race["id"], "horse_id": 987654321})
    assert missing_horse.status_code == 404 and missing_horse.get_json()["field"] == "horse_id"
    assert world.admin.put(f"/api/races/{race['id']}/runners/987654321", json={}).status_code == 404
    assert world.admin.put(f"/api/races/987654321/runners/{horse['id']}", json={}).status_code == 404


def test_credentials_show_the_secret_only_once(world):
    key, secret = unique("key-"), unique("secret-")
    created = _ok(world.admin.post("/api/credentials", json={
        "service_name": "odds-feed", "api_key": key, "api_secret": secret,
        "endpoint_url": "https://odds.example.com/v1"}), 201)
    assert created["api_key"] == key and created["api_secret"] == secret
    assert created["api_key_fingerprint"].startswith("sha256:")
    listed = world.admin.get("/api/credentials?limit=200")
    body = listed.get_data(as_text=True)
    assert listed.status_code == 200 and key not in body and secret not in body
    mine = [c for c in listed.get_json()["items"] if c["id"] == created["id"]]
    assert mine and mine[0]["api_key_fingerprint"] == created["api_key_fingerprint"]
    assert "api_key" not in mine[0] and "api_secret" not in mine[0] and mine[0]["is_active"] is True
    assert world.admin.delete(f"/api/credentials/{created['id']}").status_code == 204
    assert world.admin.delete(f"/api/credentials/{created['id']}").status_code == 404


def test_statistics(world):
    race, horse = _race(world), _horse(world)
    for confidence in (0.5, 0.9):
        _ok(world.user.post("/api/predictions", json={"race_id": race["id"], "horse_id": horse["id"],
                                                     "confidence": confidence}), 201)
    races = _ok(world.anon.get(f"/api/stats/races?after={race['id'] - 1}&limit=1"))
    assert races["items"] == [{"race_id": race["id"], "prediction_count": 2, "avg_confidence": 0.7,
                               "min_confidence": 0.5, "max_confidence": 0.9}]
    horses = _ok(world.anon.get(f"/api/stats/horses?after={horse['id'] - 1}&limit=1"))
    assert horses["items"][0] == {"horse_id": horse["id"], "prediction_count": 2, "avg_confidence": 0.7,
                                  "max_confidence": 0.9, "high_confidence_count": 1}


def test_register_login_and_logout(world):
    client, name = world.app.test_client(), unique("reader")
    created = _ok(client.post("/api/users", json={"username": name, "email": f"{name}@example.com",
                                                  "password": "long enough"}), 201)
    assert set(created) == {"id", "username", "email", "is_admin", "created_at", "last_login"}
    assert created["is_admin"] is False
    assert client.post("/api/predictions", json={"race_id": 1, "horse_id": 1}).status_code == 401
    session = _ok(client.post("/api/session", json={"username": name, "password": "long enough"}))
    assert client.get_cookie("hrp_session") is not None and _is_utc_iso(session["user"]["last_login"])
    assert "password_hash" not in json.dumps(session)
    assert client.delete("/api/session").status_code == 204
    assert client.post("/api/predictions", json={"race_id": 1, "horse_id": 1}).status_code == 401


def _pg_count(url: str, table: str) -> int:
    with psycopg2.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False), options=MAINTENANCE) as c:
        with c.cursor() as cursor:
            cursor.execute(f'SELECT count(*) FROM "{table}"')
            return cursor.fetchone()[0]


def test_zz_the_databases_hold_what_the_phase_writes(world):
    """Last test of each phase: both sides equal where both are written, else only the primary has rows."""
    if world.both_written:
        wait_drained(world.cutover)
        assert_equal(world.sqlite_path, world.postgres_url)
        assert _pg_count(world.postgres_url, "races") > 0
    elif world.phase is Phase.SQLITE_ONLY:
        assert sum(len(rows) for rows in sqlite_rows(world.sqlite_path).values()) > 0
        assert sum(len(rows) for rows in postgres_rows(world.postgres_url).values()) == 0
    else:
        assert sum(len(rows) for rows in postgres_rows(world.postgres_url).values()) > 0
        assert sum(len(rows) for rows in sqlite_rows(world.sqlite_path).values()) == 0


# -- validation: phase-independent, so one app (phase shadow) ------------------------------

BAD_RACES = [
    ({"race_date": "2025-03-01"}, "race_name"),
    ({"race_name": ""}, "race_name"),
    ({"race_name": None}, "race_name"),
    ({"race_name": 12}, "race_name"),
    ({"race_name": "a" * 201}, "race_name"),
    ({"race_name": "nul\u0000byte"}, "race_name"),
    ({"race_name": "lone \ud800 surrogate"}, "race_name"),
    ({"race_name": "ok", "race_date": "2025-02-30"}, "race_date"),
    ({"race_name": "ok", "race_date": "01/03/2025"}, "race_date"),
    ({"race_name": "ok", "race_date": "2025-3-1"}, "race_date"),
    ({"race_name": "ok", "race_date": 20250301}, "race_date"),
    ({"race_name": "ok", "distance": "far"}, "distance"),
    ({"race_name": "ok", "distance": -5}, "distance"),
    ({"race_name": "ok", "distance": True}, "distance"),
    ({"race_name": "ok", "distance": 1e300}, "distance"),
    ({"race_name": "ok", "prize_money": 2**63}, "prize_money"),
    ({"race_name": "ok", "status": "postponed"}, "status"),
    ({"race_name": "ok", "status": None}, "status"),
    ({"race_name": "ok", "weather_conditions": "sunny"}, "weather_conditions"),
    ({"race_name": "ok", "weather_conditions": [1, 2]}, "weather_conditions"),
    ({"race_name": "ok", "weather_conditions": {"note": "nul\u0000"}}, "weather_conditions"),
    ({"race_name": "ok", "weather_conditions": {"big": "x" * 20000}}, "weather_conditions"),
    ({"race_name": "ok", "colour": "blue"}, "colour"),
]


@pytest.mark.parametrize("body, field", BAD_RACES, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD_RACES)])
def test_bad_race_fields_are_400_with_the_field(shadow_world, body, field):
    response = shadow_world.admin.post("/api/races", json=body)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["field"] == field and response.get_json()["error"]


BAD_OTHERS = [
    ("post", "/api/horses", {"horse_name": "H", "age": 2.5}, "age"),
    ("post", "/api/horses", {"horse_name": "H", "age": -1}, "age"),
    ("post", "/api/horses", {"horse_name": "H", "age": "4"}, "age"),
    ("post", "/api/horses", {"horse_name": "H", "weight": 0}, "weight"),
    ("post", "/api/horses", {"horse_name": "H", "form": "x" * 101}, "form"),
    ("post", "/api/predictions", {"race_id": "1", "horse_id": 1}, "race_id"),
    ("post", "/api/predictions", {"race_id": 1}, "horse_id"),
    ("post", "/api/predictions", {"race_id": 0, "horse_id": 1}, "race_id"),
    ("post", "/api/predictions", {"race_id": 1, "horse_id": 1, "confidence": 1.5}, "confidence"),
    ("post", "/api/predictions", {"race_id": 1, "horse_id": 1, "features": "{}"}, "features"),
    ("post", "/api/predictions", {"race_id": 1, "horse_id": 1, "features": {"k\u0000": 1}}, "features"),
    ("post", "/api/predictions", {"race_id": 1, "horse_id": 1, "algorithm_version": ["v1"]}, "algorithm_version"),
    ("post", "/api/credentials", {"service_name": "s"}, "api_key"),
    ("post", "/api/credentials", {"service_name": "s", "api_key": "k", "endpoint_url": "ftp://x"}, "endpoint_url"),
    ("post", "/api/credentials", {"service_name": "s", "api_key": "k", "is_active": 1}, "is_active"),
    ("post", "/api/users", {"username": "ab", "email": "a@b.c", "password": "12345678"}, "username"),
    ("post", "/api/users", {"username": "abc", "email": "not-an-email", "password": "12345678"}, "email"),
    ("post", "/api/users", {"username": "abc", "email": "a@b.c", "password": "short"}, "password"),
    ("post", "/api/users", {"username": "a b c", "email": "a@b.c", "password": "12345678"}, "username"),
    ("post", "/api/session", {"username": "abc"}, "password"),
    ("put", "/api/races/1/runners/1", {"post_position": 0}, "post_position"),
    ("put", "/api/races/1/runners/1", {"odds": "evens"}, "odds"),
    ("put", "/api/races/1/runners/1", {"finish_position": 1.0}, "finish_position"),
    ("patch", "/api/races/1", {"race_name": None}, "race_name"),
    ("patch", "/api/horses/1", {"id": 7}, "id"),
    ("patch", "/api/horses/1", {"created_at": "2025-01-01"}, "created_at"),
]


@pytest.mark.parametrize("method, url, body, field", BAD_OTHERS,
                         ids=[f"{u.split('/')[2]}-{f}-{i}" for i, (_, u, _, f) in enumerate(BAD_OTHERS)])
def test_bad_fields_are_400_with_the_field(shadow_world, method, url, body, field):
    response = getattr(shadow_world.admin, method)(url, json=body)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["field"] == field


BAD_QUERIES = [
    ("/api/races?date=2025-13-01", "date"),
    ("/api/races?date=yesterday", "date"),
    ("/api/races?status=lost", "status"),
    ("/api/races?limit=0", "limit"),
    ("/api/races?limit=500", "limit"),
    ("/api/races?limit=ten", "limit"),
    ("/api/races?after=-1", "after"),
    ("/api/races?after=99999999999999999999999", "after"),
    ("/api/races?sort=name", "sort"),
    ("/api/races?limit=1&limit=2", "limit"),
    ("/api/races?track=%00", "track"),
    ("/api/horses?name=", "name"),
    ("/api/stats/races?limit=-3", "limit"),
    ("/api/races/1/predictions?limit=x", "limit"),
]


@pytest.mark.parametrize("url, field", BAD_QUERIES, ids=[f for _, f in BAD_QUERIES])
def test_bad_query_parameters_are_400_with_the_field(shadow_world, url, field):
    response = shadow_world.anon.get(url)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["field"] == field


MALFORMED = [
    b"{not json",
    b'{"race_name": "a",}',
    b'{"race_name": NaN}',
    b'{"race_name": "a", "race_name": "b"}',
    b"\xff\xfe{}",
    b"[" * 100_000 + b"]" * 100_000,
    b"   ",
]


@pytest.mark.parametrize("data", MALFORMED, ids=["syntax", "trailing-comma", "nan", "duplicate-key", "not-utf8",
                                                 "deep", "blank"])
def test_malformed_json_is_400(shadow_world, data):
    response = shadow_world.admin.post("/api/races", data=data, content_type="application/json")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["field"] is None and response.get_json()["error"]


def test_a_body_that_is_not_an_object_or_not_json_typed(shadow_world):
    assert shadow_world.admin.post("/api/races", json=["race_name"]).status_code == 400
    assert shadow_world.admin.post("/api/races", json="race").status_code == 400
    assert shadow_world.admin.patch("/api/races/1", json={}).status_code == 400
    as_form = shadow_world.admin.post("/api/races", data={"race_name": "form"})
    assert as_form.status_code == 415 and as_form.get_json()["error"]


def test_unknown_ids_and_routes_are_json_404s(shadow_world):
    for url in ("/api/races/0", "/api/races/999999999", "/api/races/99999999999999999999999999",
                "/api/races/abc", "/api/horses/999999999", "/api/nothing-here"):
        response = shadow_world.anon.get(url)
        assert response.status_code == 404 and response.get_json()["error"], url
    assert shadow_world.admin.delete("/api/credentials/999999999").status_code == 404
    assert shadow_world.admin.delete("/api/predictions/999999999").status_code == 404
    wrong_method = shadow_world.anon.put("/api/horses")
    assert wrong_method.status_code == 405 and wrong_method.get_json()["error"]


def test_a_too_large_body_is_refused(shadow_world):
    big = json.dumps({"race_name": "x" * 300_000})
    response = shadow_world.admin.post("/api/races", data=big, content_type="application/json")
    assert response.status_code == 413 and response.get_json()["error"]


def test_a_bad_request_leaves_nothing_written(shadow_world):
    before = _ok(shadow_world.anon.get("/api/races?limit=200"))
    response = shadow_world.admin.post("/api/races", json={"race_name": "half", "race_date": "2025-02-30"})
    assert response.status_code == 400
    assert _ok(shadow_world.anon.get("/api/races?limit=200")) == before
