"""Assess the legacy file before the backfill: what is there, what is broken, what will be quarantined.

Reads the file strictly read-only (a `file:...?mode=ro` URI and
PRAGMA query_only) and reports:
- rows per table;
- PRAGMA integrity_check and PRAGMA foreign_key_check (which holds even
  though production ran with foreign keys off);
- orphans per foreign key (rows whose parent does not exist), with example keys;
- per column, a census of the values adapters.convert would reject, by
  reason, with a count, example keys and one example value (secrets
  fingerprinted): exactly the rows the backfill will quarantine, and why;
- an estimate of the backfill's time from a short timed sample per table;
- the mapping of every column to its PostgreSQL type, and why (hrp_data.catalog);
  tables without a declared key (keyed by their rowid); what is not carried
  over (views, triggers, CHECKs, untranslatable defaults...), with its SQL;
- for the HRP file, what lies beyond the HRP schema (carried from the file's
  own schema: hrp_data.backfill.legacy_file).

Every row is converted with the same code the backfill uses
(hrp_data.backfill.legacy_rows), so the census and the quarantine agree.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from adapters.catalog import Catalog, quote
from adapters.outbox import key_to_json
from hrp_data.backfill.legacy_file import require_contract
from hrp_data.backfill.legacy_rows import Converted, TableReader, connect, readers
from hrp_data.backfill.read_pool import POOL_MIN_ROWS, PageReader, default_workers
from hrp_data.catalog import file_catalog

EXAMPLES = 5
SAMPLE_ROWS = 5_000
PAGE = 10_000

Progress = Callable[[str, int, int], None]


@dataclasses.dataclass
class Census:
    count: int = 0
    examples: list[list] = dataclasses.field(default_factory=list)
    example_value: str | None = None


def assess(
    sqlite_file: Path, *, sample_rows: int = SAMPLE_ROWS, progress: Progress | None = None, workers: int | None = None,
) -> dict[str, Any]:
    """The assessment report of `sqlite_file` as a JSON-ready dict (the file is only read).

    The census reads and converts every row as the backfill does, in its worker processes
    (read_pool; `workers` None: one per core, at most four, for the big tables), while a thread
    of its own runs the file-wide checks (integrity, foreign keys, orphans) on another connection."""
    path = Path(sqlite_file).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no SQLite file at {path}")
    contract = require_contract(path)
    connection = _read_only(path)
    pages = PageReader(path, connection, default_workers() if workers is None else workers,
                       min_rows=POOL_MIN_ROWS if workers is None else 0)
    try:
        catalog = file_catalog(connection)
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hrp-assess") as checks:
            file_wide = checks.submit(_file_checks, path, catalog)
            table_readers = readers(catalog)
            counts = {name: reader.count(connection) for name, reader in table_readers.items()}
            estimate = _estimate(connection, table_readers, counts, sample_rows)
            tables: dict[str, Any] = {}
            rejections: list[dict[str, Any]] = []
            for name, reader in table_readers.items():
                census, rejected_rows = _census(connection, pages, reader, counts[name], progress)
                tables[name] = {"rows": counts[name], "rejected_rows": rejected_rows}
                for (column, reason), found in sorted(census.items()):
                    rejections.append({
                        "table": name, "column": column, "reason": reason, "count": found.count,
                        "examples": found.examples, "example_value": found.example_value,
                    })
            integrity, foreign_key_check, orphans = file_wide.result()
    finally:
        pages.close()
        connection.close()
    return {
        "file": str(path),
        "size": path.stat().st_size,
        "integrity_check": "ok" if integrity == ["ok"] else integrity[:20],
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


def _read_only(path: Path):
    connection = connect(path, read_only=True)
    connection.execute("PRAGMA query_only = ON")
    return connection


def _file_checks(path: Path, catalog: Catalog) -> tuple[list[str], dict[str, Any], list[dict[str, Any]]]:
    """PRAGMA integrity_check, PRAGMA foreign_key_check and the orphans, on a connection of their own."""
    connection = _read_only(path)
    try:
        integrity = [row[0] for row in connection.execute("PRAGMA integrity_check")]
        return integrity, _foreign_key_check(connection), _orphans(connection, catalog)
    finally:
        connection.close()


def _pages(connection, pages: PageReader, reader: TableReader, total: int) -> Iterator[tuple[int, Converted]]:
    """Every row of the table converted, a page at a time (rows read, converted): the keyset pages
    (in the read pool's workers for a big table), then the rows whose key holds a NULL."""
    for page in pages.pages(reader, None, PAGE, total, with_keys=False, want_keys=False):
        yield page.read, page.converted
    null_keyed = reader.null_keyed(connection)
    if null_keyed:
        yield len(null_keyed), reader.convert(null_keyed)


def _census(connection, pages: PageReader, reader: TableReader, total: int,
            progress: Progress | None) -> tuple[dict, int]:
    census: dict[tuple[str, str], Census] = defaultdict(Census)
    rejected_rows = 0
    done = 0
    for read, converted in _pages(connection, pages, reader, total):
        rejected_rows += len(converted.rejected_keys)
        for reject in converted.rejects:
            found = census[(reject.column, reject.reason)]
            found.count += 1
            if len(found.examples) < EXAMPLES:
                found.examples.append(key_to_json(reject.key))
            if found.example_value is None:
                found.example_value = reject.value
        done += read
        if progress:
            progress(reader.name, done, total)
    return census, rejected_rows


def _orphans(connection, catalog: Catalog) -> list[dict[str, Any]]:
    """Per foreign key: rows whose non-NULL reference finds no parent row (names as the file has them)."""
    out = []
    for entry in catalog.tables.values():
        table = entry.sqlite
        key = ", ".join(f"c.{quote(c.name)}" for c in table.primary_key.columns)
        for foreign_key in entry.postgres.foreign_keys:
            parent_entry = catalog.tables.get(foreign_key.column.table.name)
            if parent_entry is None:
                continue
            column = table.c[foreign_key.parent.key].name
            parent = parent_entry.sqlite.name
            parent_column = parent_entry.sqlite.c[foreign_key.column.key].name
            condition = (
                f"FROM {quote(table.name)} c WHERE c.{quote(column)} IS NOT NULL AND NOT EXISTS"
                f" (SELECT 1 FROM {quote(parent)} p WHERE p.{quote(parent_column)} = c.{quote(column)})"
            )
            rows = connection.execute(f"SELECT count(*) {condition}").fetchone()[0]
            examples = [list(r) for r in connection.execute(f"SELECT {key} {condition} ORDER BY {key} LIMIT {EXAMPLES}")]
            out.append({
                "table": table.name, "column": column, "parent": f"{parent}.{parent_column}",
                "rows": rows, "examples": examples,
            })
    return out


def _foreign_key_check(connection) -> dict[str, Any]:
    by_pair: dict[str, int] = defaultdict(int)
    total = 0
    for table, _rowid, parent, _fkid in connection.execute("PRAGMA foreign_key_check"):
        by_pair[f"{table} -> {parent}"] += 1
        total += 1
    return {"violations": total, "by_table": dict(sorted(by_pair.items()))}


def _estimate(connection, table_readers: dict[str, TableReader], counts: dict[str, int], sample_rows: int) -> dict[str, Any]:
    """Time reading and converting the first `sample_rows` rows of each table; extrapolate."""
    tables = {}
    total_s = 0.0
    for name, reader in table_readers.items():
        started = time.perf_counter()
        rows = reader.page(connection, None, sample_rows) if sample_rows > 0 else []
        reader.convert(rows)
        elapsed = time.perf_counter() - started
        rate = len(rows) / elapsed if rows and elapsed > 0 else None
        seconds = counts[name] / rate if rate else 0.0
        total_s += seconds
        tables[name] = {"sample_rows": len(rows), "rows_per_s": None if rate is None else round(rate),
                        "seconds": round(seconds, 3)}
    return {
        "seconds": round(total_s, 3),
        "basis": "read and convert a timed sample per table on this machine; PostgreSQL's part"
                 " (indexes, foreign keys) runs alongside and can dominate on the largest tables",
        "tables": tables,
    }
