"""`hrp-cutover replay`: drain the outbox by hand, now, ignoring backoff."""

from __future__ import annotations

import dataclasses

from hrp_data import outbox
from hrp_data.applier import drain_once
from hrp_data.dual_write import Cutover


@dataclasses.dataclass(frozen=True)
class ReplayResult:
    applied: int
    remaining: int
    last_error: str | None


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
    return ReplayResult(applied_total, depth.pending, depth.last_error)
