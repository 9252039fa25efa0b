"""The app's own SQLAlchemy sessions, routed to the current primary.

An app that keeps its own models and `Session` follows the cutover through
`RoutingSession`: per transaction it reads from the phase's read source and
writes through the same write gate as the repositories' units of work
(hrp_data.cutover.dual_write.pass_gate), so a write that starts while a move holds
the databases waits and lands on the new primary.

Per root transaction of a session:
- reads (SELECT, text SELECT) run on a connection to the read source of the
  phase as cached (at most CACHE_SECONDS old), opened without the layer's mark;
- the first write (a flush, an INSERT/UPDATE/DELETE, a text statement that is
  not a SELECT, SELECT ... FOR UPDATE, `session.connection()`) opens a second
  connection on the primary, begun with BEGIN IMMEDIATE on SQLite, passes the
  gate there, and starts again on the new primary if the primary has moved;
  every later statement of the transaction runs on it, so reads after a write
  see it and are not shadowed;
- commit commits both and wakes the applier.

Shadow reads: in the phases that shadow reads, every SELECT (ORM or text)
the session runs on the read source, outside a write transaction, is an
experiment of the cutover's shadow laboratory (`_shadow_read`, handed to
hrp_data.cutover.shadow_reads `read_statement`): sampled, repeated on the
other database by a shadow worker after the request, compared, and
reported under a read type such as `orm:Race#3f2a1c`. A session with
unflushed changes is about to write (its autoflush opens the primary), so
its reads are not shadowed either.
Reads before the first write and the write are two transactions: an app that
read a row on SQLite just before a flip and updates it after gets read
committed, as PostgreSQL's default gives it anyway, never a lost write.

The app's connections never carry the layer's mark (adapters.sqlite
LAYER_MARK), and its PostgreSQL connections are not the applier's: a write
that slips past the routing to the secondary is refused by the guard.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy import event, orm
from sqlalchemy.sql.elements import TextClause

from adapters.app_types import same_types_as_sqlite
from adapters.postgres import create_postgres_engine
from adapters.sqlite import create_sqlite_engine
from hrp_data.cutover.dual_write import GATE_ATTEMPTS, Cutover, PhaseUnsettled, pass_gate
from hrp_data.cutover.phases import POSTGRES, SQLITE, PhaseRow

log = structlog.get_logger(__name__)

_LEADING = re.compile(r"^(?:\s+|--[^\n]*\n?|/\*.*?\*/|\()*", re.S)
_DML = re.compile(r"\b(insert|update|delete|replace|merge)\b", re.I)


def writes(clause: Any) -> bool:
    """True unless `clause` is certainly a read (unknown statements count as writes)."""
    if clause is None:
        return True
    if getattr(clause, "is_dml", False):
        return True
    if getattr(clause, "is_select", False):
        return getattr(clause, "_for_update_arg", None) is not None
    if isinstance(clause, TextClause):
        text = _LEADING.sub("", clause.text, count=1)
        word = text.split(None, 1)[0].lower() if text.strip() else ""
        if word in ("select", "values", "explain", "show"):
            return bool(re.search(r"\bfor\s+(update|share)\b", text, re.I))
        if word == "with":
            return bool(_DML.search(text))
        if word == "pragma":
            return "=" in text
        return True
    return True


class SessionRouting:
    """The app's engines for one Cutover: both databases, plus the gated write path."""

    def __init__(self, cutover: Cutover):
        self.cutover = cutover
        settings = cutover.settings
        self.sqlite = create_sqlite_engine(settings.sqlite_url, lock_wait_s=settings.sqlite_lock_wait_s, layer=False)
        self.postgres = (
            same_types_as_sqlite(
                create_postgres_engine(
                    settings.postgres_url,
                    application_name="hrp-cutover app",
                    pool_size=settings.postgres_pool,
                    max_overflow=settings.postgres_pool,
                    pool_timeout=settings.postgres_pool_timeout,
                )
            )
            if settings.postgres_url
            else None
        )
        self._writers = {
            SQLITE: self.sqlite.execution_options(sqlite_begin="IMMEDIATE"),
            POSTGRES: self.postgres.execution_options(hrp_route="write") if self.postgres is not None else None,
        }

    def close(self) -> None:
        self.sqlite.dispose()
        if self.postgres is not None:
            self.postgres.dispose()

    def engine(self, name: str) -> sa.Engine:
        if name == SQLITE:
            return self.sqlite
        self.cutover.engine(POSTGRES)  # SettingsError naming HRP_POSTGRES_URL when it is not set
        return self.postgres

    def reader(self) -> tuple[sa.Engine, PhaseRow]:
        row = self.cutover.phase_row()
        return self.engine(row.reads_from), row

    def open_writer(self) -> tuple[sa.Connection, PhaseRow]:
        """A connection in a transaction on the primary, past its write gate."""
        for attempt in range(GATE_ATTEMPTS):
            row = self.cutover.phase_row(fresh=attempt > 0)
            self.engine(row.primary)
            connection = self._writers[row.primary].connect()
            try:
                connection.begin()
                now = pass_gate(self.cutover, connection, row)
            except BaseException:
                connection.close()
                raise
            if now.primary == row.primary:
                return connection, now
            connection.close()
        raise PhaseUnsettled("the primary database kept changing; retry the request")


_lock = threading.Lock()


def routing_for(cutover: Cutover) -> SessionRouting:
    """The one SessionRouting of `cutover` (closed with it)."""
    routing = cutover.__dict__.get("_session_routing")
    if routing is None:
        with _lock:
            routing = cutover.__dict__.get("_session_routing")
            if routing is None:
                routing = cutover.__dict__["_session_routing"] = SessionRouting(cutover)
    return routing


class RoutingSession(orm.Session):
    """A Session whose statements run on the cutover's current primary (see the module docstring)."""

    def __init__(self, *args: Any, routing: SessionRouting | Callable[[], SessionRouting | None] | None = None, **kw: Any):
        kw.setdefault("join_transaction_mode", "control_fully")  # it commits and rolls back its gated writer
        super().__init__(*args, **kw)
        self._hrp_routing = routing
        self._hrp_read: tuple[sa.Engine, PhaseRow] | None = None
        self._hrp_write: tuple[sa.Connection, PhaseRow] | None = None

    def hrp_routing(self) -> SessionRouting | None:
        """The routing of this session (None: not routed, the plain Session behaviour)."""
        routing = self._hrp_routing
        return routing() if callable(routing) else routing

    def get_bind(self, mapper=None, clause=None, bind=None, **kw: Any):
        if bind is not None:
            return bind
        routing = self.hrp_routing()
        if routing is None or not self._hrp_routes(mapper, clause, **kw):
            return super().get_bind(mapper=mapper, clause=clause, **kw)
        if self._hrp_write is not None:
            return self._hrp_write[0]
        if self._flushing or writes(clause):
            self._hrp_write = routing.open_writer()
            return self._hrp_write[0]
        if self._hrp_read is None:
            self._hrp_read = routing.reader()
        return self._hrp_read[0]

    def _hrp_routes(self, mapper, clause, **kw: Any) -> bool:
        """True for the statements the routing takes (all; Flask-SQLAlchemy keeps other bind keys)."""
        return True

    def _hrp_read_source(
        self, routing: SessionRouting, mapper=None, clause=None, bind=None, **kw: Any
    ) -> tuple[sa.Engine, PhaseRow] | None:
        """For a read outside a write transaction that the routing takes: its read source, engine
        and phase row (opened as `get_bind` opens it); else None. `get_bind` without a second
        `hrp_routing()`."""
        if bind is not None or self._hrp_write is not None or self._flushing or writes(clause):
            return None
        if not self._hrp_routes(mapper, clause, **kw):
            return None
        if self._hrp_read is None:
            self._hrp_read = routing.reader()
        return self._hrp_read

    def hrp_phase(self) -> PhaseRow | None:
        """The phase row of this transaction's writes (or else its reads); None before its first statement."""
        chosen = self._hrp_write or self._hrp_read
        return chosen[1] if chosen is not None else None

    def _hrp_end(self) -> None:
        write, self._hrp_write, self._hrp_read = self._hrp_write, None, None
        if write is not None:
            write[0].close()


@event.listens_for(RoutingSession, "after_transaction_end", propagate=True)
def _transaction_ended(session: RoutingSession, transaction: orm.SessionTransaction) -> None:
    if transaction.parent is None:
        session._hrp_end()


@event.listens_for(RoutingSession, "after_commit", propagate=True)
def _committed(session: RoutingSession) -> None:
    write = session._hrp_write
    if write is not None and write[1].secondary is not None:
        routing = session.hrp_routing()
        if routing is not None:
            routing.cutover.applier.notify()


@event.listens_for(RoutingSession, "do_orm_execute", propagate=True)
def _shadow_read(state: orm.ORMExecuteState) -> Any:
    """A read on the read source, in a phase that shadows reads, is a shadow-read experiment."""
    session = state.session
    if session._hrp_write is not None or not (state.is_select or isinstance(state.statement, TextClause)):
        return None
    options = state.execution_options
    if writes(state.statement) or options.get("yield_per") or options.get("stream_results"):
        return None
    routing = session.hrp_routing()
    if routing is None or not routing.cutover.shadow.lab.enabled or not session._is_clean():
        return None
    read = session._hrp_read_source(routing, **state.bind_arguments)
    if read is None or not read[1].shadow_reads:
        return None
    return routing.cutover.shadow.read_statement(read[1], state, bind=read[0])


def sessionmaker_for(cutover: Cutover, **kw: Any) -> orm.sessionmaker:
    """A sessionmaker whose sessions run on `cutover`'s current primary (apps without Flask-SQLAlchemy)."""
    kw.setdefault("class_", RoutingSession)
    return orm.sessionmaker(routing=routing_for(cutover), **kw)
