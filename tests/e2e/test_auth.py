"""Who may do what: 401 without a session, 403 for a user who is not an admin, the signed session
cookie and its key, `create-admin`, and secrets that never leave after creation."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading

import pytest
from click.testing import CliRunner
from structlog.testing import capture_logs

from hrp_data.schema.install import upgrade
from hrp_data.web import create_app, services, throttle
from hrp_data.web.extension import SECRET_TABLE, HrpCutover
from tests.e2e.conftest import PASSWORD, login, unique
from tests.integration.cutover_helpers import settings_for
from tools.cli import cli

WRITES = [
    ("post", "/api/races", {"race_name": "R"}),
    ("patch", "/api/races/1", {"status": "running"}),
    ("delete", "/api/races/1", None),
    ("put", "/api/races/1/runners/1", {}),
    ("delete", "/api/races/1/runners/1", None),
    ("post", "/api/horses", {"horse_name": "H"}),
    ("patch", "/api/horses/1", {"age": 3}),
    ("delete", "/api/horses/1", None),
    ("post", "/api/credentials", {"service_name": "s", "api_key": "k"}),
    ("delete", "/api/credentials/1", None),
]
USER_WRITES = [
    ("post", "/api/predictions", {"race_id": 1, "horse_id": 1}),
    ("delete", "/api/predictions/1", None),
]
PUBLIC_READS = ["/api/races", "/api/horses", "/api/stats/races", "/api/stats/horses"]


def _call(client, method, url, body):
    return getattr(client, method)(url, json=body) if body is not None else getattr(client, method)(url)


@pytest.mark.parametrize("method, url, body", WRITES + USER_WRITES, ids=[f"{m}:{u}" for m, u, _ in WRITES + USER_WRITES])
def test_writes_need_a_session(shadow_world, method, url, body):
    response = _call(shadow_world.anon, method, url, body)
    assert response.status_code == 401 and "log in" in response.get_json()["error"]


@pytest.mark.parametrize("method, url, body", WRITES, ids=[f"{m}:{u}" for m, u, _ in WRITES])
def test_races_horses_and_credentials_writes_need_an_admin(shadow_world, method, url, body):
    response = _call(shadow_world.user, method, url, body)
    assert response.status_code == 403 and response.get_json()["error"]


def test_credentials_are_not_listed_for_users_or_anybody(shadow_world):
    assert shadow_world.anon.get("/api/credentials").status_code == 401
    assert shadow_world.user.get("/api/credentials").status_code == 403


@pytest.mark.parametrize("url", PUBLIC_READS)
def test_reads_are_public(shadow_world, url):
    assert shadow_world.anon.get(url).status_code == 200


def test_auth_is_checked_before_the_body(shadow_world):
    response = shadow_world.anon.post("/api/races", data=b"{not json", content_type="application/json")
    assert response.status_code == 401


def test_wrong_password_and_unknown_user_are_401(shadow_world):
    client = shadow_world.app.test_client()
    for body in ({"username": shadow_world.user_name, "password": "wrong password"},
                 {"username": "nobody-at-all", "password": "whatever1"}):
        response = client.post("/api/session", json=body)
        assert response.status_code == 401 and response.get_json()["error"] == "wrong username or password"
    assert client.get_cookie("hrp_session") is None


def test_a_taken_username_and_a_taken_email_get_the_same_409(shadow_world):
    """No enumeration: the answer does not tell which of the two is taken."""
    client, name = shadow_world.anon, unique("dup")
    body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    assert client.post("/api/users", json=body).status_code == 201
    same_name = client.post("/api/users", json={**body, "email": f"{unique('x')}@example.com"})
    same_email = client.post("/api/users", json={**body, "username": unique("other")})
    assert same_name.status_code == same_email.status_code == 409
    assert same_name.get_json() == same_email.get_json() == {"error": "that username or email is taken", "field": None}


def test_a_legacy_hash_in_an_unknown_format_just_fails_the_login(shadow_world):
    name = unique("legacy")
    with shadow_world.cutover.writing() as uow:
        uow.users.add(username=name, email=f"{name}@example.com", password_hash="md5$not-werkzeug")
        uow.commit()
    response = shadow_world.anon.post("/api/session", json={"username": name, "password": "anything1"})
    assert response.status_code == 401


def test_a_tampered_session_cookie_is_not_a_session(shadow_world):
    client = shadow_world.app.test_client()
    login(client, shadow_world.admin_name)
    cookie = client.get_cookie("hrp_session")
    client.set_cookie("hrp_session", cookie.value[:-2] + ("AA" if not cookie.value.endswith("AA") else "BB"))
    assert client.post("/api/horses", json={"horse_name": "Forged"}).status_code == 401


def test_in_development_the_session_key_is_kept_in_the_sqlite_file_and_shared(shadow_world):
    """HRP_ENV=development without HRP_SECRET_KEY: every app on the same file signs with the same stored key."""
    settings = dataclasses.replace(settings_for(shadow_world.sqlite_path, shadow_world.postgres_url),
                                   secret_key=None, env="development")
    apps = [create_app(settings, applier=False) for _ in range(2)]
    try:
        client = apps[0].test_client()
        login(client, shadow_world.admin_name)
        with sqlite3.connect(shadow_world.sqlite_path) as raw:
            stored = raw.execute(f"SELECT secret FROM {SECRET_TABLE}").fetchall()
        assert len(stored) == 1 and len(stored[0][0]) == 64
        second = apps[1].test_client()
        second.set_cookie("hrp_session", client.get_cookie("hrp_session").value)
        created = second.post("/api/horses", json={"horse_name": unique("Shared ")})
        assert created.status_code == 201, created.get_json()
    finally:
        for app in apps:
            HrpCutover.state(app).close()


def test_hrp_secret_key_signs_the_session_when_set(legacy_file, postgres_url):
    key = "from-the-environment-" + "k" * 32
    settings = dataclasses.replace(settings_for(legacy_file, postgres_url), secret_key=key)
    app = create_app(settings)
    try:
        assert app.secret_key == key
        response = app.test_client().post("/api/session", json={"username": "nobody", "password": "nothing1"})
        assert response.status_code == 401
        with sqlite3.connect(legacy_file) as raw:
            assert raw.execute("SELECT count(*) FROM sqlite_master WHERE name = ?", (SECRET_TABLE,)).fetchone()[0] == 0
    finally:
        HrpCutover.state(app).close()


def test_secrets_are_shown_once_and_never_logged(shadow_world):
    key, secret = unique("live-key-"), unique("live-secret-")
    with capture_logs() as logs:
        created = shadow_world.admin.post("/api/credentials", json={
            "service_name": "bookmaker", "api_key": key, "api_secret": secret})
        listed = shadow_world.admin.get("/api/credentials?limit=200")
        bad = shadow_world.admin.post("/api/credentials", json={
            "service_name": "bookmaker", "api_key": key, "api_secret": secret, "is_active": "yes"})
    assert created.status_code == 201 and created.get_json()["api_secret"] == secret
    assert bad.status_code == 400 and key not in bad.get_data(as_text=True)
    assert key not in listed.get_data(as_text=True) and secret not in listed.get_data(as_text=True)
    assert key not in repr(logs) and secret not in repr(logs)
    for url in ("/api/races", "/api/horses", "/api/stats/races"):
        assert secret not in shadow_world.admin.get(url).get_data(as_text=True)


def test_password_hashes_never_leave(shadow_world):
    client, name = shadow_world.app.test_client(), unique("hashy")
    created = client.post("/api/users", json={"username": name, "email": f"{name}@example.com", "password": PASSWORD})
    session = client.post("/api/session", json={"username": name, "password": PASSWORD})
    for response in (created, session):
        assert "password" not in response.get_data(as_text=True)
        assert "scrypt" not in response.get_data(as_text=True) and "pbkdf2" not in response.get_data(as_text=True)


def test_create_admin_makes_an_admin_who_can_log_in(legacy_file, postgres_url):
    upgrade(postgres_url)
    runner = CliRunner()
    base = ["--sqlite", str(legacy_file), "--postgres", postgres_url]
    made = runner.invoke(cli, base + ["create-admin", "root", "--password-stdin", "--email", "root@example.com"],
                         input="s3cret-password\n")
    assert made.exit_code == 0, made.output
    assert "admin root created" in made.output and "s3cret-password" not in made.output
    again = runner.invoke(cli, base + ["create-admin", "root", "--password-stdin"], input="another-password\n")
    assert again.exit_code == 1 and "taken" in again.output
    no_stdin = runner.invoke(cli, base + ["create-admin", "boss"])
    assert no_stdin.exit_code == 2 and "--password-stdin" in no_stdin.output
    short = runner.invoke(cli, base + ["create-admin", "boss", "--password-stdin"], input="short\n")
    assert short.exit_code == 2 and "password" in short.output
    app = create_app(settings_for(legacy_file, postgres_url), applier=False)
    try:
        client = app.test_client()
        login(client, "root", "s3cret-password")
        assert client.post("/api/horses", json={"horse_name": "By root"}).status_code == 201
    finally:
        HrpCutover.state(app).close()


# -- throttling (hrp_data.web.throttle) ------------------------------------------------------


@pytest.fixture
def two_apps(legacy_file, postgres_url):
    """Two app instances (as two gunicorn workers) on one SQLite file, with small limits."""

    def build(**limits):
        settings = dataclasses.replace(settings_for(legacy_file, postgres_url), **limits).validated()
        app = create_app(settings, applier=False)
        built.append(app)
        return app

    built = []
    yield build
    for app in built:
        HrpCutover.state(app).close()


def _member(app, name: str) -> None:
    services.register_user(HrpCutover.state(app).cutover, username=name, email=f"{name}@example.com", password=PASSWORD)


def _login(client, name: str, password: str, address: str = "198.51.100.7"):
    return client.post("/api/session", json={"username": name, "password": password},
                       environ_base={"REMOTE_ADDR": address})


def test_failed_logins_of_an_account_are_counted_by_all_workers_then_429(two_apps):
    first = two_apps(login_failures=3, login_failures_per_address=0)
    second = two_apps(login_failures=3, login_failures_per_address=0)
    _member(first, "victim")
    _member(first, "bystander")
    one, two = first.test_client(), second.test_client()
    with capture_logs() as logs:
        answers = [_login(client, "victim", "guess-number-1", f"203.0.113.{n}")
                   for n, client in enumerate([one, two, one])]
        refused = _login(two, "victim", "guess-number-1", "203.0.113.9")
        right = _login(one, "victim", PASSWORD, "203.0.113.10")
    assert [a.status_code for a in answers] == [401, 401, 401]
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 900
    assert right.status_code == 429, "the right password waits out the window too"
    assert _login(two, "bystander", PASSWORD).status_code == 200
    failed = [e for e in logs if e["event"] == "auth.login_failed"]
    assert len(failed) == 3 and {e["address"] for e in failed} == {"203.0.113.0", "203.0.113.1", "203.0.113.2"}
    assert "victim" not in repr(logs) and "guess-number-1" not in repr(logs) and PASSWORD not in repr(logs)
    assert any(e["event"] == "auth.login_throttled" for e in logs)


def test_failed_logins_from_an_address_are_counted_across_accounts(two_apps):
    first = two_apps(login_failures=0, login_failures_per_address=4)
    second = two_apps(login_failures=0, login_failures_per_address=4)
    _member(first, "alice")
    for n in range(4):
        assert _login((first, second)[n % 2].test_client(), f"nobody{n}", "guess-number-1").status_code == 401
    refused = _login(second.test_client(), "alice", PASSWORD)
    assert refused.status_code == 429 and refused.get_json()["error"].startswith("too many attempts")
    assert _login(first.test_client(), "alice", PASSWORD, address="192.0.2.44").status_code == 200


def test_a_successful_login_clears_its_account_s_failures(two_apps):
    app = two_apps(login_failures=2, login_failures_per_address=0)
    _member(app, "forgetful")
    client = app.test_client()
    for _ in range(3):
        assert _login(client, "forgetful", "not-my-password").status_code == 401
        assert _login(client, "forgetful", PASSWORD).status_code == 200


def test_the_dashboard_login_is_throttled_too(two_apps):
    app = two_apps(login_failures=1, login_failures_per_address=0)
    client = app.test_client()
    client.get("/admin/login")
    with client.session_transaction() as session:
        token = session["hrp_csrf"]
    form = {"username": "root", "password": "guess-number-1", "csrf_token": token}
    assert client.post("/admin/login", data=form).status_code == 401
    refused = client.post("/admin/login", data=form)
    assert refused.status_code == 429 and refused.headers["Retry-After"]
    assert "guess-number-1" not in refused.get_data(as_text=True)


def test_registrations_from_an_address_are_throttled(two_apps):
    first = two_apps(registrations_per_address=2)
    second = two_apps(registrations_per_address=2)

    def register(app, name, address="198.51.100.20"):
        return app.test_client().post("/api/users", json={"username": name, "email": f"{name}@example.com",
                                                          "password": PASSWORD}, environ_base={"REMOTE_ADDR": address})

    assert register(first, "newcomer1").status_code == 201
    assert register(second, "newcomer1").status_code == 409  # an attempt counts, taken or not
    refused = register(first, "newcomer2")
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert register(second, "newcomer2", address="198.51.100.21").status_code == 201


def test_password_hashing_takes_one_slot_per_process(two_apps, monkeypatch):
    """With HRP_PASSWORD_HASH_SLOTS=1, eight concurrent bad logins hash one at a time."""
    app = two_apps(login_failures=0, login_failures_per_address=0, password_hash_slots=1)
    _member(app, "busy")
    running, most, lock = [0], [0], threading.Lock()
    original = services.check_password_hash

    def counted(stored, password):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return original(stored, password)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(services, "check_password_hash", counted)
    monkeypatch.setattr(throttle, "HASH_SLOT_WAIT_S", 60.0)  # a busy machine: nobody gives up waiting
    answers = []
    threads = [threading.Thread(target=lambda n=n: answers.append(
        _login(app.test_client(), "busy" if n % 2 else f"ghost{n}", "guess-number-1").status_code)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [401] * 8 and most[0] == 1


def test_a_login_that_finds_every_hashing_slot_busy_is_503_with_retry_after(two_apps, monkeypatch):
    app = two_apps(login_failures=0, login_failures_per_address=0, password_hash_slots=1)
    monkeypatch.setattr(throttle, "HASH_SLOT_WAIT_S", 0.1)
    with throttle.hashing_slot(1):  # another request of this process is hashing
        busy = _login(app.test_client(), "anybody", "guess-number-1")
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
    assert _login(app.test_client(), "anybody", "guess-number-1").status_code == 401
