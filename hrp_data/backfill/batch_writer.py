"""The backfill's batch writer: PostgreSQL's half of one table.

It owns the backfill's bulk connection while a table is copied, in a thread
of its own one batch behind the reader: each batch is loaded (a plain COPY
when the key range is empty in PostgreSQL, else COPY into staging and
`INSERT ... ON CONFLICT (key) DO NOTHING`), its quarantine entries and the
table's checkpoint are written, and all of it commits in one transaction.
After the commit the batch's key range is re-checked for zombies through
hrp_data.cutover.apply.apply_keys (see hrp_data.backfill.run for the scheme).
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import psycopg2
import psycopg2.errors
import sqlalchemy as sa
import structlog
import tenacity

from adapters import pg_copy
from adapters.catalog import orphan_condition, quote, reference_label
from adapters.convert import Kind
from adapters.postgres import APPLYING_SETTING
from hrp_data.backfill import state
from hrp_data.backfill import quarantine
from hrp_data.cutover.apply import KeyRef, apply_keys
from hrp_data.errors import describe_error
from shadow.redact import looks_secret
from hrp_data.backfill.legacy_rows import Converted, Key, Reject, TableReader, capture_mark, shown_value, sqlite_order

log = structlog.get_logger(__name__)

QUEUE_AHEAD = 2
WRITE_ATTEMPTS = 5
TRANSIENT = (
    psycopg2.errors.DeadlockDetected,
    psycopg2.errors.SerializationFailure,
    psycopg2.errors.LockNotAvailable,
)


def _transient(error: BaseException) -> bool:
    """A deadlock or serialization failure with a live apply (raw or wrapped by SQLAlchemy)."""
    return isinstance(error, TRANSIENT) or isinstance(getattr(error, "orig", None), TRANSIENT)


def _log_retry(state: tenacity.RetryCallState) -> None:
    log.warning("backfill.transaction_retried", attempt=state.attempt_number,
                error=describe_error(state.outcome.exception()))


def retrying_transient(work: Callable[[], Any]) -> Any:
    """Run one transaction's worth of work again (whole) when PostgreSQL aborted it as a deadlock
    victim or a serialization failure; each attempt rolls back its own failure."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(_transient),
        stop=tenacity.stop_after_attempt(WRITE_ATTEMPTS),
        wait=tenacity.wait_random_exponential(multiplier=0.05, max=1.0),
        before_sleep=_log_retry,
        reraise=True,
    )(work)


DIRECT_FAILURES_MAX = 4
"""After this many failed plain COPYs (conflicts count 1, other errors 2) a table only merges."""


def staging_table(table: str) -> str:
    """The session's temporary staging table for `table`."""
    return f"hrp_cutover_stage_{table}"


class Progress(Protocol):
    def progress(self, table: str, done: int, total: int) -> None: ...


@dataclasses.dataclass(frozen=True)
class WriterContext:
    """What a backfill run hands the writer of one table."""

    pg: Any  # the run's bulk psycopg2 connection, owned by the writer while the table copies
    sqlite: sqlite3.Connection  # the run's reading connection to the legacy file
    checker: sqlite3.Connection  # the writer thread's own connection to the legacy file
    readers: Mapping[str, TableReader]
    constraint_columns: Mapping[str, str]
    has_quarantine: bool  # the table had quarantined rows when its copy started
    primary: sa.Engine  # SQLite, the primary during a backfill
    secondary: sa.Engine  # PostgreSQL
    still_primary: Callable[[], bool]
    listener: Progress
    batch_size: int
    tables: Mapping[str, sa.Table]  # what the apply path carries (hrp_data.catalog.captured)
    deferred: Mapping[str, set[str]]  # per table, the parents copied after it (a cycle): checked at the end


@dataclasses.dataclass
class Work:
    """A batch for the writer: converted rows plus where they came from."""

    converted: Converted
    read: int
    low: Key | None = None
    high: Key | None = None
    retry_keys: list[Key] | None = None
    mark: int | None = None
    """legacy_rows.capture_mark before the batch was read: when it has not moved by the
    commit, no write reached SQLite in between, so no zombie can exist in the batch."""


_STOP = object()


class BatchWriter:
    """PostgreSQL's half of one table: merge batches, record checkpoints, re-check for zombies."""

    def __init__(self, run: WriterContext, reader: TableReader, checkpoint: state.Checkpoint):
        self.run = run
        self.reader = reader
        self.name = reader.name
        self.pg = run.pg
        self.staging = staging_table(reader.name)
        self.rechecked: Key | None = checkpoint.rechecked_key
        self.done = checkpoint.stats.read
        self.total = 0
        self.pending_removed = 0
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_AHEAD)
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        self.last_commit = time.monotonic()
        self.direct_failures = 0
        self.integer_keys = all(reader.kinds[i] is Kind.INTEGER for i in reader.key_index)

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

    def submit(self, work: Work) -> None:
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

    def write(self, work: Work) -> None:
        """Merge one batch and commit it with its quarantine entries and checkpoint; then re-check."""
        rejects = retrying_transient(lambda: self._commit(work))  # e.g. a deadlock with a live apply
        refused_keys = [r.key for r in rejects if r.reason == quarantine.CONSTRAINT]
        if work.retry_keys is not None:
            self.recheck_keys(work.retry_keys)
        else:
            if work.mark is None or capture_mark(self.run.checker) != work.mark:
                self.recheck_range(work.low, work.high)
            self.rechecked = work.high
            self.done += work.read
            self.run.listener.progress(self.name, self.done, max(self.total, self.done))
        if refused_keys:
            self._apply_refused(refused_keys)

    def _commit(self, work: Work) -> list[Reject]:
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

    def _load(self, cursor: Any, work: Work) -> tuple[int, int, list[Reject]]:
        """COPY the batch in; returns (copied, present, rows refused by PostgreSQL)."""
        converted = work.converted
        if self.direct_failures < DIRECT_FAILURES_MAX and work.retry_keys is None and self._range_empty(cursor, work):
            error = self._copy_or_undo(cursor, self.name, converted.payload)
            if error is None:
                return converted.staged, 0, []
            self.direct_failures += 1 if isinstance(error, psycopg2.errors.UniqueViolation) else 2
        return self._merge(cursor, converted)

    def _copy_or_undo(self, cursor: Any, relation: str, payload: bytes) -> psycopg2.Error | None:
        """COPY `payload` into `relation` inside a savepoint; a refused COPY is undone and returned."""
        cursor.execute("SAVEPOINT hrp_copy")
        try:
            pg_copy.copy_in(cursor, relation, self.reader.columns, payload)
        except psycopg2.Error as error:
            if _is_disconnect(error):
                raise
            cursor.execute("ROLLBACK TO SAVEPOINT hrp_copy")
            cursor.execute("RELEASE SAVEPOINT hrp_copy")
            return error
        cursor.execute("RELEASE SAVEPOINT hrp_copy")
        return None

    def _range_empty(self, cursor: Any, work: Work) -> bool:
        """PostgreSQL holds no row in the batch's key range (so a plain COPY can conflict with nothing)."""
        condition, params = self._range_condition(work.low, work.high)
        cursor.execute(f"SELECT NOT EXISTS (SELECT 1 FROM {quote(self.name)} WHERE {condition})", params)
        return cursor.fetchone()[0]

    def _range_condition(self, low: Key | None, high: Key) -> tuple[str, list]:
        """The keys in (low, high]. A composite key also gets the same bounds on its first column:
        implied by the row comparison, they are what lets the planner see how few rows the range
        holds and walk the primary key (without them it may scan the whole table, every batch).

        A bound may hold a value PostgreSQL's column cannot (a blob in a TEXT key, text in a BLOB
        key, NULL: rows the backfill quarantines). In SQLite's order such a value sorts after, or
        before, every value the column can hold, so the comparison is decided by the key columns
        before it: the bound is cut there (_pg_bound)."""
        columns = self._key_order_sql().split(", ")
        conditions: list[str] = []
        params: list = []
        for bound, above in ((low, True), (high, False)):
            if bound is None:
                continue
            values, beyond = self._pg_bound(bound)
            if values:
                # high: keys <= (v.., +inf) is keys' prefix <= v; keys <= (v.., -inf) is prefix < v.
                # low: keys > (v.., +inf) is prefix > v; keys > (v.., -inf) is prefix >= v.
                strict = (beyond is None) or (beyond > 0) if above else (beyond is not None and beyond < 0)
                operator = (">" if strict else ">=") if above else ("<" if strict else "<=")
                conditions.append(f"({', '.join(columns[:len(values)])}) {operator} %s")
                params.append(tuple(values))
                if len(columns) > 1:
                    first_operator = operator if len(values) == 1 else operator[0] + "="
                    conditions.append(f"{columns[0]} {first_operator} %s")
                    params.append(values[0])
            elif (beyond > 0) == above:  # every key is above +inf (low) or at most -inf (high): none
                conditions.append("FALSE")
        return " AND ".join(conditions) or "TRUE", params

    def _key_order_sql(self) -> str:
        """The key columns for range comparisons: text in byte order (COLLATE "C"), as SQLite orders it."""
        kinds = [self.reader.kinds[i] for i in self.reader.key_index]
        return ", ".join(
            quote(c) + (' COLLATE "C"' if kind is Kind.TEXT else "")
            for c, kind in zip(self.reader.key_columns, kinds)
        )

    def _pg_bound(self, key: Key) -> tuple[list, int | None]:
        """A SQLite key as a PostgreSQL bound: (the values PostgreSQL can compare, None) or, where a
        component is one the column cannot hold, (the components before it, +1 or -1: it sorts after,
        or before, everything the column holds, in SQLite's order NULL < numbers < text < blobs).
        In a column of integers, text and blobs come after every number; in a TEXT key, a blob after
        all text and a number or NULL before it; in a BLOB key, text, numbers and NULL before every
        blob. Text with a NUL byte (which PostgreSQL text cannot hold) compares as its part before
        the NUL would against any text without one."""
        kinds = [self.reader.kinds[i] for i in self.reader.key_index]
        values: list = []
        for value, kind in zip(key, kinds):
            if value is None:
                return values, -1
            if kind in (Kind.INTEGER, Kind.REAL):
                if not isinstance(value, (int, float)):
                    return values, 1
            elif kind is Kind.TEXT:
                if isinstance(value, bytes):
                    return values, 1
                if not isinstance(value, str):
                    return values, -1
                if "\x00" in value:
                    return values + [value.split("\x00", 1)[0]], None
            elif kind is Kind.BLOB and not isinstance(value, bytes):
                return values, -1
            values.append(value)
        return values, None

    def _merge(self, cursor: Any, converted: Converted) -> tuple[int, int, list[Reject]]:
        """COPY into staging and merge ON CONFLICT DO NOTHING; orphans and refusals are quarantined."""
        error = self._copy_or_undo(cursor, self.staging, converted.payload)
        refused = []
        if error is not None:
            log.warning("backfill.copy_refused", table=self.name, error=describe_error(error))
            refused = self._copy_rows(cursor, converted.payload)
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
                self._delete_keys(cursor, self.staging, sorted({r.key for r in orphans}, key=sqlite_order))
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
        cursor.execute(f"SELECT count(*) FROM {quote(self.staging)}")
        return cursor.fetchone()[0]

    def _key_sql(self, alias: str = "") -> str:
        prefix = f"{alias}." if alias else ""
        return ", ".join(prefix + quote(c) for c in self.reader.key_columns)

    def _key_match(self, cursor: Any, keys: Sequence[Key]) -> str:
        width = len(self.reader.key_columns)
        values = ", ".join(
            cursor.mogrify("(" + ", ".join(["%s"] * width) + ")", tuple(key)).decode() for key in keys
        )
        return f"({self._key_sql()}) IN (VALUES {values})"

    def _delete_keys(self, cursor: Any, relation: str, keys: Sequence[Key]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            cursor.execute(f"DELETE FROM {quote(relation)} WHERE {self._key_match(cursor, chunk)}")

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
        cursor.execute(f"SELECT {self._key_sql()} FROM {quote(self.staging)} ORDER BY {self._key_sql()}")
        keys = [tuple(row) for row in cursor.fetchall()]
        copied = present = 0
        failed: list[Reject] = []
        # IS NOT DISTINCT FROM: a NULL in a key must fail its insert, not match nothing and pass as present
        match = " AND ".join(f"{quote(c)} IS NOT DISTINCT FROM %s" for c in self.reader.key_columns)
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
            match = " AND ".join(f"s.{quote(c)} = %s" for c in self.reader.key_columns)
            orphans = [r for r in self._orphans(cursor, match, key) if r.key == key]
            if orphans:
                return orphans
        diag = error.diag
        column = diag.column_name or self.run.constraint_columns.get(diag.constraint_name or "", "")
        value = None
        if column:
            cursor.execute(
                f"SELECT {quote(column)}::text FROM {quote(self.staging)}"
                f" WHERE {' AND '.join(f'{quote(c)} = %s' for c in self.reader.key_columns)}",
                key,
            )
            found = cursor.fetchone()
            value = shown_value(column, found[0], column in self.reader.secrets) if found else None
        return [Reject(key, column, quarantine.CONSTRAINT, value, describe_error(error))]

    def _orphans(
        self, cursor: Any, where: str | None = None, params: Any = None, relation: str | None = None,
        everything: bool = False,
    ) -> list[Reject]:
        """Rows of `relation` (default: staging) whose foreign key finds no parent in PostgreSQL,
        classified by what SQLite holds. A composite key is looked up whole, and only when none of
        its parts is NULL (MATCH SIMPLE, as both databases check it). A foreign key onto a table
        copied later (a cycle: `_Run.deferred`) is checked only with `everything`, once every table
        is copied."""
        relation = relation or self.staging
        found: list[tuple[Key, tuple[str, ...], str, tuple[str, ...], Any]] = []
        keys = self._key_sql("s")
        width = len(self.reader.key_columns)
        deferred = set() if everything else self.run.deferred.get(self.name, set())
        for constraint in sorted(self.reader.table.foreign_key_constraints, key=lambda c: c.column_keys):
            parent = constraint.referred_table.name
            if parent in deferred:
                continue
            columns = tuple(element.parent.name for element in constraint.elements)
            parent_columns = tuple(element.column.name for element in constraint.elements)
            condition = f" AND {where}" if where else ""
            cursor.execute(
                f"SELECT {keys}, {', '.join(f's.{quote(c)}' for c in columns)} FROM {quote(relation)} s"
                f" WHERE {orphan_condition('s', columns, parent, parent_columns)}{condition}",
                params,
            )
            for row in cursor.fetchall():
                value = row[width] if len(columns) == 1 else tuple(row[width:])
                found.append((tuple(row[:width]), columns, parent, parent_columns, value))
        rejects = []
        for parent, parent_columns in {(f[2], f[3]) for f in found}:
            values = sorted({f[4] for f in found if f[2:4] == (parent, parent_columns)},
                            key=lambda v: sqlite_order(v if isinstance(v, tuple) else (v,)))
            in_sqlite = self._sqlite_has(parent, parent_columns, values)
            held = {k[0] for k in quarantine.which_quarantined(cursor, parent, [(v,) for v in in_sqlite])}
            for key, columns, parent_name, referenced, value in found:
                if (parent_name, referenced) != (parent, parent_columns):
                    continue
                if value not in in_sqlite:
                    reason = quarantine.ORPHAN
                elif value in held:
                    reason = quarantine.PARENT_QUARANTINED
                else:
                    reason = quarantine.PARENT_MISSING
                column = ", ".join(columns)
                shown = shown_value(column, value, any(c in self.reader.secrets or looks_secret(c) for c in columns))
                rejects.append(Reject(key, column, reason, shown, f"{reference_label(parent, referenced)} = {shown}"))
        return rejects

    def _sqlite_has(self, parent: str, columns: tuple[str, ...], values: list[Any]) -> set[Any]:
        """Of `values` (one per reference: a value, or a tuple for a composite key), those SQLite's
        `parent` holds in `columns`: by its key where they are its key, else by those columns."""
        reader = self.run.readers[parent]
        if list(columns) == reader.key_columns and len(columns) == 1:
            return {key[0] for key in (reader.key_of(row) for row in reader.rows_for(self.run.checker, [(v,) for v in values]))}
        matched = " AND ".join(f"{quote(reader.sqlite_columns[c])} = ?" for c in columns)
        present = set()
        for value in values:
            parts = value if isinstance(value, tuple) else (value,)
            if self.run.checker.execute(f"SELECT 1 FROM {quote(reader.sqlite_name)} WHERE {matched} LIMIT 1",
                                        parts).fetchone():
                present.add(value)
        return present

    def quarantine_orphans(self, everything: bool = False) -> int:
        """Rows whose parent PostgreSQL lacks leave the table for the quarantine; returns how many.

        One anti-join per foreign key over the whole table: the check the
        foreign-key triggers did not make while the copy held them back
        (hrp_data.backfill.holds), classified as a refused merge is. Live applies delete
        and write the same rows meanwhile: a deadlock runs the whole check again.
        """
        keys = retrying_transient(lambda: self._quarantine_orphans(everything))
        if keys:
            log.info("backfill.orphans_quarantined", table=self.name, rows=len(keys))
        return len(keys)

    def _quarantine_orphans(self, everything: bool) -> list[Key]:
        with self.pg.cursor() as cursor:
            try:
                orphans = self._orphans(cursor, relation=self.name, everything=everything)
                keys = sorted({r.key for r in orphans}, key=sqlite_order)
                if keys:
                    self._delete_keys(cursor, self.name, keys)
                    quarantine.record(cursor, self.name, orphans)
                    state.save_batch(cursor, self.name, last_key=None, rechecked_key=None, seconds=0.0,
                                     batches=0, copied=-len(keys))
                self.pg.commit()
            except BaseException:
                self.pg.rollback()
                raise
        return keys

    # -- after the commit ----------------------------------------------------

    def recheck_range(self, low: Key | None, high: Key | None) -> int:
        """Delete (through apply_keys) what PostgreSQL holds in (low, high] and SQLite no longer does.

        Both sides first spell the range's keys as one text (SQLite: legacy_rows.key_list; here
        the same spelling of int8 keys); equal texts mean equal key sets, and nothing is built
        in Python. Otherwise the key sets are compared."""
        if high is None:
            return 0
        condition, params = self._range_condition(low, high)
        with self.pg.cursor() as cursor:
            if self.integer_keys:
                spelled = " || ',' || ".join(f"{quote(c)}::text" for c in self.reader.key_columns)
                cursor.execute(
                    f"SELECT string_agg({spelled}, ' ' ORDER BY {self._key_sql()})"
                    f" FROM {quote(self.name)} WHERE {condition}",
                    params,
                )
                same = cursor.fetchone()[0] == self.reader.key_list(self.run.checker, low, high)
                self.pg.commit()
                if same:
                    return 0
            cursor.execute(f"SELECT {self._key_sql()} FROM {quote(self.name)} WHERE {condition}", params)
            in_postgres = {tuple(row) for row in cursor.fetchall()}
            self.pg.commit()
        gone = in_postgres - self.reader.keys_between(self.run.checker, low, high)
        return self._apply(sorted(gone, key=sqlite_order))

    def recheck_keys(self, keys: Sequence[Key]) -> int:
        """After a retry: every retried key SQLite no longer has goes through apply_keys."""
        existing = {self.reader.key_of(row) for row in self.reader.rows_for(self.run.checker, list(keys))}
        return self._apply([k for k in keys if k not in existing])

    def _apply(self, keys: Sequence[Key]) -> int:
        if not keys:
            return 0
        result = self._apply_keys(keys)
        if result.deleted:
            log.info("backfill.zombies_removed", table=self.name, rows=result.deleted)
        self.pending_removed += result.deleted
        return result.deleted

    def _apply_refused(self, keys: list[Key]) -> None:
        """Rows PostgreSQL refused get one try through the apply path (the live image may fit now)."""
        result = self._apply_keys(keys)
        if not result.applied:
            return
        with self.pg.cursor() as cursor:
            left = quarantine.remove(cursor, self.name, [ref.key for ref in result.applied])
            state.save_batch(cursor, self.name, last_key=None, rechecked_key=None, seconds=0.0, batches=0,
                             copied=result.upserted, quarantined=-left)
            self.pg.commit()

    def _apply_keys(self, keys: Sequence[Key]) -> Any:
        """apply_keys for this table's keys; its one transaction runs again after a deadlock."""
        refs = [KeyRef(self.name, tuple(key)) for key in keys]
        return retrying_transient(lambda: apply_keys(
            refs,
            tables=self.run.tables,
            primary=self.run.primary,
            secondary=self.run.secondary,
            still_primary=self.run.still_primary,
        ))

    def save_counts(self, cursor: Any) -> None:
        """Record what the re-checks removed since the last commit (in the caller's transaction)."""
        if self.pending_removed:
            state.save_batch(cursor, self.name, last_key=None, rechecked_key=self.rechecked, seconds=0.0,
                             batches=0, removed=self.pending_removed)
            self.pending_removed = 0

    # -- retries and stale entries ---------------------------------------

    def retry(self, keys: list[Key]) -> None:
        size = self.run.batch_size
        for start in range(0, len(keys), size):
            chunk = keys[start : start + size]
            rows = self.reader.rows_for(self.run.sqlite, chunk)
            converted = self.reader.convert(rows, with_keys=True)
            self.write(Work(converted, len(rows), retry_keys=chunk))

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


def _key_field(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return text


def _is_disconnect(error: psycopg2.Error) -> bool:
    return isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError))
