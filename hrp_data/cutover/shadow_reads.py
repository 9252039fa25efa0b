"""Shadow reads: the app's reads, served by the primary and repeated against the secondary.

In phases whose row says `shadow_reads` (shadow: SQLite serves, PostgreSQL is
checked; postgres_primary: the reverse), `Cutover.reading()` returns a
`ShadowedReader`: the same read-only unit of work as ever, whose
repositories' read methods (get, list, get_by_username, runners, for_race,
race_statistics, horse_performance) are shadow.experiment experiments. The
caller always gets the primary's answer; a sampled read is repeated by a
background worker on a fresh read-only unit of work on the secondary, with
the same method and arguments, and the two answers are compared with the
column kinds of the models (shadow.compare, shadow.normalize). Differences on
rows that still have an outbox change on the way are re-checked once it is
applied (the `pending` callable below), and the results go to the mismatch
store in the SQLite file (shadow.mismatches).

The app's own statements on its routed session (ORM and text, see
hrp_data.cutover.app_reads) are experiments of the same laboratory:
`read_statement` runs the app's statement as the control and the same
statement on the secondary as the candidate, compared by
shadow.statements with the kinds of the file's catalog; a statement the
secondary does not run as written is the outcome candidate_error.

This module is where hrp_data hands shadow its tables and callables; shadow
itself never imports hrp_data.

Settings (hrp_data.settings, read from the environment) that shape it:
  HRP_SHADOW_SAMPLE           the default share of reads shadowed
  HRP_SHADOW_ENABLED=0        kill switch (also `cutover.shadow.lab.enabled = False`)
  HRP_SHADOW_SAMPLES          per read type, e.g. "races.get=0.1,statistics.race_statistics=0";
                              the app's statements by read type ("orm:Race#3f2a1c"), by
                              fingerprint ("sql#9b0e77"), entity or tables ("orm:Race") or kind
                              ("orm", "sql")
  HRP_SHADOW_IGNORE           columns not compared, e.g. "races.updated_at,horses.updated_at"
  HRP_SHADOW_WORKERS / HRP_SHADOW_QUEUE   worker threads (1) and queue size (1000); the
                              workers read PostgreSQL through a pool of their own, one
                              connection each (never one a request waits for), and stand
                              aside before and after each statement on it while a request
                              of the process is served
  HRP_SHADOW_MAX_DETAILS      detailed mismatches kept (1000)
  HRP_SHADOW_WINDOW / HRP_SHADOW_MAX_RATE / HRP_SHADOW_MIN_READS   the readiness check
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy import orm

from adapters.app_types import same_types_as_sqlite
from adapters.catalog import is_secret
from adapters.convert import Kind
from adapters.outbox import outbox as outbox_table
from adapters.postgres import call_timeout, create_postgres_engine
from adapters.sqlite import create_sqlite_engine
from adapters.types import kind_of
from hrp_data.catalog import HRP_TABLES
from hrp_data.cutover import outbox
from hrp_data.cutover.apply import KeyRef
from hrp_data.errors import describe_error
from hrp_data.models import SECRET_COLUMNS, TABLES
from hrp_data.cutover.phase_store import PhaseStore
from hrp_data.cutover.phases import PHASES, POSTGRES, Phase, PhaseRow
from hrp_data.settings import Settings, SettingsError
from hrp_data.unit_of_work import UnitOfWork
from shadow.compare import Comparator, Nested, ReadType
from shadow.experiment import Laboratory
from shadow.statements import (
    PREBUFFERED,
    StatementComparator,
    StatementRead,
    describe,
    describe_unsupported,
    kept_records,
    kept_rows,
    result_records,
    result_rows,
    unsupported,
)
from shadow.mismatches import MismatchStore
from shadow.report import build_report, mismatch_summary, parse_duration

log = structlog.get_logger(__name__)

CANDIDATE_TIMEOUT_S = 2.0
"""A PostgreSQL candidate is cut off client-side after this long (it is a timeout, not an error)."""

AGGREGATES: dict[str, tuple[str, dict[str, Kind]]] = {
    "race_statistics": ("race_id", {
        "race_id": Kind.INTEGER, "prediction_count": Kind.INTEGER, "avg_confidence": Kind.REAL,
        "min_confidence": Kind.REAL, "max_confidence": Kind.REAL,
    }),
    "horse_performance": ("horse_id", {
        "horse_id": Kind.INTEGER, "prediction_count": Kind.INTEGER, "avg_confidence": Kind.REAL,
        "max_confidence": Kind.REAL, "high_confidence_count": Kind.INTEGER,
    }),
}
"""The statistics reads' rows: pseudo tables keyed by their grouping column, made from predictions."""

AGGREGATE_SOURCE = "predictions"

READ_TYPES: dict[tuple[str, str], ReadType] = {
    (attr, method): ReadType(f"{attr}.{method}", table, ordered)
    for attr, method, table, ordered in (
        ("users", "get", "users", False),
        ("users", "get_by_username", "users", False),
        ("users", "list", "users", True),
        ("races", "get", "races", False),
        ("races", "list", "races", True),
        ("races", "runners", "race_horses", True),
        ("horses", "get", "horses", False),
        ("horses", "list", "horses", True),
        ("predictions", "get", "predictions", False),
        ("predictions", "list", "predictions", True),
        ("predictions", "for_race", "predictions", True),
        ("credentials", "get", "api_credentials", False),
        ("credentials", "list", "api_credentials", True),
        ("statistics", "race_statistics", "race_statistics", True),
        ("statistics", "horse_performance", "horse_performance", True),
    )
}
"""Every read method of the unit of work's repositories, with its table and whether it has ORDER BY."""

READS: dict[str, tuple[str, ...]] = {}
for _attr, _method in READ_TYPES:
    READS.setdefault(_attr, ())
    READS[_attr] += (_method,)


def column_kinds() -> dict[str, dict[str, Kind]]:
    """{table: {column: Kind}} for the six tables (from the models) and the statistics rows."""
    kinds = {table.name: {c.name: kind_of(c) for c in table.columns} for table in TABLES}
    kinds.update({name: dict(columns) for name, (_key, columns) in AGGREGATES.items()})
    return kinds


def key_columns() -> dict[str, list[str]]:
    keys = {table.name: [c.name for c in table.primary_key.columns] for table in TABLES}
    keys.update({name: [key] for name, (key, _columns) in AGGREGATES.items()})
    return keys


NESTED = {"races": {"runners": Nested("race_horses", ordered=True)}}


def _sample_rates(settings: Settings) -> dict[str, float]:
    """HRP_SHADOW_SAMPLES, whose read names must be the layer's own or name the app's statements."""
    known = {read.name for read in READ_TYPES.values()}
    rates = settings.sample_rates()
    unknown = sorted(name for name in set(rates) - known if not _statement_name(name))
    if unknown:
        raise SettingsError(
            f"HRP_SHADOW_SAMPLES names {', '.join(unknown)}, which is no read; reads: {', '.join(sorted(known))},"
            " and the app's statements as orm, sql, orm:Entity, sql#fingerprint or a read type of the report"
        )
    return rates


def _statement_name(name: str) -> bool:
    return name in ("orm", "sql") or name.startswith(("orm:", "sql:", "orm#", "sql#"))


def catalog_secrets(catalog: Any) -> frozenset[str]:
    """The names of the columns the operator chose as secrets (adapters.catalog.is_secret), for the
    app's own statements (names that look secret are found apart)."""
    return frozenset(column.name for entry in catalog.tables.values() for column in entry.sqlite.columns
                     if is_secret(column))


def catalog_kinds(catalog: Any) -> dict[str, dict[str, Kind]]:
    """{table: {column: Kind}} of a file catalog (hrp_data.catalog), by the names the file uses."""
    return {entry.name: {m.column: m.kind for m in entry.mapping} for entry in catalog.tables.values()}


def candidate_engine(settings: Settings, *, application_name: str = "hrp-cutover-shadow") -> sa.Engine | None:
    """The shadow workers' pool on PostgreSQL (one connection per worker), apart from the app's: a
    candidate or a lag re-check never takes a connection a request of the app waits for.

    In autocommit: a candidate only reads, and each of its statements sees its own snapshot as it
    would in a READ COMMITTED transaction, without the BEGIN and ROLLBACK round trips (GET
    /api/races/<id> shadowed: 3 round trips instead of 7, each one the worker's time and a wake-up
    that competes with the requests)."""
    if not settings.postgres_url:
        return None
    return create_postgres_engine(
        settings.postgres_url,
        application_name=application_name,
        isolation_level="AUTOCOMMIT",
        pool_size=max(1, settings.shadow_workers),
        max_overflow=0,
        pool_timeout=CANDIDATE_TIMEOUT_S,
        pool_pre_ping=False,  # a stale connection costs one candidate error, not a round trip per read
    )


def app_candidate_engine(settings: Settings) -> sa.Engine | None:
    """The workers' pool for the app's own statements on PostgreSQL: the app's session's values and
    types there (adapters.app_types: a Uuid bound as SQLite's hex text, a naive datetime...), so a
    candidate reads what the app would read after a flip. Connects only once such a read is shadowed."""
    engine = candidate_engine(settings, application_name="hrp-cutover-shadow-app")
    return None if engine is None else same_types_as_sqlite(engine)


DESCRIBED_LIMIT = 2000
"""Statement descriptions kept per process (by SQLAlchemy cache key); the cache starts over when full."""


class ShadowReads:
    """The shadow-read machinery of one process: comparator, laboratory and mismatch store."""

    def __init__(
        self,
        settings: Settings,
        app_engine: Callable[[str], sa.Engine],
        phase_row: Callable[..., PhaseRow],
        *,
        store_engine: sa.Engine,
        candidates: sa.Engine | None,
        app_candidates: sa.Engine | None = None,
        table_kinds: dict[str, dict[str, Kind]] | None = None,
        table_secrets: frozenset[str] = frozenset(),
    ):
        """`app_engine(database)`: the app's engine of a database; `phase_row(fresh=False)`: the current phase row;
        `store_engine`: the mismatch store's engine on the SQLite file; `candidates`: the shadow workers'
        own pool on PostgreSQL (`candidate_engine`; None without PostgreSQL); `app_candidates`: theirs
        for the app's own statements, typed as the app's session is on PostgreSQL
        (adapters.app_types; `candidates` when not given); all are disposed by `close()`. `table_kinds`: {table: {column: Kind}} of the file's tables, for the app's own
        statements (catalog_kinds; the HRP tables' when not given)."""
        self.app_engine = app_engine
        self.phase_row = phase_row
        self.comparator = Comparator(
            column_kinds(), key_columns(), nested=NESTED, ignore=settings.ignore_rules(), secrets=SECRET_COLUMNS
        )
        self.table_kinds = table_kinds if table_kinds is not None else column_kinds()
        self.statements = StatementComparator(
            self.table_kinds, ignore=settings.ignore_rules(), secrets=SECRET_COLUMNS | table_secrets
        )
        self._described: dict[Any, StatementRead] = {}
        self._volatile: set[str] = set()
        self.store_engine = store_engine
        self.store = MismatchStore(
            self.store_engine,
            max_details=settings.shadow_max_details,
            ignore=self.comparator.ignore,
        )
        workers = settings.shadow_workers
        self.postgres = candidates
        self.app_postgres = app_candidates if app_candidates is not None else candidates
        self.lab = Laboratory(
            self.compare,
            self.store,
            pending=self.pending,
            sample=settings.shadow_sample,
            workers=workers,
            queue_size=settings.shadow_queue,
            candidate_timeout_s=CANDIDATE_TIMEOUT_S,
            describe_error=describe_error,
            unsupported=_unsupported,
            settled=self.settled,
            current=self.compares_current_pair,
        )
        self.lab.enabled = settings.shadow_enabled
        for name, rate in _sample_rates(settings).items():
            self.lab.set_sample(name, rate)
        for pool in {id(e): e for e in (candidates, self.app_postgres) if e is not None}.values():
            for moment in ("before_cursor_execute", "after_cursor_execute"):  # the workers' own: no request runs them
                sa.event.listen(pool, moment, self._checkpoint)

    def _checkpoint(self, *_args: Any) -> None:
        """Around each statement of a candidate on PostgreSQL: the worker stands aside while a
        request is served (Laboratory.checkpoint), so a request that arrives mid-sample waits for
        the interpreter lock until the worker's next database call at most."""
        self.lab.checkpoint()

    def close(self) -> None:
        self.lab.close()
        self.store.close()
        self.store_engine.dispose()
        if self.postgres is not None:
            self.postgres.dispose()
        if self.app_postgres is not None and self.app_postgres is not self.postgres:
            self.app_postgres.dispose()

    def engine(self, database: str) -> sa.Engine:
        """Where the shadow workers read `database`: PostgreSQL through their own pool
        (`candidate_engine`), SQLite through the app's engine."""
        if database == POSTGRES and self.postgres is not None:
            return self.postgres
        return self.app_engine(database)

    def flush(self, timeout: float = 10.0) -> None:
        """Finish the queued samples and write everything to the store (tests, readiness, shutdown)."""
        self.lab.wait_idle(timeout)
        self.store.flush()

    def reader(self, row: PhaseRow) -> "ShadowedReader":
        return ShadowedReader(self, row)

    # -- what the laboratory is handed --------------------------------------------------

    def compare(self, read: ReadType, primary: Any, secondary: Any) -> list:
        if isinstance(read, StatementRead):
            if read.volatile and len(primary) == len(secondary):  # both ran, and answered as many rows
                self._by_shape(read)
                return []
            return self.statements.compare(read, primary, secondary)
        return self.comparator.compare(read, primary, secondary)

    def pending(self, refs: set[tuple[str, tuple[Any, ...]]]) -> set[tuple[str, tuple[Any, ...]]]:
        """Which (table, key) rows still have an outbox change on the way to the secondary."""
        row = self.phase_row()
        if row.secondary is None:
            return set()
        primary = self.engine(row.primary)
        real = [KeyRef(table, tuple(key)) for table, key in refs if table in HRP_TABLES]
        found = {(ref.table, ref.key) for ref in outbox.pending_keys(primary, real)}
        aggregates = {ref for ref in refs if ref[0] in AGGREGATES}
        if aggregates and _table_pending(primary, AGGREGATE_SOURCE):
            found |= aggregates
        read_tables = {ref[0] for ref in refs if ref[0] not in HRP_TABLES and ref[0] not in AGGREGATES}
        for name in read_tables:  # an app statement's rows: pending while any table it reads is
            if any(_table_pending(primary, table) for table in name.split(",")):
                found |= {ref for ref in refs if ref[0] == name}
        return found

    def compares_current_pair(self, context: Mapping[str, Any]) -> bool:
        """Whether the phase in force (read fresh) still shadows reads of `context`'s primary on its
        secondary: after a flip, a rollback or `postgres_only` a process reads the old phase for up
        to its phase cache time, and what its samples compare then is the move, not the data."""
        row = self.phase_row(fresh=True)
        return row.shadow_reads and (row.reads_from, row.secondary) == (context.get("primary"), context.get("secondary"))

    def settled(self, read: ReadType) -> bool:
        """False while a change is on its way to a table that an app statement's window or aggregate reads."""
        if not isinstance(read, StatementRead) or not read.whole_tables:
            return True
        row = self.phase_row()
        if row.secondary is None:
            return True
        primary = self.engine(row.primary)
        return not any(_table_pending(primary, table) for table in read.tables)

    def call(self, database: str, attr: str, method: str, args: tuple, kwargs: dict) -> Any:
        """The read on a fresh read-only unit of work on `database` (run on a worker thread)."""
        engine = self.engine(database)
        with _bounded(database), UnitOfWork(engine, writable=False, autocommit=engine is self.postgres) as uow:
            return getattr(getattr(uow, attr), method)(*args, **kwargs)

    def read(self, row: PhaseRow, attr: str, method: str, bound: Callable, args: tuple, kwargs: dict) -> Any:
        """One read by the app: the primary answers; the secondary is asked afterwards when sampled."""
        primary, secondary = row.reads_from, row.secondary
        return self.lab.run(
            READ_TYPES[(attr, method)],
            functools.partial(bound, *args, **kwargs),
            functools.partial(self.call, secondary, attr, method, args, kwargs),
            recheck_control=functools.partial(self.call, primary, attr, method, args, kwargs),
            context={"primary": primary, "secondary": secondary},
        )


    # -- the app's own statements (hrp_data.cutover.app_reads) ------------------------------

    def describe(self, statement: Any) -> StatementRead:
        """The read type of one of the app's statements, described once per SQLAlchemy cache key."""
        cache_key = statement._generate_cache_key() if hasattr(statement, "_generate_cache_key") else None
        if cache_key is None:
            return describe(statement, self.table_kinds)
        found = self._described.get(cache_key.key)
        if found is None:
            if len(self._described) >= DESCRIBED_LIMIT:
                self._described.clear()
            found = self._described[cache_key.key] = describe(statement, self.table_kinds)
        return found

    def read_statement(self, row: PhaseRow, state: orm.ORMExecuteState, *, bind: sa.Engine | None = None) -> Any:
        """One of the app's reads (an `ORMExecuteState` of its routed session, in a phase that
        shadows reads): the app's own execution is the control, and its Result what the app
        gets (an ORM statement's rows read as it executes, `PREBUFFERED`, any other's frozen:
        the rows are read once, `result_rows`); None when it is not sampled (the app's session
        then runs it as ever). On the request's thread the sample only keeps the rows
        (`kept_rows`: each entity's instance dict copied); the shadow worker makes them records.
        `bind`: the engine the session chose for it (the read source), handed to its execution so
        that the session does not choose it again.

        The statement's read type (`describe`) is made on the worker, unless a read type has a
        sample rate of its own (HRP_SHADOW_SAMPLES): then the request needs it to pick the rate."""
        statement = state.statement
        read = None
        if self.lab.samples:
            try:
                read = self.describe(statement)
            except Exception as error:  # noqa: BLE001 - an experiment never fails a read
                self.lab.raised("describe", error)
                return None
        if not self.lab.should_run(read):
            return None
        params, options = _copied(state.parameters), state.local_execution_options
        chosen = {"bind": bind} if bind is not None else None
        primary, secondary = row.reads_from, row.secondary
        result, _rows = self.lab.run(
            read,
            lambda: result_rows(state.invoke_statement(bind_arguments=chosen, execution_options=PREBUFFERED)),
            functools.partial(self.statement_on, secondary, statement, params, options),
            recheck_control=functools.partial(self.statement_on, primary, statement, params, options),
            context={"primary": primary, "secondary": secondary},
            sampled=True,
            keep=_kept_rows,
            finish=kept_records,
            describe=functools.partial(self.describe, statement) if read is None else None,
        )
        return result

    def _by_shape(self, read: StatementRead) -> None:
        """Said once per read type and process: a statement compared by its shape only."""
        if read.name not in self._volatile:
            self._volatile.add(read.name)
            log.info("shadow.compared_by_shape", read_type=read.name, statement=read.sql,
                     reason="its answer depends on when or how it runs (random(), the current time):"
                            " its rows are counted, not compared")

    def statement_on(self, database: str, statement: Any, params: Any, options: Mapping[str, Any]) -> list[dict[str, Any]]:
        """An app's statement on `database`, in a session of its own (run on a worker thread), with the
        values and types the app's session gets there. `options`: the app's execution options of the
        statement (the ORM's own, `_sa_orm...`, left out)."""
        bind = self.app_postgres if database == POSTGRES and self.app_postgres is not None else self.engine(database)
        options = {k: v for k, v in options.items() if not k.startswith("_sa_orm")}
        with _bounded(database), orm.Session(bind=bind) as session:
            return result_records(session.execute(statement, params, execution_options=options))


def _kept_rows(control: tuple[Any, Any]) -> Any:
    """What a sample keeps of the control (`result_rows`'s result and rows): the rows (`kept_rows`)."""
    return kept_rows(control[1])


def _copied(params: Any) -> Any:
    if isinstance(params, dict):
        return dict(params)
    if isinstance(params, (list, tuple)):
        return [dict(p) if isinstance(p, dict) else p for p in params]
    return params


def _unsupported(read: ReadType, error: BaseException) -> str | None:
    """A candidate of an app's statement that the secondary does not run as written: candidate_error."""
    if isinstance(read, StatementRead) and unsupported(error) is not None:
        return describe_unsupported(error)
    return None


@contextlib.contextmanager
def _bounded(database: str) -> Iterator[None]:
    if database == POSTGRES:
        with call_timeout(CANDIDATE_TIMEOUT_S):
            yield
    else:
        yield


def _table_pending(bind: sa.Engine, table: str) -> bool:
    with bind.connect() as connection:
        if not sa.inspect(connection).has_table(outbox_table.name):
            return False
        found = connection.execute(
            sa.select(outbox_table.c.seq).where(outbox_table.c.table_name == table).limit(1)
        ).first()
        connection.rollback()
    return found is not None


class ShadowedRepository:
    """A repository whose read methods are experiments; everything else is the repository's own."""

    __slots__ = ("_inner", "_attr", "_reader", "_reads")

    def __init__(self, inner: Any, attr: str, reader: "ShadowedReader"):
        self._inner = inner
        self._attr = attr
        self._reader = reader
        self._reads = READS[attr]

    def __getattr__(self, name: str) -> Any:
        bound = getattr(self._inner, name)
        if name not in self._reads:
            return bound
        reader, attr = self._reader, self._attr

        def read(*args: Any, **kwargs: Any) -> Any:
            return reader.shadow.read(reader.row, attr, name, bound, args, kwargs)

        return read


class ShadowedReader(UnitOfWork):
    """`with cutover.reading() as uow: uow.races.get(1)`, with each read repeated on the secondary.

    The unit of work is one `Laboratory.serving()` block: the shadow workers stand aside
    while it is open, and its samples are queued once its session is closed.
    """

    def __init__(self, shadow: ShadowReads, row: PhaseRow):
        super().__init__(shadow.app_engine(row.reads_from), writable=False)
        self.shadow = shadow
        self.row = row

    def __enter__(self) -> "ShadowedReader":
        self._serving = contextlib.ExitStack()
        self._serving.enter_context(self.shadow.lab.serving())
        try:
            super().__enter__()
        except BaseException:
            self._serving.close()
            raise
        for attr in READS:
            setattr(self, attr, ShadowedRepository(getattr(self, attr), attr, self))
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            super().__exit__(*exc_info)
        finally:
            self._serving.close()


# -- services for the CLI and the readiness check -------------------------------------------


def shadow_report(settings: Settings, since_seconds: float | None = None) -> dict:
    """The report of `hrp-cutover report` (reads the SQLite file only)."""
    engine = create_sqlite_engine(settings.sqlite_url)
    try:
        return build_report(engine, since_seconds)
    finally:
        engine.dispose()


def primary_at(history: list[dict]) -> Callable[[float], str | None]:
    """The database that was primary at a moment (epoch seconds), from the phase audit
    (`PhaseStore.history`, newest first); None before the oldest recorded change."""
    changes = []
    for change in history:
        try:
            at = dt.datetime.fromisoformat(change["at"]).timestamp()
        except (TypeError, ValueError):
            continue
        changes.append((at, PHASES[Phase(change["to_phase"])].reads_from))
    changes.sort()

    def lookup(moment: float) -> str | None:
        index = bisect.bisect_right([at for at, _ in changes], moment)
        return changes[index - 1][1] if index else None

    return lookup


def raced_a_move(history: list[dict]) -> Callable[[float, str | None], bool]:
    """Whether a shadow read made at a moment with a control database raced a move: a process
    reads the old primary for up to its phase cache time after a flip or a rollback, and what
    that read compares is the move in flight, not the data."""
    lookup = primary_at(history)

    def raced(moment: float, control: str | None) -> bool:
        primary = lookup(moment)
        return primary is not None and control is not None and control != primary

    return raced


def readiness(
    sqlite: sa.Engine, phases: PhaseStore, shadow: ShadowReads | None, settings: Settings, *, required: bool = True
) -> tuple[bool, str]:
    """The shadow check of a move that changes the primary: mismatch rate over the recent window.

    HRP_SHADOW_WINDOW (default 1h): how far back; HRP_SHADOW_MAX_RATE (default 0): the highest
    mismatch rate allowed; HRP_SHADOW_MIN_READS (default 100): reads that must have been compared.
    Not `required` (a file without the HRP tables: only an app integrated with HrpCutover reads
    through the layer): not applicable while no read was compared in the window, else the same check.
    """
    window_text, max_rate, min_reads = settings.shadow_window, settings.shadow_max_rate, settings.shadow_min_reads
    window = parse_duration(window_text)
    if shadow is not None:
        shadow.flush(timeout=5.0)
    summary = mismatch_summary(sqlite, window, raced=raced_a_move(phases.history(200)))
    compared, mismatched = summary["compared"], summary["mismatches"]
    if compared == 0 and not required:
        return True, (f"not applicable: no read through the layer was compared in the last {window_text}"
                      " (the file has no HRP tables; an app integrated with HrpCutover would show its reads here)")
    rate = summary["rate"] or 0.0
    detail = (
        f"{mismatched} mismatched of {compared} compared reads in the last {window_text}"
        f" (rate {rate:.4%}, max {max_rate:.4%}; at least {min_reads} reads,"
        f" HRP_SHADOW_WINDOW/HRP_SHADOW_MAX_RATE/HRP_SHADOW_MIN_READS)"
    )
    if compared < min_reads:
        return False, "too few shadow reads: " + detail + "; let shadow reads run (`hrp-cutover report`)"
    if rate > max_rate:
        return False, detail + "; see `hrp-cutover report`"
    return True, detail
