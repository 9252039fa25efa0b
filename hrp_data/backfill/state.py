"""The backfill's checkpoints: one row per table in PostgreSQL, committed with each batch.

hrp_cutover_backfill holds, per table, the last key copied (`last_key`), the
last key whose range was re-checked for zombies (`rechecked_key`, at most one
batch behind), the cumulative counts, the rows it is expected to read in all
(`total`: read so far plus the rows SQLite holds past the checkpoint, counted
when a run starts and again when the table's copy starts), and the state:
`pending` (counted, not begun), `copying` or `done`.
The row named '*' is the run: `complete` once every table is done and the
final steps (identities, ANALYZE) ran. A running backfill holds RUN_LOCK, a
session advisory lock, for as long as it runs; backfill_status reads it
(`running`) and estimates the seconds of copying left (`eta_s`, eta_seconds).
Because a batch's rows, its quarantine entries and its checkpoint commit in
one transaction, a run killed at any moment resumes exactly where its last
commit left it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa

from adapters.binds import reading
from adapters.outbox import encode_key, key_from_json
from hrp_data.backfill.legacy_rows import Key
from hrp_data.models import TABLES

_HRP_ORDER = {table.name: index for index, table in enumerate(TABLES)}

STATE_TABLE = "hrp_cutover_backfill"
RUN = "*"
INSTALL_LOCK = 0x4852505F42414B46  # 'HRP_BAKF'
RUN_LOCK = 0x4852505F4246524E  # 'HRP_BFRN': one backfill at a time

DDL = f"""
CREATE TABLE IF NOT EXISTS {STATE_TABLE} (
    table_name text PRIMARY KEY,
    state text NOT NULL DEFAULT 'pending',
    last_key jsonb,
    rechecked_key jsonb,
    batches bigint NOT NULL DEFAULT 0,
    read bigint NOT NULL DEFAULT 0,
    copied bigint NOT NULL DEFAULT 0,
    present bigint NOT NULL DEFAULT 0,
    quarantined bigint NOT NULL DEFAULT 0,
    removed bigint NOT NULL DEFAULT 0,
    seconds double precision NOT NULL DEFAULT 0,
    started_at timestamptz,
    updated_at timestamptz,
    finished_at timestamptz,
    total bigint
)"""
UPGRADE = f"ALTER TABLE {STATE_TABLE} ADD COLUMN IF NOT EXISTS total bigint"
"""A state table from before the totals were kept."""

COUNTS = ("read", "copied", "present", "quarantined", "removed")


@dataclasses.dataclass
class TableStats:
    """What a table's copy did so far: the counts and the seconds spent."""

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
class Checkpoint:
    table: str
    state: str = "pending"
    last_key: Key | None = None
    rechecked_key: Key | None = None
    batches: int = 0
    stats: TableStats = dataclasses.field(default_factory=TableStats)

    @property
    def done(self) -> bool:
        return self.state == "done"


def _key_json(key: Key | None) -> str | None:
    """The key as the outbox spells it (cast to jsonb, so older spellings read back the same)."""
    return None if key is None else encode_key(key)


def install(cursor: Any) -> None:
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", (INSTALL_LOCK,))
    cursor.execute(DDL)
    cursor.execute(UPGRADE)


def load(cursor: Any) -> dict[str, Checkpoint]:
    cursor.execute(
        f"SELECT table_name, state, last_key, rechecked_key, batches, read, copied, present,"
        f" quarantined, removed, seconds FROM {STATE_TABLE}"
    )
    out = {}
    for row in cursor.fetchall():
        name, state, last_key, rechecked_key, batches, *counts = row
        out[name] = Checkpoint(
            name, state,
            None if last_key is None else key_from_json(last_key),
            None if rechecked_key is None else key_from_json(rechecked_key),
            batches, TableStats(*counts),
        )
    return out


def clear(cursor: Any) -> None:
    """Forget every checkpoint (--restart); rows already copied stay."""
    cursor.execute(f"DELETE FROM {STATE_TABLE}")


def oldest_finish(cursor: Any) -> float | None:
    """Epoch seconds of the earliest checkpoint that says "finished" (a done table or the complete
    run), None when none does: copies older than an evidence reset may miss writes made since."""
    cursor.execute(f"SELECT extract(epoch FROM min(finished_at)) FROM {STATE_TABLE}")
    row = cursor.fetchone()
    return None if row is None or row[0] is None else float(row[0])


def start_table(cursor: Any, table: str) -> None:
    cursor.execute(
        f"INSERT INTO {STATE_TABLE} (table_name, state, started_at, updated_at) VALUES (%s, 'copying', now(), now())"
        " ON CONFLICT (table_name) DO UPDATE SET state = CASE WHEN"
        f" {STATE_TABLE}.state = 'done' THEN 'done' ELSE 'copying' END,"
        f" started_at = coalesce({STATE_TABLE}.started_at, now()), updated_at = now()",
        (table,),
    )


def set_total(cursor: Any, table: str, total: int) -> None:
    """The rows `table` is expected to read in all (a table not begun gets its `pending` row)."""
    cursor.execute(
        f"INSERT INTO {STATE_TABLE} (table_name, state, total, updated_at) VALUES (%s, 'pending', %s, now())"
        " ON CONFLICT (table_name) DO UPDATE SET total = EXCLUDED.total",
        (table, total),
    )


def running(connection: sa.Connection) -> bool:
    """Whether a backfill runs now against this database (some session holds RUN_LOCK)."""
    return bool(connection.exec_driver_sql(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
        " AND ((classid::bigint << 32) | objid::bigint) = %(key)s)",
        {"key": RUN_LOCK},
    ).scalar())


def eta_seconds(tables: dict[str, dict[str, Any]], *, complete: bool, running: bool) -> float | None:
    """Seconds of row copying left: each table's rows left at its own measured rate, or at the
    run's (all rows read over all seconds spent) for a table not begun. 0 once the run is complete;
    None while no backfill runs (nothing is getting closer) or a table's rows left or the rate are
    unknown. Index builds, retries and the final ANALYZE come on top."""
    if complete:
        return 0.0
    if not running:
        return None
    read = sum(t["read"] for t in tables.values())
    seconds = sum(t["seconds"] for t in tables.values())
    if read <= 0 or seconds <= 0:
        return None
    left_s = 0.0
    for table in tables.values():
        if table["left"] is None:
            return None
        if table["left"]:
            own = table["read"] / table["seconds"] if table["read"] > 0 and table["seconds"] > 0 else None
            left_s += table["left"] / (own or read / seconds)
    return left_s


def save_batch(
    cursor: Any,
    table: str,
    *,
    last_key: Key | None,
    rechecked_key: Key | None,
    seconds: float,
    batches: int = 1,
    **counts: int,
) -> None:
    """Advance a table's checkpoint (inside the batch's own transaction)."""
    sets = ", ".join(f"{name} = {name} + %({name})s" for name in COUNTS)
    params = {name: counts.get(name, 0) for name in COUNTS}
    params.update(table=table, seconds=seconds, batches=batches,
                  last_key=_key_json(last_key), rechecked_key=_key_json(rechecked_key))
    cursor.execute(
        f"UPDATE {STATE_TABLE} SET {sets}, batches = batches + %(batches)s, seconds = seconds + %(seconds)s,"
        " last_key = coalesce(%(last_key)s::jsonb, last_key),"
        " rechecked_key = coalesce(%(rechecked_key)s::jsonb, rechecked_key), updated_at = now()"
        " WHERE table_name = %(table)s",
        params,
    )


def set_quarantined(cursor: Any, table: str, quarantined: int) -> None:
    cursor.execute(
        f"UPDATE {STATE_TABLE} SET quarantined = %s, updated_at = now() WHERE table_name = %s",
        (quarantined, table),
    )


def finish_table(cursor: Any, table: str, rechecked_key: Key | None) -> None:
    cursor.execute(
        f"UPDATE {STATE_TABLE} SET state = 'done', rechecked_key = coalesce(%s::jsonb, rechecked_key),"
        " finished_at = now(), updated_at = now() WHERE table_name = %s",
        (_key_json(rechecked_key), table),
    )


def mark_run(cursor: Any, state: str) -> None:
    cursor.execute(
        f"INSERT INTO {STATE_TABLE} (table_name, state, started_at, updated_at, finished_at)"
        f" VALUES (%s, %s, now(), now(), CASE WHEN %s = 'complete' THEN now() END)"
        f" ON CONFLICT (table_name) DO UPDATE SET state = EXCLUDED.state, updated_at = now(),"
        f" finished_at = EXCLUDED.finished_at",
        (RUN, state, state),
    )


def backfill_status(pg_engine: sa.Engine) -> dict[str, Any]:
    """Per-table progress and whether the backfill is complete (dashboard, readiness, CLI).

    {"complete": bool, "state": "not started" | "in progress" | "complete",
     "finished_at": iso | None, "running": bool,
     "rows_total": int | None, "rows_left": int | None, "eta_s": float | None,
     "tables": {"<name>": {"state", "read", "copied", "present", "quarantined",
                           "removed", "seconds", "rows_per_s", "total", "left", "last_key"}}}

    `total` and `left` are None for a table whose rows were never counted (a state table
    from before the totals were kept); rows_total and rows_left then too.
    """
    with reading(pg_engine) as connection:
        if not sa.inspect(connection).has_table(STATE_TABLE):
            return {"complete": False, "state": "not started", "finished_at": None, "running": False,
                    "rows_total": None, "rows_left": None, "eta_s": None, "tables": {}}
        rows = {row.table_name: row for row in connection.exec_driver_sql(f"SELECT * FROM {STATE_TABLE}")}
        is_running = running(connection)
    run = rows.pop(RUN, None)
    complete = run is not None and run.state == "complete"
    tables = {}
    for name in sorted(rows, key=lambda n: (n not in _HRP_ORDER, _HRP_ORDER.get(n, 0), n)):
        row = rows[name]
        total = row._mapping.get("total")
        if total is not None:
            total = max(total, row.read)  # rows written past the last count were read too
        tables[name] = {
            "state": row.state,
            "read": row.read,
            "copied": row.copied,
            "present": row.present,
            "quarantined": row.quarantined,
            "removed": row.removed,
            "seconds": round(row.seconds, 3),
            "rows_per_s": round(row.read / row.seconds) if row.seconds > 0 else None,
            "total": total,
            "left": 0 if row.state == "done" else (None if total is None else total - row.read),
            "last_key": row.last_key,
        }
    state = "complete" if complete else ("in progress" if tables else "not started")
    known = tables and all(t["total"] is not None for t in tables.values())
    return {
        "complete": complete,
        "state": state,
        "finished_at": run.finished_at.isoformat() if complete and run.finished_at else None,
        "running": is_running,
        "rows_total": sum(t["total"] for t in tables.values()) if known else None,
        "rows_left": sum(t["left"] for t in tables.values()) if known else None,
        "eta_s": eta_seconds(tables, complete=complete, running=is_running),
        "tables": tables,
    }
