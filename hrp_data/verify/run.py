"""The verifier: prove both databases equal, table by table, and repair what differs.

In the spirit of data-diff: each table is split into ranges of its first key
column; each range is hashed on both sides (PostgreSQL computes its hashes in
SQL, next to the data, while Python hashes the SQLite rows at the same time);
only ranges whose hashes differ are looked at row by row, and only rows whose
fingerprints differ are compared column by column with shadow.normalize, the
same normalization the shadow reads use. So the verifier and the shadow
comparison never disagree about what "equal" means.

Live writes go on meanwhile. A difference on a key that still has an outbox
entry, or that changed while being compared, is re-checked (after the entry
is applied) before it is reported. Rows the backfill quarantined are counted
as quarantined, not as missing (nor, with PostgreSQL primary, as extra on SQLite). `repair` sends every confirmed difference
through the one apply path (hrp_data.cutover.apply), which re-reads the primary row
under its lock, so a repair never overwrites a newer live write.

A recorded verify keeps its progress in the SQLite file as it goes
(hrp_data.verify.progress) and its result when it is done (record_run), so
that /metrics and the dashboard of another process see both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog

from adapters.catalog import is_secret, quote
from adapters.binds import reading, writing
from adapters.convert import BIGINT_RANGE, Kind
from adapters.outbox import encode_key, key_from_json, key_to_json
from adapters.postgres import call_timeout
from adapters.sqlite import stored_width
from adapters.types import NaiveTimestamp, kind_of
from hrp_data.backfill import legacy_rows
from hrp_data.cutover import heartbeat, outbox
from hrp_data.cutover.apply import KeyRef, apply_keys, fitting_changes, read_images
from hrp_data.cutover.dual_write import Cutover
from hrp_data.backfill.legacy_rows import sqlite_order
from hrp_data.cutover.phases import POSTGRES, SQLITE, PhaseRow, other_database
from hrp_data.cutover.schema_watch import schema_drift, sqlite_names
from hrp_data.schema.install import type_drift
from hrp_data.verify import progress as verify_progress
from hrp_data.verify.ranges import RangeHasher, RangePlan
from shadow.normalize import normalize_row
from hrp_data.verify.range_hash import (
    ROW_SEPARATOR,
    fast_row_renderer,
    md5_hex,
    postgres_json_line,
    postgres_real_block,
    postgres_row_text,
)
from shadow.redact import fingerprint, looks_secret, redact_json, redact_table_key

log = structlog.get_logger(__name__)

BUCKET_ROWS = 500
"""Rows per bucket (on average). A bucket's text is built, joined and hashed whole on both sides; at 500
rows it stays in a core's cache (measured on 1M predictions: SQLite's side 9.4 to 6.2-7.8 us a row,
PostgreSQL's 3.8-4.3 to 2.9-3.1 s of CPU, against 2000 rows)."""
BUCKET_BYTES = 8 * 2**20
"""And fewer where a table's rows are wide (big texts, JSON, blobs): a bucket's text then holds about this
many bytes on average (each side builds it whole: PostgreSQL's string_agg is bounded at 1 GB)."""
WIDTH_SAMPLE = (4, 64)
"""The rows' width is the average of this many places spread over the first key column, of this many rows each."""
RECHECK_S = 10.0
EXAMPLES = 20
RUNS_TABLE = "hrp_cutover_verify_runs"
Progress = Callable[[str, str, int, int], None]
"""(table, stage, done, total): stage "hashing" counts rows hashed on both sides, "differing ranges" ranges."""

STATEMENT_TARGET_S = 5.0
"""A verify statement on PostgreSQL is sized (in buckets, by the rate measured so far) to take about this long."""
STATEMENT_BOUND_S = 120.0
"""Its bound: the server cancels it after this long (statement_timeout), the client gives up a little later.
A verify is a batch job: its bound is sized for its statements, not the request path's (adapters.postgres)."""
CLIENT_MARGIN_S = 10.0
FIRST_STATEMENT_BUCKETS = 25


@dataclasses.dataclass
class TableResult:
    rows_primary: int = 0
    rows_secondary: int = 0
    missing: int = 0
    extra: int = 0
    different: int = 0
    quarantined: int = 0
    pending: int = 0
    refused: int = 0
    """Keys whose change the secondary refuses (its values or key: the outbox's last error, a
    rejection), still unapplied at the deadline: they differ until the row is fixed, never EQUAL."""
    seconds: float = 0.0


@dataclasses.dataclass
class VerifyResult:
    equal: bool
    tables: dict[str, TableResult]
    examples: list[dict]
    primary: str
    repaired: dict[str, int] | None = None
    differing: list[KeyRef] = dataclasses.field(default_factory=list)
    """Keys still receiving writes at the deadline are counted as `pending`: not differences."""
    schema: list[dict] = dataclasses.field(default_factory=list)
    """Columns or tables one live schema has and the other lacks (hrp_data.schema_watch): never EQUAL."""

    def as_json(self) -> dict:
        out = {
            "equal": self.equal,
            "primary": self.primary,
            "tables": {name: dataclasses.asdict(t) for name, t in self.tables.items()},
            "examples": self.examples,
            "schema": self.schema,
        }
        if self.repaired is not None:
            out["repaired"] = self.repaired
        return out


def _columns(table: sa.Table) -> list[tuple[str, Any]]:
    return [(c.name, kind_of(c)) for c in table.columns]


def _row_text(table: sa.Table) -> str:
    """PostgreSQL's row text of `table` (range_hash.postgres_row_text)."""
    naive = [c.name for c in table.columns if isinstance(c.type, NaiveTimestamp)]
    return postgres_row_text(_columns(table), naive)


def _key_names(table: sa.Table) -> list[str]:
    return [c.name for c in table.primary_key.columns]


@dataclasses.dataclass(frozen=True)
class Buckets:
    """Ranges [low + i*width, low + (i+1)*width) of the first key column."""

    low: int
    width: int

    def of(self, value: int) -> int:
        return (value - self.low) // self.width

    def bounds(self, bucket: int) -> tuple[int, int]:
        """The bucket's first and last key, inclusive (within BIGINT: both sides bind them)."""
        start = self.low + bucket * self.width
        return start, min(start + self.width - 1, BIGINT_RANGE[1])


@contextlib.contextmanager
def long_statements(engine: sa.Engine, bound_s: float | None = None) -> Iterator[sa.Connection]:
    """A PostgreSQL connection for the verify's batch statements: statement_timeout `bound_s` on the
    server (SET LOCAL: this transaction only), and the client's deadline a little later, in place of
    the request path's (adapters.postgres.call_timeout). A hung server still ends the verify.
    Timestamps print in ISO DateStyle, as the row texts spell them (hrp_data.verify.range_hash)."""
    bound = STATEMENT_BOUND_S if bound_s is None else bound_s
    with call_timeout(bound + CLIENT_MARGIN_S), reading(engine) as connection:
        connection.exec_driver_sql(f"SET LOCAL statement_timeout = {int(bound * 1000)}")
        connection.exec_driver_sql("SET LOCAL datestyle = 'ISO, YMD'")  # as range_hash spells timestamps
        yield connection


def next_statement_buckets(buckets: int, seconds: float, target_s: float | None = None) -> int:
    """Buckets for the next statement, so that it takes about `target_s` (STATEMENT_TARGET_S) at the
    rate the last one ran (`buckets` in `seconds`); it grows or shrinks by at most 4x a step."""
    target = STATEMENT_TARGET_S if target_s is None else target_s
    wanted = buckets * target / max(seconds, 1e-3)
    return max(1, min(int(wanted), buckets * 4, 2**62), buckets // 4)


def _bounds(connection: sa.Connection, table: sa.Table) -> tuple[int | None, int | None, int]:
    """The smallest and largest whole number in the first key column, and the row count.

    In SQLite the column may also hold text, blobs or reals (a composite key
    takes any storage class); the range skips text and blobs and is widened to
    whole numbers around reals, which the buckets never hold (see _odd_keys).
    """
    first, name = quote(_key_names(table)[0]), quote(table.name)
    numbers = (f" WHERE {first} BETWEEN {BIGINT_RANGE[0]} AND {BIGINT_RANGE[1]}"
               if connection.dialect.name == "sqlite" else "")  # PostgreSQL's column is a bigint
    # one aggregate per subquery: SQLite then reads each end of the key's index, instead of every row
    row = connection.exec_driver_sql(
        f"SELECT (SELECT min({first}) FROM {name}{numbers}), (SELECT max({first}) FROM {name}{numbers}),"
        f" (SELECT count(*) FROM {name})"
    ).one()
    low, high = row[0], row[1]
    return (None if low is None else math.floor(low)), (None if high is None else math.ceil(high)), row[2]


def _average_width(connection: sa.Connection, table: sa.Table, sqlite_table: sa.Table, low: int, high: int) -> float:
    """About how many bytes a row's text, JSON and blob columns take in a bucket's text (a blob spelled
    in hex: twice its size), from a sample spread over the first key column (WIDTH_SAMPLE); 0.0 for a
    table without such columns."""
    kinds = {column.key: kind_of(column) for column in table.columns}
    width = stored_width((column.name, kinds[column.key]) for column in sqlite_table.columns)
    if width is None:
        return 0.0
    blobs = stored_width((column.name, kinds[column.key]) for column in sqlite_table.columns
                         if kinds[column.key] is Kind.BLOB) or "0"
    first, name = quote(_key_names(sqlite_table)[0]), quote(sqlite_table.name)
    places, rows = WIDTH_SAMPLE
    sampled = [
        connection.exec_driver_sql(
            f"SELECT total(w), count(*) FROM (SELECT {width} + {blobs} AS w FROM {name}"
            f" WHERE {first} >= ? ORDER BY {first} LIMIT {rows})", (low + (high - low) * place // places,),
        ).one()
        for place in range(places)
    ]
    found = sum(count for _total, count in sampled)
    return sum(total for total, _count in sampled) / found if found else 0.0


def _odd_keys(engine: sa.Engine, table: sa.Table) -> list[tuple]:
    """SQLite keys whose first column is not an integer: no bucket holds them, PostgreSQL cannot."""
    if table.autoincrement_column is not None:  # SQLite's rowid: always an integer
        return []
    first = quote(_key_names(table)[0])
    keys = ", ".join(quote(k) for k in _key_names(table))
    with reading(engine) as connection:
        return [tuple(row) for row in connection.exec_driver_sql(
            f"SELECT {keys} FROM {quote(table.name)} WHERE typeof({first}) != 'integer'"
        )]


def _bucket_text(table: sa.Table, keys: str) -> str:
    """The aggregate giving a bucket's text (ranges.bucket_text): the row texts with the REAL columns
    marked and without the JSON columns, newline-joined in key order; then a blank line and the REAL
    columns' blocks; then a blank line and the JSON lines."""
    json_names = [c.name for c in table.columns if kind_of(c) is Kind.JSON]
    real_names = [c.name for c in table.columns if kind_of(c) is Kind.REAL]
    naive = [c.name for c in table.columns if isinstance(c.type, NaiveTimestamp)]
    text = (f"string_agg({postgres_row_text(_columns(table), naive, apart=json_names, marked=real_names)},"
            f" E'\\n' ORDER BY {keys})")
    if real_names:
        blocks = ", ".join(postgres_real_block(name, keys) for name in real_names)
        text = f"{text} || E'\\n\\n' || concat_ws('{ROW_SEPARATOR}', {blocks})"
    if json_names:
        text = f"{text} || E'\\n\\n' || string_agg({postgres_json_line(json_names)}, E'\\n' ORDER BY {keys})"
    return text


def _postgres_statement(table: sa.Table) -> str:
    """Count and md5 of each bucket's text, the buckets given as arrays of (bucket, first key, last key).

    Each bucket is its own aggregate over a range of the primary key's index, so
    its rows arrive in key order (string_agg's ORDER BY sorts nothing) and no
    bucket number is computed per row; an empty bucket gives no row."""
    keys = ", ".join(quote(k) for k in _key_names(table))
    first = quote(_key_names(table)[0])
    return (
        "SELECT r.bucket, h.n, h.digest"
        " FROM unnest(%(buckets)s::bigint[], %(los)s::bigint[], %(his)s::bigint[]) AS r(bucket, lo, hi),"
        f" LATERAL (SELECT count(*) AS n, md5({_bucket_text(table, keys)}) AS digest"
        f" FROM {quote(table.name)} WHERE {first} >= r.lo AND {first} <= r.hi) AS h"
        " WHERE h.n > 0"
    )


def _postgres_range(connection: sa.Connection, table: sa.Table, buckets: Buckets, first: int,
                    last: int) -> dict[int, tuple[int, str]]:
    """Count and md5 per bucket of buckets first..last (inclusive), in one statement."""
    numbers = range(first, last + 1)
    bounds = [buckets.bounds(b) for b in numbers]
    rows = connection.exec_driver_sql(
        _postgres_statement(table),
        {"buckets": list(numbers), "los": [max(lo, BIGINT_RANGE[0]) for lo, _ in bounds],
         "his": [hi for _, hi in bounds]},
    ).all()
    return {int(r[0]): (r[1], r[2]) for r in rows}


def _postgres_buckets(engine: sa.Engine, table: sa.Table, buckets: Buckets, count: int,
                      on_range: Callable[[int], None] | None = None) -> dict[int, tuple[int, str]]:
    """The count and md5 of each of buckets 0..count-1, a range of buckets per statement, each range sized by time."""
    out: dict[int, tuple[int, str]] = {}
    first, size = 0, FIRST_STATEMENT_BUCKETS
    while first < count:
        last = min(first + size, count) - 1
        started = time.monotonic()
        with long_statements(engine) as connection:
            out.update(_postgres_range(connection, table, buckets, first, last))
        size = next_statement_buckets(last - first + 1, time.monotonic() - started)
        if on_range:
            on_range(last - first + 1)
        first = last + 1
    return out


def _sqlite_rows(engine: sa.Engine, table: sa.Table, where: str = "", params: tuple = ()):
    columns = ", ".join(quote(name) for name, _ in _columns(table))
    keys = ", ".join(quote(k) for k in _key_names(table))
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(f"SELECT {columns} FROM {quote(table.name)} {where} ORDER BY {keys}", params)
        while batch := cursor.fetchmany(5000):
            yield from batch
    finally:
        raw.close()


def _sqlite_buckets(engine: sa.Engine, table: sa.Table, buckets: Buckets, count: int,
                    sqlite_table: sa.Table | None = None) -> dict[int, tuple[int, str]]:
    """Every bucket's count and md5 on SQLite, in this process (RangeHasher spreads it over workers)."""
    with RangeHasher(_sqlite_file(engine), workers=0) as hasher:
        plan = RangePlan.of(table, sqlite_table if sqlite_table is not None else table, buckets.low, buckets.width)
        return _gather(hasher.submit(plan, count, 0))


def _on_sqlite(cutover: Cutover, table: sa.Table) -> sa.Table:
    """The catalog table as the file names it (same column order and keys)."""
    return cutover.captured.sqlite.get(table.name, table)


def _whole_table_candidates(cutover: Cutover, table: sa.Table) -> list[tuple]:
    """Keys whose rows differ, for a table whose first key column is not an integer (no buckets):
    every row's fingerprint on both sides."""
    sqlite_table = _on_sqlite(cutover, table)
    names = [c.name for c in sqlite_table.columns]
    key_positions = [names.index(k) for k in _key_names(sqlite_table)]
    render = fast_row_renderer([kind for _, kind in _columns(table)])
    sqlite_side = {tuple(row[i] for i in key_positions): md5_hex(render(row))
                   for row in _sqlite_rows(cutover.sqlite, sqlite_table)}
    keys = ", ".join(quote(k) for k in _key_names(table))
    with long_statements(cutover.engine(POSTGRES)) as connection:
        rows = connection.exec_driver_sql(
            f"SELECT {keys}, md5({_row_text(table)}) FROM {quote(table.name)}"
        ).all()
    width = len(_key_names(table))
    postgres_side = {tuple(r[:width]): r[width] for r in rows}
    return [k for k in set(sqlite_side) | set(postgres_side) if sqlite_side.get(k) != postgres_side.get(k)]


def _sqlite_file(engine: sa.Engine) -> Path:
    return legacy_rows.sqlite_path(engine.url.render_as_string(hide_password=False))


def _gather(tasks, on_task: Callable[[int], None] | None = None) -> dict[int, tuple[int, str]]:
    out: dict[int, tuple[int, str]] = {}
    for rows, future in tasks:
        out.update(future.result())  # a worker that died raises BrokenProcessPool here, never hangs
        if on_task:
            on_task(rows)
    return out


def _row_fingerprints(cutover: Cutover, table: sa.Table, bounds: tuple[int, int]) -> tuple[dict, dict]:
    """Per-key fingerprints of one range on both sides."""
    sqlite_table = _on_sqlite(cutover, table)
    names = [c.name for c in sqlite_table.columns]
    sqlite_keys = _key_names(sqlite_table)
    key_positions = [names.index(k) for k in sqlite_keys]
    render = fast_row_renderer([kind for _, kind in _columns(table)])
    sqlite_first = quote(sqlite_keys[0])
    sqlite_side = {
        tuple(row[i] for i in key_positions): md5_hex(render(row))
        for row in _sqlite_rows(cutover.sqlite, sqlite_table, f"WHERE {sqlite_first} >= ? AND {sqlite_first} <= ?", bounds)
    }
    key_names = _key_names(table)
    first = quote(key_names[0])
    keys = ", ".join(quote(k) for k in key_names)
    with long_statements(cutover.engine(POSTGRES)) as connection:
        rows = connection.exec_driver_sql(
            f"SELECT {keys}, md5({_row_text(table)}) FROM {quote(table.name)}"
            f" WHERE {first} >= %(lo)s AND {first} <= %(hi)s",
            {"lo": bounds[0], "hi": bounds[1]},
        ).all()
    postgres_side = {tuple(r[: len(key_names)]): r[len(key_names)] for r in rows}
    return sqlite_side, postgres_side


def _redacted(column: str, value: Any, secret: bool = False) -> Any:
    if secret or looks_secret(column):
        return fingerprint(value)
    value = redact_json(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _differences(table: sa.Table, ref: KeyRef, p_row: dict | None, s_row: dict | None) -> list[dict]:
    """Field-level differences of one key, by the shared normalization."""
    base = {"table": table.name, "key": key_to_json(ref.key)}
    if p_row is not None and s_row is None:
        return [base | {"kind": "missing_row"}]
    if p_row is None and s_row is not None:
        return [base | {"kind": "extra_row"}]
    if p_row is None:
        return []
    kinds = dict(_columns(table))
    p_norm, s_norm = normalize_row(p_row, kinds), normalize_row(s_row, kinds)
    secrets = {c.name for c in table.columns if is_secret(c)}
    return [
        base | {
            "kind": "value_differs",
            "column": column,
            "primary": _redacted(column, p_norm[column], column in secrets),
            "secondary": _redacted(column, s_norm[column], column in secrets),
        }
        for column in kinds
        if p_norm[column] != s_norm[column]
    ]


def _confirm(cutover: Cutover, table: sa.Table, keys: Sequence[tuple], row: PhaseRow) -> tuple[list[dict], int]:
    """Confirm candidate differences; return (differences, keys still in flight at the deadline).

    A key is judged only when, in one read of the primary, it has no outbox
    entry left (so the secondary has applied everything up to that state), and
    the primary row is unchanged after the secondary was read. Otherwise it is
    in flight: looked at again until RECHECK_S has passed, while an applier (this process's or an
    app process's, by its heartbeat) drains the outbox.
    """
    primary_engine = cutover.engine(row.primary)
    secondary_engine = cutover.engine(row.other)
    kinds = dict(_columns(table))
    remaining = [KeyRef(table.name, key) for key in keys]
    found: list[dict] = []
    deadline = time.monotonic() + RECHECK_S
    while remaining:
        with reading(primary_engine) as connection:
            before = read_images(connection, cutover.captured, remaining)
            pending = outbox.pending_keys(connection, remaining)
        with reading(secondary_engine) as connection:
            secondary_images = read_images(connection, cutover.captured, remaining)
        with reading(primary_engine) as connection:
            after = read_images(connection, cutover.captured, remaining)
        in_flight = []
        for ref in remaining:
            moved = (before[ref] is None) != (after[ref] is None) or (
                before[ref] is not None and normalize_row(before[ref], kinds) != normalize_row(after[ref], kinds)
            )
            if ref in pending or moved:
                in_flight.append(ref)
            else:
                found += _differences(table, ref, before[ref], secondary_images[ref])
        remaining = in_flight
        if not remaining or time.monotonic() >= deadline:
            break
        refused = _refused(primary_engine)
        if all((ref.table, encode_key(ref.key)) in refused for ref in remaining):
            break  # only changes the secondary refuses are left: waiting changes nothing
        if all(ref in pending for ref in remaining) and not _draining(cutover):
            break  # no applier drains the outbox (a CLI verify with the app stopped): waiting changes nothing
        cutover.applier.notify()
        time.sleep(0.1)
    if remaining:  # a change the secondary keeps refusing is no write in flight: the row differs
        refused = _refused(primary_engine)
        still = []
        for ref in remaining:
            error = refused.get((ref.table, encode_key(ref.key)))
            if error is None:
                still.append(ref)
            else:
                found.append({"table": table.name, "key": key_to_json(ref.key), "kind": "apply_refused",
                              "error": error})
        remaining = still
    return found, len(remaining)


def _draining(cutover: Cutover) -> bool:
    """Whether an applier drains the outbox: this process's, or an app process's (its heartbeat is fresh)."""
    return cutover.applier.running or bool(heartbeat.workers(cutover.engines.sqlite))


def _refused(primary_engine: sa.Engine) -> dict[tuple[str, str], str]:
    """(table, key as the outbox spells it) -> the error, for keys whose change the secondary refuses."""
    return {(table_name, pk): error for table_name, pk, error in outbox.rejected_keys(primary_engine)}


def _quarantined_keys(cutover: Cutover, table: sa.Table) -> set[tuple]:
    with reading(cutover.engine(POSTGRES)) as connection:
        if not sa.inspect(connection).has_table("hrp_cutover_quarantine"):
            return set()
        rows = connection.exec_driver_sql(
            "SELECT DISTINCT key FROM hrp_cutover_quarantine WHERE table_name = %(t)s", {"t": table.name}
        ).scalars().all()
    return {key_from_json(json.loads(k) if isinstance(k, str) else k) for k in rows}


def _key(difference: dict) -> tuple:
    return key_from_json(difference["key"])


def _shown_example(table: sa.Table, difference: dict) -> dict:
    """A difference as it is shown and kept (the verify runs): the value of a key column that is secret (a
    table keyed by its token) as a fingerprint; the repair reads the differing keys apart, unredacted."""
    key = _key(difference)
    shown = redact_table_key(table, key)
    return difference if shown == list(key) else difference | {"key": key_to_json(shown)}


@dataclasses.dataclass
class TablePlan:
    """One table's row counts, buckets, and its SQLite range hashes under way (RangeHasher tasks)."""

    table: sa.Table
    counts: dict[str, int]
    buckets: Buckets | None
    count: int
    tasks: list
    whole: bool = False
    """Compared whole, without buckets (the first key column is not an integer)."""


def plan_table(cutover: Cutover, hasher: RangeHasher, table: sa.Table) -> TablePlan:
    """Count both sides, split the first key column into buckets, and start hashing SQLite's
    (a first key column that is not an integer has no buckets: the table is compared whole)."""
    sqlite_table = _on_sqlite(cutover, table)
    if kind_of(next(iter(table.primary_key.columns))) is not Kind.INTEGER:
        counts = {}
        for side, engine, named in ((SQLITE, cutover.sqlite, sqlite_table), (POSTGRES, cutover.engine(POSTGRES), table)):
            with reading(engine) as connection:
                counts[side] = connection.exec_driver_sql(f"SELECT count(*) FROM {quote(named.name)}").scalar()
        return TablePlan(table, counts, None, 0, [], whole=True)
    with reading(cutover.sqlite) as connection:
        s_min, s_max, s_count = _bounds(connection, sqlite_table)
    with long_statements(cutover.engine(POSTGRES)) as connection:
        p_min, p_max, p_count = _bounds(connection, table)
    counts = {SQLITE: s_count, POSTGRES: p_count}
    lows = [v for v in (s_min, p_min) if v is not None]
    if not lows:
        return TablePlan(table, counts, None, 0, [])
    low, high = min(lows), max(v for v in (s_max, p_max) if v is not None)
    rows = max(s_count, p_count)
    with reading(cutover.sqlite) as connection:
        width = _average_width(connection, table, sqlite_table, low, high)
    count = max(1, math.ceil(rows / BUCKET_ROWS), math.ceil(rows * width / BUCKET_BYTES))
    buckets = Buckets(low, max(1, math.ceil((high - low + 1) / count)))
    tasks = hasher.submit(RangePlan.of(table, sqlite_table, buckets.low, buckets.width), count, rows)
    return TablePlan(table, counts, buckets, count, [(share * count // max(rows, 1), f) for share, f in tasks])


def _bucket_candidates(cutover: Cutover, plan: TablePlan, progress: Progress | None) -> list[tuple]:
    """Keys whose rows differ, found by hashing ranges of the first key column on both sides: SQLite's
    in worker processes (started by plan_table) while PostgreSQL hashes its own, a range of buckets
    per statement; only buckets whose hashes differ are compared row by row."""
    table, buckets, count = plan.table, plan.buckets, plan.count
    done = [0]

    def hashed(share: int) -> None:
        done[0] += share
        if progress:
            progress(table.name, "hashing", done[0], 2 * count)

    postgres_buckets = _postgres_buckets(cutover.engine(POSTGRES), table, buckets, count, on_range=hashed)
    sqlite_buckets = _gather(plan.tasks, hashed)
    differing = sorted(b for b in set(sqlite_buckets) | set(postgres_buckets)
                       if sqlite_buckets.get(b) != postgres_buckets.get(b))
    candidates: list[tuple] = []
    for index, bucket in enumerate(differing):
        sqlite_side, postgres_side = _row_fingerprints(cutover, table, buckets.bounds(bucket))
        candidates += [k for k in set(sqlite_side) | set(postgres_side)
                       if sqlite_side.get(k) != postgres_side.get(k)]
        if progress:
            progress(table.name, "differing ranges", index + 1, len(differing))
    return candidates


def verify_table(cutover: Cutover, table: sa.Table, row: PhaseRow, progress: Progress | None = None,
                 plan: TablePlan | None = None) -> tuple[TableResult, list[dict]]:
    if plan is None:
        with RangeHasher(_sqlite_file(cutover.sqlite)) as hasher:
            return verify_table(cutover, table, row, progress, plan_table(cutover, hasher, table))
    started = time.monotonic()
    result = TableResult()
    result.rows_primary = plan.counts[row.primary]
    result.rows_secondary = plan.counts[row.other]
    candidates = _bucket_candidates(cutover, plan, progress) if plan.buckets is not None else []
    if plan.whole:
        candidates += _whole_table_candidates(cutover, table)
    else:
        candidates += _odd_keys(cutover.sqlite, _on_sqlite(cutover, table))
    candidates = sorted(set(candidates), key=sqlite_order)
    differences, pending = _confirm(cutover, table, candidates, row) if candidates else ([], 0)
    quarantined = _quarantined_keys(cutover, table) if differences else set()
    confirmed = []
    # a quarantined row is on SQLite alone: missing from PostgreSQL while SQLite is the primary, and
    # on the secondary only once PostgreSQL is (a row left behind by --accept-quarantine), never
    # a row to delete from SQLite by --repair
    left_behind = "missing_row" if row.primary == SQLITE else "extra_row"
    for difference in differences:
        if difference["kind"] == left_behind and _key(difference) in quarantined:
            result.quarantined += 1
            continue
        confirmed.append(difference)
    result.missing = sum(1 for d in confirmed if d["kind"] == "missing_row")
    result.extra = sum(1 for d in confirmed if d["kind"] == "extra_row")
    result.different = len({_key(d) for d in confirmed if d["kind"] == "value_differs"})
    result.refused = sum(1 for d in confirmed if d["kind"] == "apply_refused")
    result.pending = pending
    result.seconds = round(time.monotonic() - started, 3)
    return result, confirmed


def verify(
    cutover: Cutover,
    tables: Sequence[str] | None = None,
    *,
    progress: Progress | None = None,
    record: bool = True,
) -> VerifyResult:
    """Compare every row of the given tables (default: all) between SQLite and PostgreSQL."""
    table_map = cutover.catalog.postgres_tables()
    names = list(tables) if tables else list(table_map)
    unknown = sorted(set(names) - set(table_map))
    if unknown:
        raise ValueError(f"unknown table {', '.join(unknown)}; use one of: {', '.join(table_map)}")
    row = cutover.phase_row(fresh=True)
    # the live schemas first: a table or column one side lacks is a difference, and that table's
    # rows cannot be compared column for column until both sides match (never EQUAL meanwhile)
    drifted: list = schema_drift(cutover.sqlite, cutover.engine(POSTGRES), names, sqlite_names(cutover.catalog))
    drifted += _type_drift(cutover, [name for name in names if name not in {d.table for d in drifted}])
    compared = [name for name in names if name not in {d.table for d in drifted}]
    full = tables is None or set(names) == set(table_map)
    tracker = verify_progress.Tracker(cutover.sqlite, compared, full=full) if record else None
    if tracker is None:
        return _compare(cutover, table_map, compared, drifted, row, progress, None)
    tracker.start()
    try:
        outcome = _compare(cutover, table_map, compared, drifted, row, _both(progress, tracker.step), tracker)
        record_run(cutover.sqlite, outcome, full=full)
    except BaseException:
        tracker.fail()
        raise
    tracker.finish(equal=outcome.equal)
    return outcome


def _type_drift(cutover: Cutover, names: list[str]) -> list:
    """Columns whose type PostgreSQL holds otherwise than the catalog this verify compares by (the
    file's declarations: read at start, and again by the schema watch when a migration changes one):
    their values cannot be compared as one type, never EQUAL."""
    with reading(cutover.engine(POSTGRES)) as connection:
        return type_drift(connection, cutover.catalog, names)


def _compare(cutover: Cutover, table_map: dict[str, sa.Table], compared: list[str], drifted: list, row: PhaseRow,
             progress: Progress | None, tracker: verify_progress.Tracker | None) -> VerifyResult:
    results, examples, differing = {}, [], []
    with RangeHasher(_sqlite_file(cutover.sqlite)) as hasher:
        plans = [plan_table(cutover, hasher, table_map[name]) for name in compared]  # all SQLite work queued
        if tracker is not None:
            tracker.counted({plan.table.name: max(plan.counts.values(), default=0) for plan in plans})
        for name, plan in zip(compared, plans):
            results[name], confirmed = verify_table(cutover, table_map[name], row, progress, plan)
            if tracker is not None:
                tracker.table_done(name)
            examples += [_shown_example(table_map[name], d) for d in confirmed]
            differing += sorted({KeyRef(name, _key(d)) for d in confirmed}, key=lambda r: sqlite_order(r.key))
    drift = [d.as_dict() for d in drifted]
    equal = not drift and all(r.missing == r.extra == r.different == r.refused == 0 for r in results.values())
    return VerifyResult(equal, results, (drift + examples)[:EXAMPLES], row.primary, differing=differing,
                        schema=drift)


def _both(first: Progress | None, second: Progress) -> Progress:
    if first is None:
        return second

    def step(table: str, stage: str, done: int, total: int) -> None:
        first(table, stage, done, total)
        second(table, stage, done, total)

    return step


def repair(cutover: Cutover, result: VerifyResult) -> dict[str, int]:
    """Make the secondary equal to the primary for every confirmed difference (one apply path)."""
    primary = cutover.engine(result.primary)
    secondary = cutover.engine(other_database(result.primary))
    counts = {"upserted": 0, "deleted": 0, "failed": 0}
    start = 0
    while start < len(result.differing):
        chunk = result.differing[start : start + 500]
        chunk = chunk[:fitting_changes(primary, cutover.captured, chunk)]  # rows of big blobs: a few at a time
        start += len(chunk)
        applied = apply_keys(
            chunk,
            tables=cutover.captured,
            primary=primary,
            secondary=secondary,
            still_primary=lambda: cutover.phase_row(fresh=True).primary == result.primary,
        )
        counts["upserted"] += applied.upserted
        counts["deleted"] += applied.deleted
        counts["failed"] += len(applied.failed)
    return counts


class RepairRefused(RuntimeError):
    """A repair in a phase where it cannot hold."""


def verify_and_repair(
    cutover: Cutover, tables: Sequence[str] | None = None, *, progress: Progress | None = None,
    record: bool = True, again: bool = True,
) -> tuple[VerifyResult, VerifyResult | None]:
    """Verify; if anything differs, repair it and (with `again`) verify again. Returns (first, second).
    `record=False` keeps the runs out of the recorded evidence (a partial check, not a verify)."""
    if cutover.phase_row(fresh=True).secondary is None:
        raise RepairRefused(
            "repair needs a phase with a secondary (dual_write, shadow or postgres_primary): in"
            f" {cutover.phase().phase.value} nothing captures the primary's writes, so a repaired"
            " secondary would fall behind again at once; move to one of those phases first"
        )
    first = verify(cutover, tables, progress=progress, record=record)
    if first.equal or not first.differing:
        return first, None
    first.repaired = repair(cutover, first)
    return first, verify(cutover, tables, progress=progress, record=record) if again else None


def carry_gap(cutover: Cutover, tables: Sequence[str]) -> None:
    """Carry the rows written to `tables` while their capture was missing (a table rebuilt by a
    migration loses its triggers): verify those tables and repair what differs, without recording
    the run as a full verify. Handed to open_cutover(carry=...) by the CLI and the web app."""
    known = [name for name in tables if name in cutover.catalog.tables]
    if not known or cutover.phase_row(fresh=True).secondary is None:
        return
    first, _ = verify_and_repair(cutover, known, record=False, again=False)
    if first.repaired:
        log.warning("schema.gap_carried", tables=known, repaired=first.repaired)


def _ensure_runs_table(connection: sa.Connection) -> None:
    connection.exec_driver_sql(
        f"CREATE TABLE IF NOT EXISTS {RUNS_TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " finished_at REAL NOT NULL, equal INTEGER NOT NULL, full INTEGER NOT NULL, result TEXT NOT NULL)"
    )


def record_run(engine: sa.Engine, result: VerifyResult, *, full: bool) -> None:
    with writing(engine) as connection:
        _ensure_runs_table(connection)
        connection.exec_driver_sql(
            f"INSERT INTO {RUNS_TABLE} (finished_at, equal, full, result) VALUES (?, ?, ?, ?)",
            (time.time(), 1 if result.equal else 0, 1 if full else 0, json.dumps(result.as_json(), default=str)),
        )
        connection.exec_driver_sql(
            f"DELETE FROM {RUNS_TABLE} WHERE id NOT IN (SELECT id FROM {RUNS_TABLE} ORDER BY id DESC LIMIT 100)"
        )


def last_result(engine: sa.Engine, *, full_only: bool = True) -> dict | None:
    """The newest recorded verify: {"finished_at", "age_s", "equal", "full", "result"} or None."""
    with reading(engine) as connection:
        if not sa.inspect(connection).has_table(RUNS_TABLE):
            return None
        row = connection.exec_driver_sql(
            f"SELECT finished_at, equal, full, result FROM {RUNS_TABLE}"
            f" {'WHERE full = 1' if full_only else ''} ORDER BY id DESC LIMIT 1"
        ).first()
    if row is None:
        return None
    return {
        "finished_at": row[0],
        "age_s": round(time.time() - row[0], 1),
        "equal": bool(row[1]),
        "full": bool(row[2]),
        "result": json.loads(row[3]),
    }
