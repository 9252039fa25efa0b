"""Unit of work: owns one session on one engine and its transaction.

Leaving the `with` block without `commit()` rolls back, so only an explicit
commit persists. A writable unit of work on SQLite begins with BEGIN IMMEDIATE,
taking the write lock up front instead of failing half-way on a lock upgrade.
A read-only unit of work on PostgreSQL runs its statements in autocommit: under
READ COMMITTED each statement takes its own snapshot anyway, so it reads the
same, without the BEGIN and ROLLBACK round trips around each read (on SQLite
its reads keep one transaction: one snapshot of the file for the whole unit).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hrp_data.repositories import (
    ApiCredentialRepository,
    HorseRepository,
    PredictionRepository,
    RaceRepository,
    StatisticsRepository,
    UserRepository,
)


class UnitOfWork:
    """`with UnitOfWork(engine) as uow: uow.races.add(...); uow.commit()`."""

    def __init__(self, engine: sa.Engine, *, writable: bool = True, autocommit: bool = False):
        """`autocommit`: a read-only unit of work on an engine that reads in autocommit already
        (the shadow workers' pool, hrp_data.cutover.shadow_reads.candidate_engine), used as it is:
        no engine of options made per unit, no isolation level set and reset per connection."""
        if autocommit and not writable:
            self.engine = engine
        elif writable:
            self.engine = engine.execution_options(sqlite_begin="IMMEDIATE")
        elif engine.dialect.name == "postgresql":
            self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        else:
            self.engine = engine

    def __enter__(self) -> "UnitOfWork":
        self.session = Session(self.engine, expire_on_commit=False, autoflush=True)
        self.users = UserRepository(self.session)
        self.races = RaceRepository(self.session)
        self.horses = HorseRepository(self.session)
        self.predictions = PredictionRepository(self.session)
        self.credentials = ApiCredentialRepository(self.session)
        self.statistics = StatisticsRepository(self.session)
        return self

    def __exit__(self, *exc_info) -> None:
        self.session.rollback()
        self.session.close()

    def commit(self) -> None:
        self.session.commit()

    def rollback(self) -> None:
        self.session.rollback()
