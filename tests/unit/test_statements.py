"""shadow.statements: which of an app's statements can be compared at all (describe), how a sample
reads the app's rows (result_rows) and what it keeps of them (kept_rows, kept_records)."""

from __future__ import annotations

import copy

import pytest
import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shadow.statements import PREBUFFERED, describe, frozen_records, kept_records, kept_rows, result_rows


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


STATEMENTS = [
    sa.select(Doc).order_by(Doc.id),
    sa.select(Horse),
    sa.select(Doc, Horse).join(Horse).order_by(Doc.id),
    sa.select(Doc.id, Doc.body).order_by(Doc.id),
    sa.select(Doc.title).order_by(Doc.id),
    sa.text("SELECT id, title FROM docs ORDER BY id"),
]
STATEMENT_IDS = ["entity-with-a-document", "entity", "two-entities", "columns", "one-column", "text"]


def _read(session, statement):
    """The app's statement as a shadowed read runs it: (what the app gets, the rows the sample reads)."""
    return result_rows(session.execute(statement, execution_options=PREBUFFERED))


@pytest.mark.parametrize("statement", STATEMENTS, ids=STATEMENT_IDS)
def test_kept_rows_make_the_records_frozen_records_make(session, statement):
    frozen = session.execute(statement).freeze()
    _result, rows = _read(session, statement)
    assert kept_records(kept_rows(rows)) == frozen_records(frozen)


@pytest.mark.parametrize("statement", STATEMENTS, ids=STATEMENT_IDS)
@pytest.mark.parametrize("taken", [
    lambda r: r.all(),
    lambda r: r.first(),
    lambda r: r.fetchmany(1) + r.fetchmany(5),
    lambda r: list(r.yield_per(1)),
    lambda r: r.unique().all(),
    lambda r: r.mappings().all(),
    lambda r: list(r.partitions(1)),
    lambda r: [list(r.keys()), r.fetchone(), r.all()],
], ids=["all", "first", "fetchmany", "yield_per", "unique", "mappings", "partitions", "fetchone-then-all"])
def test_the_app_gets_the_rows_it_gets_without_a_sample(session, statement, taken):
    """The sample reads the result's rows as it executes: the app then takes them from its result
    however it does, exactly as from the statement run without a sample."""
    expected = _outcome(taken, session.execute(statement))
    result, rows = _read(session, statement)
    assert _outcome(taken, result) == expected
    assert len(rows[1]) == len(session.execute(statement).all())


def _outcome(taken, result):
    try:
        return taken(result)
    except Exception as error:  # noqa: BLE001 - the same error either way
        return type(error), str(error)


def test_an_orm_result_hands_its_rows_to_the_sample_without_a_copy_of_it(session):
    """An ORM statement's rows are read once, as it executes (SQLAlchemy's prebuffer_rows): the
    app's result is the ORM's own, not a second one made from frozen rows."""
    executed = session.execute(sa.select(Doc).order_by(Doc.id), execution_options=PREBUFFERED)
    result, (keys, rows, scalars) = result_rows(executed)
    assert result is executed
    assert scalars and [doc.id for doc in rows] == [1, 2]
    assert [doc.id for doc in result.scalars()] == [1, 2]


def test_an_entity_without_documents_is_kept_as_a_copy_of_its_instance_dict(session):
    horse = session.get(Horse, 1)
    kept = kept_rows(_read(session, sa.select(Horse))[1])
    assert kept.entity is Horse
    horse.nowhere = "changed"
    session.expire_all()
    assert kept_records(kept) == [{"id": 1, "random_seed": None, "nowhere": "x", "created_at": None}]


def test_kept_rows_are_the_rows_as_read_whatever_the_app_does_next(session):
    """The worker makes records after the request: an entity changed, a JSON document changed in place
    or the session expired after the read changes nothing of what the sample kept."""
    session.get(Doc, 1).horse  # a loaded relationship in the instance dict: not a column, left out
    expected = copy.deepcopy(frozen_records(session.execute(sa.select(Doc).order_by(Doc.id)).freeze()))
    result, rows = _read(session, sa.select(Doc).order_by(Doc.id))
    kept = kept_rows(rows)
    first = result.scalars().first()
    first.title = "changed"
    first.body["tags"].append("changed")
    session.expire_all()
    assert kept_records(kept) == expected
    assert expected[0] == {"id": 1, "title": "a", "body": {"tags": ["t"]}, "horse_id": 1}
