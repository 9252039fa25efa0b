"""The app behind a real PgBouncer in transaction mode: its API under load through a whole cutover
driven from the dashboard, with the long commands and the moves on the direct URL (docs/pooling.md)."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import threading

import pytest

from hrp_data.schema.install import upgrade
from hrp_data.web import create_app, services
from hrp_data.web.extension import HrpCutover
from tests.conftest import create_legacy_file, scratch_database
from tests.e2e.conftest import PASSWORD, ROOT, hrp_cutover, login, unique
from tests.integration.cutover_helpers import assert_equal, postgres_rows, settings_for, sqlite_rows, wait_drained
from tests.integration.test_pooling import layer_locks

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
WRITERS = 2


def _token(client) -> str:
    page = client.get("/admin/cutover")
    assert page.status_code == 200, page.get_data(as_text=True)
    return TOKEN.search(page.get_data(as_text=True)).group(1)


def _move(client, target: str) -> str:
    response = client.post("/admin/cutover/move", data={"target": target, "csrf_token": _token(client)},
                           follow_redirects=True)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def _cli(path, pooled: str, direct: str, *args: str) -> str:
    done = subprocess.run(
        [*hrp_cutover(), "--sqlite", str(path), "--postgres", pooled, "--postgres-direct", direct, *args],
        text=True, capture_output=True, cwd=ROOT, timeout=300,
    )
    assert done.returncode == 0, f"hrp-cutover {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture
def pooled_apps(tmp_path, postgres_server_url, pgbouncer):
    """Two apps on one file and one database, both reaching PostgreSQL through PgBouncer: the first
    knows no direct URL, the second has HRP_POSTGRES_DIRECT_URL."""
    path = tmp_path / "hrp_database.db"
    create_legacy_file(path)
    with scratch_database(postgres_server_url, "hrp_pooled") as direct:
        upgrade(direct)
        pooled = pgbouncer.url(direct)
        settings = settings_for(path, pooled)
        apps = [create_app(settings), create_app(dataclasses.replace(settings, postgres_direct_url=direct))]
        states = [HrpCutover.state(app) for app in apps]
        try:
            admin = unique("admin")
            services.register_user(states[0].cutover, username=admin, email=f"{admin}@example.com",
                                   password=PASSWORD, is_admin=True)
            clients = []
            for app in apps:
                app.config["TESTING"] = True
                client = app.test_client()
                login(client, admin)
                clients.append(client)
            yield path, direct, pooled, apps, clients, admin
        finally:
            for state in states:
                state.close()


def test_a_dashboard_without_the_direct_url_refuses_moves_behind_the_pool(pooled_apps):
    path, direct, pooled, apps, clients, _ = pooled_apps
    page = _move(clients[0], "dual_write")
    assert "transaction pooler" in page and "HRP_POSTGRES_DIRECT_URL" in page, page
    assert HrpCutover.state(apps[0]).cutover.phase(fresh=True).phase.value == "sqlite_only"


def test_a_live_cutover_under_api_load_with_the_app_pooled(pooled_apps):
    """Writers post races through the pooled app the whole time; the dashboard (direct URL) moves
    sqlite_only -> dual_write -> shadow -> postgres_primary, the CLI backfills and verifies direct.
    Every acknowledged write is in both databases; none failed; no layer lock is left."""
    path, direct, pooled, apps, clients, admin = pooled_apps
    app, dashboard = apps[0], clients[1]
    stop, paused, idle = threading.Event(), threading.Event(), threading.Semaphore(0)
    acknowledged: list[int] = []
    failed: list[str] = []

    def writer(index: int) -> None:
        client = app.test_client()
        login(client, admin)
        while not stop.is_set():
            if paused.is_set():
                idle.release()
                while paused.is_set() and not stop.is_set():
                    stop.wait(0.01)
                continue
            response = client.post("/api/races", json={"race_name": unique(f"Load{index} "), "race_date": "2025-05-01"})
            if response.status_code == 201:
                acknowledged.append(response.get_json()["id"])
            else:
                failed.append(f"{response.status_code} {response.get_data(as_text=True)[:200]}")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    try:
        assert "Moved sqlite_only -&gt; dual_write" in _move(dashboard, "dual_write")
        _cli(path, pooled, direct, "backup")
        _cli(path, pooled, direct, "backfill")
        assert "Moved dual_write -&gt; shadow" in _move(dashboard, "shadow")
        paused.set()  # a full verify compares a quiet moment; the writers go on after it
        for _ in threads:
            assert idle.acquire(timeout=30)
        wait_drained(HrpCutover.state(app).cutover)
        assert "EQUAL" in _cli(path, pooled, direct, "verify")
        paused.clear()
        reader = app.test_client()
        for race_id in acknowledged[:5] * 15:
            assert reader.get(f"/api/races/{race_id}").status_code == 200
        HrpCutover.state(app).cutover.shadow.flush()
        flipped = _move(dashboard, "postgres_primary")
        assert "Moved shadow -&gt; postgres_primary" in flipped, re.findall(r"refused[^<]*", flipped)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert failed == []
    assert len(acknowledged) > 20
    wait_drained(HrpCutover.state(app).cutover)
    races_sqlite, races_postgres = sqlite_rows(path)["races"], postgres_rows(direct)["races"]
    assert {(i,) for i in acknowledged} <= set(races_sqlite) & set(races_postgres)
    assert_equal(path, direct)
    assert layer_locks(direct) == []
