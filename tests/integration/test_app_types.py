"""The app's own session on PostgreSQL gets the Python values and types SQLite gave it
(adapters.app_types): its JSON model type over a column the any-schema mapping keeps as text,
and the untyped results of `db.session.execute(text(...))`, which on SQLite are sqlite3's own
int, float, str and bytes. Each value is stored in SQLite as an app stores it, moved with the
backfill's conversion (adapters.convert.to_postgres) and read back on both sides."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import sqlite3

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.app_types import same_types_as_sqlite
from adapters.convert import Kind, dump_json, dump_jsonb, format_timestamp, to_postgres
from adapters.postgres import create_postgres_engine

SQLITE_DDL = ("CREATE TABLE t (id INTEGER PRIMARY KEY, b BOOLEAN, n NUMERIC, money NUMERIC(12, 2),"
              " ts DATETIME, d DATE, blob BLOB, j JSON)")
POSTGRES_DDL = ("CREATE TABLE t (id bigint PRIMARY KEY, b boolean, n numeric, money numeric(12, 2),"
                " ts timestamp, d date, blob bytea, j text, jb jsonb)")
KINDS = {"b": Kind.BOOLEAN, "n": Kind.NUMERIC, "money": Kind.NUMERIC, "ts": Kind.TIMESTAMP, "d": Kind.DATE,
         "blob": Kind.BLOB}
RAW = "SELECT b, n, money, ts, d, blob, j, jb FROM t WHERE id = :id"

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None,
                             suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

finite = st.floats(allow_nan=False, allow_infinity=False)
# PostgreSQL's text and jsonb cannot hold NUL: such a document is quarantined by the backfill
# (adapters.convert's nul_byte_in_json, tested in tests/unit), never read back by the app.
stored_text = st.characters(exclude_characters="\x00")
scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | finite | st.text(stored_text, max_size=8)
documents = st.recursive(  # an object or an array, as a JSON column holds (a bare number SQLite's affinity would turn)
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(stored_text, max_size=5), inner, max_size=3),
    max_leaves=8,
).filter(lambda document: isinstance(document, (list, dict)))
rows = st.fixed_dictionaries({
    "b": st.none() | st.sampled_from([0, 1]),
    "n": st.none() | st.integers(-(2**63), 2**63 - 1) | finite.filter(lambda f: not f.is_integer()),
    "money": st.none() | st.integers(-(10**9), 10**9).map(lambda cents: decimal.Decimal(cents).scaleb(-2)),
    "ts": st.none() | st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1)),
    "d": st.none() | st.dates(min_value=dt.date(1, 1, 1)),
    "blob": st.none() | st.binary(max_size=16),
    "j": st.none() | documents,
})


def _as_the_app_stored_it(row: dict) -> dict:
    """The values an app's SQLAlchemy models hand sqlite3 (money as a float, a datetime and a date as
    their legacy text, a JSON document as json.dumps' text)."""
    return {
        **row,
        "money": None if row["money"] is None else float(row["money"]),
        "ts": None if row["ts"] is None else format_timestamp(row["ts"]),
        "d": None if row["d"] is None else row["d"].isoformat(),
        "j": None if row["j"] is None else dump_json(row["j"]),
    }


@pytest.fixture
def both(tmp_path, postgres_url):
    lite = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    lite.execute(SQLITE_DDL)
    layer = create_postgres_engine(postgres_url)
    with layer.begin() as connection:
        connection.exec_driver_sql(POSTGRES_DDL)
    apps = same_types_as_sqlite(create_postgres_engine(postgres_url))
    yield lite, layer, apps
    lite.close()
    layer.dispose()
    apps.dispose()


def _jsonb(text: str | None) -> str | None:
    """The JSON text as the backfill gives it to a jsonb column (an HRP JSON column)."""
    return None if text is None else dump_jsonb(to_postgres(Kind.JSON, text))


def _same(left, right) -> bool:
    if isinstance(left, float) and isinstance(right, float):
        return left == right or (math.isnan(left) and math.isnan(right))
    return left == right


@PROPERTY_SETTINGS
@given(row=rows)
def test_text_queries_get_sqlite3s_own_values_and_types_on_postgresql(both, row):
    lite, layer, apps = both
    stored = _as_the_app_stored_it(row)
    lite.execute("DELETE FROM t")
    lite.execute("INSERT INTO t VALUES (1, :b, :n, :money, :ts, :d, :blob, :j)", stored)
    expected = lite.execute("SELECT b, n, money, ts, d, blob, j, j FROM t").fetchone()

    moved = {name: to_postgres(kind, lite.execute(f"SELECT {name} FROM t").fetchone()[0]) for name, kind in KINDS.items()}
    with layer.begin() as connection:
        connection.exec_driver_sql("DELETE FROM t")
        connection.execute(sa.text("INSERT INTO t VALUES (1, :b, :n, :money, :ts, :d, :blob, :j, CAST(:jb AS jsonb))"),
                           {**moved, "j": stored["j"], "jb": _jsonb(stored["j"])})
    with apps.connect() as connection:
        got = tuple(connection.execute(sa.text(RAW), {"id": 1}).one())

    *got, jsonb_text = got
    *expected, json_text = expected
    assert [type(value) for value in got] == [type(value) for value in expected], (got, expected)
    assert all(_same(a, b) for a, b in zip(got, expected)), (got, expected)
    # jsonb keeps the document, not its spelling (key order, duplicate keys): the same document, as text
    assert type(jsonb_text) is type(json_text)
    assert json_text is None or json.loads(jsonb_text) == json.loads(json_text)


def test_the_apps_json_type_over_a_text_column_reads_the_document(both):
    """A model's sa.JSON over a SQLite `JSON` column (text on PostgreSQL) gets the document, as on
    SQLite; over jsonb, too."""
    lite, layer, apps = both
    document = {"pages": 100, "tags": ["a", "é"], "nested": {"x": None}}
    text = json.dumps(document)
    lite.execute("INSERT INTO t (id, j) VALUES (1, ?)", (text,))
    with layer.begin() as connection:
        connection.execute(sa.text("INSERT INTO t (id, j, jb) VALUES (1, :j, CAST(:j AS jsonb))"), {"j": text})
    table = sa.Table("t", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("j", sa.JSON),
                     sa.Column("jb", sa.JSON))
    lite_engine = sa.create_engine(f"sqlite:///{lite.execute('PRAGMA database_list').fetchone()[2]}")
    with lite_engine.connect() as connection:
        on_sqlite = connection.execute(sa.select(table.c.j)).scalar_one()
    lite_engine.dispose()
    with apps.connect() as connection:
        on_postgres, on_jsonb = connection.execute(sa.select(table.c.j, table.c.jb)).one()
    assert on_sqlite == document
    assert on_postgres == document and type(on_postgres) is dict
    assert on_jsonb == document


def test_an_integer_aggregate_reads_an_int_as_on_sqlite(both):
    """`func.sum()` over an Integer column is typed Integer; SQLite returns an int, PostgreSQL's
    sum(bigint) a numeric: the app gets the int SQLite gave it (a Decimal would change the app's
    JSON, `"8"` for `8`)."""
    lite, layer, apps = both
    lite.executemany("INSERT INTO t (id) VALUES (?)", [(1,), (2,), (5,)])
    with layer.begin() as connection:
        connection.exec_driver_sql("INSERT INTO t (id) VALUES (1), (2), (5)")
    table = sa.Table("t", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    total = sa.select(sa.func.coalesce(sa.func.sum(table.c.id), 0), sa.func.max(table.c.id),
                      sa.func.sum(table.c.id * 3))
    lite_engine = sa.create_engine(f"sqlite:///{lite.execute('PRAGMA database_list').fetchone()[2]}")
    with lite_engine.connect() as connection:
        on_sqlite = tuple(connection.execute(total).one())
    lite_engine.dispose()
    with apps.connect() as connection:
        on_postgres = tuple(connection.execute(total).one())
    assert on_sqlite == (8, 5, 24)
    assert [type(v) for v in on_postgres] == [type(v) for v in on_sqlite] == [int, int, int]
    assert on_postgres == on_sqlite
