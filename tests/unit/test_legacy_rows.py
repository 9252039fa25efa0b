"""legacy_rows.TableReader.convert: the column-by-column path gives what the row-by-row path gives,
and a column encoder's one-map fast path what its field encoder gives value by value."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.convert import Kind, Rejected
from hrp_data.backfill.legacy_rows import TableReader, column_encoder, field_encoder
from hrp_data.models import TABLES
from tests.examples import examples

TABLE_MAP = {table.name: table for table in TABLES}

VALUES = (
    st.none()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=4)
    | st.sampled_from(['{"odds": 4.5, "going": "good"}', '{"a":1}', "{", "2025-01-14 09:30:00", "2025-02-30 10:00:00"])
)


def _rows(table: str):
    width = len(TABLE_MAP[table].columns)
    key = st.integers(min_value=1, max_value=10**6)
    return st.lists(st.tuples(key, *[VALUES] * (width - 1)), max_size=20)


@settings(max_examples=examples(200))
@given(st.sampled_from(sorted(TABLE_MAP)), st.data())
def test_column_by_column_conversion_equals_row_by_row(table, data):
    rows = data.draw(_rows(table))
    reader = TableReader(TABLE_MAP[table])
    fast = reader.convert(rows, with_keys=True)
    slow = TableReader(TABLE_MAP[table])._convert_rows(rows, True)
    assert (fast.payload, fast.staged, fast.staged_keys) == (slow.payload, slow.staged, slow.staged_keys)
    assert (fast.rejects, fast.rejected_keys) == (slow.rejects, slow.rejected_keys)


def test_a_clean_batch_is_one_line_per_row_in_order():
    reader = TableReader(TABLE_MAP["race_horses"])
    converted = reader.convert([(1, 2, 3, 4.5, None), (1, 3, None, -0.0, 2)], with_keys=True)
    assert converted.payload == b"1\t2\t3\t4.5\t\\N\n1\t3\t\\N\t-0.0\t2\n"
    assert converted.staged_keys == [(1, 2), (1, 3)] and converted.rejects == []


def _each(kind: Kind, values: list):
    encode = field_encoder(kind)
    try:
        return [encode(v) for v in values]
    except Rejected as error:
        return ("rejected", error.reason)


def _column(kind: Kind, values: list):
    try:
        return column_encoder(kind)(tuple(values))
    except Rejected as error:
        return ("rejected", error.reason)


INTEGER_COLUMNS = st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=30) | st.lists(
    st.integers(min_value=-(2**65), max_value=2**65) | st.none() | st.booleans() | st.floats(), max_size=30
)
REAL_COLUMNS = st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=30) | st.lists(
    st.floats() | st.none() | st.integers(min_value=-(2**60), max_value=2**60) | st.text(max_size=3), max_size=30
)


@settings(max_examples=examples(300))
@given(INTEGER_COLUMNS)
def test_integer_column_fast_path_equals_value_by_value(values):
    assert _column(Kind.INTEGER, values) == _each(Kind.INTEGER, values)


@settings(max_examples=examples(300))
@given(REAL_COLUMNS)
def test_real_column_fast_path_equals_value_by_value(values):
    assert _column(Kind.REAL, values) == _each(Kind.REAL, values)


def test_column_fast_paths_keep_every_rejection():
    assert _column(Kind.INTEGER, [1, 2**63]) == ("rejected", "integer_out_of_range")
    assert _column(Kind.INTEGER, [1, 2.0]) == ("rejected", "real_in_integer_column")
    assert _column(Kind.REAL, [1.5, float("nan")]) == ("rejected", "nan_in_real_column")
    assert _column(Kind.REAL, [1.5, float("inf"), -0.0]) == ["1.5", "Infinity", "-0.0"]


JSON_LIKE = (
    st.text(alphabet='{}[]",: \\tn\t\n\r\x00\x01ab1.e+-0u', max_size=30)
    | st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                   lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                   max_leaves=12).map(lambda doc: __import__("json").dumps(doc))
)


@settings(max_examples=examples(300))
@given(JSON_LIKE)
def test_the_json_copy_field_escapes_what_pg_copy_escapes(text):
    """The JSON field skips COPY's tab/newline/CR scans: json_text's output never holds them raw."""
    from adapters import pg_copy
    from adapters.convert import json_text
    from hrp_data.backfill.legacy_rows import _json_field

    try:
        expected = pg_copy.escape_text(json_text(text))
    except (Rejected, ValueError):
        return
    assert _json_field(text) == expected
