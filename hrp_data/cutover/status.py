"""The cutover status: phase, outbox, appliers, last phase change (CLI `status` and the dashboard)."""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from adapters import postgres as postgres_adapter
from adapters import sqlite as sqlite_adapter
from hrp_data.cutover import applier_lease, heartbeat, outbox
from hrp_data.flip import journal as move_journal
from hrp_data.cutover.dual_write import Cutover
from hrp_data.errors import describe_error
from hrp_data.cutover.phases import POSTGRES, SQLITE

SQLITE_UNCOUNTED = (
    "not counted on SQLite: a trigger's counter write is undone with the write it refuses"
    " (RAISE(FAIL) would keep it only if the client commits, and would keep a partly done statement)"
)
"""Why the SQLite guard's refusals have no count (docs/operations.md#the-guard-on-the-secondary)."""


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
        "dedicated_applier": applier_lease.dedicated(applier_lease.for_database(cutover.sqlite.url.database)),
        "last_change": history[0] if history else None,
        "move_in_progress": _move(cutover),
        "guard": {"on": row.guarded, "refused": None,
                  "uncounted": SQLITE_UNCOUNTED if row.guarded == SQLITE else None},
        "parked_triggers": _parked(cutover),
    }


def _parked(cutover: Cutover) -> list[str]:
    """The file's own triggers parked while it is the secondary (adapters.sqlite.park_user_triggers)."""
    with cutover.sqlite.connect() as connection:
        try:
            return list(connection.exec_driver_sql(
                f"SELECT name FROM {sqlite_adapter.PARKED_TRIGGERS} ORDER BY name").scalars())
        except sa.exc.OperationalError:  # never parked: no such table
            return []
        finally:
            connection.rollback()


def _move(cutover: Cutover) -> str | None:
    marker = move_journal.current(cutover.sqlite)
    return None if marker is None else marker.describe()


def postgres_reachability(cutover: Cutover, report: dict | None = None) -> dict | None:
    """Whether PostgreSQL answers now, and why not (None: no PostgreSQL configured); with
    `report`, also fills in how many writes the guard refused when it is on PostgreSQL.

    Asked by `status` only, so that the dashboard never waits on a frozen server.
    """
    if cutover.postgres is None:
        return None
    try:
        with cutover.postgres.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
            if report is not None and report["guard"]["on"] == POSTGRES:
                report["guard"]["refused"] = postgres_adapter.guard_refusals(connection)
    except sa.exc.SQLAlchemyError as error:
        return {"reachable": False, "error": describe_error(error)}
    return {"reachable": True, "error": None}


def guard_refusals(cutover: Cutover) -> int | None:
    """How many writes PostgreSQL's guard has refused (None: no PostgreSQL, or its guard never
    installed). Counted since the guard's function was installed, whichever side is guarded now."""
    if cutover.postgres is None:
        return None
    with cutover.postgres.connect() as connection:
        return postgres_adapter.guard_refusals(connection)


def statement_logging(cutover: Cutover) -> list[str]:
    """PostgreSQL settings that would log statements with their values, each with its fix."""
    if cutover.postgres is None:
        return []
    from hrp_data.flip.readiness import logging_risks

    try:
        return [str(risk) for risk in logging_risks(cutover)]
    except sa.exc.SQLAlchemyError as error:
        return [f"unknown: PostgreSQL unavailable ({describe_error(error)})"]


def schema_drift_of(cutover: "Cutover") -> list[str]:
    """Columns or tables one live schema has and the other lacks (hrp_data.cutover.schema_watch);
    computed by the CLI's status only once PostgreSQL answered."""
    from hrp_data.cutover.schema_watch import ColumnDrift, postgres_only_tables, schema_drift, sqlite_names

    drift = schema_drift(cutover.sqlite, cutover.engine("postgres"), list(cutover.catalog.tables),
                         sqlite_names(cutover.catalog))
    if cutover.phase_row().primary == "postgres":  # a table a migration created after the flip holds the rollback
        with cutover.engine("postgres").connect() as connection:
            drift += [ColumnDrift(name, None, "postgres") for name in postgres_only_tables(connection, cutover.catalog.tables)]
    return [str(d) for d in drift]


def index_drift_of(cutover: "Cutover") -> list[dict]:
    """Indexes one live side holds and the other lacks, not carried (hrp_data.cutover.indexes), each
    with the statement to run; computed by the CLI's status only once PostgreSQL answered."""
    from hrp_data.cutover.indexes import live_index_drift

    return [d.as_dict() | {"text": str(d)}
            for d in live_index_drift(cutover.sqlite, cutover.engine("postgres"), cutover.catalog)]
