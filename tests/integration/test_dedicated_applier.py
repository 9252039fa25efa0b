"""`hrp-cutover apply`, the dedicated applier: while it runs, the app's applier threads stand aside
and it carries every change; a second one is refused; when it stops (SIGTERM) or dies (SIGKILL),
the app's threads carry the changes again at once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from hrp_data.cutover import applier_lease
from hrp_data.cutover.assemble import open_cutover
from hrp_data.cutover.phases import Phase
from hrp_data.flip.move import move
from hrp_data.schema.install import upgrade
from tests.integration.cutover_helpers import settings_for, wait_drained


def _apply(path, postgres_url) -> list[str]:
    return [sys.executable, "-c", "from tools.cli import main; main()", "--sqlite", str(path), "--postgres", postgres_url,
            "apply"]


def _until(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _write_horses(cutover, prefix: str, count: int) -> None:
    for i in range(count):
        with cutover.writing() as uow:
            uow.horses.add(horse_name=f"{prefix} {i}")
            uow.commit()


def _on_postgres(cutover, prefix: str) -> int:
    with cutover.engine("postgres").connect() as connection:
        return connection.exec_driver_sql(
            "SELECT count(*) FROM horses WHERE horse_name LIKE %(p)s", {"p": f"{prefix} %"}
        ).scalar()


@pytest.fixture
def app(legacy_file, postgres_url):
    """The app's process: its cutover in dual_write with its applier thread started."""
    upgrade(postgres_url)
    with open_cutover(settings_for(legacy_file, postgres_url)).start() as cutover:
        move(cutover, Phase.DUAL_WRITE)
        yield cutover, legacy_file, postgres_url


def test_the_dedicated_applier_carries_every_change_while_the_apps_thread_stands_aside(app):
    cutover, path, postgres_url = app
    lock = applier_lease.lock_path(path)
    dedicated = subprocess.Popen(_apply(path, postgres_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _until(lambda: applier_lease.held_elsewhere(lock), "the dedicated applier's lease")
        _write_horses(cutover, "dedicated", 40)
        _until(lambda: _on_postgres(cutover, "dedicated") == 40, "the dedicated applier to carry the writes")
        assert cutover.applier.counters.applied == 0 and cutover.applier.aside

        second = subprocess.run(_apply(path, postgres_url), capture_output=True, text=True, timeout=60)
        assert second.returncode != 0
        assert "another `hrp-cutover apply` already carries this file's changes" in second.stderr, second.stderr
        assert f"pid {dedicated.pid}" in second.stderr

        dedicated.send_signal(signal.SIGTERM)
        out, err = dedicated.communicate(timeout=30)
        assert dedicated.returncode == 0, err
        assert "stopped: applied 40, failed 0" in out, out
    finally:
        if dedicated.poll() is None:
            dedicated.kill()
            dedicated.wait()
    _write_horses(cutover, "after", 10)
    wait_drained(cutover, timeout=30)
    assert _on_postgres(cutover, "after") == 10
    # its counters move after the outbox rows are settled: wait for them, not only for the rows
    _until(lambda: cutover.applier.counters.applied >= 10, "the app's thread to count what it applied")
    assert not cutover.applier.aside


def test_when_the_dedicated_applier_dies_the_apps_thread_carries_what_it_left(app):
    """SIGKILL while it carries a burst of writes: the kernel ends the lease with the process, and the
    app's thread carries what it left and every later write, with no timeout to wait out."""
    cutover, path, postgres_url = app
    lock = applier_lease.lock_path(path)
    dedicated = subprocess.Popen(_apply(path, postgres_url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _until(lambda: applier_lease.held_elsewhere(lock), "the dedicated applier's lease")
        _write_horses(cutover, "burst", 100)
        assert cutover.applier.counters.applied == 0  # it stands aside while the lease is held
    finally:
        dedicated.kill()
        dedicated.wait()
    _write_horses(cutover, "later", 20)
    # PostgreSQL shows the rows at the apply's commit, before the thread settles the outbox and counts
    # them: the take-over is proven by its counters, waited for like the rows
    _until(lambda: _on_postgres(cutover, "burst") == 100 and _on_postgres(cutover, "later") == 20
           and cutover.applier.counters.applied >= 20, "the app's thread to take over", timeout=15)
    assert not cutover.applier.aside
