"""Sessions that hold in production: a key of their own (never the data file's), a bounded
lifetime, and an end on the server at logout or a password change, in every app process."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import sqlite3
import time

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from werkzeug.security import generate_password_hash

from hrp_data.backfill.backup import backup
from hrp_data.schema.install import upgrade
from hrp_data.settings import SettingsError
from hrp_data.web import create_app, services, session_user
from hrp_data.web.extension import SECRET_TABLE, HrpCutover, file_secret
from tests.e2e.conftest import PASSWORD, login, unique
from tests.integration.cutover_helpers import settings_for
from tools.cli import cli


@pytest.fixture
def apps(legacy_file, postgres_url):
    """make(**settings changes): an app on the test's file and database, closed afterwards."""
    upgrade(postgres_url)
    made = []

    def make(**changes):
        app = create_app(dataclasses.replace(settings_for(legacy_file, postgres_url), **changes), applier=False)
        made.append(app)
        return app

    yield make
    for app in made:
        HrpCutover.state(app).close()


def _user(app, *, admin: bool = False) -> dict:
    name = unique("sess")
    return services.register_user(HrpCutover.state(app).cutover, username=name, email=f"{name}@example.com",
                                  password=PASSWORD, is_admin=admin)


def _creates_a_horse(client) -> int:
    return client.post("/api/horses", json={"horse_name": unique("Session ")}).status_code


def test_production_refuses_to_start_without_a_key_of_its_own(legacy_file, postgres_url):
    settings = dataclasses.replace(settings_for(legacy_file, postgres_url), secret_key=None)
    with pytest.raises(SettingsError, match="HRP_SECRET_KEY is not set: in production") as refused:
        create_app(settings, applier=False)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("key", [None, "a"], ids=["unset", "short"])
def test_serve_refuses_a_missing_or_short_key_in_one_line(legacy_file, postgres_url, key):
    result = CliRunner().invoke(cli, ["--sqlite", str(legacy_file), "--postgres", postgres_url, "serve", "--port", "0"],
                                env={"HRP_SECRET_KEY": key, "HRP_ENV": None})
    assert result.exit_code == 2, result.output
    assert "HRP_SECRET_KEY is" in result.output and result.output.strip().count("\n") == 0


def test_a_cookie_signed_with_the_key_of_a_backup_is_refused_in_production(legacy_file, postgres_url, apps, tmp_path):
    """Whoever reads the data file or a backup gets the development key; production never signs with it."""
    development = apps(secret_key=None, env="development")
    admin = _user(development, admin=True)
    file_secret(HrpCutover.state(development).cutover.sqlite)  # the file holds a key, as after any development run
    with sqlite3.connect(backup(legacy_file, tmp_path / "backups").path) as copy:
        stolen = copy.execute(f"SELECT secret FROM {SECRET_TABLE}").fetchone()[0]
    forger = Flask("forger")
    forger.secret_key = stolen
    forged = SecureCookieSessionInterface().get_signing_serializer(forger).dumps({
        "hrp_user_id": admin["id"], "hrp_started": int(time.time()), "hrp_session_version": 0,
        "hrp_password_seal": hmac.new(stolen.encode(), admin["password_hash"].encode(), hashlib.sha256).hexdigest(),
    })
    accepted = development.test_client()
    accepted.set_cookie("hrp_session", forged)
    assert _creates_a_horse(accepted) == 201  # a sound forgery: the development app takes it
    production = apps().test_client()
    production.set_cookie("hrp_session", forged)
    assert _creates_a_horse(production) == 401
    assert production.get("/api/credentials").status_code == 401


def test_logout_ends_the_session_in_every_app_process(apps):
    """A copy of the cookie taken before DELETE /api/session is refused after it, by this app and another."""
    first, second = apps(), apps()
    user = _user(first, admin=True)
    client = first.test_client()
    login(client, user["username"])
    copied = client.get_cookie("hrp_session").value
    other = second.test_client()
    other.set_cookie("hrp_session", copied)
    assert _creates_a_horse(other) == 201
    response = client.delete("/api/session")
    assert response.status_code == 204
    for app in (first, second):
        replayed = app.test_client()
        replayed.set_cookie("hrp_session", copied)
        assert _creates_a_horse(replayed) == 401
    login(client, user["username"])  # a new login is a new session
    assert _creates_a_horse(client) == 201


def test_the_dashboards_logout_ends_the_session_too(apps):
    app = apps()
    user = _user(app, admin=True)
    client = app.test_client()
    login(client, user["username"])
    copied = client.get_cookie("hrp_session").value
    page = client.get("/admin/login").get_data(as_text=True)
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    assert client.post("/admin/logout", data={"csrf_token": token}).status_code == 303
    replayed = app.test_client()
    replayed.set_cookie("hrp_session", copied)
    assert replayed.get("/admin/cutover/status.json").status_code == 401


def test_a_password_change_ends_the_session(apps):
    app = apps()
    user = _user(app, admin=True)
    client = app.test_client()
    login(client, user["username"])
    assert _creates_a_horse(client) == 201
    with HrpCutover.state(app).cutover.writing() as uow:
        uow.users.update(user["id"], password_hash=generate_password_hash("another password"))
        uow.commit()
    assert _creates_a_horse(client) == 401
    login(client, user["username"], "another password")
    assert _creates_a_horse(client) == 201


class _Clock:
    """The session code's clock, set by the test (the rest of the process keeps the real one)."""

    def __init__(self, now: float):
        self.now = now

    def time(self) -> float:
        return self.now


def test_a_session_ends_after_its_lifetime_and_not_before(apps, monkeypatch):
    """The lifetime counts from the login itself: a login late in a second (x.9) still has its whole
    lifetime, not up to a second less (the start was once kept in whole seconds, cut down)."""
    clock = _Clock(1_000_000.9)
    monkeypatch.setattr(session_user, "time", clock)
    app = apps(session_lifetime=60)
    user = _user(app, admin=True)
    client = app.test_client()
    login(client, user["username"])
    assert _creates_a_horse(client) == 201
    clock.now += 59.8
    assert _creates_a_horse(client) == 201
    clock.now += 0.3
    assert _creates_a_horse(client) == 401


def test_the_lifetime_and_the_secure_flag_reach_the_cookie(apps):
    default, secure = apps(), apps(session_cookie_secure=True)
    assert default.permanent_session_lifetime.total_seconds() == 12 * 3600
    for app, flagged in ((default, False), (secure, True)):
        user = _user(app)
        response = app.test_client().post("/api/session", json={"username": user["username"], "password": PASSWORD})
        cookie = response.headers["Set-Cookie"]
        assert ("; Secure" in cookie) is flagged and "Expires=" in cookie and "HttpOnly" in cookie, cookie
