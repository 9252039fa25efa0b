"""Assess the legacy file before the backfill: what is there, what is broken, what will be quarantined.

Reads the file strictly read-only (a `file:...?mode=ro` URI and
PRAGMA query_only) and reports:
- rows per table;
- PRAGMA quick_check with every index's entries counted against its table's
  rows (or, asked for, PRAGMA integrity_check: _integrity), and PRAGMA
  foreign_key_check (which holds even though production ran with foreign keys off);
- orphans per foreign key (rows whose parent does not exist), with example keys;
- per column, a census of the values adapters.convert would reject, by
  reason, with a count, example keys and one example value (secrets
  fingerprinted): exactly the rows the backfill will quarantine, and why;
- an estimate of the backfill's time from a timed sample per table (_estimate);
- the mapping of every column to its PostgreSQL type, and why (hrp_data.catalog);
  tables without a declared key (keyed by their rowid); what is not carried
  over (views, triggers, CHECKs, untranslatable defaults...), with its SQL;
- for the HRP file, what lies beyond the HRP schema (carried from the file's
  own schema: hrp_data.backfill.legacy_file).

The census converts with the same code the backfill uses (hrp_data.backfill.legacy_rows),
so the census and the quarantine agree, but only the rows SQLite cannot vouch for: one SQL
pass per table (adapters.vouch, TableReader.suspects) leaves out every row whose values
the conversion rules are known to accept.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import itertools
import json
import math
import re
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from adapters import vouch
from adapters.catalog import Catalog, orphan_condition, quote, reference_label
from adapters.convert import Kind
from adapters.outbox import key_to_json
from shadow.redact import redact_table_key
from hrp_data.backfill import read_pool
from hrp_data.backfill.legacy_file import require_contract
from hrp_data.backfill.legacy_rows import Converted, TableReader, connect, readers
from hrp_data.catalog import MODELLED, file_catalog

EXAMPLES = 5
SAMPLE_ROWS = 5_000
PAGE = 10_000
CHUNK_ROWS = 200_000
"""A table of twice this many rows or more is censused in key ranges of about this many, side by side."""
CENSUS_THREADS = 2
"""Threads that run the JSON suggestions' passes (and a small file's census): SQLite evaluates
them without the GIL, beside the two threads of the checks."""
MMAP_BYTES = 2**28
"""At most this much of the file is mapped per check connection: the resident size counts the mapped
pages, so the map is bounded (256 MB) and assess's peak memory stays flat as files grow."""
BACKFILL_OVER_CONVERSION = 2.0
"""The backfill's wall seconds over the CPU seconds of reading and converting its rows alone (as
_estimate times them), from `make bench-scale` on the 2-core machine of BENCHMARKS.md: PostgreSQL's
COPY, index builds (GIN ones above all), foreign-key checks and ANALYZE take about as much CPU
again as the conversion, on the same cores."""
BACKFILL_STARTUP_S = 4.0
"""What a backfill takes whatever the rows: the process, its workers, the checks before the first batch,
the last table's index builds and ANALYZE (`make bench-scale`: 100,000 and 1,000,000 races)."""

Progress = Callable[[str, int, int], None]


@dataclasses.dataclass
class Census:
    count: int = 0
    examples: list[list] = dataclasses.field(default_factory=list)
    example_value: str | None = None


def assess(sqlite_file: Path, *, sample_rows: int = SAMPLE_ROWS, progress: Progress | None = None,
           column_types: dict[tuple[str, str], str] | None = None, full_integrity_check: bool = False) -> dict[str, Any]:
    """The assessment report of `sqlite_file` as a JSON-ready dict (the file is only read).
    `column_types`: the operator's choices (Settings.column_types; None: those kept in the file).
    `full_integrity_check`: PRAGMA integrity_check instead of quick_check and index counts (_integrity).

    The census's passes run in the backfill's worker processes (read_pool.worker_pool: one per
    core, at most four), a big table in key ranges (_chunks): the check of JSON text and the
    conversion of the suspects are Python, which one process's GIL would hold to one core; a file
    of fewer than read_pool.POOL_MIN_ROWS rows, which a pool's start-up would cost more than it
    saves, in a pool of CENSUS_THREADS threads. Beside them, two threads run the file-wide checks:
    integrity_check, and foreign_key_check with the orphans; each on a connection of its own."""
    path = Path(sqlite_file).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no SQLite file at {path}")
    contract = require_contract(path)
    connection = _read_only(path)
    vouch.register(connection)
    try:
        catalog = file_catalog(connection, column_types)
        with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="hrp-assess-checks") as checks, \
                concurrent.futures.ThreadPoolExecutor(CENSUS_THREADS, thread_name_prefix="hrp-assess-census") as pool, \
                contextlib.ExitStack() as stack:
            table_readers = readers(catalog)
            counts = {name: reader.count(connection) for name, reader in table_readers.items()}
            # the sample is timed alone: beside the checks' threads its CPU time came out up to 3x
            estimate = _estimate(connection, table_readers, counts, sample_rows)
            integrity_check = checks.submit(_integrity, path, full_integrity_check)
            key_checks = checks.submit(_key_checks, path, catalog)
            documents = [pool.submit(_json_documents, path, catalog, name) for name in catalog.tables]
            if sum(counts.values()) >= read_pool.POOL_MIN_ROWS:
                processes = read_pool.worker_pool(path, read_pool.default_workers(), column_types)
                stack.callback(read_pool.close_pool, processes)
                census = functools.partial(processes.submit, read_pool.suspects_between, size=PAGE)
            else:
                census = functools.partial(pool.submit, _suspect_rejects, path, catalog)
            suspects = {
                name: [census(name, low, high) for low, high in _chunks(connection, reader, counts[name])]
                for name, reader in table_readers.items()
            }
            tables: dict[str, Any] = {}
            rejections: list[dict[str, Any]] = []
            for name, reader in table_readers.items():
                batches = (converted for chunk in suspects[name] for converted in chunk.result())
                census, rejected_rows = _census(connection, reader, batches, counts[name], progress)
                tables[name] = {"rows": counts[name], "rejected_rows": rejected_rows}
                for (column, reason), found in sorted(census.items()):
                    rejections.append({
                        "table": name, "column": column, "reason": reason, "count": found.count,
                        "examples": found.examples, "example_value": found.example_value,
                    })
            suggestions = [found for future in documents for found in future.result()]
            integrity = integrity_check.result()
            foreign_key_check, orphans = key_checks.result()
    finally:
        connection.close()
    return {
        "file": str(path),
        "size": path.stat().st_size,
        "integrity_check": "ok" if integrity == ["ok"] else integrity[:20],
        "integrity_check_kind": "integrity_check" if full_integrity_check else QUICK_CHECK,
        "foreign_key_check": foreign_key_check,
        "tables": tables,
        "orphans": orphans,
        "rejections": rejections,
        "quarantine_rows": sum(t["rejected_rows"] for t in tables.values())
        + sum(o["rows"] for o in orphans),
        "estimate": estimate,
        "beyond_schema": {"extra_columns": contract.extra_columns, "extra_tables": contract.extra_tables}
        if catalog.hrp else None,
        "hrp_file": catalog.hrp,
        "mapping": [row.as_json() for row in catalog.mapping()],
        "suggestions": suggestions,
        "keyless_tables": [
            {"table": entry.name, "recommendation": "declare a primary key (until then the layer keys it by its"
             " rowid, carried in PostgreSQL as hrp_cutover_rowid; do not VACUUM the file during the cutover)"}
            for entry in catalog.tables.values() if entry.rowid_key
        ],
        "renamed": [
            {"sqlite": entry.name, "postgres": entry.postgres.name}
            for entry in catalog.tables.values() if entry.name != entry.postgres.name
        ] + [
            {"sqlite": f"{row.table}.{row.column}", "postgres": f"{row.table}.{row.postgres_name}"}
            for row in catalog.mapping() if row.column != row.postgres_name
        ],
        "not_carried": [item.as_json() for item in catalog.not_carried],
    }


def _read_only(path: Path, *, mapped: bool = False):
    """A read-only connection; `mapped`: reading the file through a memory map (MMAP_BYTES of it).
    The checks read every page, many more than once, and a map spares each read its system call
    and copy (the mapped pages are the kernel's page cache, shared, not this process's own memory,
    though its resident size counts them). The census's passes gain nothing from one: their cost
    is the expressions."""
    connection = connect(path, read_only=True)
    connection.execute("PRAGMA query_only = ON")
    if mapped:
        connection.execute(f"PRAGMA mmap_size = {MMAP_BYTES}").fetchall()
    return connection


QUICK_CHECK = "quick_check and index entry counts"


def _integrity(path: Path, full: bool) -> list[str]:
    """The file's damage (["ok"]: none), on a connection of its own (SQLite's C, beside the census).

    By default PRAGMA quick_check (every page, record and constraint; about a seventh of
    integrity_check's time on the HRP file) and every index's entries counted against its table's
    rows: what quick_check leaves out is matching each index with its table, and an index that
    lost or gained entries is what would make the backfill and the verify, which read a table
    keyed by something other than its rowid through its key's index, miss the same rows. `full`:
    PRAGMA integrity_check, which also matches each entry's values (`hrp-cutover backup` runs it
    on its snapshot of the file)."""
    connection = _read_only(path, mapped=True)
    try:
        if full:
            return [row[0] for row in connection.execute("PRAGMA integrity_check")]
        problems = [row[0] for row in connection.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            return problems
        return _index_counts(connection) or ["ok"]
    finally:
        connection.close()


def _index_counts(connection) -> list[str]:
    """Every index whose entries are not as many as its table's rows (those its WHERE holds for).

    An index is counted by two searches on its leftmost column (IS NULL, IS NOT NULL) that
    INDEXED BY holds to the index: a bare count(*) may be answered from the table. An index whose
    leftmost column is an expression is not counted (integrity_check matches it)."""
    problems = []
    rows: dict[tuple[str, str], int] = {}
    indexes = connection.execute(
        "SELECT i.name, i.tbl_name, i.sql FROM sqlite_master i JOIN sqlite_master t"
        " ON t.type = 'table' AND t.name = i.tbl_name AND t.sql NOT LIKE 'CREATE VIRTUAL%'"
        " WHERE i.type = 'index' ORDER BY i.tbl_name, i.name"
    ).fetchall()
    for name, table, sql in indexes:
        leftmost = connection.execute(f"PRAGMA index_xinfo({quote(name)})").fetchone()
        if leftmost is None or leftmost[2] is None:
            continue
        where = re.search(r"\)\s*WHERE\s+(.+?)\s*;?\s*$", sql or "", re.IGNORECASE | re.DOTALL)
        partial = f"({where.group(1)}) AND " if where else ""
        column = quote(leftmost[2])
        try:
            entries = connection.execute(
                f"SELECT (SELECT count(*) FROM {quote(table)} INDEXED BY {quote(name)} WHERE {partial}{column} IS NULL)"
                f" + (SELECT count(*) FROM {quote(table)} INDEXED BY {quote(name)} WHERE {partial}{column} IS NOT NULL)"
            ).fetchone()[0]
            if (table, partial) not in rows:
                rows[(table, partial)] = connection.execute(
                    f"SELECT count(*) FROM {quote(table)} NOT INDEXED WHERE {partial}1").fetchone()[0]
        except sqlite3.Error:  # an index SQLite will not search by name (a WITHOUT ROWID table's own key)
            continue
        if entries != rows[(table, partial)]:
            problems.append(
                f"index {name} on {table} holds {entries} entries for {rows[(table, partial)]} rows:"
                f" the index is damaged; REINDEX {quote(name)} on a copy of the file, then assess again"
            )
    return problems


def _key_checks(path: Path, catalog: Catalog) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """PRAGMA foreign_key_check and the orphans, on a connection of their own: one pass over the
    references answers both where it can (_orphans)."""
    connection = _read_only(path, mapped=True)
    try:
        violations = connection.execute("PRAGMA foreign_key_check").fetchall()
        return _foreign_key_check(violations), _orphans(connection, catalog, violations)
    finally:
        connection.close()


def _chunks(connection, reader: TableReader, rows: int) -> list[tuple[int | None, int | None]]:
    """The table cut into key ranges of about CHUNK_ROWS rows each where its key is its rowid
    (a range is a seek, not a scan: the suspects' pass is NOT INDEXED), else whole."""
    span = reader.first_key_range(connection) if rows >= 2 * CHUNK_ROWS and reader.rowid_keyed else None
    if span is None:
        return [(None, None)]
    parts = -(-rows // CHUNK_ROWS)
    low, high = span
    edges = sorted({low + (high - low) * part // parts for part in range(1, parts)})
    return list(zip([None, *edges], [*edges, None]))


def _suspect_rejects(path: Path, catalog: Catalog, name: str, low: int | None, high: int | None) -> list[Converted]:
    """The rows of table `name` in one key range that SQLite cannot vouch for, converted (on a
    connection and with readers of this call's own: it runs in a thread of the census's pool)."""
    connection = _read_only(path)
    vouch.register(connection)
    try:
        return readers(catalog)[name].suspect_rejects(connection, PAGE, low, high)
    finally:
        connection.close()


def _json_documents(path: Path, catalog: Catalog, name: str) -> list[dict[str, Any]]:
    """The text columns of table `name` (beyond the HRP models, not chosen already) whose every
    value is a JSON object or array: each a suggestion to choose jsonb (one pass over the table)."""
    entry = catalog.tables[name]
    candidates = [m for m in entry.mapping if m.kind is Kind.TEXT and (m.table, m.column) not in catalog.chosen_types
                  and not (catalog.hrp and (m.table, m.column) in MODELLED)
                  and not entry.postgres.c[m.postgres_name].primary_key]
    if not candidates:
        return []
    terms = ", ".join(
        f"count({quote(m.column)}), sum(typeof({quote(m.column)}) = 'text' AND json_valid({quote(m.column)})"
        f" AND substr(ltrim({quote(m.column)}, char(32, 9, 10, 13)), 1, 1) IN ('{{', '['))"
        for m in candidates
    )
    connection = _read_only(path)
    try:
        counts = connection.execute(f"SELECT {terms} FROM {quote(entry.name)}").fetchone()
    finally:
        connection.close()
    found = []
    for index, m in enumerate(candidates):
        values, documents = counts[2 * index], counts[2 * index + 1] or 0
        if values and documents == values:
            found.append({
                "table": m.table, "column": m.column, "values": values, "type": "jsonb",
                "why": f"every one of its {values} value(s) is a JSON object or array",
                "toml": f"[column-types.{json.dumps(m.table)}]\n{json.dumps(m.column)} = \"jsonb\"\n",
            })
    return found


def _census(connection, reader: TableReader, batches: Iterable[Converted], total: int,
            progress: Progress | None) -> tuple[dict, int]:
    """The rejects of the table, by (column, reason): its suspects converted (`batches`, in key
    order), then the rows whose key holds a NULL (outside the keyset walk); every other row
    converts cleanly."""
    census: dict[tuple[str, str], Census] = defaultdict(Census)
    rejected_rows = 0
    null_keyed = reader.null_keyed(connection)
    for converted in itertools.chain(batches, [reader.convert(null_keyed)] if null_keyed else []):
        rejected_rows += len(converted.rejected_keys)
        for reject in converted.rejects:
            found = census[(reject.column, reject.reason)]
            found.count += 1
            if len(found.examples) < EXAMPLES:
                found.examples.append(key_to_json(redact_table_key(reader.table, reject.key)))
            if found.example_value is None:
                found.example_value = reject.value
    if progress:
        progress(reader.name, total, total)
    return census, rejected_rows


def _orphans(connection, catalog: Catalog, violations: list[tuple]) -> list[dict[str, Any]]:
    """Per foreign key: rows whose reference finds no parent row (names as the file has them); a
    reference with a NULL part is none (MATCH SIMPLE: a composite key is looked up whole, and only
    when no part of it is NULL, as both databases check it).

    Where the file declares the key as one column onto its parent's INTEGER PRIMARY KEY (and the
    child has rowids), PRAGMA foreign_key_check's rows of that key are exactly those rows: both
    look the value up as SQLite's `parent.id = child.col` does (numeric affinity, then a rowid
    seek; NULL skipped). Any other key is sought with an anti-join."""
    out = []
    for entry in catalog.tables.values():
        table = entry.sqlite
        key = ", ".join(f"c.{quote(c.name)}" for c in table.primary_key.columns)
        declared = _declared_keys(connection, table.name)
        for constraint in sorted(entry.postgres.foreign_key_constraints, key=lambda c: (c.column_keys, c.referred_table.name)):
            parent_entry = catalog.tables.get(constraint.referred_table.name)
            if parent_entry is None:
                continue
            columns = [table.c[element.parent.key].name for element in constraint.elements]
            parent = parent_entry.sqlite.name
            parent_columns = [parent_entry.sqlite.c[element.column.key].name for element in constraint.elements]
            fkid = declared.get((columns[0], parent.lower())) if len(columns) == 1 else None
            if fkid is not None and _rowid_alias(connection, parent) == parent_columns[0].lower():
                rowids = [rowid for child, rowid, _parent, found in violations if child == table.name and found == fkid]
                rows = len(rowids)
                condition = f"FROM {quote(table.name)} c WHERE c.rowid IN (SELECT value FROM json_each(?))"
                params: tuple = (json.dumps(rowids),)
            else:
                condition = f"FROM {quote(table.name)} c WHERE {orphan_condition('c', columns, parent, parent_columns)}"
                params = ()
                rows = connection.execute(f"SELECT count(*) {condition}", params).fetchone()[0]
            examples = [redact_table_key(entry.postgres, r) for r in connection.execute(
                f"SELECT {key} {condition} ORDER BY {key} LIMIT {EXAMPLES}", params)] if rows else []
            out.append({
                "table": table.name, "column": ", ".join(columns), "parent": reference_label(parent, parent_columns),
                "rows": rows, "examples": examples,
            })
    return out


def _declared_keys(connection, table: str) -> dict[tuple[str, str], int]:
    """The file's one-column foreign keys of `table` whose rows foreign_key_check can tell
    (a rowid table): (column, parent in lower case) -> the key's id."""
    if _without_rowid(connection, table):
        return {}
    rows = connection.execute(f"PRAGMA foreign_key_list({quote(table)})").fetchall()
    widths = defaultdict(int)
    for row in rows:
        widths[row[0]] += 1
    return {(row[3], row[2].lower()): row[0] for row in rows if widths[row[0]] == 1}


def _without_rowid(connection, table: str) -> bool:
    found = connection.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
    return found is None or re.search(r"\)\s*WITHOUT\s+ROWID\s*;?\s*$", found[0] or "", re.IGNORECASE) is not None


def _rowid_alias(connection, table: str) -> str | None:
    """The column (lower case) that is `table`'s rowid (its INTEGER PRIMARY KEY), if any."""
    if _without_rowid(connection, table):
        return None
    keys = [row for row in connection.execute(f"PRAGMA table_info({quote(table)})") if row[5]]
    if len(keys) == 1 and keys[0][2].upper() == "INTEGER":
        return keys[0][1].lower()
    return None


def _foreign_key_check(violations: list[tuple]) -> dict[str, Any]:
    by_pair: dict[str, int] = defaultdict(int)
    for table, _rowid, parent, _fkid in violations:
        by_pair[f"{table} -> {parent}"] += 1
    return {"violations": len(violations), "by_table": dict(sorted(by_pair.items()))}


def _estimate(connection, table_readers: dict[str, TableReader], counts: dict[str, int], sample_rows: int) -> dict[str, Any]:
    """The backfill's seconds: per table, the CPU seconds this thread takes to read and convert
    `sample_rows` rows taken from places spread over the table (TableReader.sample; thread
    time, so the checks running beside it do not count), per row, times its rows; the sum times
    BACKFILL_OVER_CONVERSION, plus BACKFILL_STARTUP_S. A table of wide rows is sampled by as many
    rows as a backfill page of them holds (TableReader.fitting), if fewer. The sample is read and
    converted twice, the faster time taken: the first read's page faults on a cold file, or a moment
    of other work, took a short sample's CPU time up to 3x (assess's estimate then 1.8x the backfill)."""
    tables = {}
    total_s = 0.0
    for name, reader in table_readers.items():
        size = reader.fitting(connection, sample_rows) if sample_rows > 0 else 0

        def read(reader: TableReader = reader, size: int = size, rows: int = counts[name]) -> list[tuple]:
            if size <= 0:
                return []
            return reader.page(connection, None, size) if rows <= size else reader.sample(connection, size)

        elapsed = math.inf
        for _attempt in range(2):  # the faster of two: the first meets the file's cold pages (page faults)
            started = time.thread_time()
            rows = read()
            reader.convert(rows)
            elapsed = min(elapsed, time.thread_time() - started)
        rate = len(rows) / elapsed if rows and elapsed > 0 else None
        seconds = counts[name] / rate * BACKFILL_OVER_CONVERSION if rate else 0.0
        total_s += seconds
        tables[name] = {"sample_rows": len(rows), "rows_per_s": None if rate is None else round(rate),
                        "seconds": round(seconds, 3)}
    return {
        "seconds": round(total_s + BACKFILL_STARTUP_S, 3),
        "basis": "the CPU time of reading and converting a sample spread over each table, on this machine,"
                 f" times {BACKFILL_OVER_CONVERSION} for PostgreSQL's part (COPY, index builds, foreign keys),"
                 f" plus {BACKFILL_STARTUP_S} s to start",
        "tables": tables,
    }
