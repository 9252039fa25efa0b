"""GET /metrics: protected like the dashboard (or a scraper's bearer token), parsed by
prometheus_client's own parser, shadow reads counted by table and read type."""

from __future__ import annotations

import dataclasses

from prometheus_client.parser import text_string_to_metric_families

from hrp_data.web.extension import HrpCutover
from tests.e2e.conftest import wait_until

TOKEN = "scraper-token-for-the-test"


def _samples(response) -> dict[tuple[str, tuple], float]:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def test_metrics_need_an_admin_or_the_scraper_token(shadow_world):
    state = HrpCutover.state(shadow_world.app)
    assert shadow_world.anon.get("/metrics").status_code == 401
    assert shadow_world.user.get("/metrics").status_code == 403
    assert shadow_world.anon.get("/metrics", headers={"Authorization": "Bearer guessed"}).status_code == 401
    saved = state.settings
    state.settings = dataclasses.replace(saved, metrics_token=TOKEN)
    try:
        assert shadow_world.anon.get("/metrics", headers={"Authorization": "Bearer guessed"}).status_code == 401
        samples = _samples(shadow_world.anon.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}))
    finally:
        state.settings = saved
    assert samples[("hrp_cutover_phase", (("phase", "shadow"),))] == 1
    assert _samples(shadow_world.admin.get("/metrics"))[("hrp_cutover_phase", (("phase", "shadow"),))] == 1


def test_shadow_reads_are_counted_by_table_and_read_type(shadow_world):
    created = shadow_world.admin.post("/api/races", json={"race_name": "Metered", "race_date": "2025-05-01"})
    assert created.status_code == 201, created.get_json()
    race_id = created.get_json()["id"]

    def compared() -> float:
        shadow_world.anon.get(f"/api/races/{race_id}").close()
        shadow_world.cutover.shadow.flush()
        samples = _samples(shadow_world.admin.get("/metrics"))
        return sum(value for (name, labels), value in samples.items()
                   if name == "hrp_cutover_shadow_compared_total" and ("table", "races") in labels)

    assert wait_until(compared, "shadow reads of races in /metrics", 20)
    samples = _samples(shadow_world.admin.get("/metrics"))
    names = {name for name, _ in samples}
    assert {"hrp_cutover_shadow_mismatched_total", "hrp_cutover_shadow_candidate_errors_total",
            "hrp_cutover_outbox_pending", "hrp_cutover_outbox_oldest_age_seconds",
            "hrp_cutover_applier_breaker_open", "hrp_cutover_last_move_hold_seconds"} <= names
    assert all(value == 0 for (name, _), value in samples.items() if name == "hrp_cutover_scrape_failed")
