"""hrp_data.verify.range_hash: the fast renderer spells every row exactly as the general one (no database)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.types import kind_of
from hrp_data.models import TABLES
from hrp_data.verify.range_hash import fast_row_renderer, sqlite_row_renderer
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
                     '{"b": 1e16}', '{"k": "x, y: z"}', '{"a":1, "b":2}']),
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


class TestFastRenderer:
    @settings(max_examples=examples(800), deadline=None)
    @given(rows())
    def test_fast_and_general_renderers_spell_every_row_alike(self, table_row):
        """Any stored value in any column: the compiled fast path gives the general renderer's text."""
        table, row = table_row
        assert fast_row_renderer(KINDS[table])(row) == sqlite_row_renderer(KINDS[table])(row)

    @settings(max_examples=examples(500), deadline=None)
    @given(st.dictionaries(any_text, json_scalars, min_size=1, max_size=8), st.data())
    def test_a_changed_json_value_changes_the_text(self, document, data):
        """The fast path never spells two different documents alike (reordering keys changes nothing)."""
        kinds = KINDS["predictions"]
        column = [c.name for c in next(t for t in TABLES if t.name == "predictions").columns].index("features")
        key = data.draw(st.sampled_from(sorted(document)))
        changed = dict(document)
        changed[key] = data.draw(json_scalars.filter(lambda v: json.dumps(v) != json.dumps(document[key])))
        render = fast_row_renderer(kinds)

        def row(doc):
            return tuple(json.dumps(doc) if i == column else None for i in range(len(kinds)))

        reordered = dict(reversed(list(document.items())))
        assert render(row(document)) == render(row(reordered))
        assert render(row(document)) != render(row(changed))
