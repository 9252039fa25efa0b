"""The dual-write layer: the app's units of work, routed by the current phase.

`Cutover` holds both engines, the phase record and this process's applier.
`cutover.writing()` is a unit of work on the current primary with the same
repositories as ever; `cutover.reading()` one on the read source. The
primary write is one transaction; the trigger-recorded outbox row commits
with it; after commit the applier is woken to carry the change to the
secondary, off the request path.

The write gate: a writer re-reads the phase inside its own transaction after
taking the primary's write gate (SQLite: BEGIN IMMEDIATE, the same lock a
phase change holds; PostgreSQL: the shared phase advisory lock, which a phase
change holds exclusive). A writer that finds the primary has moved rolls back
and starts again on the new primary, so no write is lost or reordered across
a flip; writes arriving during the switch wait instead of failing.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping

import sqlalchemy as sa
import structlog

from adapters.catalog import Catalog, TwoSided
from hrp_data.catalog import captured
from hrp_data.cutover import outbox
from hrp_data.cutover.applier import Applier, Route
from hrp_data.cutover.apply import hold_phase_shared
from hrp_data.cutover.phase_store import PhaseRecord, PhaseStore
from hrp_data.cutover.phases import PHASES, POSTGRES, SQLITE, PhaseRow
from hrp_data.cutover.schema_watch import SchemaWatch
from hrp_data.cutover.shadow_reads import ShadowReads
from hrp_data.errors import describe_error, privilege_refused
from hrp_data.flip import journal as move_journal
from hrp_data.settings import Settings, SettingsError
from hrp_data.unit_of_work import UnitOfWork

LAYER_MISSING_FIX = (
    "PostgreSQL lacks the layer's outbox tables and this role may not create them: run `hrp-cutover schema` as"
    " the migrator role (HRP_POSTGRES_DIRECT_URL); changes wait in the outbox until then"
)
GATE_ATTEMPTS = 5
INSTALL_RETRY_S = 5.0
"""How often the applier tries again to install the outbox tables on a PostgreSQL that did not answer."""
log = structlog.get_logger(__name__)
_joined: contextvars.ContextVar["DualWriteUnitOfWork | None"] = contextvars.ContextVar("hrp_joined_unit", default=None)


class PhaseUnsettled(RuntimeError):
    """The primary kept moving while a write tried to start."""


@dataclasses.dataclass(frozen=True)
class Engines:
    """The app's engine of each database; `engines(name)` is the one the phase names."""

    sqlite: sa.Engine
    postgres: sa.Engine | None
    """None: HRP_POSTGRES_URL is not set."""

    def __call__(self, name: str) -> sa.Engine:
        if name == SQLITE:
            return self.sqlite
        if self.postgres is None:
            raise SettingsError("HRP_POSTGRES_URL is not set, but the phase needs PostgreSQL")
        return self.postgres


class MovedTables:
    """What this process moves: the file's catalog (hrp_data.catalog) and the tables captured from it,
    replaced together when the schema watch adopts the catalog read again after a new column."""

    def __init__(self, catalog: Catalog):
        self.adopt(catalog)

    def adopt(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.captured = captured(catalog)


class PostgresLayer:
    """The layer's outbox tables on PostgreSQL, installed once PostgreSQL answers (tried at most
    every INSTALL_RETRY_S).

    Not when the process starts: a process must start and serve from SQLite while PostgreSQL is
    down or frozen; its applier carries the changes once `install()` succeeds.
    """

    def __init__(self, engine: sa.Engine | None):
        self.engine = engine
        self.installed = False
        self.refused = False
        """The app's role may not CREATE them (said once)."""
        self.next_try_at = 0.0

    def install(self) -> bool:
        if self.installed:
            return True
        if time.monotonic() < self.next_try_at:
            return False
        try:
            outbox.install_tables(self.engine)
        except sa.exc.SQLAlchemyError as error:
            self.next_try_at = time.monotonic() + INSTALL_RETRY_S
            if privilege_refused(error):  # the app's role may not CREATE
                if not self.refused:
                    log.error("postgres.layer_tables_missing", error=describe_error(error), fix=LAYER_MISSING_FIX)
                self.refused = True
                return False
            log.warning("postgres.install_deferred", error=describe_error(error), retry_in_s=INSTALL_RETRY_S)
            return False
        self.installed = True
        return True


def route_of(
    phase_row: Callable[..., PhaseRow], engines: Callable[[str], sa.Engine], captured_tables: Mapping[str, sa.Table]
) -> Route | None:
    """Where the applier carries changes in the phase `phase_row()` names (None: no secondary)."""
    row = phase_row()
    if row.secondary is None:
        return None
    primary = row.primary
    return Route(
        engines(primary),
        engines(row.secondary),
        captured_tables,
        still_primary=lambda: phase_row(fresh=True).primary == primary,
    )


class Cutover:
    """Both databases, the phase record and the applier of one process.

    Built by hrp_data.cutover.assemble.open_cutover, which opens the engines, installs what the
    SQLite file needs and joins the parts; the constructor only keeps the parts it is handed.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        engines: Engines,
        phases: PhaseStore,
        tables: MovedTables,
        postgres_layer: PostgresLayer,
        schema_watch: SchemaWatch,
        applier: Applier,
        shadow: ShadowReads,
    ):
        self.settings = settings
        self.engines = engines
        self.sqlite = engines.sqlite
        self.postgres = engines.postgres
        self.phases = phases
        self.tables = tables
        self.postgres_layer = postgres_layer
        self.schema_watch = schema_watch
        self.applier = applier
        self.shadow = shadow

    @property
    def catalog(self) -> Catalog:
        """What this process moves: the file's tables (hrp_data.catalog), read again when the schema watch adopts a column."""
        return self.tables.catalog

    @property
    def captured(self) -> TwoSided:
        """The tables the capture triggers record and the applier carries (hrp_data.catalog.captured)."""
        return self.tables.captured

    def start(self) -> "Cutover":
        """Start this process's applier thread: an app process does, a CLI command does not
        (it drains what it must itself). Returns the cutover."""
        self.applier.start()
        return self

    def close(self) -> None:
        self.applier.stop()
        self.shadow.close()
        routing = self.__dict__.pop("_session_routing", None)
        if routing is not None:
            routing.close()
        self.sqlite.dispose()
        if self.postgres is not None:
            self.postgres.dispose()

    def __enter__(self) -> "Cutover":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def finish_interrupted_move(self, *, wait: bool = False):
        """Finish a move whose mover died, if there is one (hrp_data.flip.journal)."""
        return move_journal.finish(self.sqlite, self.postgres, self.phases, self.catalog, wait=wait)

    def engine(self, name: str) -> sa.Engine:
        return self.engines(name)

    def phase(self, *, fresh: bool = False) -> PhaseRecord:
        return self.phases.current(fresh=fresh)

    def phase_row(self, *, fresh: bool = False) -> PhaseRow:
        return self.phases.row(fresh=fresh)

    def route(self) -> Route | None:
        """Where the applier carries changes in the current phase (None: no secondary)."""
        return route_of(self.phase_row, self.engine, self.captured)

    def install_postgres(self) -> bool:
        """Install the outbox tables on PostgreSQL, once it answers (see PostgresLayer)."""
        return self.postgres_layer.install()

    def writing(self) -> "DualWriteUnitOfWork | JoinedUnitOfWork":
        """A unit of work on the current primary; commit() wakes the applier.

        Inside `one_transaction()` it joins that block's unit of work instead.
        """
        outer = _joined.get()
        if outer is not None and outer.cutover is self:
            return JoinedUnitOfWork(outer)
        return DualWriteUnitOfWork(self)

    @contextlib.contextmanager
    def one_transaction(self) -> Iterator["DualWriteUnitOfWork"]:
        """One unit of work on the primary that every `writing()` inside the block joins.

        Each joined unit runs in a savepoint (its commit releases it, leaving
        without commit rolls it back); nothing is durable until the block's own
        `commit()`. Used to store an idempotency key with the write it answers.
        """
        with DualWriteUnitOfWork(self) as uow:
            token = _joined.set(uow)
            try:
                yield uow
            finally:
                _joined.reset(token)

    def reading(self) -> UnitOfWork:
        """A read-only unit of work on the current read source (shadowed where the phase says so)."""
        row = self.phase_row()
        if row.shadow_reads:
            return self.shadow.reader(row)
        return UnitOfWork(self.engine(row.reads_from), writable=False)


def pass_gate(cutover: Cutover, connection: sa.Connection, row: PhaseRow) -> PhaseRow:
    """Take the write gate of `row`'s primary in `connection`'s transaction; the phase as it is now.

    `connection` is on that primary, in a transaction begun with BEGIN IMMEDIATE on
    SQLite. The caller writes there only if the phase returned has the same primary,
    and otherwise rolls back and starts again on the new one. Repository units of
    work and the app's own sessions (hrp_data.cutover.routing) both pass here.
    """
    if row.primary == POSTGRES:
        hold_phase_shared(connection)
        return cutover.phase_row(fresh=True)
    return PHASES[PhaseStore.read(connection).phase]


class DualWriteUnitOfWork(UnitOfWork):
    """The app's unit of work, opened on whichever database is primary right now."""

    def __init__(self, cutover: Cutover):
        self.cutover = cutover

    def __enter__(self) -> "DualWriteUnitOfWork":
        for attempt in range(GATE_ATTEMPTS):
            row = self.cutover.phase_row(fresh=attempt > 0)
            self.engine = self.cutover.engine(row.primary).execution_options(sqlite_begin="IMMEDIATE")
            super().__enter__()
            try:
                now = self._pass_gate(row)
            except BaseException:
                super().__exit__(None, None, None)
                raise
            if now.primary == row.primary:
                self.row = now
                return self
            super().__exit__(None, None, None)
        raise PhaseUnsettled("the primary database kept changing; retry the request")

    def _pass_gate(self, row: PhaseRow) -> PhaseRow:
        return pass_gate(self.cutover, self.session.connection(), row)

    def commit(self) -> None:
        super().commit()
        log.debug("write.committed", phase=self.row.phase.value, primary=self.row.primary)
        if self.row.secondary is not None:
            self.cutover.applier.notify()


class JoinedUnitOfWork:
    """A unit of work inside `Cutover.one_transaction()`: a savepoint of the block's transaction."""

    def __init__(self, outer: DualWriteUnitOfWork):
        self.outer = outer

    def __enter__(self) -> "JoinedUnitOfWork":
        outer = self.outer
        self.session = outer.session
        self.row = outer.row
        self.users, self.races, self.horses = outer.users, outer.races, outer.horses
        self.predictions, self.credentials, self.statistics = outer.predictions, outer.credentials, outer.statistics
        self._savepoint = self.session.begin_nested()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._savepoint.is_active:
            self._savepoint.rollback()

    def commit(self) -> None:
        self._savepoint.commit()

    def rollback(self) -> None:
        self._savepoint.rollback()
