"""`hrp-cutover serve --workers 2`: a gunicorn master and two app processes on one port.

A SIGKILLed worker costs no request (the other keeps serving the port) and is
replaced by the master; a phase change made by the CLI is seen by every worker
(each reports the phase it sees); no secret reaches the server's output; the
server runs one `hrp-cutover apply` beside its workers and stops it with itself.
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
from tools.cli import cli  # noqa: F401 - the CLI loads its command modules (tools.web_cmd) itself
from tools.web_cmd import APPLIER_NICE

PASSWORD = "prefork-Zq8-secret-password"


def _get(base: str, path: str, body: dict | None = None) -> int:
    request = urllib.request.Request(
        base + path, data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def _on_postgres(postgres_url: str, sql: str):
    import psycopg2
    from sqlalchemy.engine import make_url

    from tests.conftest import MAINTENANCE

    url = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg2.connect(url, options=MAINTENANCE) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()[0]


def _workers(master: psutil.Process) -> set[int]:
    """The master's worker processes (not its `hrp-cutover apply` child)."""
    found = set()
    for child in master.children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "apply" not in child.cmdline():
                found.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return found


def test_the_server_runs_one_dedicated_applier_and_stops_it_with_itself(prefork):
    """`serve` starts `hrp-cutover apply` beside its workers (their threads stand aside: status says
    who carries the changes), with no URL on its command line, nicer than the workers (APPLIER_NICE:
    where cores are short, requests get them first), and ends it when the server ends."""
    process, base, sqlite_path, postgres_url, log = prefork
    master = psutil.Process(process.pid)
    appliers = _wait(lambda: [c for c in master.children() if "apply" in c.cmdline()], 15, "the dedicated applier")
    assert len(appliers) == 1 and not any(postgres_url in part for part in appliers[0].cmdline())
    workers = [c for c in master.children() if c not in appliers]
    _wait(lambda: appliers[0].nice() == master.nice() + APPLIER_NICE, 15, "the applier to lower its priority")
    assert workers and all(worker.nice() == master.nice() for worker in workers)
    _wait(lambda: json.loads(run_cli(sqlite_path, postgres_url, "status", "--json"))["dedicated_applier"]["running"],
          15, "status to show the dedicated applier")
    assert _get(base, "/api/users", {"username": "bea", "email": "bea@example.com", "password": PASSWORD}) == 201
    _wait(lambda: _on_postgres(postgres_url, "SELECT count(*) FROM users WHERE username = 'bea'") == 1, 15,
          "the write to reach PostgreSQL")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=40) == 0
    assert not appliers[0].is_running() or appliers[0].status() == psutil.STATUS_ZOMBIE
    status = json.loads(run_cli(sqlite_path, postgres_url, "status", "--json"))
    assert not status["dedicated_applier"]["running"]


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
