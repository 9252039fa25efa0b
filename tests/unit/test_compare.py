"""shadow.compare: property tests of the comparison (no database)."""

from __future__ import annotations

import copy
import datetime as dt
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.types import kind_of
from hrp_data.models import SECRET_COLUMNS, TABLES
from shadow.compare import (
    EXTRA_ROW,
    MISSING_ROW,
    POSITION,
    TYPE_DIFFERS,
    VALUE_DIFFERS,
    Comparator,
    Difference,
    IgnoreRule,
    Nested,
    ReadType,
)
from adapters.convert import Kind
from shadow import compare as compare_module
from shadow.compare import identical
from shadow.normalize import Unconvertible, normalize
from shadow.redact import fingerprint
from tests.examples import examples

KINDS = {table.name: {c.name: kind_of(c) for c in table.columns} for table in TABLES}
KEYS = {table.name: [c.name for c in table.primary_key.columns] for table in TABLES}
NESTED = {"races": {"runners": Nested("race_horses", ordered=True)}}
COMPARATOR = Comparator(KINDS, KEYS, nested=NESTED, secrets=SECRET_COLUMNS)
PREDICTION = ReadType("predictions.get", "predictions")
PREDICTIONS = ReadType("predictions.list", "predictions", ordered=True)
UNORDERED = ReadType("predictions.any", "predictions", ordered=False)
RACE = ReadType("races.get", "races")

storable_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8)
"""Text PostgreSQL can hold (no NUL, no lone surrogates): other text is an Unconvertible by design."""

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**31), 2**31) | storable_text
    | st.floats(allow_nan=False, allow_infinity=False, width=64),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(storable_text, children, max_size=4),
    max_leaves=12,
)
documents = st.dictionaries(storable_text, json_values, min_size=1, max_size=6)
instants = st.datetimes(
    min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2999, 12, 31), timezones=st.just(dt.timezone.utc)
)
offsets = st.integers(-14 * 60, 14 * 60).map(lambda minutes: dt.timezone(dt.timedelta(minutes=minutes)))


@st.composite
def predictions(draw, row_id=None):
    return {
        "id": row_id if row_id is not None else draw(st.integers(1, 10**6)),
        "race_id": draw(st.none() | st.integers(1, 1000)),
        "horse_id": draw(st.none() | st.integers(1, 1000)),
        "user_id": draw(st.none() | st.integers(1, 1000)),
        "prediction_value": draw(st.none() | st.floats(allow_nan=False, allow_infinity=False)),
        "confidence": draw(st.none() | st.floats(0, 1)),
        "algorithm_version": draw(st.none() | storable_text),
        "features": draw(st.none() | documents),
        "created_at": draw(st.none() | instants),
    }


@st.composite
def prediction_lists(draw):
    ids = draw(st.lists(st.integers(1, 10**6), unique=True, max_size=6))
    return [draw(predictions(row_id=i)) for i in ids]


def _mirror(difference: Difference) -> Difference:
    kind = {MISSING_ROW: EXTRA_ROW, EXTRA_ROW: MISSING_ROW}.get(difference.kind, difference.kind)
    return Difference(difference.table, difference.key, difference.column,
                      difference.secondary, difference.primary, kind)


def _key(d: Difference):
    return (d.table, d.key, d.column or "", d.kind, json.dumps(d.as_dict(), sort_keys=True, default=str))


class TestSymmetry:
    @settings(max_examples=examples(150), deadline=None)
    @given(prediction_lists(), prediction_lists())
    def test_comparison_is_symmetric(self, left, right):
        """compare(a, b) holds exactly the mirrored differences of compare(b, a)."""
        forward = sorted(map(_key, COMPARATOR.compare(UNORDERED, left, right)))
        backward = sorted(map(_key, map(_mirror, COMPARATOR.compare(UNORDERED, right, left))))
        assert forward == backward

    @settings(max_examples=examples(100), deadline=None)
    @given(prediction_lists())
    def test_a_result_equals_itself(self, rows):
        """No difference between a result and itself, ordered or not."""
        assert COMPARATOR.compare(PREDICTIONS, rows, [dict(r) for r in rows]) == []

    @settings(max_examples=examples(100), deadline=None)
    @given(predictions())
    def test_normalization_is_idempotent_on_equal_values(self, row):
        """Normalizing the same record twice gives equal values."""
        assert COMPARATOR.normalize_record("predictions", row) == COMPARATOR.normalize_record("predictions", dict(row))


class TestEquality:
    @settings(max_examples=examples(150), deadline=None)
    @given(documents, st.randoms(use_true_random=False))
    def test_reordered_json_keys_are_equal(self, document, rng):
        """A JSON document with its keys in another order (as text or as a dict) is the same value."""
        items = list(document.items())
        rng.shuffle(items)
        reordered = dict(items)
        text = json.dumps(reordered)
        base = {"id": 1, "features": document}
        assert COMPARATOR.compare(PREDICTION, base, {"id": 1, "features": reordered}) == []
        assert COMPARATOR.compare(PREDICTION, base, {"id": 1, "features": text}) == []

    @given(st.sampled_from(["confidence", "prediction_value"]))
    def test_negative_zero_equals_zero(self, column):
        """-0.0 and 0.0 are the same REAL."""
        assert COMPARATOR.compare(PREDICTION, {"id": 1, column: -0.0}, {"id": 1, column: 0.0}) == []

    @settings(max_examples=examples(200), deadline=None)
    @given(instants, offsets, st.sampled_from(["T", " "]))
    def test_timestamps_are_equal_across_spellings_of_one_instant(self, instant, offset, separator):
        """The same instant as an aware datetime, UTC text, Z text, offset text or an epoch number."""
        local = instant.astimezone(offset)
        spellings = [
            instant,
            local,
            instant.replace(tzinfo=None).isoformat(sep=separator),
            instant.replace(tzinfo=None).isoformat(sep=separator) + "Z",
            local.isoformat(sep=separator),
            int(instant.timestamp()) if instant.microsecond == 0 else instant,
        ]
        for spelling in spellings:
            assert COMPARATOR.compare(
                PREDICTION, {"id": 1, "created_at": instant}, {"id": 1, "created_at": spelling}
            ) == [], spelling

    def test_int_and_bool_spellings_of_a_boolean(self):
        """0/1 vs False/True in a BOOLEAN column: equal after normalization."""
        user = ReadType("users.get", "users")
        assert COMPARATOR.compare(user, {"id": 1, "is_admin": 1}, {"id": 1, "is_admin": True}) == []
        assert COMPARATOR.compare(user, {"id": 1, "is_admin": 0}, {"id": 1, "is_admin": True}) != []

    def test_fields_without_a_kind_still_compare_by_value(self):
        """A field no kind is known for: Decimal and float are one number, -0.0 is 0.0."""
        from decimal import Decimal

        comparator = Comparator({}, {"t": ["id"]})
        read = ReadType("t.get", "t")
        assert comparator.compare(read, {"id": 1, "x": Decimal("0.5")}, {"id": 1, "x": 0.5}) == []
        assert comparator.compare(read, {"id": 1, "x": -0.0}, {"id": 1, "x": 0.0}) == []
        assert comparator.compare(read, {"id": 1, "x": 1}, {"id": 1, "x": "1"})[0].kind == TYPE_DIFFERS


class TestDetection:
    @settings(max_examples=examples(200), deadline=None)
    @given(predictions(), st.data())
    def test_any_single_changed_value_is_detected(self, row, data):
        """Changing one column to a value that normalizes differently gives exactly that difference."""
        column = data.draw(st.sampled_from([c for c in row if c != "id"]))
        replacement = data.draw({
            "race_id": st.none() | st.integers(1, 2000), "horse_id": st.none() | st.integers(1, 2000),
            "user_id": st.none() | st.integers(1, 2000),
            "prediction_value": st.none() | st.floats(allow_nan=False, allow_infinity=False),
            "confidence": st.none() | st.floats(0, 1), "algorithm_version": st.none() | storable_text,
            "features": st.none() | documents, "created_at": st.none() | instants,
        }[column])
        before = COMPARATOR.normalize_value("predictions", column, row[column])
        after = COMPARATOR.normalize_value("predictions", column, replacement)
        changed = dict(row, **{column: replacement})
        found = COMPARATOR.compare(PREDICTION, row, changed)
        if before == after:
            assert found == []
        else:
            assert [(d.table, d.key, d.column, d.kind) for d in found] == [
                ("predictions", (row["id"],), column, VALUE_DIFFERS)
            ]

    @settings(max_examples=examples(100), deadline=None)
    @given(prediction_lists(), st.data())
    def test_a_dropped_row_is_missing_and_an_added_one_extra(self, rows, data):
        """Removing a row from the secondary is missing_row; adding one is extra_row."""
        if rows:
            index = data.draw(st.integers(0, len(rows) - 1))
            dropped = rows[:index] + rows[index + 1:]
            found = COMPARATOR.compare(PREDICTIONS, rows, dropped)
            assert [(d.key, d.kind) for d in found] == [((rows[index]["id"],), MISSING_ROW)]
        extra = data.draw(predictions(row_id=10**6 + 1))
        found = COMPARATOR.compare(PREDICTIONS, rows, rows + [extra])
        assert [(d.key, d.kind) for d in found] == [((extra["id"],), EXTRA_ROW)]

    def test_order_counts_only_for_ordered_reads(self):
        """Swapped rows: a position difference for an ORDER BY read, nothing otherwise."""
        rows = [{"id": 1, "confidence": 0.9}, {"id": 2, "confidence": 0.5}]
        swapped = list(reversed(rows))
        assert COMPARATOR.compare(UNORDERED, rows, swapped) == []
        found = COMPARATOR.compare(PREDICTIONS, rows, swapped)
        assert {(d.key, d.column, d.kind) for d in found} == {
            ((1,), POSITION, VALUE_DIFFERS), ((2,), POSITION, VALUE_DIFFERS)
        }

    def test_nested_runners_compare_as_race_horses_rows(self):
        """A race's runners are rows of race_horses: a lost runner is a missing race_horses row."""
        race = {"id": 7, "race_name": "R", "runners": [
            {"race_id": 7, "horse_id": 1, "post_position": 1, "odds": 2.5, "finish_position": None},
            {"race_id": 7, "horse_id": 2, "post_position": 2, "odds": 3.0, "finish_position": None},
        ]}
        other = dict(race, runners=[dict(race["runners"][0], odds=2.75)])
        found = COMPARATOR.compare(RACE, race, other)
        assert {(d.table, d.key, d.column, d.kind) for d in found} == {
            ("race_horses", (7, 1), "odds", VALUE_DIFFERS),
            ("race_horses", (7, 2), None, MISSING_ROW),
        }

    def test_none_against_a_record(self):
        """get() answering None on one side only: missing_row or extra_row with the row's key."""
        row = {"id": 3, "confidence": 0.5}
        assert [(d.key, d.kind) for d in COMPARATOR.compare(PREDICTION, row, None)] == [((3,), MISSING_ROW)]
        assert [(d.key, d.kind) for d in COMPARATOR.compare(PREDICTION, None, row)] == [((3,), EXTRA_ROW)]
        assert COMPARATOR.compare(PREDICTION, None, None) == []

    def test_a_value_that_did_not_convert_is_a_type_difference(self):
        """A hostile legacy value (text in a REAL) against a number: type_differs."""
        found = COMPARATOR.compare(PREDICTION, {"id": 1, "confidence": "high"}, {"id": 1, "confidence": 0.9})
        assert [(d.column, d.kind) for d in found] == [("confidence", TYPE_DIFFERS)]
        assert isinstance(found[0].primary, Unconvertible)
        assert found[0].as_dict()["primary"]["unconvertible"] == "text_in_real_column"

    def test_aggregates_compare_by_their_grouping_key(self):
        """Statistics rows are matched by race_id; order counts (ORDER BY race_id)."""
        kinds = {"race_statistics": {"race_id": KINDS["predictions"]["race_id"], "avg_confidence": KINDS["predictions"]["confidence"]}}
        comparator = Comparator(kinds, {"race_statistics": ["race_id"]})
        read = ReadType("statistics.race_statistics", "race_statistics", ordered=True)
        left = [{"race_id": 1, "avg_confidence": 0.5}, {"race_id": 2, "avg_confidence": 0.25}]
        right = [{"race_id": 1, "avg_confidence": 0.5}, {"race_id": 2, "avg_confidence": 0.3}]
        found = comparator.compare(read, left, right)
        assert [(d.table, d.key, d.column) for d in found] == [("race_statistics", (2,), "avg_confidence")]


class TestIgnoreAndSecrets:
    def test_ignored_columns_are_not_compared(self):
        """An ignore rule skips the column of that table only."""
        rule = IgnoreRule.parse("races.updated_at")
        comparator = Comparator(KINDS, KEYS, nested=NESTED, ignore=rule)
        old = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
        new = old + dt.timedelta(hours=1)
        read = ReadType("races.get", "races")
        assert comparator.compare(read, {"id": 1, "updated_at": old}, {"id": 1, "updated_at": new}) == []
        horse = ReadType("horses.get", "horses")
        assert comparator.compare(horse, {"id": 1, "updated_at": old}, {"id": 1, "updated_at": new}) != []

    def test_secret_values_appear_only_as_fingerprints(self):
        """password_hash/api_key/api_secret differences and missing rows carry fingerprints."""
        read = ReadType("credentials.get", "api_credentials")
        found = COMPARATOR.compare(read, {"id": 1, "api_key": "k-123", "api_secret": "s-123"},
                                   {"id": 1, "api_key": "k-999", "api_secret": "s-123"})
        assert [(d.column, d.primary, d.secondary) for d in found] == [
            ("api_key", fingerprint("k-123"), fingerprint("k-999"))
        ]
        users = ReadType("users.get", "users")
        (missing,) = COMPARATOR.compare(users, {"id": 1, "password_hash": "pbkdf2$secret"}, None)
        assert "pbkdf2$secret" not in json.dumps(missing.as_dict())
        assert missing.primary["password_hash"] == fingerprint("pbkdf2$secret")

    def test_bad_ignore_rules_are_refused(self):
        """An ignore rule must be TABLE.COLUMN."""
        import pytest

        with pytest.raises(ValueError, match="TABLE.COLUMN"):
            IgnoreRule.parse("updated_at")


raw_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from([0.0, -0.0, 1.0, 1.5, float("inf")])
    | st.floats(allow_nan=True) | st.text(max_size=4) | st.dates()
    | st.datetimes(timezones=st.none() | st.just(dt.timezone.utc) | offsets)
    | st.sampled_from(["2025-01-14 09:30:00", "2025-01-14T09:30:00Z", "1", "true", '{"a": 1}']),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=2), children, max_size=3),
    max_leaves=6,
)


def _twin(value):
    """An equal-looking copy that may differ in a way only normalization sees."""
    if isinstance(value, dict):
        return {k: _twin(v) for k, v in reversed(list(value.items()))}
    if isinstance(value, list):
        return [_twin(v) for v in value]
    if type(value) is bool:
        return int(value)
    if type(value) is float and value == 0.0:
        return -value
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.timezone(dt.timedelta(hours=1)))
    return value


class TestIdenticalShortcut:
    @settings(max_examples=examples(300), deadline=None)
    @given(raw_values, st.booleans(), st.sampled_from([None, *Kind]))
    def test_identical_values_normalize_to_one_value(self, value, twisted, kind):
        """Whenever the shortcut skips a field, normalization would have found the two equal."""
        other = _twin(value) if twisted else copy.deepcopy(value)
        if identical(value, other):
            left = compare_module._generic(value) if kind is None else normalize(kind, value)
            right = compare_module._generic(other) if kind is None else normalize(kind, other)
            assert compare_module._same(left, right)

    def test_only_exact_twins_are_identical(self):
        """True is not 1, -0.0 not 0.0, other tzinfo or key order is not the same value."""
        instant = dt.datetime(2025, 1, 14, 9, 30, tzinfo=dt.timezone.utc)
        assert identical({"a": [1, "x", None]}, {"a": [1, "x", None]}) and identical(instant, instant.replace())
        assert not identical(True, 1) and not identical({"a": True}, {"a": 1}) and not identical(0.0, -0.0)
        assert not identical(instant, instant.astimezone(dt.timezone(dt.timedelta(hours=1))))
        assert not identical({"a": 1, "b": 2}, {"b": 2, "a": 1}) and not identical(float("nan"), float("nan"))

    @settings(max_examples=examples(150), deadline=None)
    @given(prediction_lists(), st.data())
    def test_the_shortcut_changes_no_verdict(self, rows, data):
        """compare() reports exactly what it reports when every field is normalized."""
        twins = [{k: (_twin(v) if data.draw(st.booleans()) else v) for k, v in row.items()} for row in rows]
        fast = sorted(map(_key, COMPARATOR.compare(PREDICTIONS, rows, twins)))
        original = compare_module.identical
        compare_module.identical = lambda left, right: False
        try:
            slow = sorted(map(_key, COMPARATOR.compare(PREDICTIONS, rows, twins)))
        finally:
            compare_module.identical = original
        assert fast == slow

    def test_twins_that_differ_after_normalization_are_still_reported(self):
        """A JSON true against 1 is a value difference; -0.0 against 0.0 and one instant in two zones are not."""
        instant = dt.datetime(2025, 1, 14, 9, 30, tzinfo=dt.timezone.utc)
        row = {"id": 1, "features": {"flag": True}, "confidence": 0.0, "created_at": instant}
        twin = {"id": 1, "features": {"flag": 1}, "confidence": -0.0,
                "created_at": instant.astimezone(dt.timezone(dt.timedelta(hours=2)))}
        (difference,) = COMPARATOR.compare(PREDICTION, row, twin)
        assert (difference.column, difference.kind) == ("features", VALUE_DIFFERS)


@given(st.uuids(), st.timedeltas(min_value=dt.timedelta(0), max_value=dt.timedelta(days=3650)))
def test_an_apps_uuid_and_interval_compare_as_sqlite_stores_them(value, interval):
    """SQLAlchemy keeps a Uuid as 32 hex digits and an Interval as 1970-01-01 plus it on SQLite:
    the app's Python value on one side equals that stored form on the other, and only that."""
    assert normalize(Kind.TEXT, value) == normalize(Kind.TEXT, value.hex)
    assert normalize(Kind.TEXT, value) != normalize(Kind.TEXT, str(value))
    stored = (dt.datetime(1970, 1, 1) + interval).isoformat(sep=" ")
    assert normalize(Kind.TIMESTAMP, interval) == normalize(Kind.TIMESTAMP, stored)
    assert normalize(Kind.TIMESTAMP, interval) != normalize(Kind.TIMESTAMP, interval + dt.timedelta(microseconds=1))


@given(st.times())
def test_an_apps_time_compares_as_sqlite_stores_it(value):
    stored = f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}"
    assert normalize(Kind.TEXT, value) == normalize(Kind.TEXT, stored)
    assert normalize(Kind.TEXT, value) != normalize(Kind.TEXT, value.isoformat(timespec="seconds") + "x")


_FINITE = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300)


@given(_FINITE, st.floats(min_value=-1e-13, max_value=1e-13))
def test_a_computed_float_agrees_with_the_other_databases_rounding_of_it(value, drift):
    """An expression no column kind is known for (avg(price) in the app's SQL): SQLite's binary
    arithmetic and PostgreSQL's exact numeric one differ in the last digits; that is no mismatch."""
    from shadow.statements import StatementComparator, StatementRead

    read = StatementRead("sql:book#1", "book", True, "1", tables=("book",))
    other = value * (1 + drift)
    found = StatementComparator({"book": {"price": Kind.NUMERIC}}).compare(
        read, [{"name": "a", "avg_price": value}], [{"name": "a", "avg_price": other}])
    assert found == []


@given(_FINITE.filter(lambda v: abs(v) > 1e-2), st.floats(min_value=1e-9, max_value=1.0), st.booleans())
def test_a_computed_float_that_really_differs_is_a_mismatch(value, change, down):
    from shadow.statements import StatementComparator, StatementRead

    read = StatementRead("sql:book#1", "book", True, "1", tables=("book",))
    other = value * (1 - change if down else 1 + change)
    found = StatementComparator({"book": {"price": Kind.NUMERIC}}).compare(
        read, [{"name": "a", "avg_price": value}], [{"name": "a", "avg_price": other}])
    assert [(d.column, d.kind) for d in found] == [("avg_price", VALUE_DIFFERS)]


@given(_FINITE.filter(lambda v: v != 0))
def test_a_columns_own_real_value_is_compared_exactly(value):
    """The tolerance is for computed values only: a REAL column's value one bit off is a mismatch."""
    import math

    comparator = Comparator({"book": {"rating": Kind.REAL}}, {"book": ["id"]})
    nudged = math.nextafter(value, math.inf)
    found = comparator.compare(ReadType("book.get", "book"), {"id": 1, "rating": value}, {"id": 1, "rating": nudged})
    assert [(d.column, d.kind) for d in found] == [("rating", VALUE_DIFFERS)]


def test_a_statements_comparator_is_made_once_per_read_type_and_columns():
    """The kinds, ignore rules and secret columns of a statement's records are worked out once per
    read type and set of columns; records with other columns get a comparator of their own."""
    from shadow.statements import StatementComparator, StatementRead

    statements = StatementComparator({"users": {"id": Kind.INTEGER}}, ignore=[IgnoreRule("users", "seen")])
    read = StatementRead("orm:User#1", "users", False, "1", tables=("users",), keys=("id",))
    first = statements.compare(read, [{"id": 1, "api_token": "a", "seen": 1}], [{"id": 1, "api_token": "b", "seen": 2}])
    again = statements.compare(read, [{"id": 1, "api_token": "a", "seen": 1}], [{"id": 1, "api_token": "c", "seen": 3}])
    other = statements.compare(read, [{"id": 1, "name": "a"}], [{"id": 1, "name": "b"}])
    assert statements.comparator(read, ("id", "api_token", "seen")) is statements.comparator(read, ("id", "api_token", "seen"))
    assert [(d.column, d.primary != "a") for d in first + again] == [("api_token", True), ("api_token", True)]
    assert [(d.column, d.primary, d.secondary) for d in other] == [("name", "a", "b")]
