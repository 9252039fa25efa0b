"""The verify's row texts on PostgreSQL against Python's, value by value, on a real server (range_hash)."""

from __future__ import annotations

import datetime as dt
import math

import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from adapters.convert import Kind, Rejected, to_postgres
from adapters.postgres import create_postgres_engine
from hrp_data.verify.range_hash import (
    _NAIVE_TIMESTAMP_SQL,
    _SQL,
    postgres_real_block,
    postgres_row_text,
    real_block,
    sqlite_row_renderer,
)
from hrp_data.verify.run import long_statements
from tests.examples import examples

instants = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30),
                        timezones=st.sampled_from([dt.timezone.utc, dt.timezone(dt.timedelta(hours=5, minutes=30)),
                                                   dt.timezone(dt.timedelta(hours=-8))]))
stored_timestamps = st.one_of(
    instants.map(lambda v: v.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")),  # the legacy spelling
    instants.map(lambda v: v.isoformat()),
    instants.map(lambda v: v.isoformat(sep=" ", timespec="milliseconds")),
    instants.map(lambda v: v.replace(microsecond=v.microsecond // 1000 * 1000).isoformat()),
)


@pytest.fixture(scope="module")
def server_in_another_datestyle(postgres_server_url):
    """An engine on a database whose sessions print dates in another style than ISO (SQL, DMY) and
    live in another time zone."""
    from tests.conftest import scratch_database

    with scratch_database(postgres_server_url) as url:
        admin = psycopg2.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))
        admin.autocommit = True
        name = make_url(url).database
        admin.cursor().execute(f"ALTER DATABASE \"{name}\" SET datestyle = 'SQL, DMY'")
        admin.cursor().execute(f"ALTER DATABASE \"{name}\" SET timezone = 'America/New_York'")
        admin.close()
        engine = create_postgres_engine(url)
        yield engine
        engine.dispose()


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=stored_timestamps)
def test_postgres_prints_a_timestamp_as_python_spells_it(server_in_another_datestyle, raw):
    """Whatever the server's DateStyle and time zone, the verify session's text of a timestamptz (and of
    the UTC wall clock in a timestamp without time zone) is the Python renderer's text of the stored value."""
    try:
        value = to_postgres(Kind.TIMESTAMP, raw)
    except Rejected:
        return
    python = sqlite_row_renderer([Kind.TIMESTAMP])([raw])
    with long_statements(server_in_another_datestyle) as connection:
        aware, naive = connection.exec_driver_sql(
            f"SELECT {_SQL[Kind.TIMESTAMP].format(c='v')}, {_NAIVE_TIMESTAMP_SQL.format(c='(v AT TIME ZONE %(utc)s)')}"
            " FROM (SELECT %(v)s::timestamptz AS v) AS t", {"v": value, "utc": "UTC"}).one()
    assert aware == naive == python


doubles = st.none() | st.floats(width=64, allow_nan=False) | st.sampled_from(
    [-0.0, 0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, math.inf, -math.inf])


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(doubles, max_size=20))
def test_postgres_spells_a_real_column_s_marks_and_block_as_python(server_in_another_datestyle, values):
    """A bucket's REAL column: PostgreSQL's marks (NULL or nothing) and block (every double's 8 bytes,
    -0.0 as 0.0, in key order) are Python's for the same doubles (a SQLite REAL holds no NaN)."""
    marked = postgres_row_text([("v", Kind.REAL)], marked=["v"])
    with long_statements(server_in_another_datestyle) as connection:
        marks, block = connection.exec_driver_sql(
            f"SELECT string_agg({marked}, '/' ORDER BY i), {postgres_real_block('v', 'i')}"
            " FROM unnest(%(v)s::float8[]) WITH ORDINALITY AS t(v, i)", {"v": values}).one()
    mark = sqlite_row_renderer([Kind.REAL], marked=(0,))
    assert (marks or "") == "/".join(mark((value,)) for value in values)
    assert block == real_block(values)
