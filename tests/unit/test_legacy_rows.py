"""legacy_rows.TableReader.convert: the column-by-column path gives what the row-by-row path gives,
and a column encoder's one-map fast path what its field encoder gives value by value."""

from __future__ import annotations

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from adapters.convert import Kind, Rejected, dump_json
from hrp_data.backfill.legacy_rows import TableReader, column_encoder, field_encoder, spelled_fields
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


@settings(max_examples=examples(200))
@given(st.sampled_from(sorted(TABLE_MAP)), st.data())
def test_lines_spelled_in_runs_equal_row_by_row(table, data):
    """The column-by-column path spells its lines a run at a time (legacy_rows.LINE_RUN): runs of
    three rows, so that a batch spans several, give what the row-by-row path gives."""
    from hrp_data.backfill import legacy_rows

    rows = data.draw(_rows(table))
    run, legacy_rows.LINE_RUN = legacy_rows.LINE_RUN, 3
    try:
        fast = TableReader(TABLE_MAP[table]).convert(rows, with_keys=True)
    finally:
        legacy_rows.LINE_RUN = run
    slow = TableReader(TABLE_MAP[table])._convert_rows(rows, True)
    assert (fast.payload, fast.staged, fast.staged_keys, fast.rejects) == (slow.payload, slow.staged, slow.staged_keys, slow.rejects)


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
        return spelled_fields(column_encoder(kind)(tuple(values)))
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


# -- the column fast paths of TEXT, JSON and the memoised kinds: what value by value gives ----------

HOSTILE_TEXT = st.text(alphabet=st.sampled_from("ab ,:{}[]\"\\\t\n\r\x00\x7f\u00e9\U0001f40e\ud800"), max_size=8)
TEXT_COLUMNS = st.lists(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e, exclude_characters="\\"),
                                max_size=8), max_size=30) | st.lists(
    HOSTILE_TEXT | st.none() | st.integers() | st.floats() | st.binary(max_size=3), max_size=30
)


@settings(max_examples=examples(300))
@given(TEXT_COLUMNS)
def test_text_column_fast_path_equals_value_by_value(values):
    assert _column(Kind.TEXT, values) == _each(Kind.TEXT, values)


def _json_spelling(doc) -> str:
    return dump_json(doc)  # the legacy app's spelling


JSON_DOCUMENTS = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False) | HOSTILE_TEXT.filter(lambda t: "\ud800" not in t),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE_TEXT.filter(lambda t: "\ud800" not in t),
                                                                 inner, max_size=3),
    max_leaves=8,
)
CANONICAL_DOCUMENT_TEXTS = JSON_DOCUMENTS.filter(lambda doc: isinstance(doc, (dict, list))).map(_json_spelling)
JSON_ODDITIES = st.sampled_from([
    "[1", "2]", "[3], [4]", "[1, 2]", "{\"a\": 1", "}", "{\"a\": 1, \"a\": 2}", "[NaN]", "[1e400]", "[1e+16]",
    "[1e16]", "[1.50]", "[\"\\u0000\"]", "[\"\\ud800\"]", "[\"\ud800\"]", "[\"a\x00\"]", "null", "\"x\"", "1", "",
    " ", " [1]", "[1] ", "{\"a\":1}", "{\"a\": 1,\"b\": 2}", "[" * 300 + "]" * 300, "[12345678901234567890123]",
    "[18446744073709551615]", "{\"k\": \"a, b\"}", "{\"k\": \"a: b\"}", "[\"tab\\there\"]", "[\"\\\\\"]", "[]", "{}",
])
JSON_COLUMNS = st.lists(CANONICAL_DOCUMENT_TEXTS, max_size=12) | st.lists(
    CANONICAL_DOCUMENT_TEXTS | JSON_ODDITIES | st.none() | st.integers() | st.binary(max_size=3), max_size=12
)


@settings(max_examples=examples(400))
@given(JSON_COLUMNS)
@example(["[1", "2]", "[3], [4]"])  # texts that are no documents, joined into a list of as many items
@example(["[1, 2]", "[3]"])
def test_json_column_fast_path_equals_value_by_value(values):
    from hrp_data.backfill import legacy_rows

    assert _column(Kind.JSON, values) == _each(Kind.JSON, values)
    run, legacy_rows.JSON_RUN = legacy_rows.JSON_RUN, 3  # runs told canonical at once, and runs that are not
    try:
        assert _column(Kind.JSON, values) == _each(Kind.JSON, values)
    finally:
        legacy_rows.JSON_RUN = run


@settings(max_examples=examples(300))
@given(JSON_COLUMNS)
def test_canonical_texts_vouches_only_for_texts_json_text_hands_on(texts):
    from adapters.convert import canonical_texts, json_text

    if canonical_texts(texts):
        assert all(type(text) is str and json_text(text) == text for text in texts)


@settings(max_examples=examples(200))
@given(st.lists(JSON_DOCUMENTS.filter(lambda doc: isinstance(doc, (dict, list))), max_size=12))
def test_legacy_json_columns_take_the_fast_path_as_a_whole(documents):
    """A column json.dumps wrote is told canonical at once whenever each of its texts takes json_text's
    fast path alone (the backfill's cost per prediction rests on it)."""
    from adapters.convert import _canonical_document, canonical_texts, spaced_json

    texts = [_json_spelling(doc) for doc in documents]
    alone = all(  # the fast path alone, in its spaced spelling
        _canonical_document(text) is not None and text.encode("utf-8") == spaced_json(orjson.dumps(orjson.loads(text)))
        for text in texts
    )
    assert canonical_texts(texts) == alone


MEMO_COLUMNS = st.lists(
    st.none() | st.sampled_from(["2025-01-14 09:30:00", "2025-02-30 10:00:00", "0000-01-01 00:00:00", "2025-01-14",
                                 "2025-01-14T09:30:00Z", "true", "FALSE", "", " ", "1", "0"])
    | st.integers(min_value=-2, max_value=2) | st.booleans() | st.floats(min_value=-1, max_value=2) | st.text(max_size=4),
    max_size=30,
)


@settings(max_examples=examples(300))
@given(st.sampled_from([Kind.TIMESTAMP, Kind.DATE, Kind.BOOLEAN]), MEMO_COLUMNS)
@example(Kind.BOOLEAN, [1, 1.0, True, "true"])  # equal as keys, converted differently
def test_memoised_column_fast_path_equals_value_by_value(kind, values):
    assert _column(kind, values) == _each(kind, values)
