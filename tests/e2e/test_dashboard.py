"""The cutover dashboard: login form, what it shows in each phase, and flip / rollback with
the CLI's preflight behind a CSRF token."""

from __future__ import annotations

import re

import pytest
from flask import get_template_attribute

from hrp_data.cutover.phases import Phase
from hrp_data.verify.run import verify
from hrp_data.web.dashboard import rate_chart
from tests.e2e.conftest import PASSWORD, backfill, build_world, unique
from tests.integration.cutover_helpers import assert_equal, wait_drained

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def _token(client, url="/admin/cutover") -> str:
    page = client.get(url)
    assert page.status_code == 200, page.get_data(as_text=True)
    return TOKEN.search(page.get_data(as_text=True)).group(1)


def _admin_browser(world):
    """A client logged in through the HTML form (as a person would)."""
    client = world.app.test_client()
    token = _token(client, "/admin/login")
    response = client.post("/admin/login", data={"username": world.admin_name, "password": PASSWORD,
                                                 "csrf_token": token, "next": "/admin/cutover"})
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin/cutover")
    return client


def _move(client, target: str):
    response = client.post("/admin/cutover/move", data={"target": target, "csrf_token": _token(client)},
                           follow_redirects=True)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def shadow_reads(world, race_id: int, count: int = 60) -> None:
    """Reads in phase shadow (each repeated on PostgreSQL and compared), enough for the shadow check."""
    for _ in range(count):
        assert world.anon.get(f"/api/races/{race_id}").status_code == 200
    world.cutover.shadow.flush()


def _phase_shown(client) -> str:
    return re.search(r'id="phase">([a-z_]+)<', client.get("/admin/cutover").get_data(as_text=True)).group(1)


@pytest.fixture(scope="module")
def sqlite_world(tmp_path_factory, postgres_server_url):
    with build_world(Phase.SQLITE_ONLY, tmp_path_factory.mktemp("dashboard"), postgres_server_url) as world:
        yield world


def test_the_dashboard_needs_an_admin(sqlite_world):
    anon = sqlite_world.app.test_client()
    response = anon.get("/admin/cutover")
    assert response.status_code == 302 and "/admin/login" in response.headers["Location"]
    assert anon.get("/admin/cutover/status.json").status_code == 401
    assert sqlite_world.user.get("/admin/cutover").status_code == 403
    assert sqlite_world.user.get("/admin/cutover/status.json").status_code == 403
    assert sqlite_world.user.post("/admin/cutover/move", data={"target": "dual_write"}).status_code == 403


def test_the_login_form_refuses_bad_logins(sqlite_world):
    client = sqlite_world.app.test_client()
    no_token = client.post("/admin/login", data={"username": sqlite_world.admin_name, "password": PASSWORD})
    assert no_token.status_code == 400 and "CSRF" in no_token.get_data(as_text=True)
    token = _token(client, "/admin/login")
    wrong = client.post("/admin/login", data={"username": sqlite_world.admin_name, "password": "nope-nope",
                                              "csrf_token": token})
    assert wrong.status_code == 401 and "Wrong username or password" in wrong.get_data(as_text=True)
    not_admin = client.post("/admin/login", data={"username": sqlite_world.user_name, "password": PASSWORD,
                                                  "csrf_token": token})
    assert not_admin.status_code == 401 and "for admins" in not_admin.get_data(as_text=True)
    nul = client.post("/admin/login", data={"username": "a\x00b", "password": PASSWORD, "csrf_token": token})
    assert nul.status_code == 400
    offsite = client.post("/admin/login", data={"username": sqlite_world.admin_name, "password": PASSWORD,
                                                "csrf_token": token, "next": "https://evil.example/"})
    assert offsite.status_code == 303 and offsite.headers["Location"].endswith("/admin/cutover")


def test_the_dashboard_shows_the_state(sqlite_world):
    client = _admin_browser(sqlite_world)
    page = client.get("/admin/cutover").get_data(as_text=True)
    assert 'id="phase">sqlite_only<' in page and 'id="primary">sqlite<' in page
    for part in ("Outbox", "Appliers", "Backfill", "Last verify", "Shadow reads", "Readiness for dual_write"):
        assert part in page
    assert "no full verify yet" in page
    assert 'id="backfill-state">not started<' in page
    assert 'id="flip"' in page and "window.confirm" in page and 'id="rollback"' not in page
    status = client.get("/admin/cutover/status.json").get_json()
    assert status["overview"]["status"]["phase"] == "sqlite_only"
    assert status["overview"]["moves"] == {"previous": None, "next": "dual_write"}
    assert {c["name"] for c in status["overview"]["checks"]} == {"move", "schema", "outbox", "statement_logging", "privileges"}
    assert set(status["html"]) == {f"section-{s}" for s in
                                   ("phase", "outbox", "workers", "backfill", "verify", "shadow", "readiness")}
    assert 'id="phase">sqlite_only<' in status["html"]["section-phase"]


def test_a_move_without_the_csrf_token_is_refused(sqlite_world):
    client = _admin_browser(sqlite_world)
    for data in ({"target": "dual_write"}, {"target": "dual_write", "csrf_token": "forged"}):
        response = client.post("/admin/cutover/move", data=data)
        assert response.status_code == 400 and "CSRF" in response.get_data(as_text=True)
    assert sqlite_world.cutover.phase(fresh=True).phase is Phase.SQLITE_ONLY


def test_walk_every_phase_with_the_buttons(sqlite_world):
    """sqlite_only -> dual_write -> shadow -> (refused, then verify) -> postgres_primary -> postgres_only,
    and a rollback; data written on the way stays equal on both sides."""
    world, client = sqlite_world, _admin_browser(sqlite_world)
    assert "Moved sqlite_only -&gt; dual_write" in _move(client, "dual_write")
    assert _phase_shown(client) == "dual_write"
    backfill(world.sqlite_path, world.postgres_url)  # the users made in sqlite_only
    race = world.admin.post("/api/races", json={"race_name": unique("Dash "), "race_date": "2025-05-01"}).get_json()
    horse = world.admin.post("/api/horses", json={"horse_name": unique("Dash ")}).get_json()
    assert world.admin.put(f"/api/races/{race['id']}/runners/{horse['id']}", json={"odds": 2.5}).status_code == 200
    assert world.user.post("/api/predictions", json={"race_id": race["id"], "horse_id": horse["id"],
                                                     "confidence": 0.75}).status_code == 201
    wait_drained(world.cutover)
    assert "Moved dual_write -&gt; shadow" in _move(client, "shadow")
    refused = _move(client, "postgres_primary")
    assert "refused" in refused and "verify: no full verify yet" in refused
    assert _phase_shown(client) == "shadow"
    assert verify(world.cutover).equal
    shadow_reads(world, race["id"])
    page = client.get("/admin/cutover").get_data(as_text=True)
    assert "EQUAL" in page and "[ ]" not in page, page
    assert 'id="shadow-chart"' in page and "<polyline" in page
    flipped = _move(client, "postgres_primary")
    assert "Moved shadow -&gt; postgres_primary" in flipped and 'id="primary">postgres<' in flipped
    assert world.admin.patch(f"/api/races/{race['id']}", json={"status": "finished"}).status_code == 200
    wait_drained(world.cutover)
    assert_equal(world.sqlite_path, world.postgres_url)
    assert "Moved postgres_primary -&gt; shadow" in _move(client, "shadow")
    assert "Moved shadow -&gt; postgres_primary" in _move(client, "postgres_primary")
    assert "Moved postgres_primary -&gt; postgres_only" in _move(client, "postgres_only")
    page = client.get("/admin/cutover").get_data(as_text=True)
    assert 'id="phase">postgres_only<' in page and "is the last phase" in page
    assert "cannot move" in _move(client, "sqlite_only")
    assert _phase_shown(client) == "postgres_only"
    status = client.get("/admin/cutover/status.json").get_json()["overview"]
    assert status["status"]["primary"] == "postgres" and status["status"]["last_change"]["to_phase"] == "postgres_only"
    audited = world.cutover.phases.history(1)[0]["by"]  # who moved: the dashboard user, then the process
    assert audited.startswith(f"dashboard user {world.admin_name!r} (id ") and " via " in audited and " pid " in audited


def test_the_shadow_chart_is_inline_svg(sqlite_world):
    timeline = [{"start": f"2025-05-01T10:0{i}:00+00:00", "width_s": 60, "compared": 100, "mismatched": i,
                 "rate": i / 100} for i in range(4)]
    data = {"shadow": {"window_s": 3600, "totals": {"compared": 400, "mismatched": 6, "rate": 0.015},
                       "tables": [{"table": "races", "compared": 400, "mismatched": 6, "rate": 0.015}],
                       "chart": rate_chart(timeline)}}
    with sqlite_world.app.test_request_context("/admin/cutover"):
        html = str(get_template_attribute("hrp_sections.html", "shadow")(data, "token"))
    assert "<svg" in html and "<polyline" in html and html.count("<circle") == 4
    assert "races" in html and "1.500%" in html
    points = rate_chart(timeline)["dots"]
    assert points[0]["y"] > points[-1]["y"]  # a higher rate is drawn higher
    with sqlite_world.app.test_request_context("/admin/cutover"):
        empty = str(get_template_attribute("hrp_sections.html", "shadow")({"shadow": None}, "token"))
    assert "no shadow data" in empty


def test_backfill_progress_is_shown_per_table(sqlite_world):
    """The section renders backfill_status()'s shape (per-table counters) as a table."""
    from hrp_data.web.dashboard import _table_rows

    raw = {"complete": False, "state": "running", "finished_at": None,
           "tables": {"users": {"state": "done", "read": 10, "copied": 10, "quarantined": 0},
                      "races": {"state": "copying", "read": 400, "copied": 398, "quarantined": 2}}}
    rows = _table_rows(raw["tables"])
    data = {"backfill": {"state": raw["state"], "tables": rows, "columns": ["state", "read", "copied", "quarantined"],
                         "finished_at": None}}
    with sqlite_world.app.test_request_context("/admin/cutover"):
        html = str(get_template_attribute("hrp_sections.html", "backfill")(data, "token"))
    assert 'id="backfill-state">running<' in html
    assert "<td>races</td><td>copying</td><td>400</td><td>398</td><td>2</td>" in html


def test_a_running_verify_and_the_backfill_eta_are_shown_live(sqlite_world):
    """A verify another process runs shows its progress in the live refresh; a running backfill
    its rows left and the seconds of copying it expects."""
    from hrp_data.verify.progress import Tracker

    client = _admin_browser(sqlite_world)
    tracker = Tracker(sqlite_world.cutover.sqlite, ["races", "horses"], full=True)
    tracker.start()
    tracker.counted({"races": 300, "horses": 100})
    tracker.table_done("races")
    try:
        status = client.get("/admin/cutover/status.json").get_json()
        progress = status["overview"]["verify_progress"]
        assert progress["running"] and progress["tables_done"] == 1 and progress["ratio"] == 0.75
        assert 'id="verify-progress"' in status["html"]["section-verify"]
        assert "verify running: 75 %, 1 of 2 tables" in status["html"]["section-verify"]
    finally:
        tracker.finish(equal=True)
    status = client.get("/admin/cutover/status.json").get_json()
    assert status["overview"]["verify_progress"]["state"] == "finished"
    assert 'id="verify-progress"' not in status["html"]["section-verify"]

    data = {"backfill": {"state": "running", "tables": [{"table": "races", "state": "copying"}], "columns": ["state"],
                         "finished_at": None, "running": True, "rows_total": 1000, "rows_left": 400, "eta_s": 12.4}}
    with sqlite_world.app.test_request_context("/admin/cutover"):
        html = str(get_template_attribute("hrp_sections.html", "backfill")(data, "token"))
    assert '<progress max="1000" value="600">' in html and "400 of 1000 rows left, about 12 s of copying" in html
