"""The backfill: copy every legacy row into PostgreSQL while the app keeps writing.

It runs in phase dual_write (or shadow): SQLite is the primary, and every
live write reaches PostgreSQL through the outbox and the one apply path
(hrp_data.apply). The backfill copies what existed before, table by table,
parents before children (models.TABLES order), and never overwrites what the
live path wrote.

Per table, a batch at a time (keyset pages on the primary key, see
hrp_data.legacy_rows):
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
   resumes exactly after its last commit (hrp_data.backfill_state);
4. after the commit, re-check the batch's key range for zombies (below).

No zombies. A row deleted in SQLite after we read it but before our merge
committed would be resurrected: its delete may already have been applied to
PostgreSQL (a no-op, the row was not there yet) before our insert. So after
each commit the backfill lists the keys PostgreSQL holds in the batch's range
(low, high], subtracts the keys SQLite holds in that range now, and hands
the difference to hrp_data.apply.apply_keys, which re-reads each key in
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

Reading and converting (this thread) overlaps with PostgreSQL's work (a
writer thread that owns the bulk connection), one batch ahead. The bulk
connection commits asynchronously (synchronous_commit=off): a PostgreSQL
crash can lose the last commits, but then their rows and their checkpoint
together, and the run repeats them. After the last table: identities past the
largest ids, ANALYZE, and the run marked complete.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import sqlalchemy as sa
import structlog

from adapters import pg_copy
from adapters.postgres import APPLYING_SETTING, bump_identity, create_postgres_engine
from hrp_data import backfill_state as state
from hrp_data import legacy_rows, quarantine
from hrp_data.apply import KeyRef, apply_keys
from hrp_data.backfill_state import backfill_status
from hrp_data.dual_write import Cutover
from hrp_data.errors import describe_error
from hrp_data.legacy_rows import Converted, Key, Reject, TableReader, shown_value
from hrp_data.models import TABLES
from hrp_data.phases import PHASES, POSTGRES, SQLITE
from hrp_data.quarantine import quarantine_rows

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
TABLE_MAP = {table.name: table for table in TABLES}
SESSION_OPTIONS = "-c statement_timeout=0 -c timezone=UTC -c synchronous_commit=off"
QUEUE_AHEAD = 2
WRITE_ATTEMPTS = 5
TRANSIENT = (
    psycopg2.errors.DeadlockDetected,
    psycopg2.errors.SerializationFailure,
    psycopg2.errors.LockNotAvailable,
)
DIRECT_FAILURES_MAX = 4
"""After this many failed plain COPYs (conflicts count 1, other errors 2) a table only merges."""


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


class Listener:
    """What a run reports as it goes (the CLI draws progress bars from it; tests hook in)."""

    def table_started(self, table: str, done: int, total: int) -> None: ...

    def batch_read(self, table: str, keys: list[Key]) -> None:
        """Called after a batch was read from SQLite, before it is merged into PostgreSQL."""

    def progress(self, table: str, done: int, total: int) -> None: ...

    def table_finished(self, table: str, stats: "TableStats") -> None: ...


@dataclasses.dataclass
class TableStats:
    read: int = 0
    copied: int = 0
    present: int = 0
    quarantined: int = 0
    removed: int = 0
    seconds: float = 0.0

    @property
    def rows_per_s(self) -> float | None:
        return self.read / self.seconds if self.seconds > 0 else None

    def as_json(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "copied": self.copied,
            "present": self.present,
            "quarantined": self.quarantined,
            "removed": self.removed,
            "seconds": round(self.seconds, 3),
            "rows_per_s": None if self.rows_per_s is None else round(self.rows_per_s),
        }


@dataclasses.dataclass
class BackfillResult:
    tables: dict[str, TableStats]
    complete: bool

    def as_json(self) -> dict[str, Any]:
        return {"tables": {name: s.as_json() for name, s in self.tables.items()}, "complete": self.complete}


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
    run under one): build it with `Cutover(settings, applier=False, bound_calls=False)`.
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


@dataclasses.dataclass
class _Work:
    """A batch for the writer: converted rows plus where they came from."""

    converted: Converted
    read: int
    low: Key | None = None
    high: Key | None = None
    retry_keys: list[Key] | None = None


class _Run:
    def __init__(self, cutover: Cutover, options: Options, listener: Listener, stop: threading.Event):
        self.cutover = cutover
        self.options = options
        self.listener = listener
        self.stop = stop
        self.path = legacy_rows.sqlite_path(cutover.settings.sqlite_url)
        self.readers = legacy_rows.readers()
        self.hooked = type(listener).batch_read is not Listener.batch_read

    # -- the run ------------------------------------------------------------

    def execute(self) -> BackfillResult:
        check_phase(self.cutover)
        if self.cutover.postgres is None:
            raise BackfillRefused("HRP_POSTGRES_URL is not set: give --postgres URL")
        engine = create_postgres_engine(
            self.cutover.settings.require_postgres(),
            application_name="hrp-cutover-backfill",
            pool_size=1,
            max_overflow=0,
            connect_args={"options": SESSION_OPTIONS},
        )
        raw = engine.raw_connection()
        self.sqlite = legacy_rows.connect(self.path)
        self.checker = legacy_rows.connect(self.path)  # the writer thread's own connection
        try:
            self.pg = raw.driver_connection
            self.pg.autocommit = False
            return self._execute()
        finally:
            try:
                raw.close()
            finally:
                engine.dispose()
                self.sqlite.close()
                self.checker.close()

    def _execute(self) -> BackfillResult:
        with self.pg.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", (state.RUN_LOCK,))
            if not cursor.fetchone()[0]:
                raise BackfillRefused("another backfill is running against this PostgreSQL database")
            state.install(cursor)
            quarantine.install(cursor)
            self._check_schema(cursor)
            if self.options.restart:
                state.clear(cursor)
                log.warning("backfill.restart", detail="checkpoints cleared; copied rows are kept")
            self.pg.commit()
            self.checkpoints = state.load(cursor)
            self.constraint_columns = self._constraint_columns(cursor)
            self.pg.commit()
        selected = self._selected()
        for name in selected:
            self._copy_table(self.readers[name])
            if self.stop.is_set():
                raise self._interrupted(name)
            self._after_table(self.readers[name])
        with self.pg.cursor() as cursor:
            self.checkpoints = state.load(cursor)
            self.pg.commit()
        complete = all(self.checkpoints.get(t.name) and self.checkpoints[t.name].done for t in TABLES)
        if complete:
            self._finish()
        return BackfillResult(self._final_stats(), complete)

    def _check_schema(self, cursor: Any) -> None:
        for table in TABLES:
            cursor.execute("SELECT to_regclass(%s)", (f'"{table.name}"',))
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
        names = [t.name for t in TABLES]
        if self.options.tables is None:
            return names
        unknown = [n for n in self.options.tables if n not in names]
        if unknown:
            raise BackfillRefused(f"unknown table {', '.join(unknown)}; use one of: {', '.join(names)}")
        selected = [n for n in names if n in self.options.tables]
        for name in selected:
            for key in TABLE_MAP[name].foreign_keys:
                parent = key.column.table.name
                done = self.checkpoints.get(parent)
                if parent not in selected and not (done and done.done):
                    raise BackfillRefused(
                        f"{name} needs its parent table {parent} backfilled first:"
                        f" add {parent} to --tables (or run without --tables)"
                    )
        return selected

    def _interrupted(self, name: str) -> BackfillInterrupted:
        with self.pg.cursor() as cursor:
            self.checkpoints = state.load(cursor)
            self.pg.commit()
        where = self.checkpoints.get(name)
        key = "the start" if where is None or where.last_key is None else f"key {list(where.last_key)}"
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
            pg_copy.create_staging(cursor, name, self._staging(name))
            self.pg.commit()
            checkpoint = state.load(cursor)[name]
            self.has_quarantine = quarantine.count(cursor, name) > 0
            self.pg.commit()
        self.checkpoints[name] = checkpoint
        if checkpoint.done:
            self.listener.table_started(name, checkpoint.read, checkpoint.read)
            return
        writer = _Writer(self, reader, checkpoint)
        if checkpoint.last_key is not None and checkpoint.rechecked_key != checkpoint.last_key:
            writer.recheck_range(checkpoint.rechecked_key, checkpoint.last_key)
            writer.rechecked = checkpoint.last_key
        total = checkpoint.read + reader.count(self.sqlite, checkpoint.last_key)
        self.listener.table_started(name, checkpoint.read, total)
        writer.total = total
        after = checkpoint.last_key
        size = self.options.batch_size
        started, sent = time.monotonic(), 0
        writer.start()
        try:
            while not self.stop.is_set():
                check_phase(self.cutover, fresh=False, running=True)
                rows = reader.page(self.sqlite, after, size)
                if not rows:
                    break
                high = reader.key_of(rows[-1])
                if self.hooked:
                    self.listener.batch_read(name, [reader.key_of(row) for row in rows])
                converted = reader.convert(rows, with_keys=self.has_quarantine)
                writer.submit(_Work(converted, len(rows), after, high))
                after, sent = high, sent + len(rows)
                self._throttle(started, sent)
                if len(rows) < size:
                    break
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

    def _after_table(self, reader: TableReader) -> None:
        """Retries (parent_missing always, everything with --retry-quarantined), stale entries, counts."""
        name = reader.name
        writer = _Writer(self, reader, self.checkpoints[name])
        with self.pg.cursor() as cursor:
            pg_copy.create_staging(cursor, name, self._staging(name))
            reasons = None if self.options.retry_quarantined else [quarantine.PARENT_MISSING]
            keys = quarantine.keys(cursor, name, reasons)
            self.pg.commit()
        if keys:
            log.info("backfill.retry", table=name, rows=len(keys))
            writer.retry(keys)
        writer.drop_stale_quarantine()
        with self.pg.cursor() as cursor:
            state.set_quarantined(cursor, name, quarantine.count(cursor, name))
            cursor.execute(f"DROP TABLE IF EXISTS {pg_copy.quote_ident(self._staging(name))}")
            self.pg.commit()
            self.checkpoints[name] = state.load(cursor)[name]
            self.pg.commit()
        self.listener.table_finished(name, self._stats_of(self.checkpoints[name]))

    @staticmethod
    def _staging(name: str) -> str:
        return f"hrp_cutover_stage_{name}"

    # -- the end --------------------------------------------------------------

    def _finish(self) -> None:
        with self.cutover.postgres.begin() as connection:
            for table in TABLES:
                if table.autoincrement_column is not None:
                    bump_identity(connection, table)
        self.pg.autocommit = True
        try:
            with self.pg.cursor() as cursor:
                for table in TABLES:
                    cursor.execute(f"ANALYZE {pg_copy.quote_ident(table.name)}")
        finally:
            self.pg.autocommit = False
        with self.pg.cursor() as cursor:
            state.mark_run(cursor, "complete")
            self.pg.commit()
        log.info("backfill.complete")

    def _stats_of(self, checkpoint: state.Checkpoint) -> TableStats:
        return TableStats(
            checkpoint.read, checkpoint.copied, checkpoint.present,
            checkpoint.quarantined, checkpoint.removed, checkpoint.seconds,
        )

    def _final_stats(self) -> dict[str, TableStats]:
        return {
            name: self._stats_of(checkpoint)
            for name in (t.name for t in TABLES)
            if (checkpoint := self.checkpoints.get(name)) is not None
        }

    def still_primary(self) -> bool:
        return self.cutover.phase_row(fresh=True).primary == SQLITE


_STOP = object()


class _Writer:
    """PostgreSQL's half of one table: merge batches, record checkpoints, re-check for zombies."""

    def __init__(self, run: _Run, reader: TableReader, checkpoint: state.Checkpoint):
        self.run = run
        self.reader = reader
        self.name = reader.name
        self.pg = run.pg
        self.staging = run._staging(reader.name)
        self.rechecked: Key | None = checkpoint.rechecked_key
        self.done = checkpoint.read
        self.total = 0
        self.pending_removed = 0
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_AHEAD)
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        self.last_commit = time.monotonic()
        self.direct_failures = 0

    # -- the thread --------------------------------------------------------

    def start(self) -> None:
        self.last_commit = time.monotonic()
        self.thread = threading.Thread(target=self._loop, name=f"backfill-{self.name}", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            work = self.queue.get()
            if work is _STOP or self.error is not None:
                if work is _STOP:
                    return
                continue
            try:
                self.write(work)
            except BaseException as error:  # handed to the reading thread
                self.error = error

    def submit(self, work: _Work) -> None:
        while True:
            self._raise()
            try:
                self.queue.put(work, timeout=0.2)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        if self.thread is not None:
            while self.thread.is_alive():
                try:
                    self.queue.put(_STOP, timeout=0.2)
                    break
                except queue.Full:
                    continue
            self.thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    # -- one batch -----------------------------------------------------------

    def write(self, work: _Work) -> None:
        """Merge one batch and commit it with its quarantine entries and checkpoint; then re-check."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                rejects = self._commit(work)
                break
            except TRANSIENT as error:  # e.g. a deadlock with a live apply: the whole batch again
                if attempt == WRITE_ATTEMPTS:
                    raise
                log.warning("backfill.batch_retried", table=self.name, attempt=attempt, error=describe_error(error))
                time.sleep(0.05 * attempt)
        refused_keys = [r.key for r in rejects if r.reason == quarantine.CONSTRAINT]
        if work.retry_keys is not None:
            self.recheck_keys(work.retry_keys)
        else:
            self.recheck_range(work.low, work.high)
            self.rechecked = work.high
            self.done += work.read
            self.run.listener.progress(self.name, self.done, max(self.total, self.done))
        if refused_keys:
            self._apply_refused(refused_keys)

    def _commit(self, work: _Work) -> list[Reject]:
        """One transaction: the rows, their quarantine entries, the checkpoint. Returns the rejects."""
        converted = work.converted
        rejects = list(converted.rejects)
        copied = present = 0
        with self.pg.cursor() as cursor:
            try:
                cursor.execute("SELECT set_config(%s, 'on', true)", (APPLYING_SETTING,))
                if converted.staged:
                    copied, present, refused = self._load(cursor, work)
                    rejects += refused
                quarantined_keys = {r.key for r in rejects}
                if work.retry_keys is not None:
                    before = len(quarantine.which_quarantined(cursor, self.name, work.retry_keys))
                    quarantine.replace(cursor, self.name, work.retry_keys, rejects)
                    change = len(quarantined_keys) - before
                else:
                    quarantine.record(cursor, self.name, rejects)
                    left = 0
                    if self.run.has_quarantine and converted.staged_keys:
                        left = quarantine.remove(
                            cursor, self.name, [k for k in converted.staged_keys if k not in quarantined_keys]
                        )
                    change = len(quarantined_keys) - left
                now = time.monotonic()
                state.save_batch(
                    cursor, self.name,
                    last_key=work.high, rechecked_key=self.rechecked,
                    seconds=now - self.last_commit, batches=0 if work.retry_keys is not None else 1,
                    read=0 if work.retry_keys is not None else work.read,
                    copied=copied, present=present, quarantined=change, removed=self.pending_removed,
                )
                self.pg.commit()
            except BaseException:
                self.pg.rollback()
                raise
        self.last_commit = now
        self.pending_removed = 0
        return rejects

    def _load(self, cursor: Any, work: _Work) -> tuple[int, int, list[Reject]]:
        """COPY the batch in; returns (copied, present, rows refused by PostgreSQL)."""
        converted = work.converted
        if self.direct_failures < DIRECT_FAILURES_MAX and work.retry_keys is None and self._range_empty(cursor, work):
            cursor.execute("SAVEPOINT hrp_direct")
            try:
                pg_copy.copy_in(cursor, self.name, self.reader.columns, converted.payload)
            except psycopg2.Error as error:
                if _is_disconnect(error):
                    raise
                cursor.execute("ROLLBACK TO SAVEPOINT hrp_direct")
                self.direct_failures += 1
                if not isinstance(error, psycopg2.errors.UniqueViolation):
                    self.direct_failures += 1
            else:
                cursor.execute("RELEASE SAVEPOINT hrp_direct")
                return converted.staged, 0, []
        return self._merge(cursor, converted)

    def _range_empty(self, cursor: Any, work: _Work) -> bool:
        """PostgreSQL holds no row in the batch's key range (so a plain COPY can conflict with nothing)."""
        condition, params = self._range_condition(work.low, work.high)
        cursor.execute(f"SELECT NOT EXISTS (SELECT 1 FROM {pg_copy.quote_ident(self.name)} WHERE {condition})", params)
        return cursor.fetchone()[0]

    def _range_condition(self, low: Key | None, high: Key) -> tuple[str, list]:
        condition = f"({self._key_sql()}) <= %s"
        params: list = [_pg_bound(high)]
        if low is not None:
            condition = f"({self._key_sql()}) > %s AND " + condition
            params.insert(0, _pg_bound(low))
        return condition, params

    def _merge(self, cursor: Any, converted: Converted) -> tuple[int, int, list[Reject]]:
        """COPY into staging and merge ON CONFLICT DO NOTHING; orphans and refusals are quarantined."""
        cursor.execute("SAVEPOINT hrp_copy")
        try:
            pg_copy.copy_in(cursor, self.staging, self.reader.columns, converted.payload)
        except psycopg2.Error as error:
            if _is_disconnect(error):
                raise
            cursor.execute("ROLLBACK TO SAVEPOINT hrp_copy")
            log.warning("backfill.copy_refused", table=self.name, error=describe_error(error))
            refused = self._copy_rows(cursor, converted.payload)
        else:
            refused = []
        cursor.execute("RELEASE SAVEPOINT hrp_copy")
        staged = self._staged_count(cursor)
        for _attempt in range(3):
            cursor.execute("SAVEPOINT hrp_merge")
            try:
                copied = self._insert(cursor)
            except psycopg2.errors.ForeignKeyViolation:
                cursor.execute("ROLLBACK TO SAVEPOINT hrp_merge")
                orphans = self._orphans(cursor)
                if not orphans:
                    break
                refused += orphans
                self._unstage(cursor, sorted({r.key for r in orphans}, key=_order))
                staged = self._staged_count(cursor)
                continue
            except psycopg2.IntegrityError:
                cursor.execute("ROLLBACK TO SAVEPOINT hrp_merge")
                break
            cursor.execute("RELEASE SAVEPOINT hrp_merge")
            return copied, staged - copied, refused
        copied, present, failed = self._insert_rows(cursor)
        return copied, present, refused + failed

    def _insert(self, cursor: Any, where: str | None = None, params: Any = None) -> int:
        return pg_copy.insert_missing(
            cursor, self.staging, self.name, self.reader.columns, self.reader.key_columns, where, params
        )

    def _staged_count(self, cursor: Any) -> int:
        cursor.execute(f"SELECT count(*) FROM {pg_copy.quote_ident(self.staging)}")
        return cursor.fetchone()[0]

    def _key_sql(self, alias: str = "") -> str:
        prefix = f"{alias}." if alias else ""
        return ", ".join(prefix + pg_copy.quote_ident(c) for c in self.reader.key_columns)

    def _key_match(self, cursor: Any, keys: Sequence[Key]) -> str:
        width = len(self.reader.key_columns)
        values = ", ".join(
            cursor.mogrify("(" + ", ".join(["%s"] * width) + ")", tuple(key)).decode() for key in keys
        )
        return f"({self._key_sql()}) IN (VALUES {values})"

    def _unstage(self, cursor: Any, keys: Sequence[Key]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            cursor.execute(f"DELETE FROM {pg_copy.quote_ident(self.staging)} WHERE {self._key_match(cursor, chunk)}")

    def _copy_rows(self, cursor: Any, payload: bytes) -> list[Reject]:
        """COPY refused the batch (it should not: conversion makes valid input); find the rows, one by one."""
        refused = []
        for line in payload.decode("utf-8").splitlines():
            cursor.execute("SAVEPOINT hrp_line")
            try:
                pg_copy.copy_in(cursor, self.staging, self.reader.columns, (line + "\n").encode("utf-8"))
                cursor.execute("RELEASE SAVEPOINT hrp_line")
            except psycopg2.Error as error:
                if _is_disconnect(error):
                    raise
                cursor.execute("ROLLBACK TO SAVEPOINT hrp_line")
                fields = line.split("\t")
                key = tuple(_key_field(fields[i]) for i in self.reader.key_index)
                refused.append(Reject(key, "", "copy_refused", None, describe_error(error)))
        return refused

    def _insert_rows(self, cursor: Any) -> tuple[int, int, list[Reject]]:
        """Merge row by row, each in a savepoint; rows PostgreSQL refuses are quarantined."""
        cursor.execute(f"SELECT {self._key_sql()} FROM {pg_copy.quote_ident(self.staging)} ORDER BY {self._key_sql()}")
        keys = [tuple(row) for row in cursor.fetchall()]
        copied = present = 0
        failed: list[Reject] = []
        match = " AND ".join(f"{pg_copy.quote_ident(c)} = %s" for c in self.reader.key_columns)
        for key in keys:
            cursor.execute("SAVEPOINT hrp_row")
            try:
                inserted = self._insert(cursor, match, key)
                cursor.execute("RELEASE SAVEPOINT hrp_row")
            except psycopg2.IntegrityError as error:
                cursor.execute("ROLLBACK TO SAVEPOINT hrp_row")
                failed += self._refusal(cursor, key, error)
                continue
            copied += inserted
            present += 1 - inserted
        return copied, present, failed

    def _refusal(self, cursor: Any, key: Key, error: psycopg2.IntegrityError) -> list[Reject]:
        if isinstance(error, psycopg2.errors.ForeignKeyViolation):
            match = " AND ".join(f"s.{pg_copy.quote_ident(c)} = %s" for c in self.reader.key_columns)
            orphans = [r for r in self._orphans(cursor, match, key) if r.key == key]
            if orphans:
                return orphans
        diag = error.diag
        column = diag.column_name or self.run.constraint_columns.get(diag.constraint_name or "", "")
        value = None
        if column:
            cursor.execute(
                f"SELECT {pg_copy.quote_ident(column)}::text FROM {pg_copy.quote_ident(self.staging)}"
                f" WHERE {' AND '.join(f'{pg_copy.quote_ident(c)} = %s' for c in self.reader.key_columns)}",
                key,
            )
            found = cursor.fetchone()
            value = shown_value(column, found[0]) if found else None
        return [Reject(key, column, quarantine.CONSTRAINT, value, describe_error(error))]

    def _orphans(self, cursor: Any, where: str | None = None, params: Any = None) -> list[Reject]:
        """Staged rows whose foreign key finds no parent in PostgreSQL, classified by what SQLite holds."""
        found: list[tuple[Key, str, str, str, Any]] = []
        keys = self._key_sql("s")
        width = len(self.reader.key_columns)
        for foreign_key in self.reader.table.foreign_keys:
            column = foreign_key.parent.name
            parent, parent_column = foreign_key.column.table.name, foreign_key.column.name
            condition = f" AND {where}" if where else ""
            cursor.execute(
                f"SELECT {keys}, s.{pg_copy.quote_ident(column)} FROM {pg_copy.quote_ident(self.staging)} s"
                f" WHERE s.{pg_copy.quote_ident(column)} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM"
                f" {pg_copy.quote_ident(parent)} p WHERE p.{pg_copy.quote_ident(parent_column)}"
                f" = s.{pg_copy.quote_ident(column)}){condition}",
                params,
            )
            for row in cursor.fetchall():
                found.append((tuple(row[:width]), column, parent, parent_column, row[width]))
        rejects = []
        for parent in {f[2] for f in found}:
            values = sorted({f[4] for f in found if f[2] == parent})
            in_sqlite = self._sqlite_has(parent, values)
            held = {k[0] for k in quarantine.which_quarantined(cursor, parent, [(v,) for v in in_sqlite])}
            for key, column, parent_name, parent_column, value in found:
                if parent_name != parent:
                    continue
                if value not in in_sqlite:
                    reason = quarantine.ORPHAN
                elif value in held:
                    reason = quarantine.PARENT_QUARANTINED
                else:
                    reason = quarantine.PARENT_MISSING
                rejects.append(Reject(key, column, reason, shown_value(column, value),
                                      f"{parent}.{parent_column} = {value}"))
        return rejects

    def _sqlite_has(self, parent: str, values: list[Any]) -> set[Any]:
        reader = self.run.readers[parent]
        return {key[0] for key in (reader.key_of(row) for row in reader.rows_for(self.run.checker, [(v,) for v in values]))}

    # -- after the commit ----------------------------------------------------

    def recheck_range(self, low: Key | None, high: Key | None) -> int:
        """Delete (through apply_keys) what PostgreSQL holds in (low, high] and SQLite no longer does."""
        if high is None:
            return 0
        with self.pg.cursor() as cursor:
            condition, params = self._range_condition(low, high)
            cursor.execute(f"SELECT {self._key_sql()} FROM {pg_copy.quote_ident(self.name)} WHERE {condition}", params)
            in_postgres = {tuple(row) for row in cursor.fetchall()}
            self.pg.commit()
        gone = in_postgres - self.reader.keys_between(self.run.checker, low, high)
        return self._apply(sorted(gone, key=_order))

    def recheck_keys(self, keys: Sequence[Key]) -> int:
        """After a retry: every retried key SQLite no longer has goes through apply_keys."""
        existing = {self.reader.key_of(row) for row in self.reader.rows_for(self.run.checker, list(keys))}
        return self._apply([k for k in keys if k not in existing])

    def _apply(self, keys: Sequence[Key]) -> int:
        if not keys:
            return 0
        result = apply_keys(
            [KeyRef(self.name, tuple(key)) for key in keys],
            tables=TABLE_MAP,
            primary=self.run.cutover.sqlite,
            secondary=self.run.cutover.postgres,
            still_primary=self.run.still_primary,
        )
        if result.deleted:
            log.info("backfill.zombies_removed", table=self.name, rows=result.deleted)
        self.pending_removed += result.deleted
        return result.deleted

    def _apply_refused(self, keys: list[Key]) -> None:
        """Rows PostgreSQL refused get one try through the apply path (the live image may fit now)."""
        result = apply_keys(
            [KeyRef(self.name, tuple(key)) for key in keys],
            tables=TABLE_MAP,
            primary=self.run.cutover.sqlite,
            secondary=self.run.cutover.postgres,
            still_primary=self.run.still_primary,
        )
        if not result.applied:
            return
        with self.pg.cursor() as cursor:
            left = quarantine.remove(cursor, self.name, [ref.key for ref in result.applied])
            state.save_batch(cursor, self.name, last_key=None, rechecked_key=None, seconds=0.0, batches=0,
                             copied=result.upserted, quarantined=-left)
            self.pg.commit()

    def save_counts(self, cursor: Any) -> None:
        """Record what the re-checks removed since the last commit (in the caller's transaction)."""
        if self.pending_removed:
            state.save_batch(cursor, self.name, last_key=None, rechecked_key=self.rechecked, seconds=0.0,
                             batches=0, removed=self.pending_removed)
            self.pending_removed = 0

    # -- retries and stale entries ---------------------------------------

    def retry(self, keys: list[Key]) -> None:
        size = self.run.options.batch_size
        for start in range(0, len(keys), size):
            chunk = keys[start : start + size]
            rows = self.reader.rows_for(self.run.sqlite, chunk)
            converted = self.reader.convert(rows, with_keys=True)
            self.write(_Work(converted, len(rows), retry_keys=chunk))

    def drop_stale_quarantine(self) -> None:
        """Entries whose row is gone from SQLite leave the quarantine (and any copy of the row goes too)."""
        with self.pg.cursor() as cursor:
            keys = quarantine.keys(cursor, self.name)
            self.pg.commit()
        if not keys:
            return
        existing = {self.reader.key_of(row) for row in self.reader.rows_for(self.run.checker, keys)}
        gone = [k for k in keys if k not in existing]
        if not gone:
            return
        self._apply(gone)
        with self.pg.cursor() as cursor:
            quarantine.remove(cursor, self.name, gone)
            self.save_counts(cursor)
            self.pg.commit()


def _pg_bound(key: Key) -> tuple:
    """A SQLite key as a PostgreSQL bound: numbers as they are; text and blobs sort after every number."""
    return tuple(v if isinstance(v, (int, float)) else float("inf") for v in key)


def _order(key: Key) -> tuple:
    return tuple((0, v) if isinstance(v, (int, float)) else (1, str(v)) for v in key)


def _key_field(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return text


def _is_disconnect(error: psycopg2.Error) -> bool:
    return isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError))


