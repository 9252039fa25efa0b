"""Run work on an engine or on a connection the caller already holds.

Some work (the flip's drain) must run inside a transaction the caller holds,
the same work elsewhere opens its own. `reading(bind)` and `writing(bind)`
give a connection either way, without closing or committing the caller's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import sqlalchemy as sa

Bind = sa.Engine | sa.Connection


@contextlib.contextmanager
def reading(bind: Bind) -> Iterator[sa.Connection]:
    """A connection to read with; a fresh one is rolled back and closed afterwards."""
    if isinstance(bind, sa.Connection):
        yield bind
        return
    with bind.connect() as connection:
        try:
            yield connection
        finally:
            connection.rollback()


@contextlib.contextmanager
def writing(bind: Bind) -> Iterator[sa.Connection]:
    """A connection in a write transaction (BEGIN IMMEDIATE on SQLite), committed on success."""
    if isinstance(bind, sa.Connection):
        yield bind
        return
    with bind.execution_options(sqlite_begin="IMMEDIATE").begin() as connection:
        yield connection
