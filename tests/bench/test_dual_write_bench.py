"""Benchmark: write latency in dual_write vs sqlite_only (the applier as this process's thread, and as
the dedicated `hrp-cutover apply` process beside it), and flip hold times under load."""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import threading
import time

import pytest

from hrp_data.cutover import applier_lease
from hrp_data.cutover.assemble import open_cutover
from hrp_data.flip.move import move
from hrp_data.cutover.phases import Phase
from hrp_data.schema.install import upgrade
from tests.integration.cutover_helpers import assert_equal, settings_for, wait_drained

WRITES = 2000


def _latencies(cutover, count: int) -> list[float]:
    out = []
    for i in range(count):
        started = time.perf_counter()
        with cutover.writing() as uow:
            horse = uow.horses.add(horse_name=f"bench {i}", weight=450.5)
            uow.horses.update(horse["id"], age=i % 10)
            uow.commit()
        out.append(time.perf_counter() - started)
    return out


def _summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 3),
    }


@pytest.mark.bench
def test_dual_write_latency_ratio(legacy_file, postgres_url, record_bench):
    upgrade(postgres_url)
    with open_cutover(settings_for(legacy_file, postgres_url)).start() as cutover:
        _latencies(cutover, 200)
        single = _summary(_latencies(cutover, WRITES))
        move(cutover, Phase.DUAL_WRITE)
        _latencies(cutover, 200)
        dual = _summary(_latencies(cutover, WRITES))
        wait_drained(cutover, timeout=120)
        with _dedicated_applier(legacy_file, postgres_url):
            _latencies(cutover, 200)
            dedicated = _summary(_latencies(cutover, WRITES))
            assert cutover.applier.aside, "the app's thread stood aside for the dedicated applier"
            wait_drained(cutover, timeout=120)
        with cutover.engine("postgres").connect() as connection:
            carried = connection.exec_driver_sql("SELECT count(*) FROM horses").scalar()
    assert carried == 2 * (WRITES + 200), "every write made in dual_write reached PostgreSQL"
    record_bench("dual_write", {
        "writes": WRITES,
        "sqlite_only": single,
        "dual_write": dual,
        "dual_write_dedicated_applier": dedicated,
        "ratio_p50": round(dual["p50_ms"] / single["p50_ms"], 3),
        "ratio_p99": round(dual["p99_ms"] / single["p99_ms"], 3),
        "dedicated_ratio_p50": round(dedicated["p50_ms"] / single["p50_ms"], 3),
        "dedicated_ratio_p99": round(dedicated["p99_ms"] / single["p99_ms"], 3),
    })


@contextlib.contextmanager
def _dedicated_applier(path, postgres_url):
    """`hrp-cutover apply` beside this process, for the block (its lease taken before the block starts)."""
    process = subprocess.Popen(
        [sys.executable, "-c", "from tools.cli import main; main()", "--sqlite", str(path), "--postgres", postgres_url,
         "apply"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not applier_lease.held_elsewhere(applier_lease.lock_path(path)):
            assert process.poll() is None and time.monotonic() < deadline, "hrp-cutover apply did not start"
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.bench
def test_flip_hold_times_under_load(legacy_file, postgres_url, record_bench):
    upgrade(postgres_url)
    holds, failures, writes = [], [], [0]
    with open_cutover(settings_for(legacy_file, postgres_url)).start() as cutover:
        move(cutover, Phase.DUAL_WRITE)
        move(cutover, Phase.SHADOW)
        stop = threading.Event()

        def writer():
            while not stop.is_set():
                try:
                    with cutover.writing() as uow:
                        uow.races.add(race_name="under load", distance=1000.0)
                        uow.commit()
                    writes[0] += 1
                except Exception as error:  # counted
                    failures.append(repr(error))

        threads = [threading.Thread(target=writer) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            for i in range(20):
                target = Phase.POSTGRES_PRIMARY if i % 2 == 0 else Phase.SHADOW
                holds.append(move(cutover, target).hold_ms)
                time.sleep(0.1)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        wait_drained(cutover, timeout=120)
        assert_equal(legacy_file, postgres_url)
    assert failures == []
    record_bench("flip_hold", {
        "flips": len(holds),
        "writes_during": writes[0],
        "failed_writes": len(failures),
        "hold_p50_ms": round(statistics.median(holds), 2),
        "hold_max_ms": round(max(holds), 2),
    })
