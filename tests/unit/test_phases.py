"""hrp_data.cutover.phases: the other database of each phase row."""

from __future__ import annotations

from hrp_data.cutover.phases import PHASES, POSTGRES, SQLITE


def test_the_other_database_is_the_secondary_where_there_is_one_and_the_unused_one_otherwise():
    for row in PHASES.values():
        assert {row.primary, row.other} == {SQLITE, POSTGRES}
        if row.secondary is not None:
            assert row.other == row.secondary
