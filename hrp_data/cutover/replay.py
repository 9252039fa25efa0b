"""`hrp-cutover replay`: drain the outbox by hand, now, ignoring backoff."""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from adapters.binds import reading
from adapters.outbox import OUTBOX, decode_key
from adapters.outbox import outbox as outbox_table
from hrp_data.cutover import outbox
from hrp_data.cutover.applier import drain_once
from hrp_data.cutover.dual_write import Cutover


@dataclasses.dataclass(frozen=True)
class ReplayResult:
    applied: int
    remaining: int
    last_error: str | None
    failing: list[tuple[str, tuple, str]] = dataclasses.field(default_factory=list)
    """Up to FAILING_SHOWN keys that still fail: (table, key, reason)."""


FAILING_SHOWN = 20


def failing_keys(bind: sa.Engine, limit: int = FAILING_SHOWN) -> list[tuple[str, tuple, str]]:
    """The keys whose latest change failed, with the reason (oldest first)."""
    with reading(bind) as connection:
        if not sa.inspect(connection).has_table(OUTBOX):
            return []
        rows = connection.execute(
            sa.select(outbox_table.c.table_name, outbox_table.c.pk, outbox_table.c.last_error)
            .where(outbox_table.c.last_error.is_not(None))
            .order_by(outbox_table.c.seq)
        ).all()
    found: dict[tuple[str, str], str] = {}
    for table, pk, error in rows:
        found[(table, pk)] = error
    return [(table, decode_key(pk), error) for (table, pk), error in list(found.items())[:limit]]


def replay_outbox(cutover: Cutover) -> ReplayResult:
    """Try every pending change now; a change that fails waits for its backoff, the rest go on."""
    route = cutover.route()
    if route is None:
        return ReplayResult(0, outbox.depth(cutover.sqlite).pending, None)
    outbox.make_all_due(route.primary)
    applied_total = 0
    while True:
        applied, failed = drain_once(route, cutover.applier.breaker, cutover.applier.counters)
        applied_total += applied
        if applied == 0 and failed == 0:
            break
    depth = outbox.depth(route.primary)
    return ReplayResult(applied_total, depth.pending, depth.last_error, failing_keys(route.primary))
