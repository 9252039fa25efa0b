"""The quarantine: legacy rows the backfill could not copy, kept in PostgreSQL with the reason.

A row is quarantined, never dropped and never altered: it stays in SQLite
as it is, and hrp_cutover_quarantine names it (table, key), the column, the
machine-readable reason (a key of adapters.convert.REASONS, or one of the
foreign-key and constraint reasons below), and the offending value as text
(secret columns fingerprinted, never stored in clear). One entry per
(table, key, column); seeing it again updates it and keeps `first_seen`.

Reasons besides the conversion rules:
- orphan_foreign_key: the parent row exists in neither database;
- parent_quarantined: the parent exists in SQLite but is itself quarantined;
- parent_missing: the parent exists in SQLite but not (yet) in PostgreSQL;
  a live write still on its way. Retried automatically at the end of the table;
- constraint_violation: PostgreSQL refused the row (e.g. a unique column
  another row already holds); `detail` names the constraint, never values;
- null_in_required_column: a NULL where the schema says NOT NULL (a legacy
  file made without the constraint, or a composite key's column), found
  before PostgreSQL is asked (hrp_data.backfill.legacy_rows), so `assess` names it too.

The operator fixes the row in SQLite (the app or the sqlite3 shell) and runs
`hrp-cutover backfill --retry-quarantined`; rows that copy leave the quarantine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from psycopg2.extras import execute_values

from adapters.binds import reading
from adapters.outbox import decode_key, encode_key, key_from_json, key_to_json
from hrp_data.backfill.legacy_rows import Key, Reject, sqlite_order
from hrp_data.cutover import apply as live_apply
from hrp_data.cutover.apply import FOREIGN_KEY_ACTION
from hrp_data.cutover.outbox import rejected_keys

QUARANTINE = "hrp_cutover_quarantine"
INSTALL_LOCK = 0x4852505F51554152  # 'HRP_QUAR'

DDL = f"""
CREATE TABLE IF NOT EXISTS {QUARANTINE} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name text NOT NULL,
    key jsonb NOT NULL,
    column_name text NOT NULL DEFAULT '',
    reason text NOT NULL,
    value text,
    detail text,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_{QUARANTINE} UNIQUE (table_name, key, column_name)
)"""

ORPHAN = live_apply.ORPHAN
"""The reason of a row whose parent neither database holds, the live applier's word too."""
PARENT_QUARANTINED = "parent_quarantined"
PARENT_MISSING = "parent_missing"
CONSTRAINT = "constraint_violation"


def install(cursor: Any) -> None:
    """Create the quarantine table if it is missing (idempotent, safe across processes)."""
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", (INSTALL_LOCK,))
    cursor.execute(DDL)


def record(cursor: Any, table: str, rejects: Sequence[Reject]) -> None:
    """Add or refresh entries (first_seen is kept for an entry seen before)."""
    if not rejects:
        return
    latest = {(encode_key(r.key), r.column): r for r in rejects}  # one entry per (key, column)
    rows = [(table, key, column, r.reason, r.value, r.detail) for (key, column), r in latest.items()]
    execute_values(
        cursor,
        f"INSERT INTO {QUARANTINE} AS q (table_name, key, column_name, reason, value, detail) VALUES %s"
        " ON CONFLICT (table_name, key, column_name) DO UPDATE SET reason = EXCLUDED.reason,"
        " value = EXCLUDED.value, detail = EXCLUDED.detail, last_seen = now()",
        rows,
        template="(%s, %s::jsonb, %s, %s, %s, %s)",
        page_size=1000,
    )


def replace(cursor: Any, table: str, keys: Iterable[Key], rejects: Sequence[Reject]) -> None:
    """The entries of `keys` become exactly `rejects` (others of those keys are removed)."""
    keys = list(keys)
    if not keys:
        return
    fresh = {(encode_key(r.key), r.column) for r in rejects}
    cursor.execute(
        f"SELECT key::text, column_name FROM {QUARANTINE} WHERE table_name = %s AND key = ANY(%s::jsonb[])",
        (table, [encode_key(k) for k in keys]),
    )
    stale = [(k, c) for k, c in cursor.fetchall() if (_normal(k), c) not in fresh]
    if stale:
        cursor.executemany(
            f"DELETE FROM {QUARANTINE} WHERE table_name = %s AND key = %s::jsonb AND column_name = %s",
            [(table, k, c) for k, c in stale],
        )
    record(cursor, table, rejects)


def _normal(key_text: str) -> str:
    return json.dumps(json.loads(key_text), separators=(",", ":"))


def remove(cursor: Any, table: str, keys: Iterable[Key]) -> int:
    """Forget every entry of these keys; return how many rows (keys) left the quarantine."""
    texts = [encode_key(k) for k in keys]
    if not texts:
        return 0
    cursor.execute(
        f"WITH gone AS (DELETE FROM {QUARANTINE} WHERE table_name = %s AND key = ANY(%s::jsonb[])"
        " RETURNING key) SELECT count(DISTINCT key) FROM gone",
        (table, texts),
    )
    return cursor.fetchone()[0]


def keys(cursor: Any, table: str, reasons: Sequence[str] | None = None) -> list[Key]:
    """The quarantined keys of `table` (optionally only those with one of `reasons`), in key order."""
    condition = "" if reasons is None else " AND reason = ANY(%s)"
    params: tuple = (table,) if reasons is None else (table, list(reasons))
    cursor.execute(
        f"SELECT DISTINCT key FROM {QUARANTINE} WHERE table_name = %s{condition}", params
    )
    found = [key_from_json(row[0]) for row in cursor.fetchall()]
    return sorted(found, key=sqlite_order)


def which_quarantined(cursor: Any, table: str, candidates: Iterable[Key]) -> set[Key]:
    texts = {encode_key(k): k for k in candidates}
    if not texts:
        return set()
    cursor.execute(
        f"SELECT DISTINCT key::text FROM {QUARANTINE} WHERE table_name = %s AND key = ANY(%s::jsonb[])",
        (table, list(texts)),
    )
    return {texts[_normal(row[0])] for row in cursor.fetchall() if _normal(row[0]) in texts}


def count(cursor: Any, table: str | None = None) -> int:
    """Distinct quarantined rows (of one table, or all)."""
    if table is None:
        cursor.execute(f"SELECT count(*) FROM (SELECT DISTINCT table_name, key FROM {QUARANTINE}) q")
    else:
        cursor.execute(f"SELECT count(DISTINCT key) FROM {QUARANTINE} WHERE table_name = %s", (table,))
    return cursor.fetchone()[0]


def _exists(connection: sa.Connection) -> bool:
    return sa.inspect(connection).has_table(QUARANTINE)


def quarantine_entries(pg_engine: sa.Engine) -> list[dict[str, Any]]:
    """Every entry with all its fields (table order, then key), for the text report."""
    from hrp_data.models import TABLES

    order = {table.name: index for index, table in enumerate(TABLES)}
    with reading(pg_engine) as connection:
        if not _exists(connection):
            return []
        rows = connection.exec_driver_sql(
            f"SELECT table_name, key, column_name, reason, value, detail, first_seen, last_seen FROM {QUARANTINE}"
        ).all()
    entries = [
        {
            "table": row.table_name,
            "key": list(row.key),
            "column": row.column_name or None,
            "reason": row.reason,
            "value": row.value,
            "detail": row.detail,
            "first_seen": row.first_seen.isoformat(),
            "last_seen": row.last_seen.isoformat(),
        }
        for row in rows
    ]
    entries.sort(key=lambda e: (order.get(e["table"], 99), sqlite_order(key_from_json(e["key"])), e["column"] or ""))
    return entries


def quarantine_rows(pg_engine: sa.Engine) -> list[dict[str, Any]]:
    """The quarantine as {"table", "key", "column", "reason", "value"} dicts (secrets already fingerprinted)."""
    return [
        {name: entry[name] for name in ("table", "key", "column", "reason", "value")}
        for entry in quarantine_entries(pg_engine)
    ]


_REJECTION = re.compile(r"(?:rejected: |a key PostgreSQL cannot hold \()(?:(?P<key_column>[^:()\s]+): )?"
                        r"(?P<reason>[^\s()]+)(?: \((?P<column>[^()]+)\))?\)?$")


_HELD = re.compile(rf"rejected: (?P<reason>{FOREIGN_KEY_ACTION}) \((?P<detail>.*)\)$", re.DOTALL)
"""A change held back by the foreign-key action guard (hrp_data.cutover.apply.action_refusals):
no column, the constraint and the child row that still references the parent as its detail."""


def live_rejections(engines: Sequence[tuple[str, sa.Engine]]) -> list[dict[str, Any]]:
    """Live changes the applier settled as rejected (or held, as `foreign_key_action`), still
    waiting in an outbox ({"database" (whose outbox), "table", "key", "column", "reason",
    "detail"}); the row is in that database as it is, unaltered, until it is fixed there. Never a
    value: the outbox keeps keys and reasons only."""
    found = []
    for database, engine in engines:
        for table, pk, error in rejected_keys(engine):
            column = detail = None
            if held := _HELD.match(error):
                reason, detail = held.group("reason"), held.group("detail")
            elif match := _REJECTION.match(error):
                column = match.group("column") or match.group("key_column")
                reason = match.group("reason")
            else:
                reason = error
            found.append({"database": database, "table": table, "key": key_to_json(decode_key(pk)),
                          "column": column, "reason": reason, "detail": detail})
    return found


def quarantined_count(pg_engine: sa.Engine) -> int:
    """How many rows are quarantined now (0 when the table does not exist)."""
    return quarantined_counts(pg_engine)[0]


def quarantined_counts(pg_engine: sa.Engine) -> tuple[int, int]:
    """(rows quarantined now, how many of them only for a parent that was on its way: PARENT_MISSING);
    (0, 0) when the table does not exist."""
    with reading(pg_engine) as connection:
        if not _exists(connection):
            return 0, 0
        return tuple(connection.exec_driver_sql(
            f"SELECT count(*), count(*) FILTER (WHERE waiting) FROM (SELECT table_name, key,"
            f" bool_and(reason = '{PARENT_MISSING}') AS waiting FROM {QUARANTINE} GROUP BY table_name, key) q"
        ).one())
