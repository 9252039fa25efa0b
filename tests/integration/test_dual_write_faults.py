"""Dual-write under faults: PostgreSQL stopped, frozen (SIGSTOP), the process SIGKILLed."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from click.testing import CliRunner

from hrp_data.cutover import outbox
from hrp_data.cutover.assemble import open_cutover
from hrp_data.flip.move import move
from hrp_data.cutover.phases import Phase
from hrp_data.schema.install import upgrade
from tests.integration.cutover_helpers import assert_equal, settings_for, wait_drained
from tools.cli import cli


@pytest.fixture
def cutover_on_own_server(legacy_file, own_postgres):
    upgrade(own_postgres.url)
    with open_cutover(settings_for(legacy_file, own_postgres.url)).start() as cutover:
        move(cutover, Phase.DUAL_WRITE)
        yield cutover


def _burst(cutover, seconds: float, latencies: list, failures: list, stop: threading.Event | None = None):
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline and not (stop and stop.is_set()):
        started = time.perf_counter()
        try:
            with cutover.writing() as uow:
                horse = uow.horses.add(horse_name=f"burst {threading.get_ident()} {i}", weight=400.5 + i)
                if i % 3 == 0:
                    uow.horses.update(horse["id"], age=i % 12)
                uow.commit()
        except Exception as error:  # counted and asserted on
            failures.append(error)
        latencies.append(time.perf_counter() - started)
        i += 1


def test_postgres_stopped_mid_burst_loses_nothing(cutover_on_own_server, legacy_file, own_postgres):
    cutover = cutover_on_own_server
    latencies, failures = [], []
    writer = threading.Thread(target=_burst, args=(cutover, 3.0, latencies, failures))
    writer.start()
    time.sleep(0.5)
    own_postgres.stop()
    time.sleep(1.5)
    grown = outbox.depth(cutover.sqlite).pending
    own_postgres.start()
    writer.join()
    assert failures == []
    assert grown > 0
    wait_drained(cutover, timeout=60)
    assert_equal(legacy_file, own_postgres.url)


def _p99(values):
    return statistics.quantiles(values, n=100)[98]


def test_postgres_frozen_keeps_write_latency(cutover_on_own_server, legacy_file, own_postgres):
    cutover = cutover_on_own_server
    normal, failures = [], []
    _burst(cutover, 1.5, normal, failures)
    wait_drained(cutover)
    frozen = []
    own_postgres.freeze()
    try:
        _burst(cutover, 3.0, frozen, failures)
        pending_while_frozen = outbox.depth(cutover.sqlite).pending
    finally:
        own_postgres.thaw()
    assert failures == []
    assert pending_while_frozen > 0
    assert _p99(frozen) <= max(2 * _p99(normal), _p99(normal) + 0.005), (
        f"p99 while frozen {_p99(frozen) * 1000:.2f} ms vs normal {_p99(normal) * 1000:.2f} ms"
    )
    wait_drained(cutover, timeout=60)
    assert_equal(legacy_file, own_postgres.url)


def test_sigkill_between_commit_and_apply_loses_nothing(legacy_file, own_postgres):
    upgrade(own_postgres.url)
    with open_cutover(settings_for(legacy_file, own_postgres.url)) as cutover:
        move(cutover, Phase.DUAL_WRITE)
    script = textwrap.dedent(
        f"""
        import os, signal
        from hrp_data.cutover.assemble import open_cutover
        from tests.integration.cutover_helpers import settings_for
        cutover = open_cutover(settings_for({str(legacy_file)!r}, {own_postgres.url!r}))
        for i in range(25):
            with cutover.writing() as uow:
                uow.races.add(race_name=f"killed {{i}}", distance=1000.0 + i)
                uow.commit()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    completed = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd())
    assert completed.returncode == -9
    with open_cutover(settings_for(legacy_file, own_postgres.url)) as cutover:
        assert outbox.depth(cutover.sqlite).pending == 25
    result = CliRunner().invoke(
        cli, ["--sqlite", str(legacy_file), "--postgres", own_postgres.url, "replay"]
    )
    assert result.exit_code == 0, result.output
    assert "applied 25; remaining 0" in result.output
    assert_equal(legacy_file, own_postgres.url)
