"""The backfill's ETA, from the numbers its checkpoints keep."""

from __future__ import annotations

import pytest

from hrp_data.backfill.state import eta_seconds


def _table(read: int, seconds: float, left: int | None) -> dict:
    return {"read": read, "seconds": seconds, "left": left}


class TestBackfillEta:
    def test_each_table_at_its_own_rate_and_a_table_not_begun_at_the_runs(self):
        """users: 100 left at 100/s; races not begun: 300 left at the run's (300 rows in 2 s)."""
        tables = {"users": _table(100, 1.0, 100), "horses": _table(200, 1.0, 0), "races": _table(0, 0.0, 300)}
        assert eta_seconds(tables, complete=False, running=True) == pytest.approx(1.0 + 2.0)

    def test_zero_once_complete(self):
        assert eta_seconds({"users": _table(10, 1.0, 0)}, complete=True, running=False) == 0.0

    def test_unknown_without_a_run_a_rate_or_a_count(self):
        tables = {"users": _table(100, 1.0, 100)}
        assert eta_seconds(tables, complete=False, running=False) is None  # interrupted: nothing moves
        assert eta_seconds({"users": _table(0, 0.0, 100)}, complete=False, running=True) is None
        assert eta_seconds(tables | {"races": _table(0, 0.0, None)}, complete=False, running=True) is None

