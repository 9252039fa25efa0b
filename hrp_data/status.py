"""The cutover status: phase, outbox, appliers, last phase change (CLI `status` and the dashboard)."""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from hrp_data import heartbeat, outbox
from hrp_data.dual_write import Cutover
from hrp_data.errors import describe_error


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
        "statement_logging": statement_logging(cutover),
    }


def statement_logging(cutover: Cutover) -> list[str]:
    """PostgreSQL settings that would log statements with their values, each with its fix."""
    if cutover.postgres is None:
        return []
    from hrp_data.readiness import logging_risks

    try:
        return [str(risk) for risk in logging_risks(cutover)]
    except sa.exc.SQLAlchemyError as error:
        return [f"unknown: PostgreSQL unavailable ({describe_error(error)})"]
