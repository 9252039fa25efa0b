"""hrp_data.cutover.phases: the table of phases, their triggers, and which moves are allowed."""

from __future__ import annotations

import pytest

from hrp_data.cutover.phases import (
    PHASES,
    POSTGRES,
    SQLITE,
    MoveRefused,
    Phase,
    Triggers,
    allowed_moves,
    check_move,
    parse_phase,
)


def test_the_other_database_is_the_secondary_where_there_is_one_and_the_unused_one_otherwise():
    for row in PHASES.values():
        assert {row.primary, row.other} == {SQLITE, POSTGRES}
        if row.secondary is not None:
            assert row.other == row.secondary


def test_the_table_matches_the_documented_one():
    """primary, secondary, shadow reads, capture and guard per phase, as the module docstring draws them."""
    table = {
        phase.value: (row.primary, row.secondary, row.shadow_reads, row.captures, row.guarded)
        for phase, row in PHASES.items()
    }
    assert table == {
        "sqlite_only": (SQLITE, None, False, False, None),
        "dual_write": (SQLITE, POSTGRES, False, True, POSTGRES),
        "shadow": (SQLITE, POSTGRES, True, True, POSTGRES),
        "postgres_primary": (POSTGRES, SQLITE, True, True, SQLITE),
        "postgres_only": (POSTGRES, None, False, False, SQLITE),
    }


def test_triggers_capture_on_the_primary_and_guard_the_other_side():
    row = PHASES[Phase.POSTGRES_PRIMARY]
    assert row.triggers_on(POSTGRES) == Triggers(capture=True, guard=False)
    assert row.triggers_on(SQLITE) == Triggers(capture=False, guard=True)
    assert PHASES[Phase.SQLITE_ONLY].triggers_on(SQLITE) == Triggers(False, False)
    assert Triggers(True, False).union(Triggers(False, True)) == Triggers(True, True)


@pytest.mark.parametrize(("current", "allowed"), [
    (Phase.SQLITE_ONLY, (Phase.DUAL_WRITE,)),
    (Phase.SHADOW, (Phase.POSTGRES_PRIMARY, Phase.DUAL_WRITE)),
    (Phase.POSTGRES_ONLY, (Phase.POSTGRES_PRIMARY,)),
])
def test_allowed_moves_are_one_step_forward_or_back(current, allowed):
    assert allowed_moves(current) == allowed
    for target in allowed:
        check_move(current, target)


def test_any_other_move_is_refused_naming_the_allowed_ones():
    with pytest.raises(MoveRefused) as refused:
        check_move(Phase.DUAL_WRITE, Phase.POSTGRES_PRIMARY)
    assert str(refused.value) == (
        "cannot move from dual_write to postgres_primary; allowed from dual_write: shadow, sqlite_only"
    )
    with pytest.raises(MoveRefused):
        check_move(Phase.SHADOW, Phase.SHADOW)


def test_an_unknown_phase_name_lists_the_phases():
    assert parse_phase("shadow") is Phase.SHADOW
    with pytest.raises(MoveRefused, match="unknown phase 'flipped'; use one of: sqlite_only, dual_write, shadow"):
        parse_phase("flipped")
