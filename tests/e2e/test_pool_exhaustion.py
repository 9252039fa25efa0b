"""A process whose PostgreSQL pool has no connection free: requests wait a bounded time, then a clear 503.

The app runs in postgres_primary with a pool of 1 (+1 overflow) connection and a
0.5 s pool timeout; the test holds both connections itself. The applier is off
(SQLite, the secondary, stays behind: shadow reads of the test's own rows mismatch).
"""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from hrp_data.cutover.phases import Phase
from hrp_data.schema.install import upgrade
from hrp_data.web import create_app, services
from hrp_data.web.extension import HrpCutover
from tests.conftest import create_legacy_file, scratch_database
from tests.e2e.conftest import PASSWORD, login, step_to
from tests.integration.cutover_helpers import settings_for

POOL_TIMEOUT_S = 0.5


@pytest.fixture
def small_pool(tmp_path, postgres_server_url):
    sqlite_path = tmp_path / "hrp_database.db"
    create_legacy_file(sqlite_path)
    with scratch_database(postgres_server_url, "hrp_pool") as postgres_url:
        upgrade(postgres_url)
        settings = dataclasses.replace(
            settings_for(sqlite_path, postgres_url), postgres_pool=1, postgres_pool_timeout=POOL_TIMEOUT_S
        ).validated()
        app = create_app(settings, applier=False)
        state = HrpCutover.state(app)
        try:
            cutover = state.cutover
            step_to(cutover, Phase.POSTGRES_PRIMARY)
            services.register_user(cutover, username="pooladmin", email="pooladmin@example.com",
                                   password=PASSWORD, is_admin=True)
            admin = app.test_client()
            login(admin, "pooladmin")
            yield cutover, admin
        finally:
            state.close()


def _horses_named(cutover, name: str) -> int:
    with cutover.postgres.connect() as connection:
        return connection.execute(sa.text("SELECT count(*) FROM horses WHERE horse_name = :n"), {"n": name}).scalar()


def test_no_free_connection_is_a_503_after_the_bounded_wait(small_pool):
    cutover, admin = small_pool
    held = [cutover.postgres.connect() for _ in range(2)]  # pool 1 + overflow 1: nothing left
    try:
        with capture_logs() as logs:
            started = time.monotonic()
            write = admin.post("/api/horses", json={"horse_name": "Pool Runner", "age": 4})
            write_took = time.monotonic() - started
            read = admin.get("/api/races")
    finally:
        for connection in held:
            connection.close()
    assert write.status_code == 503 and read.status_code == 503
    assert write.get_json() == {"error": "no database connection free; retry shortly", "field": None}
    assert write.headers["Retry-After"] == "1"
    assert POOL_TIMEOUT_S <= write_took < POOL_TIMEOUT_S + 2.0  # waited for a connection, then gave up
    api_events = [(e["event"], e["log_level"]) for e in logs if e["event"].startswith("api.")]
    assert api_events == [("api.pool_exhausted", "warning")] * 2  # no api.error, no 500
    assert _horses_named(cutover, "Pool Runner") == 0  # refused, not half-written
    again = admin.post("/api/horses", json={"horse_name": "Pool Runner", "age": 4})
    assert again.status_code == 201
    assert _horses_named(cutover, "Pool Runner") == 1


def test_a_connection_freed_within_the_wait_serves_the_request(small_pool):
    cutover, admin = small_pool
    held = [cutover.postgres.connect() for _ in range(2)]
    release = threading.Timer(0.2, held[0].close)
    release.start()
    try:
        started = time.monotonic()
        write = admin.post("/api/horses", json={"horse_name": "Patient Runner", "age": 5})
        took = time.monotonic() - started
    finally:
        release.join()
        held[1].close()
    assert write.status_code == 201, write.get_json()
    assert 0.15 <= took < POOL_TIMEOUT_S + 1.0
    assert _horses_named(cutover, "Patient Runner") == 1
