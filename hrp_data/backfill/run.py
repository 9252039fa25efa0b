"""The backfill: copy every legacy row into PostgreSQL while the app keeps writing.

It runs in phase dual_write (or shadow): SQLite is the primary, and every
live write reaches PostgreSQL through the outbox and the one apply path
(hrp_data.cutover.apply). The backfill copies what existed before, table by table,
parents before children (`copy_order`), and never overwrites what the live
path wrote.

Per table, a batch at a time (keyset pages on the primary key, see
hrp_data.backfill.legacy_rows):
1. read the raw rows with plain sqlite3 and convert every value with
   adapters.convert.to_postgres; a row with a rejected value is quarantined;
2. COPY the converted rows into a temporary staging table (adapters.pg_copy)
   and merge with `INSERT ... SELECT ... ON CONFLICT (key) DO NOTHING`: a row
   the live path already wrote is newer than our copy, so it stays. A merge
   refused by a foreign key finds the rows whose parent PostgreSQL lacks and
   quarantines them (orphan_foreign_key when SQLite lacks the parent too:
   production ran with foreign keys off); any other refusal is retried row
   by row and the refused rows quarantined with the constraint's name;
3. in the same transaction, record the quarantine entries and advance the
   table's checkpoint (hrp_cutover_backfill), so a run killed at any moment
   resumes exactly after its last commit (hrp_data.backfill.state);
4. after the commit, re-check the batch's key range for zombies (below).

No zombies. A row deleted in SQLite after we read it but before our merge
committed would be resurrected: its delete may already have been applied to
PostgreSQL (a no-op, the row was not there yet) before our insert. So after
each commit the backfill lists the keys PostgreSQL holds in the batch's range
(low, high], subtracts the keys SQLite holds in that range now, and hands
the difference to hrp_data.cutover.apply.apply_keys, which re-reads each key in
SQLite under the key's advisory lock and deletes it in PostgreSQL if it is
still gone (or writes its current image if it came back): the same apply
path as every live write. A delete that lands after the re-check has its own
outbox entry, applied after our commit, so it finds the row and deletes it.
The re-checked range is recorded with the next commit; a resumed run first
re-checks the range its predecessor had not.

Rows refused by a constraint get one more try through apply_keys after the
commit (the live image may no longer conflict), and leave the quarantine
when it succeeds. Rows quarantined as parent_missing (their parent is a live
write still on its way) are retried at the end of the table; everything in
quarantine is retried with --retry-quarantined after the operator fixed it.

While a table is copied its secondary indexes and the foreign-key triggers
of the backfill's own session are held back, and given back after it: the
indexes built once, the foreign keys checked with one anti-join each, whose
orphans are quarantined as above (hrp_data.backfill.holds).

Reading and converting (worker processes for the big tables,
hrp_data.backfill.read_pool) overlaps with PostgreSQL's work (the batch writer's
thread, which owns the bulk connection: hrp_data.backfill.batch_writer), a few batches
ahead. The bulk
connection commits asynchronously (synchronous_commit=off): a PostgreSQL
crash can lose the last commits, but then their rows and their checkpoint
together, and the run repeats them. After the last table: identities past the
largest ids, ANALYZE, and the run marked complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg2
import psycopg2.extensions
import structlog

from adapters import pg_copy
from adapters.catalog import quote
from adapters.postgres import bump_identity, create_postgres_engine
from hrp_data.backfill import holds
from hrp_data.backfill import state
from hrp_data.backfill import legacy_file, legacy_rows, quarantine, read_pool
from hrp_data.backfill.state import TableStats, backfill_status
from hrp_data.backfill.batch_writer import BatchWriter, Work, WriterContext, staging_table
from hrp_data.cutover.dual_write import Cutover
from hrp_data.backfill.legacy_rows import Key, TableReader
from hrp_data.cutover.phases import PHASES, POSTGRES, SQLITE
from hrp_data.flip import journal as move_journal
from hrp_data.backfill.quarantine import quarantine_rows
from shadow.redact import redact_table_key
from hrp_data.session_locks import who_holds

__all__ = [
    "Options",
    "Listener",
    "TableStats",
    "BackfillResult",
    "BackfillRefused",
    "BackfillInterrupted",
    "run_backfill",
    "check_phase",
    "backfill_status",
    "quarantine_rows",
]

log = structlog.get_logger(__name__)

BATCH_SIZE = 10_000
SESSION_OPTIONS = "-c statement_timeout=0 -c timezone=UTC -c synchronous_commit=off -c hrp_cutover.applying=on"
"""The backfill's own direct sessions: unbounded statements, and every write they make is the
layer's (not captured again, let through the guard on the secondary)."""


class BackfillRefused(RuntimeError):
    """The backfill cannot start (or go on); the message says why and what to do."""


class BackfillInterrupted(RuntimeError):
    """Stopped at a batch boundary on request; everything up to the checkpoint is committed."""

    def __init__(self, message: str, result: "BackfillResult"):
        super().__init__(message)
        self.result = result


@dataclasses.dataclass(frozen=True)
class Options:
    tables: tuple[str, ...] | None = None
    batch_size: int = BATCH_SIZE
    max_rows_per_sec: float | None = None
    restart: bool = False
    retry_quarantined: bool = False
    workers: int | None = None
    """Processes that read and convert pages (None: one per core, at most 4, for tables of
    read_pool.POOL_MIN_ROWS rows or more; 0: all in this thread)."""
    leave_extra_columns: bool = False
    """Copy HRP tables whose legacy file has columns beyond the contract, without those columns
    (by default that is refused: their values would not reach PostgreSQL)."""


class Listener:
    """What a run reports as it goes (the CLI draws progress bars from it; tests hook in)."""

    def table_started(self, table: str, done: int, total: int) -> None: ...

    def batch_read(self, table: str, keys: list[Key]) -> None:
        """Called after a batch was read from SQLite, before it is merged into PostgreSQL."""

    def progress(self, table: str, done: int, total: int) -> None: ...

    def table_finished(self, table: str, stats: "TableStats") -> None: ...


@dataclasses.dataclass
class BackfillResult:
    tables: dict[str, TableStats]
    complete: bool

    def as_json(self) -> dict[str, Any]:
        return {"tables": {name: s.as_json() for name, s in self.tables.items()}, "complete": self.complete}


def copy_order(tables: Sequence[Any]) -> list[str]:
    """Parents before children; among the tables whose parents are placed, first the one whose
    subtree (itself and the tables that need it) holds the most secondary indexes, so that the
    big index builds start early and overlap the copies that follow. A self-reference does not
    order; tables that reference each other (a cycle) go in the catalog's order, and the rows
    whose parent comes later wait in quarantine as parent_missing and are retried at the end."""
    by_name = {t.name: t for t in tables}

    def parents(table: Any) -> set[str]:
        return {k.column.table.name for k in table.foreign_keys} & set(by_name) - {table.name}

    def subtree(table: Any, seen: frozenset = frozenset()) -> set[str]:
        below = {table.name}
        for child in tables:
            if table.name in parents(child) and child.name not in seen | {table.name}:
                below |= subtree(child, seen | {table.name})
        return below

    weight = {t.name: sum(len(by_name[n].indexes) for n in subtree(t)) for t in tables}
    order: list[str] = []
    left = list(tables)
    while left:
        ready = [t for t in left if parents(t) <= set(order)] or [left[0]]
        table = max(ready, key=lambda t: (weight[t.name], -left.index(t)))
        order.append(table.name)
        left.remove(table)
    return order


def check_phase(cutover: Cutover, *, fresh: bool = True, running: bool = False) -> None:
    """Refuse unless SQLite is the primary and PostgreSQL the secondary (dual_write, shadow)."""
    record = cutover.phase(fresh=fresh)
    row = PHASES[record.phase]
    if row.primary == SQLITE and row.secondary == POSTGRES:
        return
    prefix = f"the phase changed to {record.phase.value}" if running else f"the phase is {record.phase.value}"
    stopped = "; the backfill stopped at a batch boundary with its checkpoint committed" if running else ""
    if row.primary == POSTGRES:
        raise BackfillRefused(
            f"{prefix}: PostgreSQL is the primary, the backfill runs only in dual_write or shadow{stopped}"
            " (go back with `hrp-cutover rollback` first)"
        )
    raise BackfillRefused(
        f"{prefix}: the backfill runs only in dual_write or shadow, so that live writes reach"
        f" PostgreSQL meanwhile{stopped}; run `hrp-cutover phase set dual_write` first"
    )


def run_backfill(
    cutover: Cutover,
    options: Options = Options(),
    *,
    listener: Listener | None = None,
    stop: threading.Event | None = None,
) -> BackfillResult:
    """Copy the legacy tables into PostgreSQL (resuming from the checkpoints); see the module doc.

    `cutover` must not bound PostgreSQL calls with a wait callback (COPY cannot
    run under one): build it with `open_cutover(settings, bound_calls=False)`.
    Setting `stop` ends the run at the next batch boundary (BackfillInterrupted).
    """
    if options.batch_size < 1:
        raise BackfillRefused("--batch-size must be at least 1")
    if psycopg2.extensions.get_wait_callback() is not None:
        raise BackfillRefused(
            "this process bounds PostgreSQL calls with a wait callback, under which COPY cannot run:"
            " run the backfill in its own process (`hrp-cutover backfill`)"
        )
    return _Run(cutover, options, listener or Listener(), stop or threading.Event()).execute()


class _Run:
    def __init__(self, cutover: Cutover, options: Options, listener: Listener, stop: threading.Event):
        self.cutover = cutover
        self.options = options
        self.listener = listener
        self.stop = stop
        self.path = legacy_rows.sqlite_path(cutover.settings.sqlite_url)
        self.tables = cutover.catalog.postgres_tables()
        self.deferred: dict[str, set[str]] = {}
        self.readers = legacy_rows.readers(cutover.catalog)
        self.hooked = type(listener).batch_read is not Listener.batch_read

    # -- the run ------------------------------------------------------------

    def execute(self) -> BackfillResult:
        check_phase(self.cutover)
        if self.cutover.postgres is None:
            raise BackfillRefused("HRP_POSTGRES_URL is not set: give --postgres URL")
        try:
            legacy_file.require_contract(self.path)
        except legacy_file.LegacyFileError as error:
            raise BackfillRefused(str(error)) from None
        engine = create_postgres_engine(
            self.cutover.settings.require_postgres(),
            application_name="hrp-cutover-backfill",
            pool_size=2,
            max_overflow=0,
            connect_args={"options": SESSION_OPTIONS},
        )
        raw = engine.raw_connection()
        builder = engine.raw_connection()
        self.sqlite = legacy_rows.connect(self.path)
        self.checker = legacy_rows.connect(self.path)  # the writer thread's own connection
        if self.options.workers is None:  # automatic: a pool for the big tables only
            self.pages = read_pool.PageReader(self.path, self.sqlite, read_pool.default_workers())
        else:
            self.pages = read_pool.PageReader(self.path, self.sqlite, self.options.workers, min_rows=0)
        try:
            self.pg = raw.driver_connection
            self.pg.autocommit = False
            self.builder = holds.IndexBuilder(builder.driver_connection).start()
            try:
                return self._execute()
            finally:
                self.builder.stop()
        finally:
            try:
                self.pages.close()
                builder.close()
                raw.close()
            finally:
                engine.dispose()
                self.sqlite.close()
                self.checker.close()

    def _execute(self) -> BackfillResult:
        wanted = [name for name in self.options.tables or copy_order(list(self.tables.values()))
                  if name in self.readers]
        if any(self.readers[name].count(self.sqlite) >= self.pages.min_rows for name in wanted):
            self.pages.start()  # the workers start while the run sets up and the first, small tables copy
        with self.pg.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", (state.RUN_LOCK,))
            if not cursor.fetchone()[0]:
                raise BackfillRefused(
                    "another backfill is running against this PostgreSQL database"
                    + who_holds(self.cutover.postgres, "backfill run")
                )
            state.install(cursor)
            holds.install(cursor)
            quarantine.install(cursor)
            self._check_schema(cursor)
            if self.options.restart:
                state.clear(cursor)
                log.warning("backfill.restart", detail="checkpoints cleared; copied rows are kept")
            elif (outdated := self._outdated_by(cursor)) is not None:
                state.clear(cursor)  # a resume would skip tables whose copy no longer vouches for them
                log.warning("backfill.copying_again", reason=outdated,
                            detail="checkpoints older than the evidence reset cleared; copied rows are kept")
            self.pg.commit()
            self.checkpoints = state.load(cursor)
            self.constraint_columns = self._constraint_columns(cursor)
            self.pg.commit()
        selected = self._selected()
        self._count_rows(selected)
        order = copy_order(list(self.tables.values()))
        self.deferred = {
            name: {key.column.table.name for key in self.tables[name].foreign_keys
                   if key.column.table.name in order[order.index(name) + 1 :]}
            for name in order
        }
        """Per table, the parents copied after it (a cycle): their foreign keys are checked at the end."""
        for name in selected:
            self._copy_table(self.readers[name])
            if self.stop.is_set():
                self.builder.join(self.pg)
                holds.restore_indexes(self.pg)
                raise self._interrupted(name)
            self._after_table(self.readers[name])
        if not self.stop.is_set():
            self._retry_cycles(selected)
        self.builder.join(self.pg)
        holds.restore_indexes(self.pg)  # what a killed run of another table left held
        with self.pg.cursor() as cursor:
            self.checkpoints = state.load(cursor)
            self.pg.commit()
        complete = all(self.checkpoints.get(name) and self.checkpoints[name].done for name in self.tables)
        if complete:
            self._finish()
        return BackfillResult(self._final_stats(), complete)

    def _check_schema(self, cursor: Any) -> None:
        for table in self.tables.values():
            cursor.execute("SELECT to_regclass(%s)", (quote(table.name),))
            if cursor.fetchone()[0] is None:
                raise BackfillRefused(
                    f"PostgreSQL has no table {table.name}: run `hrp-cutover schema` first"
                )

    def _constraint_columns(self, cursor: Any) -> dict[str, str]:
        cursor.execute(
            "SELECT c.conname, a.attname FROM pg_constraint c JOIN pg_attribute a"
            " ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]"
            " WHERE c.connamespace = 'public'::regnamespace"
        )
        return dict(cursor.fetchall())

    def _selected(self) -> list[str]:
        names = copy_order(list(self.tables.values()))
        if self.options.tables is None:
            return names
        unknown = [n for n in self.options.tables if n not in names]
        if unknown:
            raise BackfillRefused(f"unknown table {', '.join(unknown)}; use one of: {', '.join(names)}")
        selected = [n for n in names if n in self.options.tables]
        for name in selected:
            for key in self.tables[name].foreign_keys:
                parent = key.column.table.name
                if parent == name:
                    continue
                done = self.checkpoints.get(parent)
                if parent not in selected and not (done and done.done):
                    raise BackfillRefused(
                        f"{name} needs its parent table {parent} backfilled first:"
                        f" add {parent} to --tables (or run without --tables)"
                    )
        return selected

    def _count_rows(self, selected: list[str]) -> None:
        """Record the rows each table of this run will read in all (read so far plus what SQLite
        holds past its checkpoint), so that backfill_status can tell the rows and seconds left."""
        with self.pg.cursor() as cursor:
            for name in selected:
                checkpoint = self.checkpoints.get(name)
                if checkpoint is not None and checkpoint.done:
                    continue
                after = None if checkpoint is None else checkpoint.last_key
                read = 0 if checkpoint is None else checkpoint.stats.read
                state.set_total(cursor, name, read + self.readers[name].count(self.sqlite, after))
            self.pg.commit()

    def _interrupted(self, name: str) -> BackfillInterrupted:
        with self.pg.cursor() as cursor:
            self.checkpoints = state.load(cursor)
            self.pg.commit()
        where = self.checkpoints.get(name)
        key = ("the start" if where is None or where.last_key is None
               else f"key {redact_table_key(self.readers[name].table, where.last_key)}")
        return BackfillInterrupted(
            f"interrupted: stopped at a batch boundary, checkpoint committed ({name} up to {key});"
            " run `hrp-cutover backfill` again to resume",
            BackfillResult(self._final_stats(), False),
        )

    # -- one table ----------------------------------------------------------

    def _copy_table(self, reader: TableReader) -> None:
        name = reader.name
        with self.pg.cursor() as cursor:
            state.start_table(cursor, name)
            pg_copy.create_staging(cursor, name, staging_table(name))
            self.pg.commit()
            checkpoint = state.load(cursor)[name]
            self.has_quarantine = quarantine.count(cursor, name) > 0
            self.pg.commit()
        self.checkpoints[name] = checkpoint
        if checkpoint.done:
            self.listener.table_started(name, checkpoint.stats.read, checkpoint.stats.read)
            return
        remaining = reader.count(self.sqlite, checkpoint.last_key)
        with self.pg.cursor() as cursor:
            state.set_total(cursor, name, checkpoint.stats.read + remaining)
            if remaining >= checkpoint.stats.copied + checkpoint.stats.present:  # building once beats maintaining per row
                holds.hold_indexes(cursor, name)
            self.pg.commit()
        held_keys = holds.hold_foreign_keys(self.pg)
        try:
            self._copy_rows(reader, checkpoint, remaining)
        finally:
            if held_keys:
                with contextlib.suppress(psycopg2.Error):  # a broken connection ends the session anyway
                    self.pg.rollback()
                    holds.check_foreign_keys(self.pg)

    def _copy_rows(self, reader: TableReader, checkpoint: state.Checkpoint, remaining: int) -> None:
        name = reader.name
        writer = BatchWriter(self._writer_context(), reader, checkpoint)
        if checkpoint.last_key is not None and checkpoint.rechecked_key != checkpoint.last_key:
            writer.recheck_range(checkpoint.rechecked_key, checkpoint.last_key)
            writer.rechecked = checkpoint.last_key
        total = checkpoint.stats.read + remaining
        self.listener.table_started(name, checkpoint.stats.read, total)
        writer.total = total
        after = checkpoint.last_key
        size = self.options.batch_size
        started, sent = time.monotonic(), 0
        writer.start()
        try:
            if not self.stop.is_set():
                check_phase(self.cutover, fresh=False, running=True)
                pages = self.pages.pages(
                    reader, after, size, remaining, with_keys=self.has_quarantine, want_keys=self.hooked
                )
                for page in pages:
                    if self.hooked:
                        self.listener.batch_read(name, page.keys)
                    writer.submit(Work(page.converted, page.read, after, page.high, mark=page.mark))
                    after, sent = page.high, sent + page.read
                    self._throttle(started, sent)
                    if self.stop.is_set():
                        break
                    check_phase(self.cutover, fresh=False, running=True)
        finally:
            writer.close()
        with self.pg.cursor() as cursor:
            writer.save_counts(cursor)
            if not self.stop.is_set():
                state.finish_table(cursor, name, writer.rechecked)
            self.pg.commit()

    def _throttle(self, started: float, sent: int) -> None:
        rate = self.options.max_rows_per_sec
        if not rate:
            return
        wake = started + sent / rate
        while not self.stop.is_set():
            left = wake - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.1))

    def _retry_cycles(self, selected: list[str]) -> None:
        """Tables with a foreign key onto a table copied after them (a cycle): now that every table
        is copied, those foreign keys are checked (orphans quarantined) and the rows that waited for
        a parent (parent_missing) are retried."""
        for name in selected:
            if self.deferred.get(name):
                writer = BatchWriter(self._writer_context(), self.readers[name], self.checkpoints[name])
                writer.quarantine_orphans(everything=True)
                self._after_table(self.readers[name])

    def _after_table(self, reader: TableReader) -> None:
        """Retries (parent_missing always, everything with --retry-quarantined), stale entries, counts."""
        name = reader.name
        writer = BatchWriter(self._writer_context(), reader, self.checkpoints[name])
        self.builder.submit(name, holds.held(self.pg, name))  # built while the orphans are sought and the next table copied
        writer.quarantine_orphans()
        null_keyed = reader.null_keyed(self.sqlite)
        if null_keyed:  # outside the keyset walk: quarantined here, by the same conversion
            writer.write(Work(reader.convert(null_keyed, with_keys=True), len(null_keyed),
                              retry_keys=[reader.key_of(row) for row in null_keyed]))
        with self.pg.cursor() as cursor:
            pg_copy.create_staging(cursor, name, staging_table(name))
            reasons = None if self.options.retry_quarantined else [quarantine.PARENT_MISSING]
            keys = quarantine.keys(cursor, name, reasons)
            self.pg.commit()
        if keys:
            log.info("backfill.retry", table=name, rows=len(keys))
            writer.retry(keys)
        writer.drop_stale_quarantine()
        with self.pg.cursor() as cursor:
            state.set_quarantined(cursor, name, quarantine.count(cursor, name))
            cursor.execute(f"DROP TABLE IF EXISTS pg_temp.{quote(staging_table(name))}")
            self.pg.commit()
            self.checkpoints[name] = state.load(cursor)[name]
            self.pg.commit()
        self.listener.table_finished(name, self.checkpoints[name].stats)

    # -- the end --------------------------------------------------------------

    def _finish(self) -> None:
        with self.cutover.postgres.begin() as connection:
            for table in self.tables.values():
                if table.autoincrement_column is not None:
                    bump_identity(connection, table)
        for table in self.tables.values():
            if table.name not in self.builder.analyzed:
                holds.analyze(self.pg, table.name)
        with self.pg.cursor() as cursor:
            state.mark_run(cursor, "complete")
            self.pg.commit()
        log.info("backfill.complete")

    def _outdated_by(self, cursor: Any) -> str | None:
        """Why the checkpoints no longer count (an evidence reset after a table or the run finished:
        a move stopped capture, a move failed, a schema change was carried), None while they do."""
        reset = move_journal.evidence_reset(self.cutover.sqlite)
        finished = state.oldest_finish(cursor)
        if reset is None or finished is None or finished >= reset[0]:
            return None
        return reset[1]

    def _final_stats(self) -> dict[str, TableStats]:
        return {
            name: checkpoint.stats
            for name in self.tables
            if (checkpoint := self.checkpoints.get(name)) is not None
        }

    def _writer_context(self) -> WriterContext:
        return WriterContext(
            pg=self.pg,
            sqlite=self.sqlite,
            checker=self.checker,
            readers=self.readers,
            constraint_columns=self.constraint_columns,
            has_quarantine=self.has_quarantine,
            primary=self.cutover.sqlite,
            secondary=self.cutover.postgres,
            still_primary=self.still_primary,
            listener=self.listener,
            batch_size=self.options.batch_size,
            tables=self.cutover.captured,
            deferred=self.deferred,
        )

    def still_primary(self) -> bool:
        return self.cutover.phase_row(fresh=True).primary == SQLITE
