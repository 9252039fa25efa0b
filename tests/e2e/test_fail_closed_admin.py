"""Fail closed: a legacy users.is_admin that is not a boolean never makes an admin.

SQLite keeps whatever was written to a BOOLEAN column; the layer reads such a
value back as it is stored, and every admin guard asks for a stored true.
"""

from __future__ import annotations

import re
import sqlite3

import pytest

from hrp_data.cutover.phases import Phase
from tests.e2e.conftest import PASSWORD, build_world, login, unique

HOSTILE = ["no", "N", "f", "yes", "", " true", b"\x00", b"\x01", 2, -1, 0.5]
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="module")
def world(tmp_path_factory, postgres_server_url):
    with build_world(Phase.SQLITE_ONLY, tmp_path_factory.mktemp("fail-closed"), postgres_server_url) as built:
        yield built


def _user_with_is_admin(world, value):
    """A registered user whose users.is_admin holds `value` as SQLite stores it, logged in."""
    name = unique("legacy")
    registered = world.anon.post("/api/users", json={"username": name, "email": f"{name}@x.example", "password": PASSWORD})
    assert registered.status_code == 201
    with sqlite3.connect(world.sqlite_path) as raw:
        raw.execute("UPDATE users SET is_admin = ? WHERE username = ?", (value, name))
        stored = raw.execute("SELECT is_admin FROM users WHERE username = ?", (name,)).fetchone()[0]
    assert stored == value and type(stored) is type(value)
    client = world.app.test_client()
    login(client, name)
    return client, name


def _csrf(client) -> str:
    page = client.get("/admin/login")
    return TOKEN.search(page.get_data(as_text=True)).group(1)


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_a_hostile_is_admin_value_is_no_admin(world, value):
    client, name = _user_with_is_admin(world, value)
    assert client.get("/api/credentials").status_code == 403
    assert client.post("/api/credentials", json={"service_name": "s", "api_key": "k"}).status_code == 403
    assert client.get("/admin/cutover/status.json").status_code == 403
    assert client.get("/admin/cutover").status_code == 403
    moved = client.post("/admin/cutover/move", data={"target": "dual_write", "csrf_token": _csrf(client)})
    assert moved.status_code == 403
    assert world.cutover.phase(fresh=True).phase is Phase.SQLITE_ONLY
    form = world.app.test_client()
    refused = form.post("/admin/login", data={"username": name, "password": PASSWORD, "csrf_token": _csrf(form)})
    assert refused.status_code == 401


@pytest.mark.parametrize("value", [1, "true", "TRUE"], ids=repr)
def test_a_stored_true_is_an_admin(world, value):
    client, _name = _user_with_is_admin(world, value)
    assert client.get("/api/credentials").status_code == 200
    assert client.get("/admin/cutover/status.json").status_code == 200
