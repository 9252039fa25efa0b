"""JSON lines: jsonb's text of the stored JSON values of a run of rows, one line per row.

A bucket's hash (hrp_data.verify.ranges) spells its JSON columns apart from the
rest of the row: the row texts, then the JSON lines, each line jsonb's text of
the row's JSON values (NULL as NULL, a value jsonb cannot hold as
'!<reason>'), joined by ROW_SEPARATOR. PostgreSQL prints its jsonb
(range_hash.postgres_json_line); Python spells each stored value as
range_hash.json_text does.

Most legacy columns hold flat objects written by one program: the same keys in
the same order, in one canonical spelling. Such a run is spelled in a few
calls over the whole run (`_canonical_run`) instead of a dozen per value: orjson
reads the values and spells them all at once, checked against the stored text;
every member of every object is split out at once and put in jsonb key order by
one itemgetter (keys already in that order need none). NULLs among them are
spelled around such a run. Any run off that shape is spelled value by value
(range_hash.fast_json_text), which gives the same text.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from hrp_data.verify.range_hash import NULL, ROW_SEPARATOR, fast_json_text, jsonb_member_order, or_rejected

_SENTINEL = "\x00"
"""Put between two objects' members while they are reordered: no canonical JSON text holds a NUL."""

_gather_memo: dict[tuple[tuple[str, ...], int], Callable | None] = {}
_GATHER_MEMO_LIMIT = 64


def json_lines(columns: Sequence[Sequence[Any]]) -> str:
    """The JSON lines of a run of rows, newline-joined: `columns` holds each JSON column's stored
    values (all of the same length, one per row)."""
    spelled = [json_texts(values) for values in columns]
    if len(spelled) == 1:
        return spelled[0]
    return "\n".join(map(ROW_SEPARATOR.join, zip(*(texts.split("\n") for texts in spelled))))


def json_texts(values: Sequence[Any]) -> str:
    """jsonb's text of each stored value (NULL as NULL, a refused one as '!<reason>'), newline-joined."""
    if not values:
        return ""
    texts = _canonical_run(values)
    if texts is None and None in values:
        texts = _around_nulls(values)
    return texts if texts is not None else "\n".join(map(_json_line, values))


def _around_nulls(values: Sequence[Any]) -> str | None:
    """The texts of a run whose only values off a canonical run's shape are NULL (a nullable column):
    the other values spelled as one run (`_canonical_run`), NULL between them; else None."""
    present = [value for value in values if value is not None]
    texts = _canonical_run(present) if present else None
    if texts is None:
        return None
    lines = iter(texts.split("\n"))  # one per value: no canonical text holds a newline
    return "\n".join([NULL if value is None else next(lines) for value in values])


_json_line = or_rejected(fast_json_text)


def _canonical_run(values: Sequence[Any]) -> str | None:
    """The newline-joined jsonb texts of `values` when every one is a flat, non-empty object with the
    same keys in the same order, all spelled canonically (as range_hash.fast_json_text requires: orjson's
    compact spelling, or it with a blank after each comma and colon, json.dumps's); else None.

    orjson reads each value alone, so each is one complete JSON value; the spelling check then holds
    each value to orjson's spelling of its object (adapters.convert.canonical_texts says why the
    values joined as a list's items compare one by one), so each begins with its `{` and ends with
    its `}`, and the count of `{` says no other is inside (no nested object, no string holding one).
    In json.dumps's spelling no string holds a comma or a colon (the blank after it would spoil the
    check); in the compact one the counts of colons and of members show that none does. So the commas
    split the members. Keys already in jsonb's order need no split: the text is the values' own."""
    count = len(values)
    try:
        joined = "\n".join(values)
    except TypeError:  # NULL, a number, a blob
        return None
    if ("[" in joined or _SENTINEL in joined
            or ("-" in joined and ("e-" in joined or "-0.0" in joined))  # a cheap look for the rare sign first
            or ("\\" in joined and "\\u0000" in joined) or "0.0000" in joined or joined.count("{") != count):
        return None
    try:
        objects = list(map(orjson.loads, values))
    except orjson.JSONDecodeError:
        return None
    if set(map(type, objects)) != _OBJECT:
        return None
    keys = tuple(objects[0])
    if not keys or len(set(map(tuple, objects))) != 1:  # an empty object, another key order
        return None
    compact = orjson.dumps(objects)
    spaced = '": ' in values[0]  # the spelling to hold the values to: json.dumps's has a blank after a key
    if spaced:
        if compact.replace(b",", b", ").replace(b":", b": ") != f"[{', '.join(values)}]".encode("utf-8"):
            return None
    elif compact != f"[{','.join(values)}]".encode("utf-8"):
        return None
    elif joined.count(":") != count * len(keys):  # a string holds a colon (a comma: the counts below)
        return None
    gather = _gather(keys, count)
    if gather is None:  # the keys are in jsonb's order already
        if spaced:
            return joined
        if joined.count(",") != count * (len(keys) - 1):
            return None
        return joined.replace(",", ", ").replace(":", ": ")
    if spaced:
        members = ", ".join(map(_INSIDE, values)).split(", ")
    else:
        members = ",".join(map(_INSIDE, values)).replace(":", ": ").split(",")
    if len(members) != count * len(keys):  # a repeated key: orjson kept one of them
        return None
    members.append(_SENTINEL)
    return "{" + ", ".join(gather(members)).replace(f", {_SENTINEL}, ", "}\n{") + "}"


_OBJECT = {dict}
_INSIDE = operator.itemgetter(slice(1, -1))
"""An object's text without its braces."""


def _gather(keys: tuple[str, ...], count: int) -> Callable[[list[str]], tuple[str, ...]] | None:
    """An itemgetter taking, from the members of `count` objects with `keys` (then the sentinel), each
    object's members in jsonb key order with the sentinel between two objects; None when `keys` are
    in jsonb's order already; remembered."""
    memo = (keys, count)
    if memo not in _gather_memo:
        order = jsonb_member_order(keys)
        gather = None
        if order != list(range(len(keys))):
            width, sentinel = len(keys), count * len(keys)
            positions: list[int] = []
            for start in range(0, sentinel, width):
                if start:
                    positions.append(sentinel)
                positions.extend(start + i for i in order)
            gather = operator.itemgetter(*positions)  # more than one: keys out of order are two at least
        if len(_gather_memo) >= _GATHER_MEMO_LIMIT:
            _gather_memo.clear()
        _gather_memo[memo] = gather
    return _gather_memo[memo]
