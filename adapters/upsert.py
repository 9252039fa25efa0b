"""The full-row upsert by primary key, in each database's own dialect."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def upsert(dialect_name: str, table: sa.Table, rows: dict[str, Any] | list[dict[str, Any]]) -> sa.Insert:
    """INSERT ... ON CONFLICT (primary key) DO UPDATE SET every non-key column, for one row or many
    (many rows must have the same columns and distinct keys)."""
    statement = _INSERTS[dialect_name](table).values(rows)
    first = rows[0] if isinstance(rows, list) else rows
    keys = [c.name for c in table.primary_key.columns]
    changes = {name: statement.excluded[name] for name in first if name not in keys}
    if not changes:
        return statement.on_conflict_do_nothing(index_elements=keys)
    return statement.on_conflict_do_update(index_elements=keys, set_=changes)
