"""Assembling a process's `Cutover` from its parts: `open_cutover(settings)`.

The factory opens both engines, creates what the SQLite file needs (the phase record,
the outbox and heartbeat tables), reads the file's catalog once, and hands each part
only what it uses:

- the schema watch: the engines, the phase row (read fresh), the moved tables' `adopt`,
  and how a capture gap is carried;
- the applier: its route (the phase row, the engines, the captured tables, the layer's
  tables on PostgreSQL), the heartbeat it reports to, the move journal it finishes, and
  the probe of the dedicated applier's lease it stands aside for (hrp_data.cutover.applier_lease;
  the dedicated applier itself, `dedicated=True`, has none and polls more often);
- the shadow reads: the settings, the engines, the phase row, the mismatch store's engine and
  the shadow workers' own pool on PostgreSQL.

Only the carry of a capture gap holds the whole `Cutover`, as hrp_data.verify.run.carry_gap
repairs over it. Nothing here starts a thread: `Cutover.start()` starts the applier.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import sqlalchemy as sa
import structlog

from adapters.postgres import bound_every_call, create_postgres_engine
from adapters.sqlite import create_sqlite_engine
from hrp_data.catalog import file_catalog
from hrp_data.cutover import applier_lease, heartbeat, outbox, phase_store
from hrp_data.cutover.applier import POLL_S, Applier, Route
from hrp_data.cutover.dual_write import Cutover, Engines, MovedTables, PostgresLayer, route_of
from hrp_data.cutover.phase_store import PhaseStore
from hrp_data.cutover.phases import Phase
from hrp_data.cutover.schema_watch import SchemaWatch
from hrp_data.cutover.shadow_reads import ShadowReads, app_candidate_engine, candidate_engine, catalog_kinds, catalog_secrets
from hrp_data.flip import journal as move_journal
from hrp_data.settings import Settings

log = structlog.get_logger(__name__)

DEDICATED_POLL_S = 0.05
"""How often the dedicated applier looks for changes: no write of another process can wake it."""


def open_cutover(
    settings: Settings,
    *,
    bound_calls: bool = True,
    carry: Callable[[Cutover, list[str]], object] | None = None,
    dedicated: bool = False,
) -> Cutover:
    """The process's Cutover over `settings`, its applier not started (`.start()` does).

    `bound_calls`: install the bounds on every PostgreSQL call (adapters.postgres.bound_every_call);
    a backfill, which runs under its own, passes False. `carry(cutover, tables)`: how rows written
    while a table's capture was missing are carried (hrp_data.verify.run.carry_gap); without it
    the gap is logged with the command that carries it. `dedicated`: the Cutover of
    `hrp-cutover apply`, whose applier drains for every process of the host.
    """
    engines = Engines(
        create_sqlite_engine(settings.sqlite_url, lock_wait_s=settings.sqlite_lock_wait_s),
        create_postgres_engine(
            settings.postgres_url,
            pool_size=settings.postgres_pool,
            max_overflow=settings.postgres_pool,
            pool_timeout=settings.postgres_pool_timeout,
        )
        if settings.postgres_url
        else None,
    )
    try:
        cutover = _assemble(settings, engines, bound_calls, dedicated)
    except BaseException:  # a file no catalog can carry, a locked file...: no pool left open behind
        engines.sqlite.dispose()
        if engines.postgres is not None:
            engines.postgres.dispose()
        raise
    if carry is not None:
        cutover.schema_watch.carry = functools.partial(carry, cutover)  # the one part that holds the Cutover
    return cutover


def _assemble(settings: Settings, engines: Engines, bound_calls: bool, dedicated: bool) -> Cutover:
    if bound_calls and engines.postgres is not None:
        bound_every_call()
    tables = MovedTables(file_catalog(engines.sqlite))  # read first: a file it refuses is left untouched
    phase_store.install(engines.sqlite, Phase(settings.phase))
    phases = PhaseStore(engines.sqlite)
    outbox.install_tables(engines.sqlite)
    heartbeat.install(engines.sqlite)
    postgres_layer = PostgresLayer(engines.postgres)
    schema_watch = SchemaWatch(
        engines, functools.partial(phases.row, fresh=True), _gap_not_carried, catalog=tables.catalog,
        adopt=tables.adopt,
    )
    applier = Applier(
        functools.partial(applier_route, phases, engines, tables, postgres_layer),
        report=functools.partial(report_heartbeat, engines.sqlite, phases),
        recover=functools.partial(finish_interrupted_move, engines, phases, tables),
        watch=schema_watch.watch if engines.postgres is not None else None,
        stand_aside=None if dedicated else _lease_probe(engines.sqlite),
        poll_s=DEDICATED_POLL_S if dedicated else POLL_S,
    )
    shadow = ShadowReads(
        settings, engines, phases.row, store_engine=create_sqlite_engine(settings.sqlite_url),
        candidates=candidate_engine(settings), app_candidates=app_candidate_engine(settings),
        table_kinds=catalog_kinds(tables.catalog), table_secrets=catalog_secrets(tables.catalog),
    )
    return Cutover(
        settings, engines=engines, phases=phases, tables=tables, postgres_layer=postgres_layer,
        schema_watch=schema_watch, applier=applier, shadow=shadow,
    )


def _lease_probe(sqlite: sa.Engine) -> Callable[[], bool] | None:
    """Whether the dedicated applier runs for this file (None for a SQLite URL that names no file)."""
    path = applier_lease.for_database(sqlite.url.database)
    return None if path is None else functools.partial(applier_lease.held_elsewhere, path)


def applier_route(
    phases: PhaseStore, engines: Engines, tables: MovedTables, postgres_layer: PostgresLayer
) -> Route | None:
    """The applier's route in the current phase, once the layer's tables are on PostgreSQL (None until
    PostgreSQL answers)."""
    route = route_of(phases.row, engines, tables.captured)
    if route is None or engines.postgres is None:
        return route
    return route if postgres_layer.install() else None


def report_heartbeat(sqlite: sa.Engine, phases: PhaseStore, applier: Applier) -> None:
    """Record the applier's state and the phase this process sees (hrp_data.cutover.heartbeat)."""
    heartbeat.beat(
        sqlite,
        breaker=applier.breaker_state,
        applied=applier.counters.applied,
        failed=applier.counters.failed,
        lag=applier.counters.lag_percentiles(),
        phase=phases.current().phase.value,
    )


def finish_interrupted_move(engines: Engines, phases: PhaseStore, tables: MovedTables):
    """Finish a move whose mover died, if there is one (hrp_data.flip.journal), without waiting."""
    return move_journal.finish(engines.sqlite, engines.postgres, phases, tables.catalog, wait=False)


def _gap_not_carried(tables: list[str]) -> None:
    log.warning("schema.gap_not_carried", tables=tables,
                fix=f"run `hrp-cutover verify --repair --tables {','.join(tables)}`")
