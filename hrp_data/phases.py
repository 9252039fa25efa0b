"""The cutover phases: one enum and one table of what each phase does.

Code reads this table; nowhere else asks `if phase == ...`.

| phase            | primary  | secondary | reads    | shadow reads | capture on |
|------------------|----------|-----------|----------|--------------|------------|
| sqlite_only      | sqlite   | -         | sqlite   | no           | -          |
| dual_write       | sqlite   | postgres  | sqlite   | no           | sqlite     |
| shadow           | sqlite   | postgres  | sqlite   | postgres     | sqlite     |
| postgres_primary | postgres | sqlite    | postgres | sqlite       | postgres   |
| postgres_only    | postgres | -         | postgres | no           | -          |

Allowed moves: one step forward or back along that order.
"""

from __future__ import annotations

import dataclasses
import enum


class Phase(str, enum.Enum):
    SQLITE_ONLY = "sqlite_only"
    DUAL_WRITE = "dual_write"
    SHADOW = "shadow"
    POSTGRES_PRIMARY = "postgres_primary"
    POSTGRES_ONLY = "postgres_only"


SQLITE = "sqlite"
POSTGRES = "postgres"


@dataclasses.dataclass(frozen=True)
class PhaseRow:
    """What one phase does."""

    phase: Phase
    primary: str
    secondary: str | None
    shadow_reads: bool

    @property
    def reads_from(self) -> str:
        return self.primary

    @property
    def captures(self) -> bool:
        """True when writes to the primary are recorded in its outbox for the secondary."""
        return self.secondary is not None


ORDER = tuple(Phase)

PHASES: dict[Phase, PhaseRow] = {
    Phase.SQLITE_ONLY: PhaseRow(Phase.SQLITE_ONLY, SQLITE, None, False),
    Phase.DUAL_WRITE: PhaseRow(Phase.DUAL_WRITE, SQLITE, POSTGRES, False),
    Phase.SHADOW: PhaseRow(Phase.SHADOW, SQLITE, POSTGRES, True),
    Phase.POSTGRES_PRIMARY: PhaseRow(Phase.POSTGRES_PRIMARY, POSTGRES, SQLITE, True),
    Phase.POSTGRES_ONLY: PhaseRow(Phase.POSTGRES_ONLY, POSTGRES, None, False),
}


class MoveRefused(ValueError):
    """A phase change that is not one of the allowed moves."""


def allowed_moves(current: Phase) -> tuple[Phase, ...]:
    """The phases one step forward or back from `current`."""
    index = ORDER.index(current)
    return tuple(ORDER[i] for i in (index + 1, index - 1) if 0 <= i < len(ORDER))


def check_move(current: Phase, target: Phase) -> None:
    """Raise MoveRefused naming the allowed moves unless current -> target is one of them."""
    allowed = allowed_moves(current)
    if target not in allowed:
        raise MoveRefused(
            f"cannot move from {current.value} to {target.value};"
            f" allowed from {current.value}: {', '.join(p.value for p in allowed)}"
        )


def parse_phase(name: str) -> Phase:
    try:
        return Phase(name)
    except ValueError:
        raise MoveRefused(
            f"unknown phase {name!r}; use one of: {', '.join(p.value for p in ORDER)}"
        ) from None
