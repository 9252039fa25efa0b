"""The layer's PostgreSQL advisory locks: which there are, who holds one, how to clear a stale one.

Phase lock: transaction-scoped everywhere (writers and appliers shared, a
move or the finishing of an interrupted move exclusive), so it ends with its
transaction, on whatever server connection that ran. Backfill run lock: a
session lock, taken only on a direct connection (a backfill refuses to start
behind a transaction pooler), so it ends with the backfill's process. A
holder that outlives its command can then only be a session some other tool
left behind; `hrp-cutover unlock` shows it and `--pid` ends it
(docs/pooling.md).
"""

from __future__ import annotations

import sqlalchemy as sa

from adapters.pooler import Holder, advisory_holders, terminate_holder
from hrp_data.cutover.apply import PHASE_LOCK
from hrp_data.backfill.state import RUN_LOCK

LAYER_LOCKS = {PHASE_LOCK: "phase", RUN_LOCK: "backfill run"}


def holders(connection: sa.Connection, *, only: str | None = None) -> list[Holder]:
    """The backends holding or awaiting one of the layer's locks (`only`: that lock)."""
    keys = {key: name for key, name in LAYER_LOCKS.items() if only is None or name == only}
    return advisory_holders(connection, keys)


def who_holds(engine: sa.Engine, lock: str) -> str:
    """One clause naming the holders of `lock` and how to clear a stale one ('' if nobody holds it now)."""
    try:
        with engine.connect() as connection:
            found = [h for h in holders(connection, only=lock) if h.granted]
    except sa.exc.SQLAlchemyError:
        return ""
    if not found:
        return ""
    first = found[0]
    return (
        f": {'; '.join(h.describe() for h in found)}; if that is not a live hrp-cutover command"
        f" (e.g. a pooler's server connection), `hrp-cutover unlock --pid {first.pid}` ends that session"
    )


def unlock(connection: sa.Connection, pid: int) -> bool | None:
    """End backend `pid` if, and only if, it holds one of the layer's locks (see `terminate_holder`)."""
    return terminate_holder(connection, pid, LAYER_LOCKS)
