"""The outbox table (the same shape in both databases) and how a primary key is spelled in it.

A row says: the row of `table_name` with key `pk` changed in this database (the
primary) and must be made equal in the other one. `pk` is the JSON array of
the key values in key-column order, written without spaces ('[17]', '[3,5]'),
so both databases' triggers spell an integer key exactly as `encode_key` does.

A legacy key may hold other storage classes (SQLite keeps any in a composite
key): a blob is spelled {"blob": "<hex>"} by the trigger as by `key_to_json`,
and `decode_key` gives the exact value back. Text and reals keep the
trigger's own JSON spelling, so an entry is always deleted by the text its
trigger wrote, never by a spelling made again in Python.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from adapters.sqlite import decode_text

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
    sa.Index("ix_hrp_cutover_outbox_due", "next_attempt_at", "seq"),
    sqlite_autoincrement=True,
)


def key_to_json(key: Sequence[Any]) -> list:
    """A key as JSON (ints as numbers, as the outbox spells them); odd legacy keys tagged.

    A blob is {"blob": hex}, text that is not valid UTF-8 or holds a NUL byte {"text_bytes": hex}
    (JSONB refuses \\u0000, so the quarantine could not name such a key otherwise).
    A real that is whole or not finite is {"real": repr}: JSON (and JSONB,
    which spells 1e+19 as 10000000000000000000) would give it back as an
    integer, or could not hold it at all.
    """
    out: list = []
    for value in key:
        if isinstance(value, (bytes, bytearray, memoryview)):
            out.append({"blob": bytes(value).hex()})
        elif isinstance(value, str):
            if "\x00" in value or not _valid_utf8(value):
                out.append({"text_bytes": value.encode("utf-8", "surrogateescape").hex()})
            else:
                out.append(value)
        elif isinstance(value, float) and not (math.isfinite(value) and not value.is_integer()):
            out.append({"real": repr(value)})
        else:
            out.append(value)
    return out


def _valid_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def key_from_json(values: Iterable[Any]) -> tuple[Any, ...]:
    """The inverse of key_to_json: the exact SQLite values again."""
    out: list = []
    for value in values:
        if isinstance(value, dict) and "blob" in value:
            out.append(bytes.fromhex(value["blob"]))
        elif isinstance(value, dict) and "text_bytes" in value:
            out.append(decode_text(bytes.fromhex(value["text_bytes"])))
        elif isinstance(value, dict) and "real" in value:
            out.append(float(value["real"]))
        else:
            out.append(value)
    return tuple(out)


def encode_key(values: Sequence[Any]) -> str:
    return json.dumps(key_to_json(values), separators=(",", ":"))


def decode_key(text: str) -> tuple[Any, ...]:
    return key_from_json(json.loads(text))
