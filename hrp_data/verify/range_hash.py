"""Row fingerprints for range hashing: the same text computed by PostgreSQL in SQL and by Python.

The verifier hashes key ranges on both sides and only looks closer where the
hashes differ. On PostgreSQL the row text is computed by the server
(`postgres_row_text`), so the server does the work next to the data; on
SQLite, Python renders the raw stored values (`sqlite_row_renderer`,
`fast_row_renderer`). Each kind is spelled so that equal values give equal text:

- blob: hex; numeric: the decimal without trailing zeros;
- integer: decimal; text: '<length>:<text>'; real: the 8 IEEE bytes in hex
  (-0.0 as 0.0); boolean: t/f; timestamp: UTC, as PostgreSQL prints a
  timestamp in ISO DateStyle ('YYYY-MM-DD HH:MM:SS', then the fraction without
  trailing zeros if it has one: the cast to text costs the server less than
  to_char, and the legacy spelling is that text as stored);
  date: 'YYYY-MM-DD'; json: md5 of PostgreSQL's jsonb text (keys ordered by
  byte length then bytes, numbers as PostgreSQL numeric prints them, -0.0
  as 0.0); NULL: '~'; a stored value that does not convert: '!<reason>'.

A bucket's hash (hrp_data.verify.ranges.bucket_text) leaves the JSON columns
out of the row text (`apart`) and spells them after the rows, as jsonb's
text itself (`postgres_json_line`, hrp_data.verify.json_runs); it marks the
REAL columns in the row text (`marked`: NULL as NULL, a refused value as
'!<reason>', a double as nothing) and spells their doubles after the rows,
a column's 8-byte values one after the other in hex (`real_block`,
`postgres_real_block`: one pack per column and bucket instead of one per
value). A row's own fingerprint keeps both in, as their md5 and their hex.

Hashes only decide where to look. Every reported difference is confirmed
with shadow.normalize, so an exotic value that renders differently on the two
sides costs a closer look, never a false verdict.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import operator
import struct
from collections.abc import Callable, Collection, Sequence
from decimal import Decimal
from typing import Any

import orjson

from adapters.catalog import quote
from adapters.convert import STRICT_NUMBERS, Kind, Rejected, json_document, to_postgres

NULL = "~"
ROW_SEPARATOR = "|"


_SQL = {
    Kind.INTEGER: "{c}::text",
    Kind.TEXT: "length({c})::text || ':' || {c}",
    Kind.REAL: "encode(float8send(CASE WHEN {c} = 0 THEN 0::float8 ELSE {c} END), 'hex')",
    Kind.BOOLEAN: "CASE WHEN {c} THEN 't' ELSE 'f' END",
    Kind.TIMESTAMP: "({c} AT TIME ZONE 'UTC')::text",  # in ISO DateStyle (verify.run.long_statements)
    Kind.DATE: "to_char({c}, 'YYYY-MM-DD')",
    Kind.JSON: "md5({c}::text)",
    Kind.BLOB: "encode({c}, 'hex')",
    Kind.NUMERIC: "trim_scale({c})::text",
}


_NAIVE_TIMESTAMP_SQL = "{c}::text"
"""A timestamp without time zone (adapters.types.NaiveTimestamp) already holds the UTC wall clock."""


_MARK_SQL = "CASE WHEN {c} IS NULL THEN '" + NULL + "' ELSE '' END"
"""A REAL column's mark in a bucket's row text: its value is spelled after the rows (`postgres_real_block`)."""


def postgres_row_text(columns: Sequence[tuple[str, Kind]], naive: Collection[str] = (),
                      apart: Collection[str] = (), marked: Collection[str] = ()) -> str:
    """A SQL expression giving the row text of one row (column names are quoted); `naive`: the
    timestamp columns without a time zone; `apart`: columns left out (spelled by `postgres_json_line`);
    `marked`: REAL columns spelled by their mark only (their values by `postgres_real_block`)."""
    parts = [
        _MARK_SQL.format(c=quote(name)) if name in marked  # never NULL: no coalesce
        else f"coalesce({(_NAIVE_TIMESTAMP_SQL if name in naive else _SQL[kind]).format(c=quote(name))}, '{NULL}')"
        for name, kind in columns if name not in apart
    ]
    return f"concat_ws('{ROW_SEPARATOR}', {', '.join(parts)})"


def postgres_real_block(name: str, order: str) -> str:
    """An aggregate giving a REAL column's block (`real_block`): the 8 bytes of each of its values
    but NULL (-0.0 as 0.0), in the order `order`, in hex."""
    value = f"CASE WHEN {quote(name)} = 0 THEN 0::float8 ELSE {quote(name)} END"
    return f"coalesce(encode(string_agg(float8send({value}), ''::bytea ORDER BY {order}), 'hex'), '')"


def postgres_json_line(names: Sequence[str]) -> str:
    """A SQL expression giving the JSON line of one row: jsonb's own text of each of the JSON columns
    `names`, NULL as NULL, joined by ROW_SEPARATOR (hrp_data.verify.json_runs spells the same)."""
    parts = [f"coalesce({quote(name)}::text, '{NULL}')" for name in names]
    return parts[0] if len(parts) == 1 else f"concat_ws('{ROW_SEPARATOR}', {', '.join(parts)})"


def _jsonb_number(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    spelled = repr(value)
    text = format(Decimal(spelled), "f")
    if "e+" in spelled:  # written with a point by adapters.convert.dump_jsonb, so JSONB keeps it
        text += ".0"
    return text[1:] if text.startswith("-") and Decimal(text) == 0 else text


def jsonb_text(value: Any) -> str:
    """The text PostgreSQL prints for a jsonb value holding `value`."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (int, float)):
        return _jsonb_number(value)
    if isinstance(value, list):
        return "[" + ", ".join(jsonb_text(v) for v in value) + "]"
    keys = sorted(value, key=lambda k: (len(k.encode("utf-8", "surrogatepass")), k.encode("utf-8", "surrogatepass")))
    return "{" + ", ".join(f"{jsonb_text(k)}: {jsonb_text(value[k])}" for k in keys) + "}"


def _timestamp(raw: Any) -> str:
    if isinstance(raw, str) and len(raw) == 19 and raw[4] == "-" and raw[10] == " " and raw[13] == ":":
        return raw  # the legacy spelling: PostgreSQL prints a valid one alike, and never an invalid one
    return timestamp_text(to_postgres(Kind.TIMESTAMP, raw))


def timestamp_text(value: dt.datetime) -> str:
    """`value` as PostgreSQL prints `value AT TIME ZONE 'UTC'` (a timestamp) in ISO DateStyle."""
    value = value.astimezone(dt.timezone.utc)
    text = (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    )
    return f"{text}.{value.microsecond:06d}".rstrip("0") if value.microsecond else text


def _integer(raw: Any) -> str:
    return str(raw) if type(raw) is int else str(to_postgres(Kind.INTEGER, raw))


def _text(raw: Any) -> str:
    value = raw if type(raw) is str and "\x00" not in raw else to_postgres(Kind.TEXT, raw)
    return f"{len(value)}:{value}"


_PACK = struct.Struct(">d").pack


def _real(raw: Any) -> str:
    value = raw if type(raw) is float else to_postgres(Kind.REAL, raw)
    return _PACK(value + 0.0).hex()


def _jsonb_key(item: tuple[str, Any]) -> tuple[int, bytes]:
    encoded = item[0].encode("utf-8", "surrogatepass")
    return len(encoded), encoded


def _jsonb_ordered(pairs: list[tuple[str, Any]]) -> dict:
    if len({key for key, _ in pairs}) != len(pairs):
        raise Rejected("duplicate_json_key")
    return dict(sorted(pairs, key=_jsonb_key))


def _jsonb_float(spelled: str) -> float:
    """A JSON number with a fraction or exponent as the JSON rules read it (Rejected when it does not
    read back as itself), but -0.0 as 0.0: jsonb keeps no negative zero (it prints `0.0`)."""
    return STRICT_NUMBERS["parse_float"](spelled) + 0.0


_JSONB_NUMBERS = STRICT_NUMBERS | {"parse_float": _jsonb_float}


def json_text(raw: Any) -> str:
    """jsonb's text of a stored JSON value (Rejected if it holds none): parse with objects already in
    jsonb key order and let json.dumps (C) spell it; jsonb prints the same separators. What the JSON
    rules refuse is refused here too, never spelled as a document PostgreSQL could hold: a number that
    does not read back as itself (not the double nearest to it), NaN, a repeated key, `null`, a bare
    string. Numbers in exponent form spell differently (1e-05 vs 0.00001): such rows only cost a closer
    look."""
    if isinstance(raw, str) and raw.strip():
        try:
            document = json_document(json.loads(raw, object_pairs_hook=_jsonb_ordered, **_JSONB_NUMBERS))
            text = json.dumps(document, ensure_ascii=False)
        except Rejected:
            raise
        except ValueError:
            raise Rejected("invalid_json") from None
    else:
        text = jsonb_text(to_postgres(Kind.JSON, raw))
    return text


def _json(raw: Any) -> str:
    return md5_hex(json_text(raw))


def _numeric(raw: Any) -> str:
    value = to_postgres(Kind.NUMERIC, raw)
    return "0" if value == 0 else format(value.normalize(), "f")


_PYTHON: dict[Kind, Callable[[Any], str]] = {
    Kind.INTEGER: _integer,
    Kind.TEXT: _text,
    Kind.REAL: _real,
    Kind.BOOLEAN: lambda raw: "t" if to_postgres(Kind.BOOLEAN, raw) else "f",
    Kind.TIMESTAMP: _timestamp,
    Kind.DATE: lambda raw: to_postgres(Kind.DATE, raw).isoformat(),
    Kind.JSON: _json,
    Kind.BLOB: lambda raw: to_postgres(Kind.BLOB, raw).hex(),
    Kind.NUMERIC: _numeric,
}


def _real_mark(raw: Any) -> str:
    """A REAL value's mark in a bucket's row text (`postgres_row_text`'s `marked`): empty for a value
    `_real` spells, whose bytes `real_block` spells."""
    _real(raw)
    return ""


def sqlite_row_renderer(kinds: Sequence[Kind], apart: Collection[int] = (),
                        marked: Collection[int] = ()) -> Callable[[Sequence[Any]], str]:
    """A function rendering a raw SQLite row (values in column order) as row text; the columns at
    positions `apart` are left out, the REAL columns at positions `marked` spelled by their mark."""
    renderers = [None if i in apart else _real_mark if i in marked else _PYTHON[kind] for i, kind in enumerate(kinds)]

    def render(row: Sequence[Any]) -> str:
        parts = []
        for renderer, raw in zip(renderers, row):
            if renderer is None:
                continue
            if raw is None:
                parts.append(NULL)
                continue
            try:
                parts.append(renderer(raw))
            except Rejected as rejected:
                parts.append("!" + rejected.reason)
        return ROW_SEPARATOR.join(parts)

    return render


def _real_value(raw: Any) -> float | None:
    """The double `_real` spells (-0.0 as 0.0); None for NULL or a value it refuses (its mark says so)."""
    if raw is None:
        return None
    try:
        return (raw if type(raw) is float else to_postgres(Kind.REAL, raw)) + 0.0
    except Rejected:
        return None


_NEGATIVE_ZERO = _PACK(-0.0)


def real_block(values: Sequence[Any]) -> str:
    """The stored values of a REAL column in a bucket, in key order, as one text: the 8 bytes of each
    double `_real` spells, in hex, one after the other (PostgreSQL's: `postgres_real_block`). NULL and
    refused values have none: the row text's mark (`_real_mark`) spells them. One pack for the lot."""
    if not set(map(type, values)) <= _DOUBLE_OR_NULL:
        values = list(map(_real_value, values))
    if None in values:
        values = [value for value in values if value is not None]
    packed = struct.pack(f">{len(values)}d", *values)
    if _NEGATIVE_ZERO in packed:  # (or bytes across two values that look like one: the same, slower)
        packed = struct.pack(f">{len(values)}d", *(value + 0.0 for value in values))
    return packed.hex()


_DOUBLE_OR_NULL = {float, type(None)}


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8", "surrogatepass")).hexdigest()


# -- the fast renderer ---------------------------------------------------------
#
# The verifier renders every SQLite row, so rendering is its hot loop. The fast
# renderer gives exactly the text of `sqlite_row_renderer` (a property test holds
# it to that), but for the common shapes of value it spells a whole row in one
# f-string, with no call per column; any value off those shapes sends the row to
# the general renderer.

_order_memo: dict[tuple[str, ...], Callable[[list[str]], Sequence[str]]] = {}
_ORDER_MEMO_LIMIT = 1000


def jsonb_order(keys: tuple[str, ...]) -> Callable[[list[str]], Sequence[str]]:
    """A function putting the members of an object with `keys` (in that order) in jsonb's order (by
    byte length, then bytes), remembered per key tuple."""
    order = _order_memo.get(keys)
    if order is None:
        if len(_order_memo) >= _ORDER_MEMO_LIMIT:
            _order_memo.clear()
        positions = jsonb_member_order(keys)
        order = _order_memo[keys] = operator.itemgetter(*positions) if len(positions) > 1 else list
    return order


def jsonb_member_order(keys: Sequence[str]) -> list[int]:
    """The positions of `keys` in jsonb's order of an object's members: by byte length, then bytes."""
    return sorted(range(len(keys)), key=lambda i: _jsonb_key((keys[i], None)))


def fast_json_text(raw: Any) -> str:
    """`json_text(raw)` for a flat object in a canonical spelling, without json's Python parser.

    As in adapters.convert._canonical_document, the text is canonical when
    it is orjson's compact spelling of what orjson reads, or that spelling
    with a blank after every comma and colon (json.dumps's): then every number
    is the shortest spelling of its double (so exact) and no key repeats. In
    json.dumps's spelling no string holds a comma or a colon (the blank added
    after it would spoil the match); in the compact one, counting them shows
    that none does. So the members are the text split at its commas, and
    jsonb's text is those members in jsonb key order, spaced as jsonb prints
    them. The compact spelling in a flat object leaves out
    what orjson and json.dumps (repr) spell apart: a nested array, a number
    with a negative exponent or with 1e-05 <= |x| < 1e-04 (orjson writes it
    positionally; both write a positive exponent alike), a NUL, a negative
    zero (jsonb prints 0.0); a string holding one of these (or `-0.0` in
    `-0.05`) only sends its row the slow way. Anything else takes `json_text`."""
    if type(raw) is not str or raw[:1] != "{":
        return json_text(raw)
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json_text(raw)
    compact = orjson.dumps(value)
    spelled = raw.encode("utf-8")
    if compact == spelled:
        if raw.count(",") != len(value) - 1 or raw.count(":") != len(value):
            return json_text(raw)  # a string holds a comma or a colon: they do not split the members
        members = raw[1:-1].replace(":", ": ").split(",")
    elif compact.replace(b",", b", ").replace(b":", b": ") == spelled:
        members = raw[1:-1].split(", ")
    else:
        return json_text(raw)
    if ("[" in raw or raw.find("{", 1) != -1 or "0.0000" in raw or not value
            or ("-" in raw and ("e-" in raw or "-0.0" in raw)) or ("\\" in raw and "\\u0000" in raw)):
        return json_text(raw)  # canonical: these are in the text iff in the compact spelling
    return f"{{{', '.join(jsonb_order(tuple(value))(members))}}}"


def _fast_json(raw: Any) -> str:
    return md5_hex(fast_json_text(raw))


_FAST_GUARD = {
    Kind.INTEGER: "type({v}) is int",
    Kind.REAL: "type({v}) is float",
    Kind.TEXT: "(type({v}) is str and '\\x00' not in {v})",
    Kind.BOOLEAN: "({v} == 0 or {v} == 1) and type({v}) is int",
    Kind.TIMESTAMP: "(type({v}) is str and len({v}) == 19 and {v}[4] == '-' and {v}[10] == ' ' and {v}[13] == ':')",
    Kind.DATE: "type({v}) is str",
    Kind.JSON: "True",
    Kind.BLOB: "type({v}) is bytes",
    Kind.NUMERIC: "type({v}) is int",
}
_MARK = "mark"
"""A REAL column spelled by its mark only (`_real_mark`), in `_FAST_GUARD` and `_FAST_SPELLING`."""
_FAST_GUARD[_MARK] = _FAST_GUARD[Kind.REAL]
_FAST_SPELLING = {  # expressions inside the row's f-string, which is in triple single quotes
    Kind.INTEGER: "_null if {v} is None else {v}",
    Kind.REAL: "_null if {v} is None else _pack({v} + 0.0).hex()",
    Kind.TEXT: '_null if {v} is None else f"{{len({v})}}:{{{v}}}"',
    Kind.BOOLEAN: "_boolean[{v}]",
    Kind.TIMESTAMP: "_null if {v} is None else {v}",
    Kind.DATE: "_null if {v} is None else _dates[{v}]",
    Kind.JSON: "_fast_json({v})",
    Kind.BLOB: "_null if {v} is None else {v}.hex()",
    Kind.NUMERIC: "_null if {v} is None else {v}",
    _MARK: '_null if {v} is None else ""',
}


def or_rejected(renderer: Callable[[Any], str]) -> Callable[[Any], str]:
    """`renderer` with NULL spelled NULL and a value conversion refuses spelled '!<reason>', as
    every renderer of a stored value spells them."""

    def render(raw: Any) -> str:
        if raw is None:
            return NULL
        try:
            return renderer(raw)
        except Rejected as rejected:
            return "!" + rejected.reason

    return render


def _render_one(kind: Kind) -> Callable[[Any], str]:
    """One value as `sqlite_row_renderer` spells it (NULL and rejected values included)."""
    return or_rejected(_PYTHON[kind])


class _DateTexts(dict):
    """Date texts by stored string, each spelled by `_render_one(Kind.DATE)` on first sight: a
    column holds few distinct dates, so most are a dict lookup."""

    LIMIT = 100_000
    _spell = staticmethod(_render_one(Kind.DATE))

    def __missing__(self, raw: str) -> str:
        if len(self) >= self.LIMIT:
            self.clear()
        text = self[raw] = self._spell(raw)
        return text


def fast_row_renderer(kinds: Sequence[Kind], apart: Collection[int] = (),
                      marked: Collection[int] = ()) -> Callable[[Sequence[Any]], str]:
    """`sqlite_row_renderer(kinds, apart, marked)`, compiled into one function for the common shapes of value.

    Generated source, one f-string per row: a NULL is spelled as NULL, a value
    of its column's usual Python type is spelled inline, and a row holding
    anything else is rendered by the general renderer."""
    names = [f"v{i}" for i in range(len(kinds))]
    spelled_columns = [(name, _MARK if i in marked else kind)
                       for i, (name, kind) in enumerate(zip(names, kinds)) if i not in apart]
    guards = [f"({name} is None or {_FAST_GUARD[kind].format(v=name)})" for name, kind in spelled_columns]
    spelled = ["{" + _FAST_SPELLING[kind].format(v=name) + "}" for name, kind in spelled_columns]
    source = (
        "def render(row):\n"
        f"    {', '.join(names)}, = row\n"
        f"    if {' and '.join(guards) or 'True'}:\n"
        f"        return f'''{ROW_SEPARATOR.join(spelled)}'''\n"
        "    return general(row)\n"
    )
    scope = {
        "_pack": _PACK,
        "_null": NULL,
        "_boolean": {None: NULL, 0: "f", 1: "t"},
        "_dates": _DateTexts(),
        "_fast_json": _fast_json_or_rejected,
        "general": sqlite_row_renderer(kinds, apart, marked),
    }
    exec(compile(source, f"<fast_row_renderer {len(kinds)} columns>", "exec"), scope)
    return scope["render"]


_fast_json_or_rejected = or_rejected(_fast_json)
