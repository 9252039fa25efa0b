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
each object's members are split out and put in jsonb key order by one itemgetter,
mapped over the run (keys already in that order need none). NULLs among them are
spelled around such a run. Any run off that shape is spelled value by value
(range_hash.fast_json_text), which gives the same text.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from itertools import repeat
from typing import Any

import orjson

from hrp_data.verify.range_hash import NULL, ROW_SEPARATOR, fast_json_text, jsonb_member_order, jsonb_order, or_rejected


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
    if ("[" in joined
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
    if jsonb_member_order(keys) == list(range(len(keys))):  # the keys are in jsonb's order already
        if spaced:
            return joined
        if joined.count(",") != count * (len(keys) - 1):
            return None
        return joined.replace(",", ", ").replace(":", ": ")
    if spaced:
        members = list(map(str.split, map(_INSIDE, values), repeat(", ")))
    else:
        members = list(map(str.split, map(_INSIDE, joined.replace(":", ": ").split("\n")), repeat(",")))
    if set(map(len, members)) != {len(keys)}:  # a string holds a comma
        return None
    return "{" + "}\n{".join(map(", ".join, map(jsonb_order(keys), members))) + "}"


_OBJECT = {dict}
_INSIDE = operator.itemgetter(slice(1, -1))
"""An object's text without its braces."""
