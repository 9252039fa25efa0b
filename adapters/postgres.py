"""PostgreSQL: engine factory with client-side bounds.

Every call to PostgreSQL is bounded on the client side: connect_timeout and
TCP keepalives so a dead or unreachable server is noticed in seconds, and a
server-side statement_timeout as a second line. The pool is SQLAlchemy's.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

CONNECT_TIMEOUT_S = 3
STATEMENT_TIMEOUT_MS = 30_000


def create_postgres_engine(url: str, *, application_name: str = "hrp-cutover", **kw: Any) -> sa.Engine:
    """An engine on PostgreSQL with bounded connects and keepalives."""
    connect_args = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 2,
        "application_name": application_name,
        "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
    }
    connect_args.update(kw.pop("connect_args", {}))
    kw.setdefault("pool_pre_ping", True)
    kw.setdefault("pool_timeout", 5)
    return sa.create_engine(url, connect_args=connect_args, **kw)

