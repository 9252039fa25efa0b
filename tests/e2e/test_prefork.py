"""`hrp-cutover serve --workers 2`: a gunicorn master and two app processes on one port.

A SIGKILLed worker costs no request (the other keeps serving the port) and is
replaced by the master; a phase change made by the CLI is seen by every worker
(each reports the phase it sees); no secret reaches the server's output.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import urllib.request

import psutil
import pytest

from hrp_data.schema.install import upgrade
from tests.conftest import create_legacy_file, scratch_database
from tests.e2e.conftest import ROOT, hrp_cutover, run_cli, wait_until

PASSWORD = "prefork-Zq8-secret-password"


def _get(base: str, path: str, body: dict | None = None) -> int:
    request = urllib.request.Request(
        base + path, data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def _workers(master: psutil.Process) -> set[int]:
    return {child.pid for child in master.children() if child.status() != psutil.STATUS_ZOMBIE}


def _wait(predicate, timeout: float, what: str):
    return wait_until(predicate, what, timeout)


def _phases_seen(sqlite_path, postgres_url, pids: set[int]) -> dict[int, str]:
    status = json.loads(run_cli(sqlite_path, postgres_url, "status", "--json"))
    return {int(w["worker"].rsplit(":", 1)[1]): w["phase"] for w in status["workers"]
            if int(w["worker"].rsplit(":", 1)[1]) in pids}


@pytest.fixture
def prefork(tmp_path, postgres_server_url):
    sqlite_path = tmp_path / "hrp_database.db"
    create_legacy_file(sqlite_path)
    with scratch_database(postgres_server_url, "hrp_prefork") as postgres_url:
        upgrade(postgres_url)
        run_cli(sqlite_path, postgres_url, "phase", "set", "dual_write")
        log = tmp_path / "serve.log"
        process = subprocess.Popen(
            [*hrp_cutover(), "--sqlite", str(sqlite_path), "--postgres", postgres_url, "--log-format", "json",
             "serve", "--port", "0", "--workers", "2", "--threads", "2"],
            stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT,
        )
        try:
            line = _wait(lambda: re.search(r"serving on (http://\S+) \(2 workers, 2 threads each\)", log.read_text()),
                         30, "the server to start")
            yield process, line.group(1), sqlite_path, postgres_url, log
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_a_killed_worker_costs_no_request_and_is_replaced(prefork):
    process, base, sqlite_path, postgres_url, log = prefork
    master = psutil.Process(process.pid)
    first = _wait(lambda: len(_workers(master)) == 2 and _workers(master), 15, "two workers")
    assert _get(base, "/api/users", {"username": "ann", "email": "ann@example.com", "password": PASSWORD}) == 201
    victim = min(first)
    psutil.Process(victim).send_signal(signal.SIGKILL)
    statuses = [_get(base, "/api/races?limit=1") for _ in range(30)]  # before and after the replacement
    assert statuses == [200] * 30
    now = _wait(lambda: len(_workers(master)) == 2 and victim not in _workers(master) and _workers(master),
                15, "the master to replace the killed worker")
    assert len(now - first) == 1
    for _ in range(20):  # every worker builds its app on its first request
        _get(base, "/api/races?limit=1")
    _wait(lambda: set(_phases_seen(sqlite_path, postgres_url, now).values()) == {"dual_write"}
          and len(_phases_seen(sqlite_path, postgres_url, now)) == 2, 15, "both workers to report")
    run_cli(sqlite_path, postgres_url, "phase", "set", "shadow")
    _wait(lambda: _phases_seen(sqlite_path, postgres_url, now) == {pid: "shadow" for pid in now}, 10,
          "every worker to see phase shadow")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=40) == 0
    output = log.read_text()
    assert f"Worker (pid:{victim}) was sent SIGKILL" in output
    assert PASSWORD not in output
    assert all(json.loads(line) for line in output.splitlines() if line.startswith("{"))
