"""The outbox table (the same shape in both databases) and how a primary key is spelled in it.

A row says: the row of `table_name` with key `pk` changed in this database (the
primary) and must be made equal in the other one. `pk` is the JSON array of
the key values in key-column order, written without spaces ('[17]', '[3,5]'),
so both databases' triggers spell it exactly as `encode_key` does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

OUTBOX = "hrp_cutover_outbox"

metadata = sa.MetaData()

outbox = sa.Table(
    OUTBOX,
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), sa.Identity(), primary_key=True),
    sa.Column("table_name", sa.Text, nullable=False),
    sa.Column("pk", sa.Text, nullable=False),
    sa.Column("op", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.Float, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text),
    sa.Index("ix_hrp_cutover_outbox_key", "table_name", "pk"),
    sqlite_autoincrement=True,
)


def encode_key(values: Sequence[Any]) -> str:
    return json.dumps(list(values), separators=(",", ":"))


def decode_key(text: str) -> tuple[Any, ...]:
    return tuple(json.loads(text))
