"""The cutover status: phase, outbox, appliers, last phase change (CLI `status` and the dashboard)."""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from adapters import postgres as postgres_adapter
from hrp_data import heartbeat, move_journal, outbox
from hrp_data.dual_write import Cutover
from hrp_data.errors import describe_error
from hrp_data.phases import POSTGRES


def cutover_status(cutover: Cutover) -> dict:
    record = cutover.phase(fresh=True)
    row = cutover.phase_row(fresh=True)
    route = cutover.route()
    depth = outbox.depth(route.primary) if route is not None else outbox.Depth(0, 0, None, None)
    history = cutover.phases.history(1)
    return {
        "phase": record.phase.value,
        "version": record.version,
        "changed_at": record.changed_at,
        "primary": row.primary,
        "secondary": row.secondary,
        "reads_from": row.reads_from,
        "shadow_reads": row.shadow_reads,
        "outbox": dataclasses.asdict(depth),
        "workers": heartbeat.workers(cutover.sqlite),
        "last_change": history[0] if history else None,
        "move_in_progress": _move(cutover),
        "guard": _guard(cutover, row.guarded),
    }


def _move(cutover: Cutover) -> str | None:
    marker = move_journal.current(cutover.sqlite)
    return None if marker is None else marker.describe()


def _guard(cutover: Cutover, side: str | None) -> dict:
    """Where the guard is on, and how many writes it refused there (PostgreSQL counts them)."""
    refused = None
    if side == POSTGRES and cutover.postgres is not None:
        try:
            with cutover.postgres.connect() as connection:
                refused = postgres_adapter.guard_refusals(connection)
        except sa.exc.SQLAlchemyError as error:
            refused = f"unknown ({describe_error(error)})"
    return {"on": side, "refused": refused}
