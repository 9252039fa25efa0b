"""The full-row upsert by primary key, in each database's own dialect."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def upsert(dialect_name: str, table: sa.Table, rows: dict[str, Any] | list[dict[str, Any]]) -> sa.Insert:
    """INSERT ... ON CONFLICT (primary key) DO UPDATE SET every non-key column, for one row or many
    (rows keyed by column key; many rows must have the same columns and distinct keys)."""
    statement = _INSERTS[dialect_name](table).values(rows)
    first = rows[0] if isinstance(rows, list) else rows
    keys = [c.key for c in table.primary_key.columns]
    index = list(table.primary_key.columns)
    changes = {name: statement.excluded[name] for name in first if name not in keys}
    if not changes:
        return statement.on_conflict_do_nothing(index_elements=index)
    return statement.on_conflict_do_update(index_elements=index, set_=changes)
