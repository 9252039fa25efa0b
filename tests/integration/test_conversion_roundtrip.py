"""The conversion rules through both real databases: SQLite -> PostgreSQL -> SQLite.

A value is stored in a real SQLite file, in a table declared like the legacy
columns (REAL, INTEGER, TEXT, BOOLEAN, TIMESTAMP, DATE, and TEXT holding JSON),
so SQLite's type affinity acts on it exactly as in production. It is read back
raw, converted with `to_postgres`, written to a real PostgreSQL table of the
optimized types (DOUBLE PRECISION, BIGINT, TEXT, BOOLEAN, TIMESTAMPTZ, DATE,
JSONB) through SQLAlchemy with the models' column types (adapters.types) and
psycopg2, read back, converted with `to_sqlite`, written into SQLite again and
read back. Accepted values come back equal: floats bit for bit, timestamps as
the same instant, JSON as the same document, everything else identical; a value
already in the legacy spelling comes back byte for byte.

Two losses belong to SQLite itself, not to the conversion, and are asserted as
facts below: a REAL column stores -0.0 as 0.0, and NaN as NULL.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sqlite3
import struct

import psycopg2
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from tests.conftest import MAINTENANCE
from adapters.convert import REASONS, Kind, Rejected, dump_json, format_timestamp, to_postgres, to_sqlite
from adapters.postgres import create_postgres_engine
from adapters.types import Day, ExactReal, Flag, JsonDocument, Timestamp

COLUMNS = {
    "r": Kind.REAL,
    "i": Kind.INTEGER,
    "t": Kind.TEXT,
    "b": Kind.BOOLEAN,
    "ts": Kind.TIMESTAMP,
    "d": Kind.DATE,
    "j": Kind.JSON,
}
NAMES = ", ".join(COLUMNS)

LEGACY_DDL = (
    "CREATE TABLE legacy (id INTEGER PRIMARY KEY, r REAL, i INTEGER, t TEXT,"
    " b BOOLEAN, ts TIMESTAMP, d DATE, j TEXT)"
)

metadata = sa.MetaData()
optimized = sa.Table(
    "optimized",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("r", ExactReal),
    sa.Column("i", sa.BigInteger),
    sa.Column("t", sa.Text),
    sa.Column("b", Flag),
    sa.Column("ts", Timestamp),
    sa.Column("d", Day),
    sa.Column("j", JsonDocument),
)

PROPERTY_SETTINGS = settings(
    max_examples=75,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

EDGE_FLOATS = [0.0, -0.0, 5e-324, -5e-324, 2.225073858507201e-308, 2.2250738585072014e-308,
               1e308, -1e308, 1.7976931348623157e308, math.inf, -math.inf, 0.1 + 0.2]


def bits(value: float) -> bytes:
    return struct.pack(">d", value)


def json_equal(a, b) -> bool:
    """The same JSON document, read back as the same Python value: ints as ints, floats as floats
    bit for bit (1e16 too: adapters.convert.dump_jsonb), except that JSONB has no negative zero."""
    if isinstance(a, float) and isinstance(b, float):
        return bits(a) == bits(b) or a == b == 0.0
    if isinstance(a, (int, float)) or isinstance(b, (int, float)):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def same_value(kind: Kind, a, b) -> bool:
    """Equal values of a kind: floats bit for bit, timestamps as the same instant, JSON as a document."""
    if a is None or b is None:
        return a is None and b is None
    if kind is Kind.REAL:
        return isinstance(a, float) and isinstance(b, float) and bits(a) == bits(b)
    if kind is Kind.TIMESTAMP:
        return a.tzinfo is not None and b.tzinfo is not None and a == b
    if kind is Kind.JSON:
        return json_equal(a, b)
    return type(a) is type(b) and a == b


def same_storage(a, b) -> bool:
    """Equal SQLite storage values: same storage class, floats bit for bit."""
    if isinstance(a, float) and isinstance(b, float):
        return bits(a) == bits(b)
    return type(a) is type(b) and a == b


# --------------------------------------------------------------------------------------
# The two databases
# --------------------------------------------------------------------------------------


@pytest.fixture
def legacy(tmp_path):
    """A real SQLite file with a table declared like the legacy columns; plain sqlite3, autocommit."""
    connection = sqlite3.connect(tmp_path / "legacy.db", isolation_level=None)
    # invalid UTF-8 is read as lone surrogates (as adapters.sqlite does), so the rules can name it
    connection.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
    connection.execute(LEGACY_DDL)
    yield connection
    connection.close()


@pytest.fixture
def pg(postgres_url):
    """One connection to a fresh PostgreSQL database holding the optimized table, through the
    app's engine factory (session in UTC, JSONB spelled by adapters.convert.dump_jsonb)."""
    engine = create_postgres_engine(postgres_url)
    metadata.create_all(engine)
    with engine.connect() as connection:
        yield connection
    engine.dispose()


def store_in_sqlite(legacy: sqlite3.Connection, row_id: int, values: dict) -> dict:
    """Write a row with SQLite's own affinity rules and read back the raw storage values."""
    legacy.execute("DELETE FROM legacy WHERE id = ?", (row_id,))
    legacy.execute(
        f"INSERT INTO legacy (id, {NAMES}) VALUES (?, {', '.join('?' * len(COLUMNS))})",
        (row_id, *(values.get(name) for name in COLUMNS)),
    )
    row = legacy.execute(f"SELECT {NAMES} FROM legacy WHERE id = ?", (row_id,)).fetchone()
    return dict(zip(COLUMNS, row))


def store_in_postgres(pg: sa.Connection, values: dict) -> dict:
    """Write a row through the models' column types and read it back."""
    with pg.begin():
        pg.execute(optimized.delete())
        pg.execute(optimized.insert(), {"id": 1, **values})
        row = pg.execute(sa.select(optimized).where(optimized.c.id == 1)).mappings().one()
    return {name: row[name] for name in COLUMNS}


def round_trip(legacy, pg, values: dict) -> None:
    """The whole journey of one row, asserting that every accepted value comes back equal."""
    raw = store_in_sqlite(legacy, 1, values)

    converted, rejected = {}, {}
    for name, kind in COLUMNS.items():
        try:
            converted[name] = to_postgres(kind, raw[name])
        except Rejected as error:
            assert error.reason in REASONS
            rejected[name] = error.reason
            converted[name] = None  # the backfill quarantines the row; the other columns still go
            event(f"{kind.value}: rejected")
        else:
            event(f"{kind.value}: {'null' if raw[name] is None else 'accepted'}")

    in_postgres = store_in_postgres(pg, converted)
    for name, kind in COLUMNS.items():
        assert same_value(kind, in_postgres[name], converted[name]), (name, in_postgres[name], converted[name])

    written = {name: to_sqlite(kind, in_postgres[name]) for name, kind in COLUMNS.items()}
    back = store_in_sqlite(legacy, 2, written)

    for name, kind in COLUMNS.items():
        if name in rejected:
            continue
        # SQLite keeps exactly what to_sqlite wrote ...
        assert same_storage(back[name], written[name]), (name, back[name], written[name])
        # ... which reads as the same value ...
        assert same_value(kind, to_postgres(kind, back[name]), converted[name]), (name, raw[name], back[name])
        # ... and a value already in the legacy spelling comes back byte for byte.
        canonical = to_sqlite(kind, converted[name])
        if kind is not Kind.JSON and same_storage(canonical, raw[name]):
            assert same_storage(back[name], raw[name]), (name, raw[name], back[name])
        if kind in (Kind.REAL, Kind.INTEGER, Kind.TEXT, Kind.DATE):
            assert same_storage(back[name], raw[name]), (name, raw[name], back[name])


# --------------------------------------------------------------------------------------
# Generated rows
# --------------------------------------------------------------------------------------

GARBAGE = st.one_of(
    st.text(max_size=12),
    st.binary(max_size=8),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),  # what SQLite can store
    st.floats(),
    st.none(),
)
OFFSET_ZONES = st.integers(min_value=-(14 * 60), max_value=14 * 60).map(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes))
)
INSTANTS = st.datetimes(
    min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30), timezones=OFFSET_ZONES
)


def json_documents(text: st.SearchStrategy[str]) -> st.SearchStrategy:
    return st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
        max_leaves=12,
    )


def json_objects(text: st.SearchStrategy[str]) -> st.SearchStrategy:
    """What the legacy JSON columns hold: an object (or an array)."""
    documents = json_documents(text)
    return st.dictionaries(text, documents, max_size=5) | st.lists(documents, min_size=1, max_size=5)


JSON_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=10)  # NUL included
STORABLE_JSON_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=10)
JSON_DOCUMENTS = json_documents(JSON_TEXT)
OBJECTS = json_objects(JSON_TEXT)

REALS = st.one_of(
    st.floats(),
    st.sampled_from(EDGE_FLOATS),
    st.floats(max_value=2.2250738585072014e-308, min_value=-2.2250738585072014e-308),  # denormals
    st.sampled_from(["3.5", " 42 ", "1e400", "abc", "", "0x10", "3.14159265358979323846"]),
    GARBAGE,
)
INTEGERS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, -(2**63), 2**63 - 1, "42", " 7 ", "4.0", "1e3", "x", 4.5, 1e20]),
    GARBAGE,
)
TEXTS = st.one_of(st.text(), st.text(st.characters(max_codepoint=0x7F)), GARBAGE)
BOOLEANS = st.one_of(
    st.sampled_from([0, 1, True, False, "true", "false", "True", "FALSE", 1.0, 0.0]),
    st.sampled_from(["yes", "t", " true", "", 2, -1, 0.5]),
    GARBAGE,
)
TIMESTAMPS = st.one_of(
    INSTANTS.map(format_timestamp),  # the legacy spelling
    INSTANTS.map(lambda v: v.isoformat()),  # 'T' and an offset
    INSTANTS.map(lambda v: v.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")),
    INSTANTS.map(lambda v: v.isoformat(sep=" ", timespec="minutes")),
    st.integers(min_value=-62135596800, max_value=253402300799),  # epoch seconds
    st.integers(min_value=-(2**40), max_value=2**40).map(lambda n: n / 4),  # exact fractional epochs
    st.sampled_from(["", "2025-02-30 00:00:00", "2025-01-14 25:00:00", "yesterday", "2025-01-14",
                     "2025-01-14 09:30:00.1234567", "0000-01-01 00:00:00", 1736847000.123]),
    GARBAGE,
)
DATES = st.one_of(
    st.dates().map(dt.date.isoformat),
    st.sampled_from(["", "2025-02-30", "14/01/2025", "2025-01-14 00:00:00", 20250114]),
    GARBAGE,
)
JSONS = st.one_of(
    OBJECTS.map(dump_json),
    OBJECTS.map(lambda doc: json.dumps(doc, indent=1, ensure_ascii=True)),
    JSON_DOCUMENTS.map(dump_json),
    st.sampled_from(["", "null", "{", "[NaN]", '{"a": 1, "a": 2}', '["\\u0000"]', '["\\ud800"]',
                     "[1e400]", '{"x": 1e16, "y": 1e308, "z": -0.0, "w": 1.50}']),
    GARBAGE,
)
ROWS = st.fixed_dictionaries(
    {"r": REALS, "i": INTEGERS, "t": TEXTS, "b": BOOLEANS, "ts": TIMESTAMPS, "d": DATES, "j": JSONS}
)


@PROPERTY_SETTINGS
@given(row=ROWS)
def test_every_accepted_value_round_trips_through_both_databases(legacy, pg, row):
    round_trip(legacy, pg, row)


@PROPERTY_SETTINGS
@given(row=st.fixed_dictionaries({
    "r": st.floats(allow_nan=False) | st.sampled_from(EDGE_FLOATS),
    "i": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "t": st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
    "b": st.sampled_from([0, 1]),
    "ts": INSTANTS.map(format_timestamp),
    "d": st.dates().map(dt.date.isoformat),
    "j": json_objects(STORABLE_JSON_TEXT).map(dump_json),
}))
def test_legacy_spellings_are_all_accepted_and_come_back_unchanged(legacy, pg, row):
    raw = store_in_sqlite(legacy, 1, row)
    for name, kind in COLUMNS.items():
        to_postgres(kind, raw[name])  # nothing in the legacy spelling is rejected
    round_trip(legacy, pg, row)


# --------------------------------------------------------------------------------------
# Floats: PostgreSQL keeps them bit for bit; SQLite itself loses -0.0 and NaN
# --------------------------------------------------------------------------------------


def _psycopg2_connect(postgres_url: str):
    url = sa.make_url(postgres_url).set(drivername="postgresql")
    return psycopg2.connect(url.render_as_string(hide_password=False), options=MAINTENANCE)


def test_postgres_float8_keeps_edge_floats_bit_exactly_through_psycopg2(postgres_url):
    connection = _psycopg2_connect(postgres_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE reals (n int PRIMARY KEY, x double precision)")
            cursor.executemany("INSERT INTO reals VALUES (%s, %s::float8)", list(enumerate(EDGE_FLOATS)))
            cursor.execute("SELECT x, x::text FROM reals ORDER BY n")
            rows = cursor.fetchall()
    finally:
        connection.close()
    for value, (stored, spelled) in zip(EDGE_FLOATS, rows):
        assert bits(stored) == bits(value), (value, spelled)
    spellings = {bits(value): spelled for value, (_, spelled) in zip(EDGE_FLOATS, rows)}
    assert spellings[bits(-0.0)] == "-0"
    assert spellings[bits(5e-324)] == "5e-324"
    assert spellings[bits(1e308)] == "1e+308"
    assert spellings[bits(math.inf)] == "Infinity"


def test_an_untyped_psycopg2_parameter_loses_the_sign_of_zero(postgres_url):
    """psycopg2 spells -0.0 as the literal ` -0.0`; without a cast PostgreSQL reads it as
    numeric minus numeric zero, and numeric has no negative zero. `%s::float8` keeps it."""
    connection = _psycopg2_connect(postgres_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE reals (n int PRIMARY KEY, x double precision)")
            cursor.execute("INSERT INTO reals VALUES (1, %s), (2, %s::float8)", (-0.0, -0.0))
            cursor.execute("SELECT x::text FROM reals ORDER BY n")
            assert [text for (text,) in cursor.fetchall()] == ["0", "-0"]
    finally:
        connection.close()


NOT_NEGATIVE_ZERO = st.floats(allow_nan=False).filter(lambda x: bits(x) != bits(-0.0))


@PROPERTY_SETTINGS
@given(values=st.lists(NOT_NEGATIVE_ZERO | st.sampled_from(EDGE_FLOATS[2:]), min_size=1, max_size=20))
@example(values=[5e-324, -5e-324, 2.225073858507201e-308, 1e308, 1.7976931348623157e308, math.inf, -math.inf])
def test_postgres_float8_keeps_every_float_bit_exactly(pg, values):
    """Through the models' ExactReal type (SQLAlchemy, psycopg2) into DOUBLE PRECISION and back."""
    rows = [{"id": n, "r": to_postgres(Kind.REAL, x)} for n, x in enumerate(values)]
    with pg.begin():
        pg.execute(optimized.delete())
        pg.execute(optimized.insert(), rows)
        stored = pg.execute(sa.select(optimized.c.r).order_by(optimized.c.id)).scalars().all()
    assert [bits(x) for x in stored] == [bits(x) for x in values]
    assert [bits(to_sqlite(Kind.REAL, x)) for x in stored] == [bits(x) for x in values]


def test_negative_zero_keeps_its_sign_through_the_models_real_type(pg):
    with pg.begin():
        pg.execute(optimized.delete())
        pg.execute(optimized.insert(), [{"id": 1, "r": to_postgres(Kind.REAL, -0.0)}])
        stored = pg.execute(sa.select(optimized.c.r)).scalar_one()
    assert bits(stored) == bits(-0.0)


def test_sqlite_itself_turns_negative_zero_into_zero_and_nan_into_null(legacy):
    raw = store_in_sqlite(legacy, 1, {"r": -0.0})
    assert bits(raw["r"]) == bits(0.0), "a REAL column stores -0.0 as the integer 0"
    assert raw["r"] == -0.0, "numerically equal all the same"
    assert store_in_sqlite(legacy, 1, {"r": math.nan})["r"] is None
    # so a -0.0 written on PostgreSQL comes back to SQLite as 0.0: SQLite's loss, not the rule's
    assert bits(to_sqlite(Kind.REAL, -0.0)) == bits(-0.0)
    assert bits(store_in_sqlite(legacy, 1, {"r": to_sqlite(Kind.REAL, -0.0)})["r"]) == bits(0.0)
    # a column without affinity keeps the sign: the loss is REAL affinity storing whole reals as integers
    assert bits(legacy.execute("SELECT ?", (-0.0,)).fetchone()[0]) == bits(-0.0)


def test_sqlite_affinity_decides_what_reaches_the_rules(legacy):
    raw = store_in_sqlite(legacy, 1, {"r": "3.5", "i": "42", "t": 5, "b": "1", "ts": "1736847000", "d": "2025", "j": 5})
    assert raw == {"r": 3.5, "i": 42, "t": "5", "b": 1, "ts": 1736847000, "d": 2025, "j": "5"}
    assert to_postgres(Kind.TIMESTAMP, raw["ts"]) == dt.datetime(2025, 1, 14, 9, 30, tzinfo=dt.timezone.utc)
    assert to_postgres(Kind.JSON, raw["j"]) == 5
    with pytest.raises(Rejected, match="number_in_date_column"):
        to_postgres(Kind.DATE, raw["d"])


# --------------------------------------------------------------------------------------
# Every rejection, from a value really stored in SQLite
# --------------------------------------------------------------------------------------

STORED_REJECTIONS = [
    ("r", "'abc'", "text_in_real_column"),
    ("r", "X'00'", "blob_in_real_column"),
    ("i", "'abc'", "text_in_integer_column"),
    ("i", "4.5", "real_in_integer_column"),
    ("i", "X'01'", "blob_in_integer_column"),
    ("t", "'a' || char(0) || 'b'", "nul_byte_in_text"),
    ("t", "CAST(X'41ff42' AS TEXT)", "invalid_utf8_in_text"),
    ("t", "X'00ff'", "blob_in_text_column"),
    ("b", "2", "non_boolean_integer"),
    ("b", "0.5", "non_boolean_real"),
    ("b", "'yes'", "unparseable_boolean"),
    ("b", "X'01'", "blob_in_boolean_column"),
    ("ts", "''", "empty_timestamp"),
    ("ts", "'14/01/2025 09:30'", "unparseable_timestamp"),
    ("ts", "'2025-02-30 09:30:00'", "impossible_date"),
    ("ts", "'2025-01-14 09:30:00.1234567'", "timestamp_precision_lost"),
    ("ts", "253402300800", "timestamp_out_of_range"),
    ("ts", "1736847000.1", "fractional_epoch"),
    ("ts", "X'00'", "blob_in_timestamp_column"),
    ("d", "''", "empty_date"),
    ("d", "'14/01/2025'", "unparseable_date"),
    ("d", "'2025-02-30'", "impossible_date"),
    ("d", "20250114", "number_in_date_column"),
    ("d", "X'00'", "blob_in_date_column"),
    ("j", "''", "empty_json"),
    ("j", "'{\"wind\": '", "invalid_json"),
    ("j", "'{\"temp_c\": NaN}'", "non_standard_json"),
    ("j", "'{\"a\": 1, \"a\": 2}'", "duplicate_json_key"),
    ("j", "'[\"\\u0000\"]'", "nul_byte_in_json"),
    ("j", "'[\"\\ud800\"]'", "lone_surrogate_in_json"),
    ("j", "'[0.1000000000000000055511151231257827]'", "json_number_not_exact"),
    ("j", "'null'", "json_null"),
    ("j", r"""'"{\"temp_c\": 14.5}"'""", "json_string_document"),
    ("j", "'{}' || char(0)", "nul_byte_in_text"),
    ("j", "CAST(X'7b22ff227d' AS TEXT)", "invalid_utf8_in_text"),
    ("j", "X'7b7d'", "blob_in_json_column"),
]
UNREACHABLE_FROM_LEGACY_COLUMNS = {
    "integer_out_of_range": "SQLite integers are 64-bit; a REAL column never returns an int",
    "nan_in_real_column": "SQLite stores NaN as NULL",
    "number_in_text_column": "TEXT affinity stores numbers as text",
    "unsupported_type": "the sqlite3 driver returns only int, float, str, bytes, None",
}


@pytest.mark.parametrize(("column", "literal", "reason"), STORED_REJECTIONS,
                         ids=[f"{c}-{r}-{n}" for n, (c, _, r) in enumerate(STORED_REJECTIONS)])
def test_a_stored_value_is_rejected_with_its_reason(legacy, column, literal, reason):
    legacy.execute(f"INSERT INTO legacy (id, {column}) VALUES (1, {literal})")
    raw = legacy.execute(f"SELECT {column} FROM legacy WHERE id = 1").fetchone()[0]
    with pytest.raises(Rejected) as caught:
        to_postgres(COLUMNS[column], raw)
    assert caught.value.reason == reason


CATALOG_REJECTIONS = [  # the kinds of files beyond the HRP schema (adapters.catalog): BLOB and NUMERIC columns
    ("bl", "5", "number_in_blob_column"),
    ("bl", "'abc'", "text_in_blob_column"),
    ("nu", "'abc'", "text_in_numeric_column"),
    ("nu", "X'01'", "blob_in_numeric_column"),
    ("nu", "9e999", "nan_in_numeric_column"),
]
CATALOG_COLUMNS = {"bl": Kind.BLOB, "nu": Kind.NUMERIC}
COLUMN_RULES = {
    "numeric_out_of_range": "a NUMERIC(p,s) column's rule (adapters.types.postgres_value), not a kind's",
}


@pytest.mark.parametrize(("column", "literal", "reason"), CATALOG_REJECTIONS,
                         ids=[f"{c}-{r}" for c, _, r in CATALOG_REJECTIONS])
def test_a_stored_value_of_a_catalog_kind_is_rejected_with_its_reason(tmp_path, column, literal, reason):
    connection = sqlite3.connect(tmp_path / "other.db", isolation_level=None)
    try:
        connection.execute("CREATE TABLE other (id INTEGER PRIMARY KEY, bl BLOB, nu NUMERIC(10,2))")
        connection.execute(f"INSERT INTO other (id, {column}) VALUES (1, {literal})")
        raw = connection.execute(f"SELECT {column} FROM other WHERE id = 1").fetchone()[0]
    finally:
        connection.close()
    with pytest.raises(Rejected) as caught:
        to_postgres(CATALOG_COLUMNS[column], raw)
    assert caught.value.reason == reason


def test_every_reason_is_met_from_storage_or_known_unreachable():
    met = {reason for _, _, reason in STORED_REJECTIONS} | {reason for _, _, reason in CATALOG_REJECTIONS}
    met |= set(COLUMN_RULES)
    assert met | set(UNREACHABLE_FROM_LEGACY_COLUMNS) == set(REASONS)
    assert not met & set(UNREACHABLE_FROM_LEGACY_COLUMNS)


@pytest.mark.parametrize(
    ("sql", "value"),
    [
        ("SELECT %s::text", "a\x00b"),  # psycopg2 refuses NUL in a string parameter
        ("SELECT %s::jsonb", '["\\u0000"]'),
        ("SELECT %s::jsonb", '["\\ud800"]'),
        ("SELECT %s::jsonb", '{"temp_c": NaN}'),
        ("SELECT %s::date", "2025-02-30"),
        ("SELECT %s::timestamptz", "2025-01-14 25:00:00"),
    ],
)
def test_postgres_itself_refuses_what_the_rules_reject(postgres_url, sql, value):
    connection = _psycopg2_connect(postgres_url)
    try:
        with pytest.raises((ValueError, psycopg2.DataError)):
            connection.cursor().execute(sql, (value,))
    finally:
        connection.close()


def test_jsonb_keeps_only_the_last_of_duplicate_keys_which_is_why_they_are_rejected(pg):
    kept = pg.execute(sa.text("""SELECT '{"a": 1, "a": 2}'::jsonb""")).scalar_one()
    assert kept == {"a": 2}


# --------------------------------------------------------------------------------------
# Time zones: TIMESTAMPTZ stores instants, whatever the session's zone
# --------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(instants=st.lists(
    st.datetimes(min_value=dt.datetime(1800, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=OFFSET_ZONES),
    min_size=1, max_size=10,
))
def test_a_session_time_zone_does_not_change_the_instant(postgres_url, instants):
    engine = _zone_engine(postgres_url)
    spelled = [format_timestamp(value) for value in instants]
    with engine.begin() as connection:
        connection.execute(optimized.delete())
        connection.execute(optimized.insert(), [
            {"id": n, "ts": to_postgres(Kind.TIMESTAMP, text)} for n, text in enumerate(spelled)
        ])
        stored = connection.execute(sa.select(optimized.c.ts).order_by(optimized.c.id)).scalars().all()
    assert stored == instants
    assert [to_sqlite(Kind.TIMESTAMP, value) for value in stored] == spelled


_ZONE_ENGINES: dict[str, sa.Engine] = {}


def _zone_engine(postgres_url: str) -> sa.Engine:
    """An engine whose sessions run in a zone with a half-hour offset and LMT history (cached per database)."""
    if postgres_url not in _ZONE_ENGINES:
        for engine in _ZONE_ENGINES.values():
            engine.dispose()
        _ZONE_ENGINES.clear()
        engine = sa.create_engine(postgres_url, connect_args={"options": "-c timezone=America/St_Johns"})
        metadata.create_all(engine)
        with engine.connect() as connection:
            assert connection.execute(sa.text("SHOW timezone")).scalar_one() == "America/St_Johns"
        _ZONE_ENGINES[postgres_url] = engine
    return _ZONE_ENGINES[postgres_url]


@pytest.fixture(autouse=True)
def _dispose_zone_engines():
    yield
    for engine in _ZONE_ENGINES.values():
        engine.dispose()
    _ZONE_ENGINES.clear()


def test_the_optimized_column_types(pg):
    types = dict(pg.execute(sa.text(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'optimized'"
    )).all())
    assert types == {
        "id": "bigint",
        "r": "double precision",
        "i": "bigint",
        "t": "text",
        "b": "boolean",
        "ts": "timestamp with time zone",
        "d": "date",
        "j": "jsonb",
    }
