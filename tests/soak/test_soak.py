"""The soak run (`make soak`): the app under a bounded client load walks every phase while faults
are injected, then proves that no acknowledged write is missing or different in the final primary.

It prints one table (failed requests per phase, longest write hold) and writes it as JSON to
artifacts/soak/soak.json. Loopback only; it stops by itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import psutil
import pytest

from hrp_data import demo as harness
from hrp_data.phases import Phase
from tests.pg_control import OwnPostgres
from tests.soak.tcp_proxy import TcpProxy

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "soak"
CLIENTS = 4
SECRET = "planted-Zq8s3cr3t"


def _socket_path(url: str) -> str:
    host = parse_qs(urlparse(url).query)["host"][0]
    return os.path.join(host, ".s.PGSQL.5432")


def _harden_server_log(url: str) -> None:
    """The settings the README documents: the server log never carries statements or parameters."""
    import psycopg2
    from sqlalchemy.engine import make_url

    connection = psycopg2.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("ALTER DATABASE postgres SET log_min_error_statement = 'panic'")
        cursor.execute("ALTER DATABASE postgres SET log_parameter_max_length_on_error = 0")
    connection.close()


@pytest.mark.soak
def test_soak(tmp_path):
    postgres = OwnPostgres()
    _harden_server_log(postgres.url)
    proxy = TcpProxy(_socket_path(postgres.url))
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{proxy.port}/postgres"
    events: list[str] = []
    say = lambda text: events.append(text)  # noqa: E731
    run = harness.Demo(tmp_path, url, races=1500, say=say)
    ledger = harness.Ledger()
    stop = threading.Event()
    holds: list[float] = []
    app = None
    try:
        run.cli("seed", "--sqlite", str(run.sqlite_path), "--races", "1500", "--force")
        run.cli("schema")
        run.cli("create-admin", harness.ADMIN[0], "--password-stdin", stdin=harness.ADMIN[1] + "\n")
        app = run.start_app()
        admin = harness.Api(run.base)
        assert admin.call("POST", "/api/session", {"username": harness.ADMIN[0], "password": harness.ADMIN[1]})[0] == 200
        race_ids = [r["id"] for r in harness.Api(run.base).call("GET", "/api/races?limit=200")[1]["items"]]
        for n in range(3):
            created = admin.call("POST", "/api/credentials", {"service_name": f"feed{n}", "api_key": f"{SECRET}-key-{n}",
                                                              "api_secret": f"{SECRET}-secret-{n}", "endpoint_url": "https://odds.example"})
            assert created[0] == 201, created
        threads = []
        for n in range(CLIENTS):
            api = harness.Api(run.base)
            api.call("POST", "/api/users", {"username": f"soak{n}", "email": f"soak{n}@x.test", "password": f"{SECRET}-pw-{n}"})
            api.call("POST", "/api/session", {"username": f"soak{n}", "password": f"{SECRET}-pw-{n}"})
            threads.append(threading.Thread(target=harness.client, args=(api, ledger, admin, stop, n, race_ids), daemon=True))
        for thread in threads:
            thread.start()

        def phase(name: str) -> None:
            ledger.phase = name

        def move(*args: str) -> None:
            result = run.cli(*args)
            for line in result.stdout.splitlines():
                if "writes held" in line:
                    holds.append(float(line.split("writes held ")[1].split(" ms")[0]))

        time.sleep(3)
        move("phase", "set", "dual_write")
        phase("dual_write")
        time.sleep(2)
        phase("dual_write: postgres stopped")
        postgres.stop()
        time.sleep(3)
        postgres.start()
        phase("dual_write: postgres slow (200 ms)")
        proxy.latency_s = 0.2
        time.sleep(3)
        proxy.latency_s = 0.0
        phase("dual_write: connections reset")
        proxy.reset_all()
        time.sleep(2)
        phase("dual_write: postgres frozen")
        postgres.freeze()
        time.sleep(3)
        postgres.thaw()
        phase("backfill")
        backfill = subprocess.Popen([harness.hrp_cutover(), "backfill", "--no-backup", "--batch-size", "500",
                                     "--max-rows-per-sec", "20000"], env=run.env(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        time.sleep(1.5)
        backfill.send_signal(signal.SIGKILL)
        backfill.wait()
        for _ in range(10):  # the killed run's session ends when PostgreSQL notices its client is gone
            if run.cli("backfill", "--no-backup", check=False).returncode == 0:
                break
            time.sleep(2)
        else:
            raise AssertionError("the backfill did not resume")
        run.cli("replay", check=False)
        move("phase", "set", "shadow")
        phase("shadow")
        time.sleep(4)
        run.cli("verify", "--repair", check=False)
        run.cli("verify")
        phase("shadow: outbox deep, then flip")
        postgres.freeze()
        time.sleep(2)
        postgres.thaw()
        move("flip")
        phase("postgres_primary")
        time.sleep(3)
        phase("postgres_primary: app worker killed")
        psutil.Process(app.pid).send_signal(signal.SIGKILL)
        app.wait()
        app = run.start_app()
        time.sleep(2)
        phase("postgres_primary")
        move("rollback")
        phase("shadow (rolled back)")
        time.sleep(3)
        run.cli("verify")
        move("flip")
        phase("postgres_primary (again)")
        time.sleep(3)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        run.cli("replay", check=False)
        final_verify = json.loads(run.cli("verify", "--json", check=False, show=False).stdout)
        outputs = [
            run.cli("report", "--format", "json", check=False, show=False).stdout,
            run.cli("report", "--format", "html", check=False, show=False).stdout,
            run.cli("quarantine", "--format", "json", check=False, show=False).stdout,
            run.cli("status", "--json", check=False, show=False).stdout,
            json.dumps(admin.call("GET", "/admin/cutover/status.json")[1]),
            json.dumps(admin.call("GET", "/api/credentials")[1]),
        ]
        move("phase", "set", "postgres_only")
        lost = harness.lost_writes(url, ledger)
    finally:
        stop.set()
        if app is not None and app.poll() is None:
            app.terminate()
            app.wait(timeout=30)
        proxy.close()
        postgres.close()
    captured = "\n".join(events + outputs) + (tmp_path / "app.log").read_text(errors="replace")
    captured += (Path(postgres.data_dir) / "log").read_text(errors="replace") if (Path(postgres.data_dir) / "log").exists() else ""
    leaked = SECRET in captured
    table = {
        "requests": dict(ledger.requests),
        "failed": dict(ledger.failures),
        "failure_examples": ledger.failure_examples,
        "acknowledged_predictions": len(ledger.predictions),
        "acknowledged_horses": len(ledger.horses),
        "lost_writes": lost,
        "both_equal_before_postgres_only": final_verify["equal"],
        "longest_write_hold_ms": max(holds) if holds else None,
        "holds_ms": holds,
        "secrets_in_output": leaked,
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "soak.json").write_text(json.dumps(table, indent=2))
    print("\nphase".ljust(44) + "requests  failed")
    for name, count in ledger.requests.items():
        print(f"{name:<43}{count:>8}{ledger.failures[name]:>8}")
    print(f"lost writes: {len(lost)}; both equal: {final_verify['equal']}; longest hold {table['longest_write_hold_ms']} ms")
    assert lost == []
    assert final_verify["equal"]
    assert not leaked, "a planted secret reached a log, report, status or the dashboard"
