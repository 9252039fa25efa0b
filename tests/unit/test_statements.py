"""shadow.statements: which of an app's statements can be compared at all (describe), and what a
sample keeps of the app's rows (kept_rows, kept_records)."""

from __future__ import annotations

import copy

import pytest
import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shadow.statements import describe, frozen_records, kept_records, kept_rows


class Base(DeclarativeBase):
    pass


class Horse(Base):
    __tablename__ = "horses"
    id: Mapped[int] = mapped_column(primary_key=True)
    random_seed: Mapped[int | None]
    nowhere: Mapped[str | None]
    created_at: Mapped[str | None]


class Doc(Base):
    __tablename__ = "docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str | None]
    body: Mapped[dict | None] = mapped_column(sa.JSON)
    horse_id: Mapped[int | None] = mapped_column(sa.ForeignKey("horses.id"))
    horse: Mapped[Horse | None] = orm.relationship()


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


@pytest.fixture
def session():
    engine = sa.create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with orm.Session(engine) as session:
        session.add(Horse(id=1, nowhere="x"))
        session.add_all([Doc(id=1, title="a", body={"tags": ["t"]}, horse_id=1), Doc(id=2, title="b", body=None)])
        session.commit()
        yield session
    engine.dispose()


@pytest.mark.parametrize("statement", [
    sa.select(Doc).order_by(Doc.id),
    sa.select(Horse),
    sa.select(Doc, Horse).join(Horse).order_by(Doc.id),
    sa.select(Doc.id, Doc.body).order_by(Doc.id),
    sa.select(Doc.title).order_by(Doc.id),
    sa.text("SELECT id, title FROM docs ORDER BY id"),
], ids=["entity-with-a-document", "entity", "two-entities", "columns", "one-column", "text"])
def test_kept_rows_make_the_records_frozen_records_make(session, statement):
    frozen = session.execute(statement).freeze()
    assert kept_records(kept_rows(frozen)) == frozen_records(frozen)


def test_an_entity_without_documents_is_kept_as_a_copy_of_its_instance_dict(session):
    horse = session.get(Horse, 1)
    kept = kept_rows(session.execute(sa.select(Horse)).freeze())
    assert kept.entity is Horse
    horse.nowhere = "changed"
    session.expire_all()
    assert kept_records(kept) == [{"id": 1, "random_seed": None, "nowhere": "x", "created_at": None}]


def test_kept_rows_are_the_rows_as_read_whatever_the_app_does_next(session):
    """The worker makes records after the request: an entity changed, a JSON document changed in place
    or the session expired after the read changes nothing of what the sample kept."""
    session.get(Doc, 1).horse  # a loaded relationship in the instance dict: not a column, left out
    frozen = session.execute(sa.select(Doc).order_by(Doc.id)).freeze()
    expected = copy.deepcopy(frozen_records(frozen))
    kept = kept_rows(frozen)
    first = frozen.data[0]
    first.title = "changed"
    first.body["tags"].append("changed")
    session.expire_all()
    assert kept_records(kept) == expected
    assert expected[0] == {"id": 1, "title": "a", "body": {"tags": ["t"]}, "horse_id": 1}
