"""The whole cutover with the least-privilege roles of docs/operations.md (issue #16 item 6), and as a
database owner that is not superuser (issue #22, managed PostgreSQL).

least_privilege: a database owner (CREATEROLE, not superuser) runs `hrp-cutover roles`; the migrator
runs `schema`, `backup`, `backfill`, `replay` and every move through HRP_POSTGRES_DIRECT_URL; a
read-only verifier runs `verify`; the app (create_app, the Flask test client) connects as the app
role (HRP_POSTGRES_URL) and writes in every phase, on PostgreSQL after the flip. The dashboard's move
is refused in one line naming the CLI and the migrator, and the flip is refused while the app role
lacks a GRANT, naming it.

owner: every command and the app connect as the database owner, who is not superuser (no
session_replication_role, pg_trgm only if the server has it); the dashboard moves too.

Both: sqlite_only -> dual_write -> backfill -> shadow -> verify -> flip -> writes on PostgreSQL ->
rollback -> writes on SQLite, with no answer >= 500, no permission error in any log, and both
databases equal at the end.
"""

from __future__ import annotations

import contextlib
import re
import uuid

import psycopg2
import psycopg2.extensions
import pytest
from click.testing import CliRunner

from hrp_data.cutover.phases import Phase
from hrp_data.logs import configure_logging
from hrp_data.web import create_app, services
from hrp_data.web.extension import HrpCutover
from tests.conftest import database_of_an_owner, libpq, with_login_passwords
from tests.e2e.conftest import PASSWORD, login
from tests.integration.cutover_helpers import assert_equal, settings_for, wait_drained
from tools.cli import cli
from tools.seed import seed_database

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
PERMISSION = re.compile(r"permission denied|42501|InsufficientPrivilege|must be owner", re.IGNORECASE)


class Operator:
    """CLI commands in this process, as one role or another (HRP_POSTGRES_DIRECT_URL)."""

    def __init__(self, path, app_url: str, env: dict[str, str], log):
        self.path, self.app_url, self.env, self.log = path, app_url, env, log
        self.outputs: list[str] = []
        configure_logging("console", "INFO", stream=log)

    def __call__(self, url: str, *args: str, expect: int = 0) -> str:
        psycopg2.extensions.set_wait_callback(None)  # the app's Cutover bounded every call of the process
        env = {"HRP_SQLITE_URL": f"sqlite:///{self.path}", "HRP_POSTGRES_URL": self.app_url,
               "HRP_POSTGRES_DIRECT_URL": url, **self.env}
        result = CliRunner().invoke(cli, list(args), env=env)
        configure_logging("console", "INFO", stream=self.log)  # the app's log again, not the runner's
        self.outputs.append(result.output)
        assert result.exit_code == expect, f"hrp-cutover {' '.join(args)}: {result.output}"
        return result.output


class App:
    """The HRP app as the app's role: an admin's API client and dashboard, every answer kept."""

    def __init__(self, flask_app, cutover):
        self.flask, self.cutover = flask_app, cutover
        self.answers: list[tuple[str, str, int]] = []
        name = f"admin{uuid.uuid4().hex[:6]}"
        services.register_user(cutover, username=name, email=f"{name}@example.com", password=PASSWORD, is_admin=True)
        self.api = flask_app.test_client()
        login(self.api, name)
        self.dashboard = flask_app.test_client()
        token = self._token("/admin/login")
        response = self.dashboard.post("/admin/login", data={"username": name, "password": PASSWORD,
                                                            "csrf_token": token, "next": "/admin/cutover"})
        assert response.status_code == 303, response.get_data(as_text=True)

    def _token(self, url: str) -> str:
        return TOKEN.search(self.dashboard.get(url).get_data(as_text=True)).group(1)

    def call(self, method: str, path: str, body=None, key: str | None = None):
        headers = {"Idempotency-Key": key} if key else {}
        response = self.api.open(path, method=method, json=body, headers=headers)
        self.answers.append((method, path, response.status_code))
        return response

    def writes(self, tag: str) -> int:
        """A race (with an idempotency key, sent twice), a horse, a runner, a prediction, an update."""
        key = f"race-{tag}"
        race = self.call("POST", "/api/races", {"race_name": f"Race {tag}", "race_date": "2025-05-01"}, key)
        assert race.status_code == 201, race.get_data(as_text=True)
        again = self.call("POST", "/api/races", {"race_name": f"Race {tag}", "race_date": "2025-05-01"}, key)
        assert again.get_json()["id"] == race.get_json()["id"]
        race_id = race.get_json()["id"]
        horse = self.call("POST", "/api/horses", {"horse_name": f"Horse {tag}"})
        assert horse.status_code == 201, horse.get_data(as_text=True)
        horse_id = horse.get_json()["id"]
        assert self.call("PUT", f"/api/races/{race_id}/runners/{horse_id}", {}).status_code in (200, 201)
        made = self.call("POST", "/api/predictions", {"race_id": race_id, "horse_id": horse_id, "confidence": 0.5})
        assert made.status_code == 201, made.get_data(as_text=True)
        assert self.call("PATCH", f"/api/races/{race_id}", {"status": "running"}).status_code == 200
        return race_id

    def reads(self, race_id: int, count: int) -> None:
        for _ in range(count):
            assert self.call("GET", f"/api/races/{race_id}").status_code == 200
        self.cutover.shadow.flush()

    def dashboard_move(self, target: str) -> str:
        response = self.dashboard.post("/admin/cutover/move", follow_redirects=True,
                                       data={"target": target, "csrf_token": self._token("/admin/cutover")})
        assert response.status_code == 200
        return response.get_data(as_text=True)


@pytest.mark.parametrize("mode", ["least_privilege", "owner"])
def test_the_whole_cutover_without_superuser(mode, tmp_path, postgres_server_url, monkeypatch):
    monkeypatch.setenv("HRP_SHADOW_MIN_READS", "0")
    path = tmp_path / "hrp_database.db"
    seed_database(path, races=20, seed=5)
    with contextlib.ExitStack() as stack:
        names, urls = stack.enter_context(database_of_an_owner(postgres_server_url))
        least = mode == "least_privilege"
        migrator = urls["migrator"] if least else urls["owner"]
        verifier = urls["verifier"] if least else urls["owner"]
        app_url = urls["app"] if least else urls["owner"]
        log = stack.enter_context((tmp_path / "app.log").open("w"))
        stack.callback(configure_logging)  # back to stderr before the file closes
        operator = Operator(path, app_url, {"HRP_VERIFIER_ROLE": names["verifier"]} if least else {}, log)
        if least:
            created = operator(urls["owner"], "roles", "--migrator", names["migrator"], "--app", names["app"],
                               "--verifier", names["verifier"])
            assert f"role {names['app']} created" in created
            with_login_passwords(urls["superuser"], names)
        schema = operator(migrator, "schema")
        if least:
            assert f"app role {names['app']}" in schema and f"verifier role {names['verifier']}" in schema

        flask_app = create_app(settings_for(path, app_url))
        flask_app.config["TESTING"] = True
        state = HrpCutover.state(flask_app)
        try:
            app = App(flask_app, state.cutover)
            app.writes("sqlite_only")
            operator(migrator, "phase", "set", "dual_write")
            app.writes("dual_write")
            operator(migrator, "backup")
            loaded = operator(migrator, "backfill")
            assert "foreign_keys_checked_per_row" in loaded  # no session_replication_role: checked per row
            operator(migrator, "replay")
            if least:
                page = app.dashboard_move("shadow")
                assert "the dashboard cannot move the phase" in page and "hrp-cutover flip" in page, page
                assert names["migrator"] in page and "nothing was changed" in page
                assert state.cutover.phase(fresh=True).phase is Phase.DUAL_WRITE
                operator(migrator, "phase", "set", "shadow")
            else:
                assert "Moved dual_write -&gt; shadow" in app.dashboard_move("shadow")
            race_id = app.writes("shadow")
            wait_drained(state.cutover)
            app.reads(race_id, 20)
            operator(verifier, "verify")
            if least:  # the flip is refused while the app's role lacks a GRANT, naming it
                with psycopg2.connect(libpq(migrator)) as connection, connection.cursor() as cursor:
                    cursor.execute(f'REVOKE INSERT ON races FROM "{names["app"]}"')
                refused = operator(migrator, "flip", expect=1)
                assert f'GRANT INSERT ON "races" TO "{names["app"]}"' in refused, refused
                operator(migrator, "schema")  # grants again what is missing
            checks = operator(migrator, "flip", "--check")
            assert re.search(r"privileges.*the app's role", checks), checks
            operator(migrator, "flip")
            assert state.cutover.phase(fresh=True).phase is Phase.POSTGRES_PRIMARY
            app.writes("postgres_primary")
            wait_drained(state.cutover)  # the app's applier, as the app's role, carries them to SQLite
            operator(verifier, "verify")
            operator(migrator, "rollback")
            app.writes("rolled_back")
            wait_drained(state.cutover)
        finally:
            state.close()
        operator(verifier, "verify")
        assert_equal(path, urls["superuser"])

    assert [a for a in app.answers if a[2] >= 500] == []
    logged = (tmp_path / "app.log").read_text() + "\n".join(operator.outputs)
    assert "outbox.apply" in logged or "write.committed" in logged or logged  # the app's log is there
    found = [line for line in logged.splitlines()  # pg_trgm needs CREATE on the database: optional
             if PERMISSION.search(line) and "trigram_index_skipped" not in line]
    assert found == [], found[:5]
