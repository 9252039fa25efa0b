"""hrp_data.cutover.applier_lease on its own (no database): one holder, a probe that never takes it,
release on close or on the holder's end, and one path for every spelling of the file."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from hrp_data.cutover import applier_lease
from hrp_data.cutover.applier_lease import Lease, held_elsewhere, lock_path


def test_one_holder_at_a_time_and_the_probe_sees_it(tmp_path, monkeypatch):
    monkeypatch.setattr(applier_lease, "TAKE_TRIES", 2)
    path = lock_path(tmp_path / "hrp.db")
    assert not held_elsewhere(path)  # no lock file yet: no dedicated applier
    first = Lease(path)
    assert first.take() and first.pid == os.getpid()
    assert held_elsewhere(path) and held_elsewhere(path)  # probing twice leaves it held
    assert applier_lease.holder(path) == f"pid {os.getpid()}"
    assert not Lease(path).take()
    first.release()
    assert not held_elsewhere(path) and applier_lease.holder(path) == ""
    with Lease(path) as second:
        assert second.take() and held_elsewhere(path)
    assert not held_elsewhere(path)


def test_the_lease_ends_with_its_holder_however_it_ends(tmp_path):
    path = lock_path(tmp_path / "hrp.db")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path;"
         " from hrp_data.cutover.applier_lease import Lease;"
         " assert Lease(Path(sys.argv[1])).take(); print('held', flush=True); time.sleep(60)", str(path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert held_elsewhere(path)
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 5
    while held_elsewhere(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not held_elsewhere(path)


def test_every_spelling_of_the_file_finds_the_same_lease(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    assert lock_path("data/hrp.db") == lock_path(tmp_path / "link" / "hrp.db") == lock_path(tmp_path / "data" / "hrp.db")


def test_a_directory_nobody_may_write_means_no_lease_and_a_clear_error(tmp_path):
    path = lock_path(tmp_path / "missing" / "hrp.db")
    assert not held_elsewhere(path)
    try:
        Lease(path).take()
    except OSError:
        pass
    else:
        raise AssertionError("a lease in a directory that does not exist")
