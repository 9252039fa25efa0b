"""The phase cache's bound: a process serves a phase at most CACHE_SECONDS after the read that
found it began, however long that read took to come back (a thread descheduled between its read
and storing it must not make an old phase look fresh)."""

from __future__ import annotations

import threading
import time

from adapters.sqlite import create_sqlite_engine
from hrp_data.cutover import phase_store
from hrp_data.cutover.phase_store import CACHE_SECONDS, PhaseStore
from hrp_data.cutover.phases import Phase


def test_a_slow_read_of_the_old_phase_is_never_served_past_the_bound(legacy_file):
    engine = create_sqlite_engine(f"sqlite:///{legacy_file}")
    other = create_sqlite_engine(f"sqlite:///{legacy_file}")
    try:
        phase_store.install(engine, Phase.DUAL_WRITE)
        store, mover = PhaseStore(engine), PhaseStore(other)
        read_done, release = threading.Event(), threading.Event()
        plain_read = PhaseStore.read

        def slow_read(connection):  # the read returns, then its thread is held before storing it
            record = plain_read(connection)
            read_done.set()
            release.wait(10)
            return record

        store.read = slow_read
        seen: list = []
        reader = threading.Thread(target=lambda: seen.append(store.current().phase))
        reader.start()
        assert read_done.wait(10)
        store.read = plain_read
        with other.begin() as connection:  # another process moves on meanwhile
            mover.compare_and_set(connection, mover.current(fresh=True), Phase.SHADOW)
        time.sleep(CACHE_SECONDS + 0.1)
        release.set()
        reader.join(10)
        assert seen == [Phase.DUAL_WRITE]  # what that read found, returned to its caller
        assert store.current().phase is Phase.SHADOW  # but not served from the cache afterwards
    finally:
        engine.dispose()
        other.dispose()
