"""The soak run (`make soak`): the app under a bounded client load walks every phase while faults
are injected, then proves that no acknowledged write is missing or different in the final primary.

The app is `hrp-cutover serve --workers 3`: a gunicorn master and three worker processes on one
port, each with its own applier, phase cache and pools (3 + 3 PostgreSQL connections, 1 s pool
timeout; `serve` fits each worker's request threads to that: 3). The SQLite file sits on a small
tmpfs, so the disk under it can be filled. It prints one table (failed requests per phase, re-sent
requests, longest write hold) and writes it as JSON to artifacts/soak/soak.json, then asserts the
targets:

- no acknowledged write lost, both databases equal, no planted secret in any output;
- no failed request but 503s (never a 500, never a hang) in flight while PostgreSQL, the primary,
  is down: stopped, or frozen longer than the client-side bound (the seconds from the fault to
  its end; a failed request must overlap them). A request counts in the phase it started in.
  Every write carries an Idempotency-Key; a request
  whose connection is lost (the killed worker's) is re-sent once by the client (`Api`): a write
  with its key (the stored answer comes back if it had committed), a read as it is;
- faults inside moves, both directions (the mover SIGKILLed inside the hold and after the phase
  commit, PostgreSQL stopped inside a flip's hold, the SQLite disk full inside a rollback's hold;
  tests/soak/mover.py stops a real `hrp-cutover flip`/`rollback` at the point): after `recover` the
  phase is the one before or the one after the move, and the writes acknowledged meanwhile are in
  the final count like every other;
- the burst beyond the pools is served: requests wait (in the workers' queues) longer than the
  pool timeout instead of getting its 503.

Loopback only; it stops by itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from tools import demo as harness
from tests.pg_control import OwnPostgres
from tests.disk import FullDisk
from tests.soak.faults import burst, kill_worker_mid_request, move_with_fault, wait_replaced, workers
from tests.soak.tcp_proxy import TcpProxy

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "soak"
CLIENTS = 4
WORKERS = 3
SECRET = "planted-Zq8s3cr3t"
POOL = {"HRP_POSTGRES_POOL": "3", "HRP_POSTGRES_POOL_TIMEOUT": "1"}
SLOWEST_ALLOWED_S = 12.0

PRIMARY_DOWN = "postgres_primary: postgres down (primary)"
PRIMARY_FROZEN = "postgres_primary: postgres frozen 7 s (primary)"
BURST = "postgres_primary: burst beyond the pools (slow postgres)"
WORKER_KILLED = "postgres_primary: worker killed mid-request"
DISK_FULL = "postgres_primary: sqlite disk full"
FLIP_KILLED = "shadow: flip, mover SIGKILLed inside the hold"
FLIP_POSTGRES_DOWN = "shadow: flip, postgres stopped inside the hold"
ROLLBACK_DISK_FULL = "postgres_primary: rollback, sqlite disk full inside the hold"
ROLLBACK_KILLED_COMMITTED = "postgres_primary: rollback, mover SIGKILLed after the phase commit"


MIGRATED_ON_SQLITE = "shadow: the app's migrations on SQLite (add column, new table, batch rebuild)"
MIGRATED_ON_POSTGRES = "postgres_primary: the app's migrations on PostgreSQL (add column, new table)"


def _migrate_sqlite(path: Path) -> None:
    """The app deploys while SQLite is the primary, under the load: Alembic's add_column, a new
    table with rows, and a batch-mode rebuild of a table the clients write (its capture triggers go
    with the dropped table; the schema watch re-arms them and carries the gap)."""
    with sqlite3.connect(path, timeout=20) as raw:
        raw.execute("ALTER TABLE horses ADD COLUMN sire TEXT")
        raw.execute("UPDATE horses SET sire = 'Galileo' WHERE id % 7 = 0")
        raw.execute("CREATE TABLE race_notes (id INTEGER PRIMARY KEY, race_id INTEGER REFERENCES races(id), note TEXT)")
        raw.execute("INSERT INTO race_notes (race_id, note) SELECT id, 'going firm' FROM races LIMIT 50")
    raw = sqlite3.connect(path, timeout=20, isolation_level=None)
    try:
        create = raw.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'horses'").fetchone()[0]
        raw.execute("PRAGMA foreign_keys = OFF")
        raw.execute("BEGIN IMMEDIATE")
        raw.execute(create.replace("CREATE TABLE horses", "CREATE TABLE _alembic_tmp_horses", 1)
                    .replace('CREATE TABLE "horses"', 'CREATE TABLE "_alembic_tmp_horses"', 1))
        raw.execute("INSERT INTO _alembic_tmp_horses SELECT * FROM horses")
        raw.execute("DROP TABLE horses")
        raw.execute("ALTER TABLE _alembic_tmp_horses RENAME TO horses")
        raw.execute("UPDATE horses SET sire = 'Frankel' WHERE id % 11 = 0")  # in the gap: no capture trigger
        raw.execute("COMMIT")
    finally:
        raw.close()


def _migrate_postgres(url: str) -> None:
    """The app deploys while PostgreSQL is the primary, under the load."""
    import psycopg2
    from sqlalchemy.engine import make_url

    connection = psycopg2.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute("ALTER TABLE races ADD COLUMN going varchar(20)")
            cursor.execute("UPDATE races SET going = 'soft' WHERE id % 5 = 0")
            cursor.execute("CREATE TABLE race_tags (id serial PRIMARY KEY, race_id integer REFERENCES races(id),"
                           " tag varchar(40) NOT NULL)")
            cursor.execute("INSERT INTO race_tags (race_id, tag) SELECT id, 'handicap' FROM races LIMIT 40")
    finally:
        connection.close()


def _socket_path(url: str) -> str:
    host = parse_qs(urlparse(url).query)["host"][0]
    return os.path.join(host, ".s.PGSQL.5432")


def _harden_server_log(url: str) -> None:
    """The settings docs/operations.md documents: the server log never carries statements or parameters."""
    import psycopg2
    from sqlalchemy.engine import make_url

    from tests.conftest import MAINTENANCE

    connection = psycopg2.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False), options=MAINTENANCE)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("ALTER DATABASE postgres SET log_min_error_statement = 'panic'")
        cursor.execute("ALTER DATABASE postgres SET log_parameter_max_length_on_error = 0")
    connection.close()


@contextlib.contextmanager
def _down(windows: list[tuple[float, float]]):
    """Record the block's span as one window of the primary being down: failed requests are
    allowed only if they overlap one."""
    started = time.monotonic()
    try:
        yield
    finally:
        windows.append((started, time.monotonic()))


def _phase_seen(run: harness.Demo, master_pid: int, phase: str, timeout: float = 10.0) -> float:
    """Seconds until every live worker reports `phase` (each worker's applier reports what it sees)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        status = json.loads(run.cli("status", "--json", check=False, show=False).stdout or "{}")
        live = workers(master_pid)
        seen = {int(w["worker"].rsplit(":", 1)[1]): w["phase"] for w in status.get("workers", [])}
        if live and all(seen.get(pid) == phase for pid in live):
            return round(time.monotonic() - started, 1)
        time.sleep(0.3)
    raise AssertionError(f"not every worker saw phase {phase} within {timeout} s")


MOVED = {"shadow": "postgres_primary", "postgres_primary": "shadow"}


def _phase(run: harness.Demo) -> str:
    return json.loads(run.cli("status", "--json", show=False).stdout)["phase"]


def _unexplained(ledger: harness.Ledger, down: list[tuple[float, float]]) -> dict[str, dict]:
    """Failed requests the targets do not allow, per phase: any but a 503 in flight while the primary was down."""
    out: dict[str, dict] = {}
    for failed in ledger.failed_requests:
        allowed = failed["kind"].endswith(" 503") and any(
            failed["started"] <= end and failed["ended"] >= start for start, end in down
        )
        if not allowed:
            kinds = out.setdefault(failed["phase"], {})
            kinds[failed["kind"]] = kinds.get(failed["kind"], 0) + 1
    return out


@pytest.mark.soak
def test_soak(tmp_path):
    postgres = OwnPostgres()
    _harden_server_log(postgres.url)
    proxy = TcpProxy(_socket_path(postgres.url))
    disk = FullDisk(tmp_path / "data")
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{proxy.port}/postgres"
    events: list[str] = []
    say = lambda text: events.append(text)  # noqa: E731
    run = harness.Demo(tmp_path, url, races=1500, say=say, workers=WORKERS, data_dir=disk.directory, extra_env=POOL)
    ledger = harness.Ledger()
    stop = threading.Event()
    holds: list[float] = []
    seen_s: dict[str, float] = {}
    kill: dict = {}
    inside_moves: dict[str, dict] = {}
    primary_down: list[tuple[float, float]] = []
    sqlite_disk_used_mb = None
    wal_checkpoint = None
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
        apis, threads = [], []
        for n in range(CLIENTS):
            api = harness.Api(run.base)
            api.call("POST", "/api/users", {"username": f"soak{n}", "email": f"soak{n}@x.test", "password": f"{SECRET}-pw-{n}"})
            api.call("POST", "/api/session", {"username": f"soak{n}", "password": f"{SECRET}-pw-{n}"})
            apis.append(api)
            threads.append(threading.Thread(target=harness.client, args=(api, ledger, admin, stop, n, race_ids), daemon=True))
        for thread in threads:
            thread.start()

        def phase(name: str) -> None:
            ledger.phase = name

        def move(*args: str, to: str) -> None:
            result = run.cli(*args)
            for line in result.stdout.splitlines():
                if "writes held" in line:
                    holds.append(float(line.split("writes held ")[1].split(" ms")[0]))
            seen_s[f"{' '.join(args)} -> {to}"] = _phase_seen(run, app.pid, to)

        def faulted(label: str, point: str, inject, *args: str, after_fault=None) -> None:
            """A move stopped at `point` by a fault, then the documented recovery (`recover`, `replay`) and a
            plain `verify`, no repair: the phase is the one before the move or the one after it, never
            in between, and both sides are equal without anything copied by hand."""
            phase(label)
            before = _phase(run)
            done = move_with_fault(run.env(), tmp_path, point, inject, *args)
            if after_fault is not None:
                after_fault()
            run.cli("recover")
            run.cli("replay", check=False)
            verified = run.cli("verify", check=False)  # the evidence the failed move reset, and the proof
            after = _phase(run)
            inside_moves[label] = {"exit": done.returncode, "output": done.stdout.strip().splitlines()[-1:],
                                   "phase_before": before, "phase_after_recover": after,
                                   "verify_exit": verified.returncode,
                                   "verify": verified.stdout.strip().splitlines()[-3:]}
            assert after in {before, MOVED[before]}, inside_moves[label]
            seen_s[f"{label} -> {after}"] = _phase_seen(run, app.pid, after)
            time.sleep(2)

        sigkill = lambda pid: os.kill(pid, signal.SIGKILL)  # noqa: E731

        time.sleep(3)
        move("phase", "set", "dual_write", to="dual_write")
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
        move("phase", "set", "shadow", to="shadow")
        phase("shadow")
        time.sleep(4)
        phase(MIGRATED_ON_SQLITE)
        _migrate_sqlite(run.sqlite_path)
        time.sleep(4)
        run.cli("verify", "--repair", check=False)
        run.cli("verify")
        faulted(FLIP_KILLED, "drained", sigkill, "flip")
        faulted(FLIP_POSTGRES_DOWN, "postgres_triggers_added", lambda pid: postgres.stop(), "flip",
                after_fault=postgres.start)
        run.cli("replay", check=False)
        phase("shadow: outbox deep, then flip")
        postgres.freeze()
        time.sleep(2)
        postgres.thaw()
        move("flip", to="postgres_primary")
        phase("postgres_primary")
        time.sleep(3)
        phase(MIGRATED_ON_POSTGRES)
        _migrate_postgres(postgres.url)
        time.sleep(4)
        run.cli("verify", "--repair", check=False)
        run.cli("verify")  # the evidence the migrations reset, for the rollbacks below

        phase(WORKER_KILLED)
        kill = kill_worker_mid_request(app.pid, run.port)
        kill["replaced_after_s"] = round(wait_replaced(app.pid, WORKERS, kill["pid"]), 2)
        time.sleep(2)

        phase(DISK_FULL)
        sqlite_disk_used_mb = disk.used_mb()
        with sqlite3.connect(run.sqlite_path, timeout=20) as raw:  # an empty WAL: the next commit needs new pages
            wal_checkpoint = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        disk.fill()
        time.sleep(4)
        disk.free()
        phase("postgres_primary: disk freed")
        time.sleep(3)

        with sqlite3.connect(run.sqlite_path, timeout=20) as raw:  # the next commit needs new pages
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        faulted(ROLLBACK_DISK_FULL, "drained", lambda pid: disk.fill(), "rollback", after_fault=disk.free)
        if _phase(run) == "postgres_primary":
            faulted(ROLLBACK_KILLED_COMMITTED, "phase_committed", sigkill, "rollback")
        if _phase(run) == "postgres_primary":
            move("rollback", to="shadow")
        phase("shadow (rolled back)")
        time.sleep(3)
        run.cli("verify")
        move("flip", to="postgres_primary")
        phase("postgres_primary (again)")
        time.sleep(3)
        # last, as the primary's errors count as shadow mismatches and would refuse a rollback
        phase(BURST)
        proxy.latency_s = 0.25
        burst(run.base, ledger, [f"/api/races/{race_id}" for race_id in race_ids[:24]], threads=8 * WORKERS, seconds=4)
        proxy.latency_s = 0.0
        phase("postgres_primary: pools free again")
        time.sleep(3)

        phase(PRIMARY_FROZEN)  # longer than the 5 s client-side bound: requests must give up, not hang
        with _down(primary_down):
            postgres.freeze()
            time.sleep(7)
            postgres.thaw()
        phase("postgres_primary: primary thawed")
        time.sleep(4)

        phase(PRIMARY_DOWN)
        with _down(primary_down):
            postgres.stop()
            time.sleep(2)
            postgres.start()
        phase("postgres_primary: primary back")
        time.sleep(4)

        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        run.cli("replay", check=False)
        final_verify = json.loads(run.cli("verify", "--json", check=False, show=False).stdout)
        report = json.loads(run.cli("report", "--format", "json", check=False, show=False).stdout)
        outputs = [
            json.dumps(report),
            run.cli("report", "--format", "html", check=False, show=False).stdout,
            run.cli("quarantine", "--format", "json", check=False, show=False).stdout,
            run.cli("status", "--json", check=False, show=False).stdout,
            json.dumps(admin.call("GET", "/admin/cutover/status.json")[1]),
            json.dumps(admin.call("GET", "/api/credentials")[1]),
        ]
        move("phase", "set", "postgres_only", to="postgres_only")
        lost_details: list[dict] = []
        lost = harness.lost_writes(url, ledger, lost_details)
        doubled = harness.doubled_writes(url)
    finally:
        stop.set()
        if sys.exc_info()[0] is not None:  # what the commands printed up to the failure
            print("\n".join(events[-80:]))
        if app is not None and app.poll() is None:
            app.terminate()
            app.wait(timeout=60)
        proxy.close()
        postgres.close()
        disk.close()
    app_log = (tmp_path / "app.log").read_text(errors="replace")
    captured = "\n".join(events + outputs) + app_log
    captured += (Path(postgres.data_dir) / "log").read_text(errors="replace") if (Path(postgres.data_dir) / "log").exists() else ""
    leaked = SECRET in captured
    store_faults = [line for line in app_log.splitlines() if "shadow.store_unavailable" in line]
    unexplained = _unexplained(ledger, primary_down)
    pool_503s = sum(1 for line in app_log.splitlines() if "api.pool_exhausted" in line)
    clients = [*apis, admin]
    table = {
        "workers": WORKERS,
        "requests": dict(ledger.requests),
        "failed": dict(ledger.failures),
        "failure_kinds": {p: dict(k) for p, k in ledger.failure_kinds.items()},
        "failure_examples": ledger.failure_examples,
        "slowest_request_s": dict(ledger.slowest_s),
        "slowest_request": dict(ledger.slowest_what),
        "retried_idempotent_requests": sum(api.retried for api in clients),
        "resent_writes_with_key": sum(api.resent for api in clients),
        "resent_writes_replayed": sum(api.replayed for api in clients),
        "lost_connections_after_resend": ledger.lost_connections,
        "pool_exhausted_503s": pool_503s,
        "primary_down_s": [round(end - start, 2) for start, end in primary_down],
        "worker_kill": kill,
        "faults_inside_moves": inside_moves,
        "phase_seen_by_every_worker_s": seen_s,
        "sqlite_disk_used_before_filling_mb": sqlite_disk_used_mb,
        "wal_checkpoint_before_filling": wal_checkpoint,
        "store_unavailable_warnings": len(store_faults),
        "store_dropped": report.get("totals", {}).get("store_dropped"),
        "acknowledged_predictions": len(ledger.predictions),
        "acknowledged_horses": len(ledger.horses),
        "lost_writes": lost,
        "lost_write_details": lost_details,
        "doubled_writes": doubled,
        "both_equal_before_postgres_only": final_verify["equal"],
        "longest_write_hold_ms": max(holds) if holds else None,
        "holds_ms": holds,
        "secrets_in_output": leaked,
        "failures_outside_the_targets": unexplained,
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "soak.json").write_text(json.dumps(table, indent=2))
    print("\nphase".ljust(59) + "requests  failed  outside down  slowest s")
    for name, count in ledger.requests.items():
        outside = sum(unexplained.get(name, {}).values())
        print(f"{name:<58}{count:>8}{ledger.failures[name]:>8}{outside:>14}{ledger.slowest_s[name]:>11.2f}")
    print(f"lost writes: {len(lost)}; doubled writes: {len(doubled)}; both equal: {final_verify['equal']}; longest hold {table['longest_write_hold_ms']} ms;"
          f" worker {kill.get('pid')} killed with {kill.get('in_flight')} request(s) in flight, replaced after"
          f" {kill.get('replaced_after_s')} s; re-sent: {table['retried_idempotent_requests']} read(s),"
          f" {table['resent_writes_with_key']} keyed write(s) ({table['resent_writes_replayed']} answered from the stored"
          f" response); pool 503s {pool_503s};"
          f" store unavailable warnings {len(store_faults)}, store_dropped {table['store_dropped']}")
    for label, outcome in inside_moves.items():
        print(f"{label}: exit {outcome['exit']}, {outcome['phase_before']} -> {outcome['phase_after_recover']}"
              f" after recover; verify exit {outcome['verify_exit']}; {' '.join(outcome['output'])}")
    assert lost == [], lost_details[:5]
    assert doubled == [], f"writes that took effect twice: {doubled[:5]}"
    assert final_verify["equal"]
    assert not leaked, "a planted secret reached a log, report, status or the dashboard"
    assert unexplained == {}, f"failed requests outside the targets: {unexplained}"
    assert kill["in_flight"] >= 1
    assert inside_moves[FLIP_KILLED]["exit"] == -signal.SIGKILL
    not_equal = {label: m for label, m in inside_moves.items() if m["verify_exit"] != 0}
    assert not not_equal, f"a plain verify after the recovery found differences: {not_equal}"
    assert inside_moves[FLIP_POSTGRES_DOWN]["exit"] not in (0, -signal.SIGKILL)
    assert ROLLBACK_KILLED_COMMITTED not in inside_moves or inside_moves[ROLLBACK_KILLED_COMMITTED]["phase_after_recover"] == "shadow"
    assert max(ledger.slowest_s.values()) < SLOWEST_ALLOWED_S, "a request hung"
    assert ledger.slowest_s[BURST] > float(POOL["HRP_POSTGRES_POOL_TIMEOUT"]), \
        "no burst request waited longer than the pool timeout: the burst did not go beyond the pools"
    assert pool_503s == 0
    assert ledger.failure_kinds.get(PRIMARY_DOWN), "no request met the stopped primary: the fault was not injected"
    assert store_faults and all("disk is full" in line for line in store_faults)
