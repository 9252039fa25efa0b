"""Compare what the primary and the secondary answered to the same read, field by field.

A read answers a record (dict), a list of records, None, or aggregates (the
statistics reads: lists of stats dicts, compared as rows of a named pseudo
table). Every value goes through shadow.normalize, with the column kinds the
caller hands in ({table: {column: Kind}}, built from the models), so this
module and the verifier agree on what "equal" means. Rows are matched by
their primary key; row order counts only for reads whose ReadType says
`ordered` (the read has ORDER BY). Fields that hold child rows (a race's
`runners`) are compared as rows of the child table.

A difference names the table, the row's key, the column, both values and
its kind: missing_row (the secondary lacks a row), extra_row (it has one
more), value_differs, type_differs (the normalized values are of different
types, e.g. one side did not convert), error and timeout (made by the
experiment when a side raised). Values of secret columns are replaced by a
fingerprint the moment a Difference is made, so nothing downstream (log,
store, report) ever holds one. Ignore rules skip a column of a table (or
"*" for every table) and are listed in every report.

Most fields of most reads are equal, and both databases hand back the same
Python types (the models' column types convert on the way out). So a field
whose two values are `identical` (same type, same value, down to the sign
of a zero, a datetime's tzinfo and a JSON document's key order) is not
normalized at all: normalization is a function of the value alone, so it
would make two equal values of them. Every other field is normalized and
compared as before.

A float no column kind is known for (an expression: `avg(price)`, `sum(total)` in the app's own
SQL) is computed by each database its own way: SQLite in binary floating point, PostgreSQL in
exact decimal for a numeric column. Such floats are the same when they agree to COMPUTED_REL_TOL;
a column's own value (its kind known) is compared exactly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from adapters.convert import Kind
from shadow.normalize import Unconvertible, normalize
from shadow.redact import SECRET_KEYS, fingerprint, redact_json, redact_row

MISSING_ROW = "missing_row"
EXTRA_ROW = "extra_row"
VALUE_DIFFERS = "value_differs"
TYPE_DIFFERS = "type_differs"
ERROR = "error"
TIMEOUT = "timeout"
CANDIDATE_ERROR = "candidate_error"
"""The secondary does not run the statement as written (an app's SQLite-only SQL): not a mismatch."""
KINDS = (MISSING_ROW, EXTRA_ROW, VALUE_DIFFERS, TYPE_DIFFERS, ERROR, TIMEOUT, CANDIDATE_ERROR)
POSITION = "@position"
"""The pseudo column of an ordered read whose rows come back in another order."""

ABSENT = "<absent>"
COMPUTED_REL_TOL = 1e-12
"""Two computed floats this close (relative) are the same: SQLite's double arithmetic and
PostgreSQL's exact numeric one differ in the last digits of a sum or an average (about 1e-16 per
operation; 1e-12 leaves room for the rounding of ten thousand additions and more, typically)."""
COMPUTED_ABS_TOL = 1e-12
"""The same near zero, where a sum that cancels leaves each database its own rounding residue."""
"""The value shown for a field one side's record does not have at all."""


@dataclasses.dataclass(frozen=True)
class ReadType:
    """One kind of read: its name ('races.get'), the table its rows belong to, ORDER BY or not."""

    name: str
    table: str
    ordered: bool = False


@dataclasses.dataclass(frozen=True)
class Nested:
    """A field of a record that holds rows of another table (races.runners -> race_horses)."""

    table: str
    ordered: bool = False


@dataclasses.dataclass(frozen=True)
class IgnoreRule:
    """Skip `column` of `table` ('*' for every table) when comparing."""

    table: str
    column: str
    reason: str = ""

    def matches(self, table: str, column: str) -> bool:
        return self.table in ("*", table) and self.column == column

    @classmethod
    def parse(cls, text: str) -> list["IgnoreRule"]:
        """'races.updated_at,horses.updated_at' (the HRP_SHADOW_IGNORE format)."""
        rules = []
        for item in filter(None, (part.strip() for part in text.split(","))):
            table, dot, column = item.partition(".")
            if not dot or not table or not column:
                raise ValueError(f"ignore rule {item!r} is not TABLE.COLUMN (or *.COLUMN)")
            rules.append(cls(table, column, "HRP_SHADOW_IGNORE"))
        return rules


@dataclasses.dataclass(frozen=True)
class Difference:
    """One field (or row) on which the two sides disagree; values already redacted."""

    table: str
    key: tuple[Any, ...]
    column: str | None
    primary: Any
    secondary: Any
    kind: str

    @property
    def ref(self) -> tuple[str, tuple[Any, ...]]:
        return (self.table, self.key)

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "key": list(self.key),
            "column": self.column,
            "kind": self.kind,
            "primary": publishable(self.primary),
            "secondary": publishable(self.secondary),
        }


def publishable(value: Any) -> Any:
    """A JSON-safe form of a normalized value (Unconvertible spelled out, floats kept exact)."""
    if isinstance(value, Unconvertible):
        return {"unconvertible": value.reason, "raw": value.raw}
    if isinstance(value, dict):
        return {str(k): publishable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [publishable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def _generic(value: Any) -> Any:
    """Normalization of a field no kind is known for (aggregates' extra fields, scalars)."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, (float, Decimal)):
        return normalize(Kind.REAL, float(value))
    if isinstance(value, dt.datetime):
        return normalize(Kind.TIMESTAMP, value)
    if isinstance(value, dt.date):
        return normalize(Kind.DATE, value)
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return repr(value)


_PLAIN = frozenset({str, int, bool, type(None), dt.date})
"""Types whose equal values are indistinguishable (for int and bool: the exact type, not 1 and True)."""


def identical(left: Any, right: Any) -> bool:
    """Whether two raw values are indistinguishable, so that they normalize to one value.

    Only exact types count: True is not identical to 1, 0.0 not to -0.0, a datetime not
    to one with another tzinfo or fold, {"a": 1, "b": 2} not to {"b": 2, "a": 1}. When this
    says False the caller normalizes and compares; it never decides that values differ.
    """
    kind = type(left)
    if kind is not type(right):
        return False
    if kind in _PLAIN:
        return left == right
    if kind is float:
        return left == right and math.copysign(1.0, left) == math.copysign(1.0, right)
    if kind is dt.datetime:
        return left == right and left.tzinfo is right.tzinfo and left.fold == right.fold
    if kind is dict:
        return len(left) == len(right) and all(
            identical(lk, rk) and identical(lv, rv)
            for (lk, lv), (rk, rv) in zip(left.items(), right.items())
        )
    if kind is list:
        return len(left) == len(right) and all(identical(a, b) for a, b in zip(left, right))
    return False


def _same(left: Any, right: Any) -> bool:
    return type(left) is type(right) and left == right


def _same_computed(left: Any, right: Any) -> bool:
    """`_same`, and for two floats of no known kind (computed by each database) agreeing to COMPUTED_REL_TOL."""
    if _same(left, right):
        return True
    return (type(left) is float and type(right) is float
            and math.isclose(left, right, rel_tol=COMPUTED_REL_TOL, abs_tol=COMPUTED_ABS_TOL))


def _kind_of_difference(left: Any, right: Any) -> str:
    if left is None or right is None or type(left) is type(right):
        return VALUE_DIFFERS
    return TYPE_DIFFERS


class Comparator:
    """Compares control and candidate results of reads, with per-table column kinds.

    Args:
        kinds: {table: {column: Kind}} for the tables and pseudo tables reads return.
        keys: {table: [key columns]}; rows of a table without keys are matched by position.
        nested: {table: {field: Nested}} for record fields that hold child rows.
        ignore: columns to skip.
        secrets: column names whose values appear only as fingerprints.
    """

    def __init__(
        self,
        kinds: Mapping[str, Mapping[str, Kind]],
        keys: Mapping[str, Sequence[str]],
        *,
        nested: Mapping[str, Mapping[str, Nested]] | None = None,
        ignore: Iterable[IgnoreRule] = (),
        secrets: Iterable[str] = SECRET_KEYS,
    ):
        self.kinds = {table: dict(columns) for table, columns in kinds.items()}
        self.keys = {table: tuple(columns) for table, columns in keys.items()}
        self.nested = {table: dict(fields) for table, fields in (nested or {}).items()}
        self.ignore = tuple(ignore)
        self.secrets = frozenset(secrets)
        self._ignored_everywhere = frozenset(r.column for r in self.ignore if r.table == "*")
        self._ignored_in: dict[str, frozenset[str]] = {}
        for rule in self.ignore:
            if rule.table != "*":
                self._ignored_in[rule.table] = self._ignored_in.get(rule.table, frozenset()) | {rule.column}

    # -- normalization -------------------------------------------------------------------

    def _ignored(self, table: str, column: str) -> bool:
        """Whether an ignore rule matches (the rules' `matches`, looked up in sets)."""
        return column in self._ignored_everywhere or column in self._ignored_in.get(table, ())

    def normalize_value(self, table: str, column: str, value: Any) -> Any:
        kind = self.kinds.get(table, {}).get(column)
        return _generic(value) if kind is None else normalize(kind, value)

    def normalize_record(self, table: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """The comparable form of a record (child rows too), without ignored columns."""
        nested = self.nested.get(table, {})
        out: dict[str, Any] = {}
        for column, value in record.items():
            if self._ignored(table, column):
                continue
            if column in nested and isinstance(value, list):
                child = nested[column].table
                out[column] = [self.normalize_record(child, row) for row in value]
            else:
                out[column] = self.normalize_value(table, column, value)
        return out

    def _shown(self, table: str, column: str | None, value: Any) -> Any:
        if column is not None and column in self.secrets:
            return fingerprint(value)
        return redact_json(value)

    def _shown_row(self, table: str, normalized: Mapping[str, Any]) -> dict[str, Any]:
        nested = self.nested.get(table, {})
        flat = {k: v for k, v in normalized.items() if k not in nested}
        return redact_row(flat, self.secrets)

    def _key(self, table: str, record: Mapping[str, Any], position: int) -> tuple[Any, ...]:
        columns = self.keys.get(table, ())
        if columns and all(c in record for c in columns):
            return tuple(record[c] for c in columns)
        return (position,)

    # -- comparison ----------------------------------------------------------------------

    def compare(self, read: ReadType, primary: Any, secondary: Any) -> list[Difference]:
        """Every difference between the primary's and the secondary's answer to `read`."""
        return self._compare(read.table, read.ordered, primary, secondary)

    def _compare(self, table: str, ordered: bool, primary: Any, secondary: Any) -> list[Difference]:
        if primary is None and secondary is None:
            return []
        if isinstance(primary, Mapping) or isinstance(secondary, Mapping):
            return self._compare_single(table, primary, secondary)
        if isinstance(primary, (list, tuple)) and isinstance(secondary, (list, tuple)):
            return self._compare_rows(table, ordered, list(primary), list(secondary))
        left, right = _generic(primary), _generic(secondary)
        if _same_computed(left, right):
            return []
        return [Difference(table, (), None, left, right, _kind_of_difference(left, right))]

    def _compare_single(self, table: str, primary: Any, secondary: Any) -> list[Difference]:
        if isinstance(primary, Mapping) and isinstance(secondary, Mapping):
            return self._compare_records(table, self._key(table, primary, 0), primary, secondary)
        if isinstance(primary, Mapping) and secondary is None:
            key = self._key(table, primary, 0)
            return [Difference(table, key, None, self._row(table, primary), None, MISSING_ROW)]
        if isinstance(secondary, Mapping) and primary is None:
            key = self._key(table, secondary, 0)
            return [Difference(table, key, None, None, self._row(table, secondary), EXTRA_ROW)]
        return [Difference(table, (), None, type(primary).__name__, type(secondary).__name__, TYPE_DIFFERS)]

    def _row(self, table: str, record: Mapping[str, Any]) -> dict[str, Any]:
        return self._shown_row(table, self.normalize_record(table, record))

    def _compare_records(
        self, table: str, key: tuple[Any, ...], primary: Mapping[str, Any], secondary: Mapping[str, Any]
    ) -> list[Difference]:
        differences: list[Difference] = []
        nested = self.nested.get(table, {})
        columns = list(primary) + [c for c in secondary if c not in primary]
        for column in columns:
            if self._ignored(table, column):
                continue
            if column not in primary or column not in secondary:
                left = self._shown(table, column, self.normalize_value(table, column, primary[column])) if column in primary else ABSENT
                right = self._shown(table, column, self.normalize_value(table, column, secondary[column])) if column in secondary else ABSENT
                differences.append(Difference(table, key, column, left, right, TYPE_DIFFERS))
                continue
            if column in nested:
                child = nested[column]
                differences.extend(
                    self._compare(child.table, child.ordered, primary[column], secondary[column])
                )
                continue
            if identical(primary[column], secondary[column]):
                continue
            left = self.normalize_value(table, column, primary[column])
            right = self.normalize_value(table, column, secondary[column])
            same = _same_computed if self.kinds.get(table, {}).get(column) is None else _same
            if not same(left, right):
                differences.append(
                    Difference(
                        table, key, column,
                        self._shown(table, column, left), self._shown(table, column, right),
                        _kind_of_difference(left, right),
                    )
                )
        return differences

    def _index(self, table: str, rows: list[Any]) -> dict[tuple[Any, ...], Any] | None:
        index: dict[tuple[Any, ...], Any] = {}
        for position, row in enumerate(rows):
            if not isinstance(row, Mapping):
                return None
            key = self._key(table, row, position)
            if key in index:
                return None
            index[key] = row
        return index

    def _compare_rows(self, table: str, ordered: bool, primary: list, secondary: list) -> list[Difference]:
        left, right = self._index(table, primary), self._index(table, secondary)
        if left is None or right is None:  # not records, or duplicate keys: match by position
            left = {(i,): row for i, row in enumerate(primary)}
            right = {(i,): row for i, row in enumerate(secondary)}
        differences: list[Difference] = []
        for key, row in left.items():
            if key not in right:
                differences.append(Difference(table, key, None, self._row_or_value(table, row), None, MISSING_ROW))
            else:
                differences.extend(self._compare_pair(table, key, row, right[key]))
        for key, row in right.items():
            if key not in left:
                differences.append(Difference(table, key, None, None, self._row_or_value(table, row), EXTRA_ROW))
        if ordered:
            differences.extend(self._order_differences(table, list(left), list(right)))
        return differences

    def _row_or_value(self, table: str, row: Any) -> Any:
        return self._row(table, row) if isinstance(row, Mapping) else _generic(row)

    def _compare_pair(self, table: str, key: tuple[Any, ...], primary: Any, secondary: Any) -> list[Difference]:
        if isinstance(primary, Mapping) and isinstance(secondary, Mapping):
            return self._compare_records(table, key, primary, secondary)
        found = self._compare(table, False, primary, secondary)
        return [dataclasses.replace(d, key=key) for d in found]

    def _order_differences(self, table: str, left: list, right: list) -> list[Difference]:
        common = set(left) & set(right)
        in_left = [k for k in left if k in common]
        in_right = [k for k in right if k in common]
        if in_left == in_right:
            return []
        where = {key: position for position, key in enumerate(in_right)}
        return [
            Difference(table, key, POSITION, position, where[key], VALUE_DIFFERS)
            for position, key in enumerate(in_left)
            if where[key] != position
        ]


def outcome_difference(table: str, kind: str, primary: Any, secondary: Any) -> Difference:
    """A whole-read difference: one side raised (ERROR) or took too long (TIMEOUT)."""
    return Difference(table, (), None, primary, secondary, kind)


def restrict(differences: Iterable[Difference], refs: set[tuple[str, tuple[Any, ...]]]) -> list[Difference]:
    """Only the differences on these (table, key) rows."""
    return [d for d in differences if d.ref in refs]
