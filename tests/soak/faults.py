"""Faults the soak injects besides the PostgreSQL ones (tcp_proxy, pg_control): a full disk under the
SQLite file, a worker process killed in the middle of a request, and a burst beyond the pools.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil


from tools.demo import Api, Ledger


def workers(master_pid: int) -> set[int]:
    return {c.pid for c in psutil.Process(master_pid).children() if c.status() != psutil.STATUS_ZOMBIE}


def _serving(pid: int, port: int) -> int:
    """How many client connections on the app's port this worker has open (requests in flight)."""
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return 0
    return sum(1 for c in connections if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def kill_worker_mid_request(master_pid: int, port: int, timeout: float = 10.0) -> dict:
    """SIGKILL a worker (never the master) at a moment it has a request in flight."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in sorted(workers(master_pid)):
            in_flight = _serving(pid, port)
            if in_flight:
                os.kill(pid, signal.SIGKILL)
                return {"pid": pid, "in_flight": in_flight, "at": time.monotonic()}
        time.sleep(0.002)
    raise AssertionError("no worker had a request in flight to be killed in the middle of")


def wait_replaced(master_pid: int, count: int, victim: int, timeout: float = 15.0) -> float:
    """Seconds until the master has `count` workers again, the victim not among them."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        now = workers(master_pid)
        if len(now) == count and victim not in now:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"the master did not replace worker {victim}")


def burst(base: str, ledger: Ledger, paths: list[str], threads: int, seconds: float) -> None:
    """`threads` extra readers at once for `seconds`: more requests than the workers have connections
    (and request threads: the extra ones wait in the queue)."""
    stop = time.monotonic() + seconds

    def reader(n: int) -> None:
        api = Api(base)
        while time.monotonic() < stop:
            path = paths[n % len(paths)]
            started, phase = time.monotonic(), ledger.phase
            try:
                status, answer = api.call("GET", path, timeout=30)
            except OSError as error:
                ledger.count(False, f"burst GET -> {type(error).__name__}", kind=f"GET {type(error).__name__}",
                             seconds=time.monotonic() - started, phase=phase, started=started)
                continue
            shown = answer if status != 200 else ""
            ledger.count(status == 200, f"burst GET -> {status} {shown}", kind=f"GET {status}",
                         seconds=time.monotonic() - started, phase=phase, started=started)
            n += 1

    pool = [threading.Thread(target=reader, args=(n,), daemon=True) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=seconds + 60)


ROOT = Path(__file__).resolve().parents[2]


def move_with_fault(env: dict[str, str], workdir: Path, point: str, inject, *args: str,
                    timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run `hrp-cutover ARGS` (a move) and, when it reaches `point`, call `inject(pid)` (which may
    kill it, fill a disk, stop a server) before letting it go on. Returns how the command ended;
    raises if the move never reached the point."""
    handshake = Path(tempfile.mkdtemp(prefix=f"move-{point}-", dir=workdir))
    mover = subprocess.Popen(
        [sys.executable, "-m", "tests.soak.mover", point, str(handshake), "--", *args],
        cwd=ROOT, env=env | {"HRP_LOG_FORMAT": "console", "HRP_LOG_LEVEL": "WARNING"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + timeout
    while not (handshake / "at").exists():
        if mover.poll() is not None or time.monotonic() > deadline:
            mover.kill()
            out = mover.communicate()[0]
            raise AssertionError(f"hrp-cutover {' '.join(args)} never reached {point}: {out[-2000:]}")
        time.sleep(0.005)
    try:
        inject(mover.pid)
    finally:
        (handshake / "go").touch()
    out = mover.communicate(timeout=timeout)[0]
    return subprocess.CompletedProcess(mover.args, mover.returncode, out, "")
