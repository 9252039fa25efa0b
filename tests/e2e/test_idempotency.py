"""Idempotency-Key on the API's writes, on real databases: in every phase, across a flip and a
rollback, under concurrent repeats, and the key store's expiry.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from hrp_data.cutover import idempotency
from hrp_data.flip.move import move
from hrp_data.cutover.phases import Phase
from tests.e2e.conftest import build_world, login, unique
from tests.integration.cutover_helpers import wait_drained


def _count(world, table: str, column: str, value) -> dict[str, int]:
    """How many rows have `value` in `column`, per database that holds the table."""
    query = sa.text(f'SELECT count(*) FROM "{table}" WHERE "{column}" = :v')
    counts = {}
    for name, engine in (("sqlite", world.cutover.sqlite), ("postgres", world.cutover.postgres)):
        with engine.connect() as connection:
            if sa.inspect(connection).has_table(table):
                counts[name] = connection.execute(query, {"v": value}).scalar()
    return counts


def _primary(world) -> str:
    return world.cutover.phase_row(fresh=True).primary


def _keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def test_a_repeat_returns_the_same_answer_and_writes_once(world):
    name, key = unique("Keyed Horse "), str(uuid.uuid4())
    body = {"horse_name": name, "age": 4, "weight": 480.5}
    first = world.admin.post("/api/horses", json=body, headers=_keyed(key))
    again = world.admin.post("/api/horses", json=body, headers=_keyed(key))
    assert first.status_code == again.status_code == 201, (first.get_json(), again.get_json())
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert _count(world, "horses", "horse_name", name)[_primary(world)] == 1
    other = world.admin.post("/api/horses", json=body, headers=_keyed(str(uuid.uuid4())))
    assert other.status_code == 201 and other.get_json()["id"] != first.get_json()["id"]
    plain = world.admin.post("/api/horses", json=body)
    assert plain.status_code == 201 and "Idempotent-Replayed" not in plain.headers


def test_the_same_key_with_another_request_is_a_422(world):
    key = str(uuid.uuid4())
    horse = world.admin.post("/api/horses", json={"horse_name": unique("Horse "), "age": 4}, headers=_keyed(key))
    assert horse.status_code == 201
    changed = world.admin.post("/api/horses", json={"horse_name": unique("Horse "), "age": 5}, headers=_keyed(key))
    assert changed.status_code == 422
    assert changed.get_json() == {"error": "this Idempotency-Key was already used with another request; use a new key",
                                  "field": "Idempotency-Key"}
    elsewhere = world.admin.patch(f"/api/horses/{horse.get_json()['id']}", json={"age": 4}, headers=_keyed(key))
    assert elsewhere.status_code == 422


def test_keys_belong_to_one_user(world):
    race = world.admin.post("/api/races", json={"race_name": unique("Race ")}).get_json()
    runner = world.admin.post("/api/horses", json={"horse_name": unique("Horse ")}).get_json()
    body = {"race_id": race["id"], "horse_id": runner["id"], "confidence": 0.5}
    key = str(uuid.uuid4())
    mine = world.user.post("/api/predictions", json=body, headers=_keyed(key))
    theirs = world.admin.post("/api/predictions", json=body, headers=_keyed(key))
    assert mine.status_code == theirs.status_code == 201
    assert mine.get_json()["id"] != theirs.get_json()["id"] and theirs.get_json()["user_id"] != mine.get_json()["user_id"]


def test_deletes_and_errors_under_a_key(world):
    horse = world.admin.post("/api/horses", json={"horse_name": unique("Horse ")}).get_json()
    key = str(uuid.uuid4())
    assert world.admin.delete(f"/api/horses/{horse['id']}", headers=_keyed(key)).status_code == 204
    replayed = world.admin.delete(f"/api/horses/{horse['id']}", headers=_keyed(key))
    assert replayed.status_code == 204 and replayed.headers["Idempotent-Replayed"] == "true"
    assert world.admin.delete(f"/api/horses/{horse['id']}").status_code == 404
    missing = str(uuid.uuid4())  # an error is not stored: the repeat runs again
    assert world.admin.patch("/api/horses/999999999", json={"age": 3}, headers=_keyed(missing)).status_code == 404
    again = world.admin.patch("/api/horses/999999999", json={"age": 3}, headers=_keyed(missing))
    assert again.status_code == 404 and "Idempotent-Replayed" not in again.headers


def test_a_replayed_credential_shows_no_secret(world):
    secret, key = unique("keyed-secret-"), str(uuid.uuid4())
    body = {"service_name": "odds-feed", "api_key": unique("keyed-key-"), "api_secret": secret}
    created = world.admin.post("/api/credentials", json=body, headers=_keyed(key))
    assert created.status_code == 201 and created.get_json()["api_secret"] == secret
    replayed = world.admin.post("/api/credentials", json=body, headers=_keyed(key))
    assert replayed.status_code == 201 and replayed.get_json()["id"] == created.get_json()["id"]
    assert secret not in replayed.get_data(as_text=True) and "api_secret" not in replayed.get_json()
    assert replayed.get_json()["api_secret_fingerprint"] == created.get_json()["api_secret_fingerprint"]
    for engine in (world.cutover.sqlite, world.cutover.postgres):
        with engine.connect() as connection:
            if sa.inspect(connection).has_table(idempotency.KEYS_TABLE):
                bodies = connection.execute(sa.select(idempotency.keys.c.body)).scalars().all()
                assert not any(secret in stored or body["api_key"] in stored for stored in bodies)


@pytest.mark.parametrize("raw", ["x" * 256, "clé-é", "tab\there", "   "])
def test_a_bad_key_is_a_400_and_writes_nothing(shadow_world, raw):
    name = unique("Bad Key Horse ")
    response = shadow_world.admin.post("/api/horses", json={"horse_name": name},
                                       headers={"Idempotency-Key": raw.encode().decode("latin-1")})
    assert response.status_code == 400
    assert response.get_json() == {"error": "Idempotency-Key must be 1 to 255 printable ASCII characters",
                                   "field": "Idempotency-Key"}
    assert _count(shadow_world, "horses", "horse_name", name)["sqlite"] == 0


def test_registering_twice_with_a_key_makes_one_user(shadow_world):
    username, key = unique("keyed"), str(uuid.uuid4())
    body = {"username": username, "email": f"{username}@example.com", "password": "keyed password 1"}
    first = shadow_world.anon.post("/api/users", json=body, headers=_keyed(key))
    again = shadow_world.anon.post("/api/users", json=body, headers=_keyed(key))
    assert first.status_code == again.status_code == 201 and again.get_json() == first.get_json()
    assert _count(shadow_world, "users", "username", username)["sqlite"] == 1


@pytest.fixture
def flipping_world(tmp_path, postgres_server_url):
    with build_world(Phase.SHADOW, tmp_path, postgres_server_url) as built:
        yield built


def test_a_repeat_after_the_flip_and_after_the_rollback_finds_its_key(flipping_world):
    world = flipping_world
    name, key = unique("Flip Horse "), str(uuid.uuid4())
    body = {"horse_name": name, "age": 6}
    first = world.admin.post("/api/horses", json=body, headers=_keyed(key))  # SQLite is primary
    assert first.status_code == 201
    move(world.cutover, Phase.POSTGRES_PRIMARY)
    login(world.admin, world.admin_name)
    after_flip = world.admin.post("/api/horses", json=body, headers=_keyed(key))  # PostgreSQL is primary
    assert after_flip.status_code == 201 and after_flip.get_json() == first.get_json()
    assert after_flip.headers["Idempotent-Replayed"] == "true"
    second_name, second_key = unique("Rollback Horse "), str(uuid.uuid4())
    second = world.admin.post("/api/horses", json={"horse_name": second_name}, headers=_keyed(second_key))
    assert second.status_code == 201
    move(world.cutover, Phase.SHADOW)
    after_rollback = world.admin.post("/api/horses", json={"horse_name": second_name}, headers=_keyed(second_key))
    assert after_rollback.status_code == 201 and after_rollback.get_json() == second.get_json()
    assert after_rollback.headers["Idempotent-Replayed"] == "true"
    wait_drained(world.cutover)
    assert _count(world, "horses", "horse_name", name) == {"sqlite": 1, "postgres": 1}
    assert _count(world, "horses", "horse_name", second_name) == {"sqlite": 1, "postgres": 1}
    ident = idempotency.key_id(f"user:{_admin_id(world)}", key)
    assert _count(world, idempotency.KEYS_TABLE, "id", ident) == {"sqlite": 1, "postgres": 1}


def _admin_id(world) -> int:
    with world.cutover.sqlite.connect() as connection:
        return connection.execute(sa.text("SELECT id FROM users WHERE username = :u"), {"u": world.admin_name}).scalar()


def test_concurrent_repeats_write_once(flipping_world):
    world = flipping_world
    move(world.cutover, Phase.POSTGRES_PRIMARY)
    clients = [world.app.test_client() for _ in range(4)]
    for client in clients:
        login(client, world.admin_name)
    name, key = unique("Concurrent Horse "), str(uuid.uuid4())
    answers: list = []
    start = threading.Barrier(len(clients))

    def send(client) -> None:
        start.wait()
        response = client.post("/api/horses", json={"horse_name": name}, headers=_keyed(key))
        answers.append((response.status_code, response.get_json()["id"]))

    threads = [threading.Thread(target=send, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == 4 and {status for status, _ in answers} == {201}
    assert len({ident for _, ident in answers}) == 1
    assert _count(world, "horses", "horse_name", name)["postgres"] == 1


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_an_expired_key_is_taken_over_and_purged(flipping_world, database, monkeypatch):
    engine = getattr(flipping_world.cutover, database)
    day_ago = time.time() - idempotency.TTL_S - 60
    # record() purges at most every PURGE_EVERY_S per process: one falling due between the two
    # records below (the process's last purge was another test's) would take both keys before the
    # forced purge this test is about; for this test only the forced one runs
    monkeypatch.setattr(idempotency, "_last_purge", time.time() + 3600)
    with engine.begin() as connection:
        idempotency.install(connection)
        assert idempotency.claim(connection, "user:1", "old", "print-a", now=day_ago) is None
        idempotency.record(connection, "user:1", "old", 201, "{}")
        assert idempotency.claim(connection, "user:1", "stale", "print-b", now=day_ago) is None
        idempotency.record(connection, "user:1", "stale", 201, "{}")
    with engine.begin() as connection:
        assert idempotency.claim(connection, "user:1", "old", "print-c") is None  # expired: taken over
        assert idempotency.purge_expired(connection, force=True) == 1  # "stale"; "old" is live again
        stored = connection.execute(sa.select(idempotency.keys.c.idem_key, idempotency.keys.c.fingerprint)
                                    .where(idempotency.keys.c.scope == "user:1")).all()
    assert [tuple(row) for row in stored] == [("old", "print-c")]
