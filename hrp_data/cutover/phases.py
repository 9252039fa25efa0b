"""The cutover phases: one enum and one table of what each phase does.

Code reads this table; nowhere else asks `if phase == ...`.

| phase            | primary  | secondary | reads    | shadow reads | capture on | guard on |
|------------------|----------|-----------|----------|--------------|------------|----------|
| sqlite_only      | sqlite   | -         | sqlite   | no           | -          | -        |
| dual_write       | sqlite   | postgres  | sqlite   | no           | sqlite     | postgres |
| shadow           | sqlite   | postgres  | sqlite   | postgres     | sqlite     | postgres |
| postgres_primary | postgres | sqlite    | postgres | sqlite       | postgres   | sqlite   |
| postgres_only    | postgres | -         | postgres | no           | -          | sqlite   |

Capture: triggers on the primary record each change in its outbox for the
secondary. Guard: triggers on the database that is not the primary refuse
writes that do not come from the layer (its applier, repair, backfill), so a
cron job or a worker that was not restarted cannot write where nobody reads.
In postgres_only the retired SQLite file stays guarded.

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


def other_database(database: str) -> str:
    """The database that is not `database`."""
    return SQLITE if database == POSTGRES else POSTGRES


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
    def other(self) -> str:
        """The database that is not the primary: the secondary, or in a phase without one the
        database not in use (verify compares the two in every phase)."""
        return other_database(self.primary)

    @property
    def captures(self) -> bool:
        """True when writes to the primary are recorded in its outbox for the secondary."""
        return self.secondary is not None

    @property
    def guarded(self) -> str | None:
        """The database whose writes from outside the layer are refused (None: neither)."""
        if self.secondary is not None:
            return self.secondary
        return SQLITE if self.primary == POSTGRES else None

    def triggers_on(self, side: str) -> "Triggers":
        """Which of the layer's triggers are on in database `side` in this phase."""
        return Triggers(capture=self.captures and self.primary == side, guard=self.guarded == side)


@dataclasses.dataclass(frozen=True)
class Triggers:
    """The layer's triggers in one database: capture (record changes) and guard (refuse outside writes)."""

    capture: bool
    guard: bool

    def union(self, other: "Triggers") -> "Triggers":
        return Triggers(self.capture or other.capture, self.guard or other.guard)


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
