"""shadow.statements.describe: which of an app's statements can be compared at all."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shadow.statements import describe


class Base(DeclarativeBase):
    pass


class Horse(Base):
    __tablename__ = "horses"
    id: Mapped[int] = mapped_column(primary_key=True)
    random_seed: Mapped[int | None]
    nowhere: Mapped[str | None]
    created_at: Mapped[str | None]


KNOWN = {"horses": {}}


@pytest.mark.parametrize("statement", [
    sa.select(Horse).order_by(sa.func.random()).limit(3),
    sa.select(Horse).where(Horse.created_at > sa.func.datetime("now", "-1 day")),
    sa.select(sa.func.now()),
    sa.select(Horse.id, sa.func.current_timestamp()),
    sa.text("SELECT id FROM horses ORDER BY RANDOM() LIMIT 5"),
    sa.text("SELECT * FROM horses WHERE created_at > datetime('now', '-7 days')"),
    sa.text("SELECT CURRENT_DATE"),
], ids=["orm-random", "orm-datetime-now", "func-now", "current-timestamp", "text-random", "text-now", "text-date"])
def test_a_statement_whose_answer_depends_on_when_it_runs_is_not_compared(statement):
    assert describe(statement, KNOWN).volatile


@pytest.mark.parametrize("statement", [
    sa.select(Horse).where(Horse.id == 7),
    sa.select(Horse.random_seed, Horse.nowhere).order_by(Horse.random_seed),
    sa.select(Horse).where(Horse.created_at > "2026-01-01"),
    sa.text("SELECT nowhere, random_seed FROM horses WHERE created_at > :since"),
], ids=["by-key", "column-names", "a-bound-date", "text-with-param"])
def test_a_deterministic_statement_is_compared(statement):
    assert not describe(statement, KNOWN).volatile
