"""Publishing shadow results: one log event per mismatch, and a bounded mismatch store.

Where: four tables in the legacy SQLite file, next to the phase record and
the outbox. Every worker process of the app shares that file, so every
process's samples land in one place, `hrp-cutover report` and the readiness
check read one place, and nothing else has to be deployed or backed up. The
HRP tables are not touched (the capture triggers, the verifier and the
backfill only know those six).

- hrp_cutover_shadow_reads: per minute, read type and table: reads matched,
  mismatched, lagging, unsettled, candidate errors and timeouts, dropped
  samples, and latency histograms of control and candidate (log-spaced bins,
  JSON). Minute rows older than MINUTE_RETENTION_S are folded into hour rows;
  hour rows older than HOUR_RETENTION_S are deleted. The mismatch RATE of any
  window is mismatched / (matched + mismatched + lag).
- hrp_cutover_mismatch_counts: per hour, table, column and kind, how many
  differences and when first and last seen. Every difference is counted here,
  so totals survive when the detailed rows are trimmed.
- hrp_cutover_mismatches: the newest `max_details` differences in detail
  (read type, table, key, column, kind, both values); older rows are deleted.
- hrp_cutover_shadow_meta: the ignore rules in force and how many records
  could not be stored.
- hrp_cutover_candidate_errors: per read type and error, the statements the
  secondary does not run as written (outcome candidate_error: an app's
  SQLite-only SQL), with the statement's excerpt, how often and when first and
  last seen; the newest MAX_CANDIDATE_ERRORS kept. Not differences: they are
  counted apart from the mismatches. `secondary_db` names the database that did
  not run it, `primary_db` the one that did: the secondary and the primary of
  the read, but for a statement the primary refused and the secondary ran
  (SQLite-only SQL once PostgreSQL is the primary).

So the store never grows without bound: details are capped by count, the
counters by time. Values arrive already redacted (shadow.compare fingerprints
secret columns when it makes a Difference).

Writing is asynchronous: `publish` only adds to in-memory aggregates (under a
lock, microseconds) and a writer thread flushes them every FLUSH_S in one
short transaction. If the file cannot be written (disk full, read-only,
locked beyond the busy timeout) the app carries on: counters are kept for the
next attempt, detailed rows beyond BUFFER_LIMIT are dropped and counted, and
a warning is logged (at most once per WARN_EVERY_S).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy import event

from shadow.compare import CANDIDATE_ERROR, ERROR, TIMEOUT, Difference, IgnoreRule, ReadType
from shadow.experiment import LAG, MATCH, MISMATCH, UNSETTLED, Publisher, Result

log = structlog.get_logger(__name__)

READS_TABLE = "hrp_cutover_shadow_reads"
COUNTS_TABLE = "hrp_cutover_mismatch_counts"
DETAILS_TABLE = "hrp_cutover_mismatches"
META_TABLE = "hrp_cutover_shadow_meta"
CANDIDATE_ERRORS_TABLE = "hrp_cutover_candidate_errors"
MAX_CANDIDATE_ERRORS = 500

MAX_DETAILS = 1000
FLUSH_S = 1.0
BUFFER_LIMIT = 5000
MAX_PENDING_BUCKETS = 10_000
MINUTE = 60
HOUR = 3600
MINUTE_RETENTION_S = 48 * HOUR
HOUR_RETENTION_S = 90 * 24 * HOUR
COMPACT_EVERY_S = 300.0
WARN_EVERY_S = 30.0
STORE_BUSY_TIMEOUT_MS = 2000
VALUE_CHARS = 2000

OUTCOME_COLUMNS = {
    MATCH: "matched",
    MISMATCH: "mismatched",
    LAG: "lag",
    UNSETTLED: "unsettled",
    ERROR: "errors",
    TIMEOUT: "timeouts",
    CANDIDATE_ERROR: "candidate_errors",
}
COUNT_COLUMNS = ("matched", "mismatched", "lag", "unsettled", "errors", "timeouts", "dropped", "candidate_errors")
ADDED_COLUMNS = {READS_TABLE: ("candidate_errors",)}
"""Counter columns added since the store was first made: a store made before gets them on install."""

DDL = [
    f"""CREATE TABLE IF NOT EXISTS {READS_TABLE} (
        bucket INTEGER NOT NULL,
        width INTEGER NOT NULL,
        read_type TEXT NOT NULL,
        table_name TEXT NOT NULL,
        matched INTEGER NOT NULL DEFAULT 0,
        mismatched INTEGER NOT NULL DEFAULT 0,
        lag INTEGER NOT NULL DEFAULT 0,
        unsettled INTEGER NOT NULL DEFAULT 0,
        errors INTEGER NOT NULL DEFAULT 0,
        timeouts INTEGER NOT NULL DEFAULT 0,
        dropped INTEGER NOT NULL DEFAULT 0,
        candidate_errors INTEGER NOT NULL DEFAULT 0,
        control_ms TEXT NOT NULL DEFAULT '{{}}',
        candidate_ms TEXT NOT NULL DEFAULT '{{}}',
        PRIMARY KEY (bucket, width, read_type))""",
    f"""CREATE TABLE IF NOT EXISTS {COUNTS_TABLE} (
        hour INTEGER NOT NULL,
        table_name TEXT NOT NULL,
        column_name TEXT NOT NULL,
        kind TEXT NOT NULL,
        count INTEGER NOT NULL,
        first_at REAL NOT NULL,
        last_at REAL NOT NULL,
        PRIMARY KEY (hour, table_name, column_name, kind))""",
    f"""CREATE TABLE IF NOT EXISTS {DETAILS_TABLE} (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        read_type TEXT NOT NULL,
        table_name TEXT NOT NULL,
        pk TEXT NOT NULL,
        column_name TEXT,
        kind TEXT NOT NULL,
        primary_value TEXT,
        secondary_value TEXT,
        primary_db TEXT,
        secondary_db TEXT,
        rechecks INTEGER NOT NULL DEFAULT 0)""",
    f"CREATE INDEX IF NOT EXISTS ix_{DETAILS_TABLE}_at ON {DETAILS_TABLE} (at)",
    f"""CREATE TABLE IF NOT EXISTS {CANDIDATE_ERRORS_TABLE} (
        read_type TEXT NOT NULL,
        error TEXT NOT NULL,
        table_name TEXT NOT NULL,
        statement TEXT,
        count INTEGER NOT NULL,
        first_at REAL NOT NULL,
        last_at REAL NOT NULL,
        primary_db TEXT,
        secondary_db TEXT,
        PRIMARY KEY (read_type, error))""",
    f"""CREATE TABLE IF NOT EXISTS {META_TABLE} (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at REAL NOT NULL)""",
]

# Latency histograms: bin b holds durations up to BIN_BASE_MS * BIN_RATIO**b (about 10 % wide).
BIN_BASE_MS = 0.01
BIN_RATIO = 1.2


def latency_bin(seconds: float) -> int:
    ms = seconds * 1000.0
    if ms <= BIN_BASE_MS:
        return 0
    return int(math.ceil(math.log(ms / BIN_BASE_MS, BIN_RATIO)))


def bin_upper_ms(index: int) -> float:
    return BIN_BASE_MS * BIN_RATIO ** int(index)


def histogram_quantile(histogram: Mapping[Any, int], q: float) -> float | None:
    """The q-quantile of a latency histogram, in ms (the upper bound of its bin)."""
    total = sum(histogram.values())
    if total == 0:
        return None
    target = q * total
    seen = 0
    for index in sorted(histogram, key=int):
        seen += histogram[index]
        if seen >= target:
            return round(bin_upper_ms(int(index)), 3)
    return round(bin_upper_ms(int(max(histogram, key=int))), 3)


def _merge_histogram(into: dict[str, int], other: Mapping[Any, int]) -> dict[str, int]:
    for index, count in other.items():
        into[str(index)] = into.get(str(index), 0) + int(count)
    return into


def _json(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), default=str, sort_keys=True)
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 3] + "..."


def _logged(value: Any) -> Any:
    """Rows and lists go to the log as JSON text (already redacted: not redacted twice)."""
    return _json(value) if isinstance(value, (dict, list)) else value


@dataclasses.dataclass
class _ReadCounts:
    table: str
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    control_ms: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    candidate_ms: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def merge(self, other: "_ReadCounts") -> None:
        self.counts.update(other.counts)
        self.control_ms.update(other.control_ms)
        self.candidate_ms.update(other.candidate_ms)


@dataclasses.dataclass
class _Pending:
    reads: dict[tuple[int, str], _ReadCounts] = dataclasses.field(default_factory=dict)
    differences: dict[tuple[int, str, str, str], list] = dataclasses.field(default_factory=dict)
    details: list[dict] = dataclasses.field(default_factory=list)
    candidate_errors: dict[tuple[str, str], list] = dataclasses.field(default_factory=dict)

    def empty(self) -> bool:
        return not (self.reads or self.differences or self.details or self.candidate_errors)


class MismatchStore(Publisher):
    """The publisher of shadow results: log events plus the bounded tables described above.

    Args:
        engine: an engine on the SQLite file (its own pool: the writer's busy timeout is short).
        max_details: how many detailed differences to keep.
        flush_s: how often the writer thread writes (0: only on flush()).
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        max_details: int = MAX_DETAILS,
        flush_s: float = FLUSH_S,
        buffer_limit: int = BUFFER_LIMIT,
        ignore: Iterable[IgnoreRule] = (),
    ):
        self.engine = engine
        self.max_details = max_details
        self.flush_s = flush_s
        self.buffer_limit = buffer_limit
        self.ignore = list(ignore)
        self.store_dropped = 0
        self._unsaved_dropped = 0
        self._pending = _Pending()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._last_warning = 0.0
        self._last_compact = 0.0
        self._last_error_log = 0.0
        self._installed = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        event.listen(engine, "connect", _short_busy_timeout)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> "MismatchStore":
        """Install the store and start its writer thread (the first result does it too)."""
        with self._start_lock:
            self._install()
            if self._thread is None and self.flush_s > 0 and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="hrp-shadow-store", daemon=True)
                self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.flush()

    def _install(self) -> bool:
        if self._installed:
            return True
        try:
            with self.engine.execution_options(sqlite_begin="IMMEDIATE").begin() as connection:
                for statement in DDL:
                    connection.exec_driver_sql(statement)
                _add_missing_columns(connection)
                self._save_meta(connection, "ignore_rules", [dataclasses.asdict(r) for r in self.ignore])
                self._save_meta(connection, "max_details", self.max_details)
        except sa.exc.SQLAlchemyError as error:
            self._warn("install", error, 0)
            return False
        self._installed = True
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            try:
                self.flush()
            except Exception as error:  # noqa: BLE001 - the writer survives anything
                self._warn("flush", error, 0)

    # -- the Publisher interface (called on the experiment's workers) -------------------

    def publish(self, result: Result) -> None:
        if self._thread is None:
            self.start()
        bucket = int(result.at // MINUTE) * MINUTE
        shown = result.differences if result.outcome == MISMATCH else ()
        for difference in shown:
            log.warning(
                "shadow.mismatch",
                read_type=result.read.name,
                table=difference.table,
                key=list(difference.key),
                column=difference.column,
                kind=difference.kind,
                primary=_logged(difference.as_dict()["primary"]),
                secondary=_logged(difference.as_dict()["secondary"]),
                rechecks=result.rechecks,
                primary_db=result.context.get("primary"),
                secondary_db=result.context.get("secondary"),
            )
        if result.outcome in (ERROR, TIMEOUT, CANDIDATE_ERROR):
            self._log_candidate_error(result)
        with self._lock:
            counts = self._read_counts(bucket, result.read)
            counts.counts[OUTCOME_COLUMNS[result.outcome]] += 1
            counts.control_ms[latency_bin(result.control.duration_s)] += 1
            counts.candidate_ms[latency_bin(result.candidate.duration_s)] += 1
            counted = shown or (result.differences if result.outcome in (ERROR, TIMEOUT) else ())
            for difference in counted:
                self._count_difference(result.at, difference)
            for difference in shown:
                if len(self._pending.details) >= self.buffer_limit:
                    self.store_dropped += 1
                    self._unsaved_dropped += 1
                    continue
                self._pending.details.append(self._detail(result, difference))
            if result.outcome == CANDIDATE_ERROR:
                self._count_candidate_error(result)

    def dropped(self, read: ReadType, count: int = 1) -> None:
        if self._thread is None:
            self.start()
        bucket = int(time.time() // MINUTE) * MINUTE
        with self._lock:
            self._read_counts(bucket, read).counts["dropped"] += count

    def _read_counts(self, bucket: int, read: ReadType) -> _ReadCounts:
        key = (bucket, read.name)
        counts = self._pending.reads.get(key)
        if counts is None:
            counts = self._pending.reads[key] = _ReadCounts(read.table)
        return counts

    def _count_candidate_error(self, result: Result) -> None:
        error, ran, refused = _refusal(result)
        key = (result.read.name, error)
        entry = self._pending.candidate_errors.get(key)
        if entry is None:
            if len(self._pending.candidate_errors) < MAX_PENDING_BUCKETS:
                self._pending.candidate_errors[key] = [
                    1, result.at, result.at, result.read.table, getattr(result.read, "sql", None) or None,
                    ran, refused,
                ]
            return
        entry[0] += 1
        entry[1] = min(entry[1], result.at)
        entry[2] = max(entry[2], result.at)

    def _count_difference(self, at: float, difference: Difference) -> None:
        key = (int(at // HOUR) * HOUR, difference.table, difference.column or "", difference.kind)
        entry = self._pending.differences.get(key)
        if entry is None:
            self._pending.differences[key] = [1, at, at]
        else:
            entry[0] += 1
            entry[1] = min(entry[1], at)
            entry[2] = max(entry[2], at)

    @staticmethod
    def _detail(result: Result, difference: Difference) -> dict:
        shown = difference.as_dict()
        return {
            "at": result.at,
            "read_type": result.read.name,
            "table_name": difference.table,
            "pk": _json(shown["key"]),
            "column_name": difference.column,
            "kind": difference.kind,
            "primary_value": _json(shown["primary"]),
            "secondary_value": _json(shown["secondary"]),
            "primary_db": result.context.get("primary"),
            "secondary_db": result.context.get("secondary"),
            "rechecks": result.rechecks,
        }

    def _log_candidate_error(self, result: Result) -> None:
        now = time.monotonic()
        if now - self._last_error_log < WARN_EVERY_S:
            return
        self._last_error_log = now
        shown, _ran, refused = _refusal(result)
        log.warning(
            "shadow.candidate_error",
            read_type=result.read.name,
            outcome=result.outcome,
            error=shown,
            secondary_db=refused,
        )

    # -- writing -------------------------------------------------------------------------

    def flush(self) -> bool:
        """Write what is buffered now (the writer thread calls this every flush_s)."""
        with self._write_lock:
            with self._lock:
                batch, self._pending = self._pending, _Pending()
                unsaved_dropped, self._unsaved_dropped = self._unsaved_dropped, 0
            if batch.empty() and not unsaved_dropped:
                return True
            if not self._install():
                self._put_back(batch, unsaved_dropped)
                return False
            try:
                with self.engine.execution_options(sqlite_begin="IMMEDIATE").begin() as connection:
                    self._write(connection, batch, unsaved_dropped)
                    if time.monotonic() - self._last_compact >= COMPACT_EVERY_S:
                        self._compact(connection, time.time())
                        self._last_compact = time.monotonic()
            except sa.exc.SQLAlchemyError as error:
                self._put_back(batch, unsaved_dropped)
                self._warn("write", error, self.store_dropped)
                return False
            return True

    def _put_back(self, batch: _Pending, unsaved_dropped: int) -> None:
        """Keep a batch that could not be written for the next attempt, within the bounds."""
        with self._lock:
            current = self._pending
            for key, counts in batch.reads.items():
                if key in current.reads:
                    current.reads[key].merge(counts)
                elif len(current.reads) < MAX_PENDING_BUCKETS:
                    current.reads[key] = counts
            for key, entry in batch.differences.items():
                mine = current.differences.get(key)
                if mine is None:
                    if len(current.differences) < MAX_PENDING_BUCKETS:
                        current.differences[key] = entry
                else:
                    mine[0] += entry[0]
                    mine[1] = min(mine[1], entry[1])
                    mine[2] = max(mine[2], entry[2])
            for key, entry in batch.candidate_errors.items():
                mine = current.candidate_errors.get(key)
                if mine is None:
                    current.candidate_errors[key] = entry
                else:
                    mine[0] += entry[0]
                    mine[1] = min(mine[1], entry[1])
                    mine[2] = max(mine[2], entry[2])
            room = max(0, self.buffer_limit - len(current.details))
            kept = batch.details[-room:] if room else []
            lost = len(batch.details) - len(kept)
            current.details[:0] = kept
            self.store_dropped += lost
            self._unsaved_dropped += unsaved_dropped + lost

    def _write(self, connection: sa.Connection, batch: _Pending, unsaved_dropped: int) -> None:
        for (bucket, read_type), counts in batch.reads.items():
            _add_read_counts(connection, bucket, MINUTE, read_type, counts.table, counts.counts,
                             counts.control_ms, counts.candidate_ms)
        for (hour, table, column, kind), (count, first_at, last_at) in batch.differences.items():
            connection.exec_driver_sql(
                f"INSERT INTO {COUNTS_TABLE} (hour, table_name, column_name, kind, count, first_at, last_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (hour, table_name, column_name, kind) DO UPDATE"
                " SET count = count + excluded.count, first_at = min(first_at, excluded.first_at),"
                " last_at = max(last_at, excluded.last_at)",
                (hour, table, column, kind, count, first_at, last_at),
            )
        for (read_type, error), (count, first_at, last_at, table, statement, primary, secondary) in (
            batch.candidate_errors.items()
        ):
            connection.exec_driver_sql(
                f"INSERT INTO {CANDIDATE_ERRORS_TABLE} (read_type, error, table_name, statement, count, first_at,"
                " last_at, primary_db, secondary_db) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (read_type, error) DO UPDATE SET count = count + excluded.count,"
                " first_at = min(first_at, excluded.first_at), last_at = max(last_at, excluded.last_at),"
                " primary_db = excluded.primary_db, secondary_db = excluded.secondary_db",
                (read_type, error, table, statement, count, first_at, last_at, primary, secondary),
            )
        if batch.candidate_errors:
            connection.exec_driver_sql(
                f"DELETE FROM {CANDIDATE_ERRORS_TABLE} WHERE rowid NOT IN"
                f" (SELECT rowid FROM {CANDIDATE_ERRORS_TABLE} ORDER BY last_at DESC LIMIT ?)",
                (MAX_CANDIDATE_ERRORS,),
            )
        if batch.details:
            columns = list(batch.details[0])
            connection.exec_driver_sql(
                f"INSERT INTO {DETAILS_TABLE} ({', '.join(columns)})"
                f" VALUES ({', '.join('?' for _ in columns)})",
                [tuple(d[c] for c in columns) for d in batch.details],
            )
            connection.exec_driver_sql(
                f"DELETE FROM {DETAILS_TABLE} WHERE id <= (SELECT max(id) FROM {DETAILS_TABLE}) - ?",
                (self.max_details,),
            )
        if unsaved_dropped:
            connection.exec_driver_sql(
                f"INSERT INTO {META_TABLE} (name, value, updated_at) VALUES ('store_dropped', ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = CAST(value AS INTEGER) + excluded.value,"
                " updated_at = excluded.updated_at",
                (str(unsaved_dropped), time.time()),
            )

    @staticmethod
    def _save_meta(connection: sa.Connection, name: str, value: Any) -> None:
        connection.exec_driver_sql(
            f"INSERT INTO {META_TABLE} (name, value, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            (name, json.dumps(value), time.time()),
        )

    def _compact(self, connection: sa.Connection, now: float) -> None:
        """Fold old minute rows into hour rows; forget what is older than the retention."""
        old = connection.exec_driver_sql(
            f"SELECT bucket, read_type, table_name, {', '.join(COUNT_COLUMNS)}, control_ms, candidate_ms"
            f" FROM {READS_TABLE} WHERE width = ? AND bucket < ?",
            (MINUTE, now - MINUTE_RETENTION_S),
        ).all()
        end = 3 + len(COUNT_COLUMNS)
        for row in old:
            counts = collections.Counter(dict(zip(COUNT_COLUMNS, row[3:end])))
            _add_read_counts(connection, int(row[0] // HOUR) * HOUR, HOUR, row[1], row[2], counts,
                             json.loads(row[end]), json.loads(row[end + 1]))
        connection.exec_driver_sql(
            f"DELETE FROM {READS_TABLE} WHERE width = ? AND bucket < ?", (MINUTE, now - MINUTE_RETENTION_S)
        )
        connection.exec_driver_sql(
            f"DELETE FROM {READS_TABLE} WHERE width = ? AND bucket < ?", (HOUR, now - HOUR_RETENTION_S)
        )
        connection.exec_driver_sql(f"DELETE FROM {COUNTS_TABLE} WHERE hour < ?", (now - HOUR_RETENTION_S,))

    def _warn(self, operation: str, error: BaseException, dropped: int) -> None:
        now = time.monotonic()
        if now - self._last_warning < WARN_EVERY_S:
            return
        self._last_warning = now
        original = getattr(error, "orig", None) or error
        log.warning(
            "shadow.store_unavailable",
            operation=operation,
            error=f"{type(original).__name__}: {str(original).splitlines()[0] if str(original) else ''}"[:200],
            dropped_records=dropped,
        )


def _refusal(result: Result) -> tuple[str, Any, Any]:
    """(the error, the database that ran the statement, the one that did not) of a read that
    raised on one side: the secondary's (a candidate_error, an error, a timeout), or the primary's
    when the primary refused a statement the secondary ran (its difference holds no secondary)."""
    first = result.differences[0] if result.differences else None
    primary, secondary = result.context.get("primary"), result.context.get("secondary")
    if first is not None and first.secondary is None and first.primary is not None:
        return str(first.primary), secondary, primary
    return (str(first.secondary) if first is not None else "?"), primary, secondary


def _add_missing_columns(connection: sa.Connection) -> None:
    """Give a store made by an earlier version the counter columns added since."""
    for table, columns in ADDED_COLUMNS.items():
        present = {row[1] for row in connection.exec_driver_sql(f"PRAGMA table_info({table})")}
        for column in columns:
            if column not in present:
                connection.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")


def _short_busy_timeout(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {STORE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _add_read_counts(
    connection: sa.Connection,
    bucket: int,
    width: int,
    read_type: str,
    table: str,
    counts: Mapping[str, int],
    control_ms: Mapping[Any, int],
    candidate_ms: Mapping[Any, int],
) -> None:
    """Add counts and histograms to one counter row (read-modify-write under the write lock)."""
    row = connection.exec_driver_sql(
        f"SELECT control_ms, candidate_ms FROM {READS_TABLE} WHERE bucket = ? AND width = ? AND read_type = ?",
        (bucket, width, read_type),
    ).first()
    values = [int(counts.get(c, 0)) for c in COUNT_COLUMNS]
    if row is None:
        connection.exec_driver_sql(
            f"INSERT INTO {READS_TABLE} (bucket, width, read_type, table_name, {', '.join(COUNT_COLUMNS)},"
            f" control_ms, candidate_ms) VALUES (?, ?, ?, ?, {', '.join('?' for _ in COUNT_COLUMNS)}, ?, ?)",
            (bucket, width, read_type, table, *values,
             json.dumps(_merge_histogram({}, control_ms)), json.dumps(_merge_histogram({}, candidate_ms))),
        )
        return
    connection.exec_driver_sql(
        f"UPDATE {READS_TABLE} SET {', '.join(f'{c} = {c} + ?' for c in COUNT_COLUMNS)},"
        " control_ms = ?, candidate_ms = ? WHERE bucket = ? AND width = ? AND read_type = ?",
        (*values,
         json.dumps(_merge_histogram(json.loads(row[0]), control_ms)),
         json.dumps(_merge_histogram(json.loads(row[1]), candidate_ms)),
         bucket, width, read_type),
    )
