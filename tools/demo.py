"""The cutover demo: the whole runbook, played on a seeded file while clients keep calling the API.

Every step runs the way an operator runs it: the app is `hrp-cutover serve`
in its own process, and backup, backfill, verify, flip, rollback and report
are `hrp-cutover` commands. Meanwhile client threads call the JSON API
(reads and writes) and record what they wrote and what they got back. At the
end the demo checks every acknowledged write against the final primary and
reports the counts it measured; it claims nothing it did not measure.
"""

from __future__ import annotations

import dataclasses
import http.client
import http.cookiejar
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from adapters.postgres import create_postgres_engine, psycopg2_url
from adapters.urls import redact_url
from hrp_data.cutover.phases import Phase

ADMIN = ("demo-admin", "demo-admin-password-1")
CLIENTS = 3


def hrp_cutover() -> str:
    """The installed console script beside this interpreter (or on PATH)."""
    beside = Path(sys.executable).parent / "hrp-cutover"
    return str(beside) if beside.exists() else (shutil.which("hrp-cutover") or "hrp-cutover")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CONNECTION_LOST = (ConnectionError, http.client.RemoteDisconnected, http.client.IncompleteRead)
"""What a client sees when the app process serving its request dies: a reset, or a closed connection."""


def connection_lost(error: BaseException) -> bool:
    reason = getattr(error, "reason", None) if isinstance(error, urllib.error.URLError) else error
    return isinstance(reason, CONNECTION_LOST)


class Api:
    """A JSON client with its own cookie jar (one logged-in user).

    Every write (POST, PUT, PATCH, DELETE) carries a fresh Idempotency-Key. A request whose
    connection is lost before an answer (the app process serving it died) is sent once more
    when that is safe: a write with its key (the app answers a repeat with the stored response
    if the first one committed, and runs it if it did not), or an idempotent read. Counted:
    `retried` (reads re-sent), `resent` (writes re-sent with their key) and, of those,
    `replayed` (the first had committed: the stored answer came back).
    """

    def __init__(self, base: str):
        self.base = base
        self.retried = 0
        self.resent = 0
        self.replayed = 0
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 15) -> tuple[int, Any]:
        key = str(uuid.uuid4()) if method in WRITES else None
        try:
            return self._once(method, path, body, timeout, key)[:2]
        except (OSError, http.client.HTTPException) as error:
            if not connection_lost(error) or (key is None and method not in IDEMPOTENT):
                raise
            if key is None:
                self.retried += 1
            else:
                self.resent += 1
            status, answer, replayed = self._once(method, path, body, timeout, key)
            self.replayed += replayed
            return status, answer

    def _once(self, method: str, path: str, body: dict | None, timeout: float, key: str | None) -> tuple[int, Any, bool]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} | ({"Idempotency-Key": key} if key else {})
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with self.opener.open(request, timeout=timeout) as response:
                raw = response.read()
                replayed = response.headers.get("Idempotent-Replayed") == "true"
                return response.status, json.loads(raw) if raw else None, replayed
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                return error.code, json.loads(raw), False
            except ValueError:
                return error.code, raw.decode(errors="replace"), False


@dataclasses.dataclass
class Ledger:
    """What the clients did: requests per phase, failures, and every acknowledged write."""

    phase: str = "sqlite_only"
    requests: Counter = dataclasses.field(default_factory=Counter)
    failures: Counter = dataclasses.field(default_factory=Counter)
    failure_examples: list = dataclasses.field(default_factory=list)
    failure_kinds: dict = dataclasses.field(default_factory=dict)
    slowest_s: Counter = dataclasses.field(default_factory=Counter)
    slowest_what: dict = dataclasses.field(default_factory=dict)
    """phase -> the slowest request of that phase (method and path), to say what was slow."""
    lost_connections: list = dataclasses.field(default_factory=list)
    failed_requests: list = dataclasses.field(default_factory=list)
    predictions: dict = dataclasses.field(default_factory=dict)
    horses: dict = dataclasses.field(default_factory=dict)
    deleted_predictions: set = dataclasses.field(default_factory=set)
    acknowledged_in: dict = dataclasses.field(default_factory=dict)
    """("horse" | "prediction", id) -> the phase its last acknowledged write started in."""
    indeterminate: dict = dataclasses.field(default_factory=dict)
    """horse id -> changes sent after its last acknowledged one whose request got no answer or a 5xx:
    each may have taken effect (a COMMIT that reached a frozen server lands after the client gave up),
    so the final row may be the acknowledged one with any of them on top."""
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def count(
        self, ok: bool, what: str, *, kind: str = "", seconds: float = 0.0, phase: str | None = None,
        started: float | None = None,
    ) -> None:
        """One request, in the phase it started in (default: now); `kind` says how a failed one
        failed (its status, or the error class). A failed one is kept with its start and end
        (time.monotonic()) in `failed_requests`."""
        with self.lock:
            phase = phase or self.phase
            if not ok and started is not None:
                self.failed_requests.append({"phase": phase, "kind": kind or what, "started": started,
                                             "ended": started + seconds})
            self.requests[phase] += 1
            if round(seconds, 3) > self.slowest_s[phase]:
                self.slowest_s[phase] = round(seconds, 3)
                self.slowest_what[phase] = what
            if not ok:
                self.failures[phase] += 1
                kinds = self.failure_kinds.setdefault(phase, Counter())
                kinds[kind or what] += 1
                if len(self.failure_examples) < 20:
                    self.failure_examples.append(f"{phase}: {what}")

    def connection_lost(self, method: str, path: str, started: float, ended: float, phase: str) -> None:
        """A request whose connection was lost (and, where that was safe, once more when re-sent)."""
        with self.lock:
            self.lost_connections.append(
                {"phase": phase, "method": method, "path": path, "started": started, "ended": ended}
            )


def client(api: Api, ledger: Ledger, admin: Api, stop: threading.Event, seed: int, race_ids: list[int]) -> None:
    """One user: reads races and predictions, writes predictions, and (as admin) its own horses."""
    rng = random.Random(seed)
    my_horses: list[int] = []

    def call(who: Api, method: str, path: str, body: dict | None, expect: int, label: str) -> tuple[int, Any]:
        started, phase = time.monotonic(), ledger.phase
        try:
            status, answer = who.call(method, path, body)
        except (OSError, ValueError, http.client.HTTPException) as error:
            ended = time.monotonic()
            if connection_lost(error):
                ledger.connection_lost(method, path, started, ended, phase)
            ledger.count(False, f"{label} -> {type(error).__name__}: {error}", kind=f"{method} {type(error).__name__}",
                         seconds=ended - started, phase=phase, started=started)
            return 0, None
        shown = answer if status >= 400 else ""
        ledger.count(status == expect, f"{label} -> {status} {shown}", kind=f"{method} {status}",
                     seconds=time.monotonic() - started, phase=phase, started=started)
        return status, answer

    while not stop.is_set():
        action = rng.random()
        if action < 0.35:
            call(api, "GET", f"/api/races/{rng.choice(race_ids)}", None, 200, "GET race")
        elif action < 0.5:
            call(api, "GET", "/api/races?limit=20", None, 200, "GET races")
        elif action < 0.8:
            race_id = rng.choice(race_ids)
            status, race = call(api, "GET", f"/api/races/{race_id}", None, 200, "GET race")
            if status != 200 or not race.get("runners"):
                continue
            horse_id = rng.choice(race["runners"])["horse_id"]
            payload = {
                "race_id": race_id, "horse_id": horse_id, "prediction_value": rng.random(),
                "confidence": round(rng.random(), 6), "algorithm_version": "demo-1",
                "features": {"client": seed, "n": rng.randint(0, 999)},
            }
            status, created = call(api, "POST", "/api/predictions", payload, 201, "POST prediction")
            if status == 201:
                with ledger.lock:
                    ledger.predictions[created["id"]] = payload
                    ledger.acknowledged_in[("prediction", created["id"])] = ledger.phase
        elif action < 0.9 or not my_horses:
            payload = {"horse_name": f"Demo Runner {seed}-{rng.randint(0, 10**9)}", "age": rng.randint(2, 9),
                       "weight": round(rng.uniform(400, 550), 1)}
            status, created = call(admin, "POST", "/api/horses", payload, 201, "POST horse")
            if status == 201:
                my_horses.append(created["id"])
                with ledger.lock:
                    ledger.horses[created["id"]] = payload
                    ledger.acknowledged_in[("horse", created["id"])] = ledger.phase
        else:
            horse_id = rng.choice(my_horses)
            change = {"weight": round(rng.uniform(400, 550), 1), "form": f"{rng.randint(1, 9)}-{rng.randint(1, 9)}"}
            status, _ = call(admin, "PATCH", f"/api/horses/{horse_id}", change, 200, "PATCH horse")
            with ledger.lock:
                if status == 200:
                    ledger.horses[horse_id] = ledger.horses[horse_id] | change
                    ledger.acknowledged_in[("horse", horse_id)] = ledger.phase
                    ledger.indeterminate.pop(horse_id, None)
                elif status == 0 or status >= 500:  # not refused: it may have been applied
                    ledger.indeterminate.setdefault(horse_id, []).append(change)
        time.sleep(0.01)


def lost_writes(postgres_url: str, ledger: Ledger, details: list | None = None) -> list[str]:
    """Acknowledged writes missing or different in the final primary (PostgreSQL); what differs,
    and the phase the write was acknowledged in, go to `details` when given."""
    lost = []
    details = [] if details is None else details
    engine = create_postgres_engine(postgres_url)
    with engine.connect() as connection:
        for pid, payload in ledger.predictions.items():
            row = connection.exec_driver_sql(
                "SELECT race_id, horse_id, confidence, features FROM predictions WHERE id = %(i)s", {"i": pid}
            ).first()
            if row is None or (row[0], row[1], row[2], row[3]) != (
                payload["race_id"], payload["horse_id"], payload["confidence"], payload["features"]
            ):
                lost.append(f"prediction {pid}")
                details.append({"prediction": pid, "phase": ledger.acknowledged_in.get(("prediction", pid)),
                                "expected": payload, "found": None if row is None else list(row)})
        for hid, payload in ledger.horses.items():
            row = connection.exec_driver_sql(
                "SELECT horse_name, weight, form FROM horses WHERE id = %(i)s", {"i": hid}
            ).mappings().first()
            allowed = [payload] + [payload | change for change in ledger.indeterminate.get(hid, [])]
            if row is None or not any(all(row[k] == v for k, v in a.items() if k in row) for a in allowed):
                lost.append(f"horse {hid}")
                details.append({"horse": hid, "phase": ledger.acknowledged_in.get(("horse", hid)),
                                "expected": payload, "found": None if row is None else dict(row),
                                "unanswered_changes": ledger.indeterminate.get(hid, [])})
    engine.dispose()
    return lost


def doubled_writes(postgres_url: str) -> list[str]:
    """Client writes that took effect twice in the final primary (a re-sent request written again).

    Every horse a client creates has a name of its own and every prediction a features document
    of its own, so two rows with the same one are one request applied twice."""
    engine = create_postgres_engine(postgres_url)
    with engine.connect() as connection:
        horses = connection.exec_driver_sql(
            "SELECT horse_name FROM horses WHERE horse_name LIKE 'Demo Runner %%'"
            " GROUP BY horse_name HAVING count(*) > 1"
        ).scalars().all()
        predictions = connection.exec_driver_sql(
            "SELECT features::text FROM predictions WHERE algorithm_version = 'demo-1'"
            " GROUP BY race_id, horse_id, confidence, features HAVING count(*) > 1"
        ).scalars().all()
    engine.dispose()
    return [f"horse {name!r}" for name in horses] + [f"prediction {doc}" for doc in predictions]


@dataclasses.dataclass
class Demo:
    workdir: Path
    postgres_url: str
    races: int
    say: Callable[[str], None]
    port: int = dataclasses.field(default_factory=free_port)
    workers: int = 1
    data_dir: Path | None = None
    extra_env: dict = dataclasses.field(default_factory=dict)

    @property
    def sqlite_path(self) -> Path:
        return (self.data_dir or self.workdir) / "hrp_database.db"

    def env(self) -> dict[str, str]:
        return os.environ | self.extra_env | {
            "HRP_SQLITE_URL": f"sqlite:///{self.sqlite_path}",
            "HRP_POSTGRES_URL": self.postgres_url,
            "HRP_LOG_FORMAT": "json",
            "HRP_SHADOW_MIN_READS": "20",
            "HRP_ENV": "development",  # a throwaway file: its own session key is enough (never in production)
        }

    def cli(self, *args: str, stdin: str | None = None, check: bool = True, show: bool = True) -> subprocess.CompletedProcess:
        command = [hrp_cutover(), *args]
        self.say(f"$ hrp-cutover {' '.join(args)}")
        result = subprocess.run(
            command, env=self.env() | {"HRP_LOG_FORMAT": "console", "HRP_LOG_LEVEL": "WARNING"}, input=stdin, text=True,
            stdout=subprocess.PIPE, stderr=None if show else subprocess.PIPE,
        )
        if show and result.stdout.strip():
            self.say(result.stdout.rstrip())
        if check and result.returncode != 0:
            raise RuntimeError(f"hrp-cutover {args[0]} failed (exit {result.returncode})")
        return result

    def start_app(self) -> subprocess.Popen:
        log = open(self.workdir / "app.log", "a")
        app = subprocess.Popen(
            [hrp_cutover(), "serve", "--port", str(self.port), "--threads", "8", "--workers", str(self.workers)],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if Api(self.base).call("GET", "/api/races?limit=1", timeout=2)[0] == 200:
                    return app
            except OSError:
                pass
            time.sleep(0.2)
        app.terminate()
        raise RuntimeError(f"the app did not start; see {self.workdir / 'app.log'}")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


SAFE_LOGGING = {
    "log_statement": "ddl",
    "log_min_duration_statement": "-1",
    "log_min_error_statement": "panic",
    "log_parameter_max_length": "0",
    "log_parameter_max_length_on_error": "0",
    "log_error_verbosity": "terse",
}
"""The embedded server's logging: errors and DDL only, never a statement with its values."""


def log_no_statement_text(postgres_url: str) -> None:
    """Give the demo's own server SAFE_LOGGING (a server passed with --postgres is left as it is)."""
    import psycopg2

    connection = psycopg2.connect(postgres_url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            for name, value in SAFE_LOGGING.items():
                cursor.execute(f"ALTER SYSTEM SET {name} = %s", (value,))
            cursor.execute("SELECT pg_reload_conf()")
    finally:
        connection.close()


def run_demo(postgres_url: str | None, workdir: Path | None, races: int, keep: bool, say: Callable[[str], None]) -> int:
    """Play the whole cutover; return 0 only when no request failed and no write was lost."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="hrp-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    server = None
    if postgres_url is None:
        try:
            import pgserver
        except ImportError:
            raise RuntimeError("the embedded PostgreSQL is the `demo` extra: pip install 'hrp-cutover[demo]'"
                               " (make demo does), or give --postgres URL") from None
        server = pgserver.get_server(workdir / "postgres", cleanup_mode=None if keep else "stop")
        postgres_url = server.get_uri()
        say(f"embedded PostgreSQL (pgserver) in {workdir / 'postgres'}")
        log_no_statement_text(postgres_url)
    postgres_url = psycopg2_url(postgres_url)
    demo = Demo(workdir, postgres_url, races, say)
    say(f"working directory {workdir}; PostgreSQL {redact_url(postgres_url)}")
    started = time.monotonic()
    demo.cli("seed", "--sqlite", str(demo.sqlite_path), "--races", str(races), "--force")
    demo.cli("schema")
    demo.cli("create-admin", ADMIN[0], "--password-stdin", stdin=ADMIN[1] + "\n")
    app = demo.start_app()
    try:
        return _play(demo, app, server, keep, started, say)
    finally:
        if not keep:
            app.terminate()
            app.wait(timeout=30)
            if server is not None:
                server.cleanup()


def _play(demo: Demo, app: subprocess.Popen, server: Any, keep: bool, started: float, say: Callable[[str], None]) -> int:
    say(f"app serving on {demo.base} (dashboard {demo.base}/admin/cutover)")
    ledger = Ledger()
    stop = threading.Event()
    threads = []
    try:
        admin = Api(demo.base)
        status, _ = admin.call("POST", "/api/session", {"username": ADMIN[0], "password": ADMIN[1]})
        if status != 200:
            raise RuntimeError(f"admin login failed ({status})")
        race_ids = [r["id"] for r in Api(demo.base).call("GET", "/api/races?limit=200")[1]["items"]]
        for n in range(CLIENTS):
            api = Api(demo.base)
            username, password = f"client{n}", f"client-{n}-password"
            api.call("POST", "/api/users", {"username": username, "email": f"{username}@demo.test", "password": password})
            api.call("POST", "/api/session", {"username": username, "password": password})
            threads.append(threading.Thread(target=client, args=(api, ledger, admin, stop, n, race_ids), daemon=True))
        for thread in threads:
            thread.start()
        say(f"{CLIENTS} API clients running (reads, predictions, horse writes)")
        time.sleep(2)

        def step(phase: Phase | None, *args: str, check: bool = True) -> subprocess.CompletedProcess:
            if phase is not None:
                ledger.phase = phase.value
            result = demo.cli(*args, check=check)
            time.sleep(1.5)
            return result

        step(Phase.DUAL_WRITE, "phase", "set", "dual_write")
        step(None, "backup")
        step(None, "backfill")
        step(Phase.SHADOW, "phase", "set", "shadow")
        time.sleep(3)
        step(None, "verify")
        step(None, "flip", "--check", check=False)
        step(Phase.POSTGRES_PRIMARY, "flip")
        step(Phase.SHADOW, "rollback")
        step(None, "verify")
        step(Phase.POSTGRES_PRIMARY, "flip")
        time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    demo.cli("replay", check=False, show=False)
    wait_outbox = time.monotonic() + 30
    while time.monotonic() < wait_outbox:
        status = json.loads(demo.cli("status", "--json", show=False).stdout)
        if status["outbox"]["pending"] == 0:
            break
        time.sleep(0.5)
    demo.cli("report", check=False)
    final = demo.cli("verify", "--json", check=False, show=False)
    equal = json.loads(final.stdout)["equal"] if final.stdout.strip().startswith("{") else False
    lost = lost_writes(demo.postgres_url, ledger)
    total, failed = sum(ledger.requests.values()), sum(ledger.failures.values())
    say("")
    say("requests per phase: " + ", ".join(f"{p} {n} ({ledger.failures[p]} failed)" for p, n in ledger.requests.items()))
    for example in ledger.failure_examples:
        say(f"  failed: {example}")
    say(f"acknowledged writes checked: {len(ledger.predictions)} predictions, {len(ledger.horses)} horses")
    say(f"both databases equal at the end: {'yes' if equal else 'NO'}; demo took {time.monotonic() - started:.0f} s")
    if keep:
        say(f"app left running on {demo.base}/admin/cutover (log in as {ADMIN[0]} / {ADMIN[1]}); pid {app.pid}")
    say(f"{total} requests, {failed} requests failed, {len(lost)} writes lost")
    return 0 if failed == 0 and not lost and equal else 1
