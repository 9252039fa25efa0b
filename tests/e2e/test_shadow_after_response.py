"""An HTTP request is one shadow-read span: its candidates run once the server closed its response."""

from __future__ import annotations

import time

from tests.e2e.conftest import wait_until


def _race(world) -> int:
    created = world.admin.post("/api/races", json={"race_name": "Held", "distance": 1200.5})
    assert created.status_code == 201, created.get_json()
    created.close()
    world.cutover.shadow.flush()
    return created.get_json()["id"]


def test_candidates_wait_for_the_response_to_be_closed(shadow_world):
    lab = shadow_world.cutover.shadow.lab
    race_id = _race(shadow_world)
    before = lab.stats().get("match", 0)
    response = shadow_world.anon.get(f"/api/races/{race_id}", buffered=False)
    assert response.status_code == 200
    assert response.get_json()["race_name"] == "Held"
    time.sleep(0.3)  # the view has returned and its units of work are closed; the response is not
    assert lab.stats().get("match", 0) == before
    response.close()
    assert wait_until(lambda: lab.stats().get("match", 0) > before, lambda: f"the candidates to run: {lab.stats()} in flight {lab._in_flight}", 10)


def test_a_request_that_raises_ends_its_span(shadow_world):
    """A view that raises (the app answers 404 here) still hands its samples over and ends the span."""
    lab = shadow_world.cutover.shadow.lab
    before = sum(lab.stats().values())
    response = shadow_world.anon.get("/api/races/999999999")
    assert response.status_code == 404
    response.close()
    shadow_world.cutover.shadow.flush()
    assert sum(lab.stats().values()) > before
    assert lab._in_flight == 0


def test_a_response_never_closed_is_ended_by_the_next_request(shadow_world):
    """A span left open (a response nobody closed) must not swallow the thread's later samples."""
    lab = shadow_world.cutover.shadow.lab
    race_id = _race(shadow_world)
    before = lab.stats().get("match", 0)
    shadow_world.anon.get(f"/api/races/{race_id}", buffered=False)  # never closed
    closed = shadow_world.anon.get(f"/api/races/{race_id}", buffered=False)
    closed.close()
    assert wait_until(lambda: lab.stats().get("match", 0) >= before + 2, lambda: f"both requests' candidates: {lab.stats()}", 10)
    assert lab._in_flight == 0
