"""hrp_data.verify.json_runs: a run of stored JSON values is spelled line for line as range_hash.json_text
spells each value (no database)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.convert import Kind, Rejected, to_postgres
from hrp_data.verify.json_runs import json_lines, json_texts
from hrp_data.verify.range_hash import json_text, jsonb_member_order
from shadow.normalize import normalize
from tests.examples import examples
from tests.unit.test_range_hash import any_text, json_scalars, stored_values


def line(raw) -> str:
    """One value as the general renderer spells it, before its md5."""
    if raw is None:
        return "~"
    try:
        return json_text(raw)
    except Rejected as rejected:
        return "!" + rejected.reason


def convertible(raw) -> bool:
    try:
        to_postgres(Kind.JSON, raw)
    except Rejected:
        return False
    return True


keys = st.lists(any_text, min_size=1, max_size=6, unique=True)
spellings = st.sampled_from([json.dumps, lambda d: json.dumps(d, separators=(",", ":")),
                             lambda d: json.dumps(d, ensure_ascii=False)])


@st.composite
def runs(draw):
    """Objects with the same keys in the same order (what one program writes), now and then spoiled."""
    names = draw(keys)
    if draw(st.booleans()):  # keys already in jsonb's order (what PostgreSQL or a sorting program writes)
        names = [names[i] for i in jsonb_member_order(names)]
    spell = draw(spellings)
    objects = [{name: draw(json_scalars) for name in names} for _ in range(draw(st.integers(1, 8)))]
    values = [spell(o) for o in objects]
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(values) - 1))
        spelled = spell(objects[at])
        values[at] = draw(st.one_of(
            stored_values,
            st.just(spelled.replace(", ", ",", 1)),  # one comma spelled the other way
            st.just(spelled[:-1] + ', "' + names[0] + '": 1}'),  # a repeated key
            st.just(spelled + "\n"), st.just(" " + spelled), st.just(spelled[:-1]),  # cut short
            st.just("}\n{" + spelled[1:]), st.just(spelled + "}\n{"),
            st.just(spell(dict(reversed(list(objects[at].items()))))),  # the keys in another order
        ))
    return values


class TestJsonRuns:
    @settings(max_examples=examples(1000), deadline=None)
    @given(runs())
    def test_a_run_is_spelled_as_each_value_alone(self, values):
        assert json_texts(values) == "\n".join(map(line, values))

    @settings(max_examples=examples(300), deadline=None)
    @given(st.lists(stored_values, max_size=6))
    def test_any_stored_values_are_spelled_as_each_value_alone(self, values):
        assert json_texts(values) == "\n".join(map(line, values))

    @settings(max_examples=examples(200), deadline=None)
    @given(runs(), st.data())
    def test_several_columns_are_joined_per_row(self, first, data):
        second = data.draw(st.lists(stored_values, min_size=len(first), max_size=len(first)))
        assert json_lines([first, second]) == "\n".join(f"{line(a)}|{line(b)}" for a, b in zip(first, second))

    def test_a_run_of_one_program_s_objects_takes_the_whole_run_path(self):
        """The common case is spelled without a value-by-value pass (and as each value alone)."""
        from hrp_data.verify import json_runs

        values = [json.dumps({"odds": i + 0.25, "age": i, "going": "good to soft", "temp_c": -i / 8})
                  for i in range(50)]
        assert json_runs._canonical_run(values) == "\n".join(map(line, values))
        assert json_runs._canonical_run(values[:1] + ['{"odds": 1, "odds": 2}']) is None

    def test_keys_in_jsonb_order_take_the_run_path_without_a_split(self):
        """Objects whose keys are in jsonb's order already are their own text (spaced) or it spaced (compact);
        a comma or colon inside a string of the compact spelling sends the run value by value."""
        from hrp_data.verify import json_runs

        documents = [{"id": i, "tag": "x y", "price": i / 4} for i in range(20)]
        spaced = list(map(json.dumps, documents))
        compact = [json.dumps(d, separators=(",", ":")) for d in documents]
        assert json_runs._canonical_run(spaced) == "\n".join(spaced) == "\n".join(map(line, spaced))
        assert json_runs._canonical_run(compact) == "\n".join(spaced) == "\n".join(map(line, compact))
        for odd in ("x,y", "x:y", "x, y"):
            values = compact[:-1] + [json.dumps({"id": 1, "tag": odd, "price": 0.5}, separators=(",", ":"))]
            assert json_runs._canonical_run(values) is None
            assert json_texts(values) == "\n".join(map(line, values))

    @settings(max_examples=examples(300), deadline=None)
    @given(runs(), st.data())
    def test_nulls_among_a_run_are_spelled_around_it(self, values, data):
        """A nullable column's run: NULLs anywhere among the objects, spelled as each value alone (and the
        objects, when they are one canonical run, as one run)."""
        from hrp_data.verify import json_runs

        for _ in range(data.draw(st.integers(1, 3))):
            values.insert(data.draw(st.integers(0, len(values))), None)
        assert json_texts(values) == "\n".join(map(line, values))
        present = [value for value in values if value is not None]
        if json_runs._canonical_run(present) is not None:
            assert json_runs._around_nulls(values) == "\n".join(map(line, values))

    @settings(max_examples=examples(1500), deadline=None)
    @given(runs(), st.data())
    def test_one_character_changed_in_a_run_changes_its_text(self, values, data):
        """A run of objects with one character of one document changed (another document, or text the rules
        refuse, by the shared normalization): the run's text differs at that line, and only there. (Two
        refused texts may spell alike: PostgreSQL holds neither, so its line differs from both.)"""
        at = data.draw(st.integers(0, len(values) - 1))
        if not isinstance(values[at], str) or not values[at] or not convertible(values[at]):
            return
        where = data.draw(st.integers(0, len(values[at]) - 1))
        char = data.draw(st.sampled_from('0123456789.,: "{}[]-+eE\\tnulasf') | st.characters())
        changed = list(values)
        changed[at] = values[at][:where] + char + values[at][where + 1:]
        if normalize(Kind.JSON, changed[at]) == normalize(Kind.JSON, values[at]):
            return  # the same document (a blank, an escape spelled otherwise): no difference to find
        before, after = json_texts(values).split("\n"), json_texts(changed).split("\n")
        assert [i for i, (a, b) in enumerate(zip(before, after)) if a != b] == [at]
