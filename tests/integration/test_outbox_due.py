"""The outbox's due changes: one entry per key, backoff kept, and a bounded read per batch."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from adapters.outbox import outbox as outbox_table
from adapters.postgres import create_postgres_engine
from adapters.sqlite import create_sqlite_engine
from hrp_data.cutover import outbox


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        engine = create_sqlite_engine(f"sqlite:///{tmp_path / 'outbox.db'}")
    else:
        engine = create_postgres_engine(request.getfixturevalue("postgres_url"))
    outbox.install_tables(engine)
    yield engine
    engine.dispose()


def _fill(engine, keys, *, next_attempt_at: float = 0.0, attempts: int = 0) -> None:
    """One entry per key (table, id), as a capture trigger would write it."""
    with engine.begin() as connection:
        connection.execute(
            outbox_table.insert(),
            [
                {"table_name": table, "pk": f"[{key}]", "op": "update", "created_at": time.time(),
                 "attempts": attempts, "next_attempt_at": next_attempt_at}
                for table, key in keys
            ],
        )


def _refs(pending):
    return [(item.ref.table, item.ref.key) for item in pending]


def test_one_entry_per_key_in_order_of_first_change_with_its_highest_seq(engine):
    """Repeated changes of a key give one Pending carrying the key's highest seq."""
    _fill(engine, [("horses", 2), ("races", 2), ("horses", 1), ("horses", 2)])
    pending = outbox.due(engine)
    assert _refs(pending) == [("horses", (2,)), ("races", (2,)), ("horses", (1,))]
    assert [item.max_seq for item in pending] == [4, 2, 3]
    assert pending[0].pk == "[2]"


def test_a_failed_key_waits_for_its_backoff_also_after_a_new_change(engine):
    """A key in backoff is not due, even once a fresh change of it arrives; ignore_backoff takes it."""
    _fill(engine, [("horses", 1)], next_attempt_at=time.time() + 60, attempts=1)
    _fill(engine, [("horses", 1), ("horses", 2)])
    assert _refs(outbox.due(engine)) == [("horses", (2,))]
    everything = outbox.due(engine, ignore_backoff=True)
    assert _refs(everything) == [("horses", (1,)), ("horses", (2,))]
    assert everything[0].attempts == 1 and everything[0].max_seq == 2


def test_a_failed_key_is_due_again_once_its_backoff_ends(engine):
    """An entry whose next attempt time has passed is due again, with its attempt count."""
    _fill(engine, [("horses", 1)], next_attempt_at=time.time() - 1, attempts=3)
    _fill(engine, [("horses", 2)])
    pending = outbox.due(engine)
    assert _refs(pending) == [("horses", (1,)), ("horses", (2,))]
    assert pending[0].attempts == 3


def test_keys_in_backoff_at_the_head_do_not_starve_the_rest(engine):
    """Thousands of waiting keys (each with a fresh change too) ahead of due ones: a small batch finds the due ones."""
    waiting = [("horses", i) for i in range(3000)]
    _fill(engine, waiting, next_attempt_at=time.time() + 60, attempts=1)
    _fill(engine, waiting)
    _fill(engine, [("races", i) for i in range(5)])
    assert _refs(outbox.due(engine, limit=10)) == [("races", (i,)) for i in range(5)]


def test_settle_then_due_drains_every_key_once(engine):
    """Draining batch by batch takes every key exactly once and empties the outbox."""
    _fill(engine, [("horses", i % 700) for i in range(2000)])
    seen = []
    while batch := outbox.due(engine, limit=128):
        seen.extend(_refs(batch))
        outbox.settle(engine, batch, {})
    assert sorted(seen) == sorted(("horses", (i,)) for i in range(700))
    assert outbox.depth(engine).pending == 0


def test_install_adds_the_due_index_to_an_outbox_made_without_it(tmp_path):
    """An outbox created by an older version gets the new index when installed again."""
    engine = create_sqlite_engine(f"sqlite:///{tmp_path / 'old.db'}")
    outbox.install_tables(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP INDEX ix_hrp_cutover_outbox_due")
    outbox.install_tables(engine)
    with engine.connect() as connection:
        names = {index["name"] for index in sa.inspect(connection).get_indexes(outbox.OUTBOX)}
    assert "ix_hrp_cutover_outbox_due" in names


def _sqlite_steps(engine, **due_args) -> int:
    """How many SQLite VM steps one due() call takes (deterministic, unlike a clock)."""
    steps = [0]

    def count():
        steps[0] += 1
        return 0

    with engine.connect() as connection:
        connection.connection.driver_connection.set_progress_handler(count, 100)
        outbox.due(connection, **due_args)
        connection.connection.driver_connection.set_progress_handler(None, 0)
    return steps[0]


@pytest.mark.parametrize("ignore_backoff", [False, True])
def test_a_batch_reads_the_same_whatever_the_depth_sqlite(tmp_path, ignore_backoff):
    """due() costs about the same with 2,000 or 100,000 entries behind the batch."""
    engine = create_sqlite_engine(f"sqlite:///{tmp_path / 'deep.db'}")
    outbox.install_tables(engine)
    _fill(engine, [("horses", i) for i in range(200)], next_attempt_at=time.time() + 60, attempts=1)
    _fill(engine, [("horses", i) for i in range(200, 2_000)])
    shallow = _sqlite_steps(engine, limit=100, ignore_backoff=ignore_backoff)
    _fill(engine, [("horses", i) for i in range(2_000, 100_000)])
    deep = _sqlite_steps(engine, limit=100, ignore_backoff=ignore_backoff)
    assert deep < shallow * 1.5, (shallow, deep)
