"""hrp_data.verify.range_hash: the fast renderer spells every row exactly as the general one (no database)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import datetime as dt

from adapters.convert import Kind, Rejected, format_timestamp, to_postgres
from adapters.types import kind_of
from hrp_data.models import TABLES
from hrp_data.verify.ranges import bucket_digest, bucket_text, json_positions, real_positions
from hrp_data.verify.range_hash import (
    fast_json_text,
    fast_row_renderer,
    json_text,
    jsonb_text,
    md5_hex,
    real_block,
    sqlite_row_renderer,
)
from shadow.normalize import normalize
from tests.examples import examples

KINDS = {table.name: [kind_of(c) for c in table.columns] for table in TABLES}

any_text = st.text(max_size=12)
json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | any_text
                | st.floats(allow_nan=False, allow_infinity=False, width=64))
json_values = st.recursive(json_scalars, lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(any_text, children, max_size=3), max_leaves=8)
json_spellings = st.one_of(
    st.dictionaries(any_text, json_scalars, max_size=8).map(json.dumps),  # what legacy files hold
    st.dictionaries(any_text, json_scalars, max_size=8).map(lambda d: json.dumps(d, separators=(",", ":"))),
    json_values.map(lambda v: json.dumps(v, ensure_ascii=False)),
    st.sampled_from(['{"a": 1, "a": 2}', '{"a": 0.1000000000000000000001}', '{"a": NaN}', '{"a": 1e400}',
                     '{"a": "\\u0000"}', '{"a": "\\ud800"}', "{}", "[]", " {}", '{"b": 1e-05}', '{"b": 1.5e-07}',
                     '{"b": 1e16}', '{"k": "x, y: z"}', '{"a":1, "b":2}', '{"t": -0.0, "u": 1}',
                     '{"t":-0.0}', '{"t": -0.05, "u": -0}', '{"b": 1e+16, "a": 2}', '{"b":1e-7}', '{"b": 1e-07}',
                     '{"":","}', '{"a":"x:y"}', '{"a:":1,"b":2}', '{"a,":1,"b":"c"}', '{"a":"x, y","b":1}']),
)
stored_values = st.one_of(
    st.none(), st.integers(-(2**63), 2**63 - 1), st.integers(0, 1), st.booleans(),
    st.floats(width=64), any_text, st.binary(max_size=6),
    st.sampled_from(["2025-01-14 09:30:00", "2025-01-14T09:30:00Z", "2025-13-14 09:30:00", "2025-01-14",
                     "2025-02-30", "1700000000", "true", "0", "1", "-0.0", "a\x00b", "\ud800"]),
    json_spellings,
)


@st.composite
def rows(draw):
    table = draw(st.sampled_from(sorted(KINDS)))
    return table, tuple(draw(stored_values) for _ in KINDS[table])


def reals(kinds) -> tuple[int, ...]:
    return tuple(i for i, kind in enumerate(kinds) if kind is Kind.REAL)


class TestFastRenderer:
    @settings(max_examples=examples(800), deadline=None)
    @given(st.one_of(json_spellings, st.dictionaries(any_text | st.sampled_from([",", ":", ", ", ": "]),
                                                     json_scalars | st.sampled_from([",", ":", "a, b: c"]),
                                                     min_size=1, max_size=4)
                     .map(lambda d: json.dumps(d, separators=(",", ":")))))
    def test_the_fast_json_spelling_is_json_texts(self, raw):
        """Commas and colons inside the strings of a compact object do not split its members."""
        try:
            expected = json_text(raw)
        except Exception as refused:  # noqa: BLE001 - the fast path refuses it alike
            with pytest.raises(type(refused)):
                fast_json_text(raw)
            return
        assert fast_json_text(raw) == expected

    @settings(max_examples=examples(800), deadline=None)
    @given(rows())
    def test_fast_and_general_renderers_spell_every_row_alike(self, table_row):
        """Any stored value in any column: the compiled fast path gives the general renderer's text."""
        table, row = table_row
        assert fast_row_renderer(KINDS[table])(row) == sqlite_row_renderer(KINDS[table])(row)

    @settings(max_examples=examples(500), deadline=None)
    @given(st.dictionaries(any_text, json_scalars, min_size=1, max_size=8), st.data())
    def test_a_changed_json_value_changes_the_text(self, document, data):
        """The fast path never spells two different documents alike (reordering keys changes nothing);
        different means different to jsonb, which holds -0.0 as 0.0."""
        kinds = KINDS["predictions"]
        column = [c.name for c in next(t for t in TABLES if t.name == "predictions").columns].index("features")
        key = data.draw(st.sampled_from(sorted(document)))
        changed = dict(document)
        changed[key] = data.draw(json_scalars.filter(lambda v: jsonb_text(v) != jsonb_text(document[key])))
        render = fast_row_renderer(kinds)

        def row(doc):
            return tuple(json.dumps(doc) if i == column else None for i in range(len(kinds)))

        reordered = dict(reversed(list(document.items())))
        assert render(row(document)) == render(row(reordered))
        assert render(row(document)) != render(row(changed))

    @settings(max_examples=examples(800), deadline=None)
    @given(rows())
    def test_fast_and_general_renderers_mark_reals_alike(self, table_row):
        """A bucket's row text (REAL columns marked, JSON columns apart): the fast path gives the general
        renderer's text for any stored value in any column."""
        table, row = table_row
        kinds = KINDS[table]
        apart, marked = [i for i, kind in enumerate(kinds) if kind is Kind.JSON], reals(kinds)
        assert (fast_row_renderer(kinds, apart, marked)(row)
                == sqlite_row_renderer(kinds, apart, marked)(row))

    @settings(max_examples=examples(200), deadline=None)
    @given(st.lists(rows(), min_size=1, max_size=6))
    def test_one_renderer_spells_rows_it_has_seen_alike(self, table_rows):
        """A renderer remembers what it spelled (dates by their stored string): rendering the same rows
        again, in another order, still gives the general renderer's text."""
        renderers = {table: fast_row_renderer(kinds) for table, kinds in KINDS.items()}
        for table, row in table_rows + table_rows[::-1]:
            assert renderers[table](row) == sqlite_row_renderer(KINDS[table])(row)


def test_a_negative_zero_in_json_is_spelled_as_jsonb_prints_it():
    """jsonb keeps no negative zero: '{"t": -0.0}' is printed {"t": 0.0} by PostgreSQL, so both renderers
    spell it so (else every such row costs a closer look); -0.05 stays negative."""
    kinds = KINDS["races"]
    column = [c.name for c in next(t for t in TABLES if t.name == "races").columns].index("weather_conditions")
    for stored, jsonb in (('{"temp_c": -0.0, "wind": "S"}', '{"wind": "S", "temp_c": 0.0}'),
                          ('{"temp_c":-0.0}', '{"temp_c": 0.0}'),
                          ('{"temp_c": -0.05}', '{"temp_c": -0.05}')):
        row = tuple(stored if i == column else None for i in range(len(kinds)))
        expected = "|".join(md5_hex(jsonb) if i == column else "~" for i in range(len(kinds)))
        assert fast_row_renderer(kinds)(row) == sqlite_row_renderer(kinds)(row) == expected


refused_json = st.one_of(
    json_spellings, stored_values,
    st.decimals(allow_nan=False, allow_infinity=False).map(lambda d: f'{{"odds": {d}, "age": 3}}'),
    st.integers(-(10**30), 10**30).map(lambda i: f"[{i}.5]"),
    st.sampled_from(["null", " null ", '"NW"', '"{\\"temp_c\\": 14.5}"', '{"a": 0.1000000000000000055511151231257827}',
                     '{"a": 1e400}', "[1e-400]", '{"a": NaN}', '{"a": -Infinity}', '{"a": 1, "a": 2}',
                     '{"a": {"b": 1, "b": 2}}', '{"a": 123456789012345678901234567890.5}', '{"a": 9007199254740993.0}']),
)


def _holds_what_jsonb_cannot(text: str) -> bool:
    return "\\u0000" in text or any("\ud800" <= c <= "\udfff" for c in text)


@settings(max_examples=examples(1500), deadline=None)
@given(refused_json)
def test_a_json_text_the_rules_refuse_is_never_spelled_as_a_document(raw):
    """A stored JSON value the conversion refuses (a number that does not read back as itself, NaN, a
    repeated key, `null`, a bare string, text that is not JSON) is spelled '!<reason>' by every JSON
    path (the general renderer, the fast one, a run), or holds what jsonb cannot (a NUL escape, a lone
    surrogate): never as a text PostgreSQL prints for a document it holds (say the double nearest to a
    number), so its row always differs from PostgreSQL's and is confirmed by the shared normalization."""
    from hrp_data.verify.json_runs import json_texts

    try:
        to_postgres(Kind.JSON, raw)
        return
    except Rejected:
        pass
    spelled = [sqlite_row_renderer([Kind.JSON])((raw,)), fast_row_renderer([Kind.JSON])((raw,)),
               *json_texts([raw, raw, None]).split("\n")[:2]]
    try:
        spelled.append(json_text(raw))
    except Rejected as rejected:
        spelled.append("!" + rejected.reason)
    assert spelled[0] == spelled[1]
    for text in spelled[2:]:
        assert text.startswith("!") or _holds_what_jsonb_cannot(text), text
    assert spelled[0] == md5_hex(spelled[2]) or spelled[0] == spelled[2]


def test_a_timestamp_is_spelled_as_postgresql_prints_it_in_utc():
    """The legacy spelling as stored; any other as PostgreSQL's text of the UTC instant (ISO DateStyle):
    a fraction without its trailing zeros, none when it is zero."""
    render = sqlite_row_renderer(KINDS["races"])
    column = [c.name for c in next(t for t in TABLES if t.name == "races").columns].index("created_at")

    def spelled(stored):
        return render(tuple(stored if i == column else None for i in range(len(KINDS["races"])))).split("|")[column]

    assert spelled("2025-01-14 09:30:00") == "2025-01-14 09:30:00"
    assert spelled("2025-01-14T09:30:00.500+02:00") == "2025-01-14 07:30:00.5"
    assert spelled("2025-01-14T09:30:00.000001Z") == "2025-01-14 09:30:00.000001"
    assert spelled("2025-01-14T09:30:00.000Z") == "2025-01-14 09:30:00"
    assert spelled("0099-01-14T09:30:00Z") == "0099-01-14 09:30:00"


class TestRealBlocks:
    @settings(max_examples=examples(800), deadline=None)
    @given(st.lists(stored_values | st.floats(width=64) | st.sampled_from([-0.0, 0.0, 5e-324, -1.5, 2**53 + 1]),
                    max_size=12))
    def test_marks_and_the_block_spell_what_the_row_text_spells(self, values):
        """Each value's mark, and the block of the column, together spell what the inline renderer
        spells: NULL and refused values in the mark, every double's 8 bytes in the block, in order."""
        mark = sqlite_row_renderer([Kind.REAL], marked=(0,))
        inline = sqlite_row_renderer([Kind.REAL])
        marks = [mark((value,)) for value in values]
        spelled = [inline((value,)) for value in values]
        assert [m for m in marks if m] == [s for m, s in zip(marks, spelled) if m]
        assert real_block(values) == "".join(s for m, s in zip(marks, spelled) if not m)


ALL_KINDS = list(Kind)
"""One column of each kind: a table no HRP model has, but any file may."""

stored_of = {
    Kind.INTEGER: st.integers(-(2**63), 2**63 - 1),
    Kind.NUMERIC: st.integers(-(2**63), 2**63 - 1),
    Kind.REAL: st.floats(width=64, allow_nan=False) | st.integers(-(2**53), 2**53),
    Kind.TEXT: st.text(max_size=8).filter(lambda t: "\x00" not in t) | st.sampled_from(["a\tb", "a\nb", "\\", "|", "é"]),
    Kind.BOOLEAN: st.integers(0, 1) | st.sampled_from(["true", "false"]),
    Kind.TIMESTAMP: st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30)).map(format_timestamp)
    | st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30)).map(lambda v: v.isoformat() + "Z"),
    Kind.DATE: st.dates(min_value=dt.date(1, 1, 1)).map(dt.date.isoformat),
    Kind.JSON: st.dictionaries(any_text, json_scalars, max_size=4).map(json.dumps) | json_spellings,
    Kind.BLOB: st.binary(max_size=6),
}


@st.composite
def one_value_changed(draw):
    """Rows of one column of each kind, and the same rows with one value changed (NULL included)."""
    count = draw(st.integers(1, 5))
    rows = [tuple(draw(st.none() | stored_of[kind]) for kind in ALL_KINDS) for _ in range(count)]
    at, column = draw(st.integers(0, count - 1)), draw(st.integers(0, len(ALL_KINDS) - 1))
    changed = [list(row) for row in rows]
    changed[at][column] = draw(st.none() | stored_of[ALL_KINDS[column]])
    return rows, [tuple(row) for row in changed], ALL_KINDS[column], rows[at][column], changed[at][column]


def convertible(kind: Kind, value) -> bool:
    try:
        to_postgres(kind, value)
    except Rejected:
        return False
    return True


@settings(max_examples=examples(1500), deadline=None)
@given(one_value_changed())
def test_a_value_changed_anywhere_changes_the_bucket_text(change):
    """A bucket's text (row texts, REAL blocks, JSON lines) differs whenever one value of one row, of any
    kind, differs by the shared normalization: so a planted difference always costs a closer look."""
    rows, changed, kind, before, after = change
    if not (convertible(kind, before) and convertible(kind, after)) or normalize(kind, before) == normalize(kind, after):
        return
    real_at, json_at = real_positions(ALL_KINDS), json_positions(ALL_KINDS)
    render = fast_row_renderer(ALL_KINDS, apart=json_at, marked=real_at)
    assert bucket_text(rows, render, real_at, json_at) != bucket_text(changed, render, real_at, json_at)
    digests = [bucket_digest(r, render, real_at, json_at) for r in (rows, changed)]
    assert digests == [md5_hex(bucket_text(r, render, real_at, json_at)) for r in (rows, changed)]
    assert digests[0] != digests[1]
