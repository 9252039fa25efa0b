"""adapters.vouch: what SQLite vouches for, the backfill's conversion accepts (vouched => converts).

Values of every storage class are stored as they are (a column without a type:
no affinity changes them) and read back the way the backfill reads them
(legacy_rows.connect's lenient text); a row the condition vouches for must
convert without a reject through a TableReader, the backfill's own encoders.
"""

from __future__ import annotations

import math
import sqlite3

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.convert import Kind, json_text
from adapters.sqlite import decode_text
from adapters.types import Bytes, Day, ExactNumeric, ExactReal, Flag, JsonDocument, Timestamp
from adapters.vouch import json_vouched, register, vouched
from hrp_data.backfill.legacy_rows import TableReader
from tests.examples import examples

TYPES = {
    "integer": sa.BigInteger(), "real": ExactReal(), "text": sa.Text(), "boolean": Flag(),
    "timestamp": Timestamp(), "date": Day(), "json": JsonDocument(), "blob": Bytes(),
    "numeric": ExactNumeric(), "numeric(5,2)": ExactNumeric(5, 2), "numeric(2,2)": ExactNumeric(2, 2),
    "numeric(30,4)": ExactNumeric(30, 4), "numeric(1,0)": ExactNumeric(1, 0),
}

DIGITS = st.text("0123456789", min_size=1, max_size=3)
DATE_ONLY = st.builds(
    lambda y, m, d: f"{y:0>4}-{m:0>2}-{d:0>2}",
    st.sampled_from([2024, 2023, 1900, 2000, 1, 0, 9999]) | st.integers(0, 10_000),
    st.sampled_from([1, 2, 4, 12, 0, 13]) | st.integers(0, 99), st.sampled_from([1, 28, 29, 30, 31, 0, 32]) | st.integers(0, 99),
)
TIME_PARTS = st.sampled_from([
    " 00:00:00", " 23:59:59", " 24:00:00", " 12:60:00", " 12:00:60", "T10:00:00", " 10:00:00.5", " 10:00:00.123456",
    " 10:00:00.1234567", " 10:00:00.", " 10:00:00.12a", " 10:00:00\x00", " 10:00:00+01:00", " 10:00:00Z", " 10:00",
    " 10:00:00 ", "\x00", " 10:00:00.1\x00", " 10:00:00.\u0661",
])
DATE_LIKE = st.builds(lambda date, rest: date + rest, DATE_ONLY, st.just("") | TIME_PARTS)
JSON_LIKE = st.sampled_from([
    '{"a": 1}', '{"a":1}', '{"a": 1, "a": 2}', '{"a":1,"a":2}', '[1, 2.5]', '[1,2.50]', '{"x": 0.1}',
    '{"x": 0.30000000000000004}', '{"x": 0.1000000000000000055511151231257827}', '{"x": 1e400}', '{"x": 1e16}',
    '{"x": 1e+16}', '{"x": NaN}', '{"x": "\\u0000"}', '{"x": "\\ud800"}', '{"x": "caf\\u00e9"}', "null", '"s"',
    "1", "", " ", "{", '{"a": [1, {"b": null}]}', '{"a": 1} ', ' {"a": 1}', "[]", "{}", '{"n": 123456789012345678}',
    '{"a": "x,y: z"}', '{"a": "x, y"}', '{"a": true, "b": false}', '[' * 600 + ']' * 600, '{"\\u00e9": 1}',
]) | st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
).map(lambda document: __import__("json").dumps(document))

TEXTS = (
    st.text(max_size=12)
    | st.sampled_from(["true", "FALSE", "True", "tRuE", "false ", "1", "", "t", "yes", "a\x00b", "\x7f", "\x01"])
    | DATE_LIKE | JSON_LIKE
)
RAW_TEXTS = st.binary(max_size=12) | st.builds(lambda text, junk: text.encode() + junk, DATE_LIKE | JSON_LIKE,
                                                st.sampled_from([b"", b"\xff", b"\x00", b"\xc3", b"\x80", b"\xed\xa0\x80"]))
STORED = (
    st.none()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.sampled_from([0, 1, -1, 2, 2**53, 2**53 + 1, -(2**53) - 1, 2**63 - 1, -(2**63), 99, 100, 999, 1000,
                       -62_135_596_800, -62_135_596_801, 253_402_300_799, 253_402_300_800, 10**18])
    | st.floats()
    | st.sampled_from([math.inf, -math.inf, 5e-324, 1.7976931348623157e308, 0.1, 1.5, 1e16, 0.0, -0.0, 999.99, 1000.0])
    | st.tuples(st.just("text"), TEXTS)
    | st.tuples(st.just("text"), DATE_LIKE)
    | st.tuples(st.just("raw_text"), RAW_TEXTS)
    | st.tuples(st.just("blob"), st.binary(max_size=6))
)

LIKELY = {
    "timestamp": st.tuples(st.just("text"), st.builds(str.__add__, DATE_ONLY, TIME_PARTS)),
    "date": st.tuples(st.just("text"), DATE_ONLY),
    "json": st.tuples(st.just("text"), JSON_LIKE),
}
"""Per kind, the values worth more draws: those whose verdict SQL decides by shape (impossible dates...)."""


def _store(connection: sqlite3.Connection, value) -> None:
    if isinstance(value, tuple) and value[0] == "text":
        connection.execute("INSERT INTO t (v) VALUES (CAST(? AS TEXT))",
                           (value[1].encode("utf-8", "surrogatepass"),))
    elif isinstance(value, tuple) and value[0] == "raw_text":
        connection.execute("INSERT INTO t (v) VALUES (CAST(? AS TEXT))", (value[1],))
    elif isinstance(value, tuple):
        connection.execute("INSERT INTO t (v) VALUES (?)", (value[1],))
    else:
        connection.execute("INSERT INTO t (v) VALUES (?)", (value,))


def _vouched_rows(name: str, required: bool, values: list) -> list[tuple]:
    column = sa.Column("v", TYPES[name], nullable=not required)
    table = sa.Table("t", sa.MetaData(), sa.Column("id", sa.BigInteger, primary_key=True), column)
    connection = sqlite3.connect(":memory:")
    connection.text_factory = decode_text
    register(connection)
    connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
    for value in values:
        _store(connection, value)
    kind = getattr(TYPES[name], "kind", None) or (Kind.INTEGER if name == "integer" else Kind.TEXT)
    condition = vouched(kind, '"v"', required=required, precision=getattr(TYPES[name], "precision", None),
                        scale=getattr(TYPES[name], "scale", None))
    rows = connection.execute(f"SELECT id, v, {condition} FROM t ORDER BY id").fetchall()
    assert all(ok in (0, 1) for _, _, ok in rows), rows  # never NULL
    reader = TableReader(table)
    return [(row, reader.rejections(row[:2])) for row in rows if row[2]]


def _assert_converts(name: str, required: bool, values: list) -> None:
    for row, rejects in _vouched_rows(name, required, values):
        assert rejects == [], (name, row)


@pytest.mark.parametrize("name", sorted(TYPES))
@settings(max_examples=examples(300), deadline=None)
@given(required=st.booleans(), data=st.data())
def test_what_sqlite_vouches_for_converts(name, required, data):
    likely = LIKELY.get(name)
    value = STORED if likely is None else st.booleans().flatmap(lambda pick: likely if pick else STORED)
    _assert_converts(name, required, data.draw(st.lists(value, min_size=1, max_size=16)))


@pytest.mark.parametrize("name, values", [
    ("numeric(2,2)", [0]), ("timestamp", [("raw_text", b"2025-01-14 09:30:00.5\x00x"), ("text", "2025-02-30 10:00:00")]),
    ("date", [("text", "2025-02-30")]), ("text", [("raw_text", b"A\xffB"), ("raw_text", b"\xc3\xa9")]),
    ("json", [("text", '{"a": 1, "a": 2}'), ("text", '{"x": 0.1000000000000000055511151231257827}')]),
])
def test_awkward_values_vouched_for_convert(name, values):
    _assert_converts(name, False, values)


@pytest.mark.parametrize("name, values", [
    ("integer", [1, -(2**63), None]), ("real", [1.5, math.inf, 2**53, None]), ("text", [("text", "plain ASCII"), None]),
    ("boolean", [0, 1, ("text", "TRUE"), ("text", "false")]), ("timestamp", [("text", "2025-01-14 09:30:00"),
     ("text", "2025-01-14 09:30:00.123456"), 1736847000]), ("date", [("text", "2025-03-01")]),
    ("json", [("text", '{"a": 1, "b": [1.5, "x"]}'), ("text", '{"a":1}')]), ("blob", [("blob", b"\x00")]),
    ("numeric", [12, 1.25]), ("numeric(5,2)", [999]),
])
def test_the_common_spellings_are_vouched_for(name, values):
    """Sound is not enough: what the legacy app writes must not need Python."""
    assert len(_vouched_rows(name, False, values)) == len(values)


@pytest.mark.parametrize("name, value", [
    ("integer", 1.5), ("real", 2**53 + 1), ("text", ("text", "a\x00b")), ("text", ("raw_text", b"A\xffB")),
    ("boolean", 2), ("timestamp", ("text", "2025-02-30 10:00:00")), ("timestamp", ("text", "0000-01-01 00:00:00")),
    ("date", ("text", "2023-02-29")), ("json", ("text", '{"a": 1, "a": 2}')), ("blob", ("text", "x")),
    ("numeric(5,2)", 1000), ("numeric(2,2)", 0),
])
def test_what_the_rules_refuse_is_not_vouched_for(name, value):
    assert _vouched_rows(name, False, [value]) == []


@given(JSON_LIKE)
@settings(max_examples=examples(300))
def test_json_vouched_is_json_texts_fast_path(text):
    if json_vouched(text.encode("utf-8", "surrogatepass")):
        assert json_text(text) == text
