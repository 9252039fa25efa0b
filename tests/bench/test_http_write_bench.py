"""Benchmark: write latency over HTTP, as the site's users see it, with 2 app processes per server.

Three servers (`hrp-cutover serve --workers 2`), each on a file and a database of its own, take
POST /api/horses from one logged-in admin in alternating blocks: one in sqlite_only (the
baseline), one in dual_write with its dedicated applier (`serve`'s default: one `hrp-cutover
apply` beside the workers), one in dual_write with each worker's applier thread (`--applier
threads`). Ratios are p50 and p99 of each dual_write server against the baseline, same run.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time

import pytest

from hrp_data.cutover.assemble import open_cutover
from hrp_data.cutover.phases import Phase
from hrp_data.flip.move import move
from hrp_data.schema.install import upgrade
from tests.conftest import create_legacy_file, scratch_database
from tests.integration.cutover_helpers import settings_for, wait_drained
from tools.demo import Api, free_port, hrp_cutover

WRITES = 1500
BLOCK = 100
PACE_S = 0.005
ADMIN = ("bench-admin", "bench-admin-password-1")
SECRET = "bench-secret-key-0123456789abcdefghijklmnop"


def _server(tmp_path, name: str, postgres_url: str, phase: Phase, applier: str):
    """A file and database in `phase`, served by `serve --workers 2`; (process, logged-in Api, env)."""
    path = tmp_path / f"{name}.db"
    create_legacy_file(path)
    upgrade(postgres_url)
    with open_cutover(settings_for(path, postgres_url)) as cutover:
        if phase is not Phase.SQLITE_ONLY:
            move(cutover, phase)
    env = os.environ | {"HRP_SQLITE_URL": f"sqlite:///{path}", "HRP_POSTGRES_URL": postgres_url,
                        "HRP_LOG_LEVEL": "WARNING", "HRP_SECRET_KEY": SECRET}
    subprocess.run([hrp_cutover(), "create-admin", ADMIN[0], "--password-stdin"], input=ADMIN[1] + "\n", env=env,
                   text=True, check=True, capture_output=True)
    port = free_port()
    process = subprocess.Popen(
        [hrp_cutover(), "serve", "--port", str(port), "--workers", "2", "--threads", "4", "--applier", applier],
        env=env, stdout=(tmp_path / f"{name}.log").open("w"), stderr=subprocess.STDOUT,
    )
    api = Api(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 60
    while True:
        try:
            if api.call("POST", "/api/session", {"username": ADMIN[0], "password": ADMIN[1]}, timeout=5)[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline and process.poll() is None, f"{name} did not start"
        time.sleep(0.2)
    return process, api, path


def _summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 3),
            "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 3)}


@pytest.mark.bench
def test_http_write_latency_ratio(tmp_path, postgres_server_url, record_bench):
    with scratch_database(postgres_server_url, "hrp_http_base") as base_url, \
            scratch_database(postgres_server_url, "hrp_http_dedicated") as dedicated_url, \
            scratch_database(postgres_server_url, "hrp_http_threads") as threads_url:
        servers = {
            "sqlite_only": _server(tmp_path, "sqlite_only", base_url, Phase.SQLITE_ONLY, "process"),
            "dual_write_dedicated": _server(tmp_path, "dedicated", dedicated_url, Phase.DUAL_WRITE, "process"),
            "dual_write_threads": _server(tmp_path, "threads", threads_url, Phase.DUAL_WRITE, "threads"),
        }
        timings: dict[str, list[float]] = {name: [] for name in servers}
        try:
            for name, (_, api, _) in servers.items():  # warm every worker
                for i in range(50):
                    assert api.call("POST", "/api/horses", {"horse_name": f"warm {i}"})[0] == 201
            for block in range(WRITES // BLOCK):
                for name, (_, api, _) in servers.items():
                    for i in range(BLOCK):
                        started = time.perf_counter()
                        status, answer = api.call("POST", "/api/horses", {"horse_name": f"b{block} {i}", "age": 4})
                        timings[name].append(time.perf_counter() - started)
                        assert status == 201, answer
                        time.sleep(PACE_S)
        finally:
            for process, _, _ in servers.values():
                process.terminate()
                process.wait(60)
        for name, url in (("dual_write_dedicated", dedicated_url), ("dual_write_threads", threads_url)):
            path = servers[name][2]
            with open_cutover(settings_for(path, url)) as cutover:
                wait_drained(cutover, timeout=120)
                with cutover.engine("postgres").connect() as connection:
                    carried = connection.exec_driver_sql("SELECT count(*) FROM horses").scalar()
            assert carried == WRITES + 50, f"{name}: every acknowledged write reached PostgreSQL"
    figures = {name: _summary(values) for name, values in timings.items()}
    base = figures["sqlite_only"]
    for name in ("dual_write_dedicated", "dual_write_threads"):
        figures[f"{name}_ratio_p50"] = round(figures[name]["p50_ms"] / base["p50_ms"], 3)
        figures[f"{name}_ratio_p99"] = round(figures[name]["p99_ms"] / base["p99_ms"], 3)
    figures |= {"writes_each": WRITES, "request": "POST /api/horses", "workers": 2, "pace_ms": PACE_S * 1000}
    record_bench("dual_write_http", figures)
