"""The backfill's ETA and the verify's progress ratio, from the numbers their stores keep."""

from __future__ import annotations

import pytest

from hrp_data.backfill.state import eta_seconds
from hrp_data.verify.progress import ratio


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


class TestVerifyRatio:
    def test_rows_compared_over_rows(self):
        assert ratio({"state": "running", "rows_total": 400, "rows_done": 100,
                      "tables_total": 4, "tables_done": 3}) == 0.25

    def test_tables_when_no_table_has_rows_and_one_once_finished(self):
        assert ratio({"state": "running", "rows_total": 0, "rows_done": 0, "tables_total": 4, "tables_done": 1}) == 0.25
        assert ratio({"state": "finished", "rows_total": 0, "rows_done": 0, "tables_total": 0, "tables_done": 0}) == 1.0
