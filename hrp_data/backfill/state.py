"""The backfill's checkpoints: one row per table in PostgreSQL, committed with each batch.

hrp_cutover_backfill holds, per table, the last key copied (`last_key`), the
last key whose range was re-checked for zombies (`rechecked_key`, at most one
batch behind), the cumulative counts, and the state: `copying` or `done`.
The row named '*' is the run: `complete` once every table is done and the
final steps (identities, ANALYZE) ran. Because a batch's rows, its quarantine
entries and its checkpoint commit in one transaction, a run killed at any
moment resumes exactly where its last commit left it.
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
    finished_at timestamptz
)"""

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
        f" {STATE_TABLE}.state = 'done' THEN 'done' ELSE 'copying' END, updated_at = now()",
        (table,),
    )


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
     "finished_at": iso | None,
     "tables": {"<name>": {"state", "read", "copied", "present", "quarantined",
                           "removed", "seconds", "rows_per_s", "last_key"}}}
    """
    with reading(pg_engine) as connection:
        if not sa.inspect(connection).has_table(STATE_TABLE):
            return {"complete": False, "state": "not started", "finished_at": None, "tables": {}}
        rows = {
            row.table_name: row
            for row in connection.exec_driver_sql(
                f"SELECT table_name, state, last_key, read, copied, present, quarantined, removed,"
                f" seconds, finished_at FROM {STATE_TABLE}"
            )
        }
    run = rows.pop(RUN, None)
    complete = run is not None and run.state == "complete"
    tables = {}
    for name in sorted(rows, key=lambda n: (n not in _HRP_ORDER, _HRP_ORDER.get(n, 0), n)):
        row = rows[name]
        tables[name] = {
            "state": row.state,
            "read": row.read,
            "copied": row.copied,
            "present": row.present,
            "quarantined": row.quarantined,
            "removed": row.removed,
            "seconds": round(row.seconds, 3),
            "rows_per_s": round(row.read / row.seconds) if row.seconds > 0 else None,
            "last_key": row.last_key,
        }
    state = "complete" if complete else ("in progress" if tables else "not started")
    return {
        "complete": complete,
        "state": state,
        "finished_at": run.finished_at.isoformat() if complete and run.finished_at else None,
        "tables": tables,
    }
