"""Value conversion between SQLite storage values and PostgreSQL values.

SQLite keeps whatever it is given, whatever the declared type; PostgreSQL does
not. Every column kind has exactly one conversion each way, and a conversion
has exactly two outcomes: the converted value, or a `Rejected` exception whose
`reason` (a key of `REASONS`) is machine-readable. Nothing is altered quietly:
a value PostgreSQL cannot hold exactly is rejected, never rounded, truncated,
trimmed or guessed. No other exception escapes `to_postgres`, whatever it is
given.

`to_postgres(kind, raw)` takes a value as SQLite's driver returns it (int,
float, str, bytes or None; the column's PostgreSQL value is accepted too) and
gives the Python value PostgreSQL will store.
`to_sqlite(kind, value)` takes a PostgreSQL value and gives the storage value
the legacy app writes (timestamps as UTC 'YYYY-MM-DD HH:MM:SS[.ffffff]',
booleans as 0/1, JSON as text).

docs/conversion.md documents every rule in this module.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import math
import re
from decimal import Decimal
from fractions import Fraction
from collections.abc import Sequence
from typing import Any

import orjson

__all__ = [
    "Kind",
    "Rejected",
    "REASONS",
    "to_postgres",
    "to_sqlite",
    "parse_json",
    "format_timestamp",
    "dump_json",
    "dump_jsonb",
    "json_text",
    "canonical_texts",
    "spaced_json",
    "timestamp_text",
    "converter",
    "fits_numeric",
]


class Kind(str, enum.Enum):
    """The column kinds, named for what they hold (the HRP schema's, and BLOB and NUMERIC for other files)."""

    INTEGER = "integer"
    REAL = "real"
    TEXT = "text"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"
    DATE = "date"
    JSON = "json"
    BLOB = "blob"
    NUMERIC = "numeric"


class Rejected(ValueError):
    """A value that PostgreSQL cannot hold exactly; `reason` says why."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


REASONS = {
    "text_in_integer_column": "text in an INTEGER column (SQLite converts whole-number text itself, so what stays text is not a number)",
    "real_in_integer_column": "a REAL in an INTEGER column (SQLite stores whole reals as integers, so it is fractional, infinite or beyond BIGINT)",
    "blob_in_integer_column": "a BLOB in an INTEGER column",
    "integer_out_of_range": "a whole number outside PostgreSQL BIGINT, or one a 64-bit double cannot hold exactly (REAL column)",
    "text_in_real_column": "text in a REAL column (SQLite converts numeric text itself, so what stays text is not a number)",
    "blob_in_real_column": "a BLOB in a REAL column",
    "nan_in_real_column": "NaN (SQLite turns it into NULL; refused both ways)",
    "number_in_text_column": "a number in a TEXT column (TEXT affinity stores numbers as text, so SQLite never returns one)",
    "nul_byte_in_text": "text containing a NUL byte (PostgreSQL text cannot)",
    "invalid_utf8_in_text": "text that is not valid UTF-8 (read as lone surrogates)",
    "blob_in_text_column": "a BLOB in a TEXT column",
    "non_boolean_integer": "an integer other than 0 or 1 in a BOOLEAN column",
    "non_boolean_real": "a REAL in a BOOLEAN column (SQLite stores 0.0/1.0 as integers, so it is not 0 or 1)",
    "unparseable_boolean": "text other than true/false (any case, no surrounding spaces) in a BOOLEAN column",
    "blob_in_boolean_column": "a BLOB in a BOOLEAN column",
    "empty_timestamp": "an empty or blank string in a TIMESTAMP column",
    "unparseable_timestamp": "text that is not an ISO-8601 timestamp of the accepted spellings",
    "impossible_date": "a date, time or offset that does not exist (2025-02-30, 25:00, 23:59:60, +24:00, year 0000 in a DATE)",
    "timestamp_precision_lost": "more than microsecond precision",
    "timestamp_out_of_range": "an instant outside years 1..9999 UTC (also infinite epochs)",
    "fractional_epoch": "an epoch number with more than microsecond precision",
    "blob_in_timestamp_column": "a BLOB in a TIMESTAMP column",
    "empty_date": "an empty or blank string in a DATE column",
    "unparseable_date": "text that is not exactly YYYY-MM-DD",
    "number_in_date_column": "a number in a DATE column",
    "blob_in_date_column": "a BLOB in a DATE column",
    "empty_json": "an empty or JSON-whitespace-only string in a JSON column",
    "invalid_json": "text that is not valid JSON (or nested deeper than the parser allows)",
    "non_standard_json": "NaN or Infinity inside JSON (not JSON; JSONB refuses it)",
    "duplicate_json_key": "an object with a repeated key (JSONB keeps only the last)",
    "nul_byte_in_json": "a \\u0000 inside JSON (JSONB refuses it)",
    "lone_surrogate_in_json": "an unpaired \\ud800-\\udfff escape inside JSON",
    "json_number_not_exact": "a JSON number that does not read back as the same number (64-bit float, or an integer of more digits than Python parses)",
    "json_null": "the JSON text 'null' (it would come back as SQL NULL)",
    "json_string_document": "a document that is a bare JSON string (often JSON encoded twice; as a value it would be read again as JSON text)",
    "blob_in_json_column": "a BLOB in a JSON column",
    "number_in_blob_column": "a number in a BLOB column (bytea holds bytes only)",
    "text_in_blob_column": "text in a BLOB column (bytea holds bytes only)",
    "text_in_numeric_column": "text in a NUMERIC column (NUMERIC affinity converts numeric text itself, so what stays text is not a number)",
    "blob_in_numeric_column": "a BLOB in a NUMERIC column",
    "nan_in_numeric_column": "NaN or an infinity in a NUMERIC column",
    "numeric_out_of_range": "a number with more digits before or after the point than the column's NUMERIC(p,s) holds (PostgreSQL would round it), or, on the way back, than SQLite's NUMERIC holds (an integer or a 64-bit double would round it)",
    "unsupported_type": "a Python value that is neither a SQLite storage value nor the column's PostgreSQL value",
}

BIGINT_RANGE = (-(2**63), 2**63 - 1)
_BIGINT = BIGINT_RANGE
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
    r" ?(Z|[+-]\d{2}(?::?\d{2})?)?)?",
    re.IGNORECASE | re.ASCII,
)
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})", re.ASCII)
_LEGACY_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", re.ASCII)
"""The spelling the legacy app writes (UTC, no fraction): the common case, read without the general parser."""
_BOOL_TEXT = {"true": True, "false": False}
BIG_FLOAT_MARK = "e+"
"""How json.dumps and orjson spell every double of 1e16 or more: with a positive exponent (1e+16,
1.5e+300). Such a double is whole, and JSONB would print it without a point, so it would read
back as an int (dump_jsonb spells it otherwise). A string holding "e+" only costs the general path."""
_JSON_WHITESPACE = " \t\n\r"
_OPENERS = ("{", "[")


def _is_blob(raw: Any) -> bool:
    return isinstance(raw, (bytes, bytearray, memoryview))


def _is_number(raw: Any) -> bool:
    """int or float; bool counts (the sqlite3 driver stores True as 1)."""
    return isinstance(raw, (int, float))


def _unsupported(raw: Any) -> Rejected:
    return Rejected("unsupported_type", type(raw).__name__)


def _check_utf8(text: str) -> None:
    if text.isascii():  # known without a scan: the string's own storage says so
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Rejected("invalid_utf8_in_text") from None


def _text(raw: Any) -> str:
    if isinstance(raw, str):
        if "\x00" in raw:
            raise Rejected("nul_byte_in_text")
        _check_utf8(raw)
        return raw
    if _is_blob(raw):
        raise Rejected("blob_in_text_column")
    if _is_number(raw):
        raise Rejected("number_in_text_column", repr(raw))
    raise _unsupported(raw)


def _integer(raw: Any) -> int:
    if isinstance(raw, int):
        if not _BIGINT[0] <= raw <= _BIGINT[1]:
            raise Rejected("integer_out_of_range", str(raw))
        return int(raw)
    if isinstance(raw, float):
        raise Rejected("real_in_integer_column", repr(raw))
    if _is_blob(raw):
        raise Rejected("blob_in_integer_column")
    if isinstance(raw, str):
        raise Rejected("text_in_integer_column")
    raise _unsupported(raw)


def _real(raw: Any) -> float:
    if isinstance(raw, int):
        try:
            as_float = float(raw)
        except OverflowError:
            raise Rejected("integer_out_of_range", "beyond a double") from None
        if int(as_float) != raw:
            raise Rejected("integer_out_of_range", "not exact as a double")
        return as_float
    if isinstance(raw, float):
        if math.isnan(raw):
            raise Rejected("nan_in_real_column")
        return raw
    if _is_blob(raw):
        raise Rejected("blob_in_real_column")
    if isinstance(raw, str):
        raise Rejected("text_in_real_column")
    raise _unsupported(raw)


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int):
        if raw in (0, 1):
            return bool(raw)
        raise Rejected("non_boolean_integer", str(raw))
    if isinstance(raw, float):
        raise Rejected("non_boolean_real", repr(raw))
    if _is_blob(raw):
        raise Rejected("blob_in_boolean_column")
    if isinstance(raw, str):
        value = _BOOL_TEXT.get(raw.lower())
        if value is None:
            raise Rejected("unparseable_boolean")
        return value
    raise _unsupported(raw)


def _offset(spelling: str | None) -> dt.timezone:
    if spelling is None or spelling.upper() == "Z":
        return dt.timezone.utc
    sign = -1 if spelling[0] == "-" else 1
    digits = spelling[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
    if hours > 23 or minutes > 59:
        raise Rejected("impossible_date", f"offset {spelling}")
    return dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))


def _from_epoch(raw: int | float) -> dt.datetime:
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise Rejected("timestamp_out_of_range", repr(raw))
        micros = Fraction(raw) * 1_000_000
        if micros.denominator != 1:
            raise Rejected("fractional_epoch", repr(raw))
        micros_int = int(micros)
    else:
        micros_int = int(raw) * 1_000_000
    try:
        return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(
            microseconds=micros_int
        )
    except OverflowError:
        raise Rejected("timestamp_out_of_range", repr(raw)) from None


def _timestamp(raw: Any) -> dt.datetime:
    if isinstance(raw, dt.datetime):
        if raw.tzinfo is None:
            return raw.replace(tzinfo=dt.timezone.utc)
        if raw.utcoffset() == dt.timedelta(0):
            return raw
        try:  # the same instant in UTC: a column without a zone keeps its UTC wall clock
            return raw.astimezone(dt.timezone.utc)
        except OverflowError:
            raise Rejected("timestamp_out_of_range", repr(raw)) from None
    if _is_blob(raw):
        raise Rejected("blob_in_timestamp_column")
    if _is_number(raw):
        return _from_epoch(raw)
    if not isinstance(raw, str):
        raise _unsupported(raw)
    return _legacy_timestamp(raw) or _timestamp_text(raw)


def _legacy_timestamp(raw: str) -> dt.datetime | None:
    """The fast path for the legacy spelling; None where the general path must decide."""
    if _LEGACY_TIMESTAMP.fullmatch(raw):
        try:
            return dt.datetime.fromisoformat(raw + "+00:00")
        except ValueError:  # an impossible date or year 0000: the general path names the reason
            return None
    return None


def timestamp_text(raw: Any) -> str:
    """A text PostgreSQL reads as the instant to_postgres(TIMESTAMP, raw) gives (raises Rejected).

    The legacy spelling, once checked, goes on as it is with its zone named
    (`2025-01-14 09:30:00+00`); anything else is the ISO spelling of the
    converted instant.
    """
    if type(raw) is str:
        if _legacy_timestamp(raw) is not None:
            return raw + "+00"
        return _timestamp_text(raw).isoformat()
    return _timestamp(raw).isoformat()


def _timestamp_text(raw: str) -> dt.datetime:
    if raw.strip() == "":
        raise Rejected("empty_timestamp")
    match = _TIMESTAMP.fullmatch(raw)
    if not match:
        raise Rejected("unparseable_timestamp")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if fraction and len(fraction) > 6:
        if fraction[6:].strip("0"):
            raise Rejected("timestamp_precision_lost", f".{fraction}")
        fraction = fraction[:6]
    if int(year) == 0:
        raise Rejected("timestamp_out_of_range", "year 0000")
    tz = _offset(offset)
    try:
        value = dt.datetime(
            int(year), int(month), int(day),
            int(hour or 0), int(minute or 0), int(second or 0),
            int((fraction or "0").ljust(6, "0")),
            tzinfo=tz,
        )
    except ValueError:
        raise Rejected("impossible_date") from None
    try:
        return value.astimezone(dt.timezone.utc)
    except OverflowError:
        raise Rejected("timestamp_out_of_range") from None


def _date(raw: Any) -> dt.date:
    if isinstance(raw, dt.datetime):
        raise _unsupported(raw)
    if isinstance(raw, dt.date):
        return raw
    if _is_blob(raw):
        raise Rejected("blob_in_date_column")
    if _is_number(raw):
        raise Rejected("number_in_date_column", repr(raw))
    if not isinstance(raw, str):
        raise _unsupported(raw)
    if raw.strip() == "":
        raise Rejected("empty_date")
    if not _DATE.fullmatch(raw):
        raise Rejected("unparseable_date")
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise Rejected("impossible_date") from None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise Rejected("duplicate_json_key")
    return dict(pairs)


def _exact_float(token: str) -> float:
    value = float(token)
    try:
        exact = math.isfinite(value) and Decimal(repr(value)) == Decimal(token)
    except decimal.InvalidOperation:  # an exponent beyond what Decimal can hold
        exact = False
    if not exact:
        raise Rejected("json_number_not_exact", token[:40])
    return value


def _exact_int(token: str) -> int:
    try:
        return int(token)
    except ValueError:  # more digits than sys.get_int_max_str_digits()
        raise Rejected("json_number_not_exact", f"{len(token)} digits") from None


def _reject_constant(token: str) -> Any:
    raise Rejected("non_standard_json", token)


STRICT_NUMBERS = {"parse_float": _exact_float, "parse_int": _exact_int, "parse_constant": _reject_constant}
"""json.loads' number readers of the JSON rules: a number that does not read back as itself, NaN and
Infinity raise Rejected with their reason (for a reader with an object hook of its own)."""


def _check_strings(value: Any) -> None:
    """Every string (key or value) of a parsed document is storable in JSONB."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise Rejected("nul_byte_in_json")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise Rejected("lone_surrogate_in_json") from None
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def parse_json(text: str) -> Any:
    """Parse JSON text strictly; the one JSON reader of the project."""
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicate_keys, **STRICT_NUMBERS)
    except json.JSONDecodeError:
        raise Rejected("invalid_json") from None
    except RecursionError:
        raise Rejected("invalid_json", "nested too deeply") from None
    _check_strings(value)
    return value


def _canonical_document(text: str) -> Any:
    """The object or array `text` holds if `text` is spelled as a serializer spells it, else None.

    The fast path of the JSON rules. orjson reads the text strictly (no NaN,
    no Infinity, no lone surrogate; an integer beyond 64 bits becomes a
    float) and writes the document back compactly, every number as the
    shortest spelling of its double. The text is canonical when it is that
    compact spelling, or that spelling with a blank after every comma and
    colon (what json.dumps writes, so what legacy files hold). Then every
    number in the text is the shortest spelling of its double (so exact) and
    no key repeats; and as the blanks put into the spelling would also be
    inside any string holding a comma or a colon, changing what the text
    reads as, equality also proves that no string holds one, so the blanks
    are all between tokens. With no NUL escape and valid UTF-8 (checked by
    the caller) parse_json would accept the text and give the same document.
    Anything else (None) takes the general path, which names the reason; so
    does a document holding a double of 1e16 or more, which JSONB must be
    given with a point (dump_jsonb).
    """
    if "\\" in text and "\\u0000" in text:
        return None
    try:
        value = orjson.loads(text)
        if type(value) is not dict and type(value) is not list:
            return None
        compact = orjson.dumps(value)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, RecursionError):
        return None
    if b"e+" in compact:  # BIG_FLOAT_MARK: JSONB needs another spelling of it (dump_jsonb)
        return None
    spelled = text.encode("utf-8")
    if spaced_json(compact) == spelled or compact == spelled:
        return value
    return None


def spaced_json(compact: bytes) -> bytes:
    """orjson's compact spelling with a blank after every comma and colon: json.dumps' spelling when no
    string holds a comma or a colon (and a spelling no text equals when one does: see _canonical_document)."""
    return compact.replace(b",", b", ").replace(b":", b": ")


def canonical_texts(texts: Sequence[str]) -> bool:
    """Whether each of `texts` is an object or array spelled as json.dumps spells it (the first
    spelling _canonical_document takes), told for all of them at once; then json_text gives each
    text back as it is. False says nothing about any one text (each then takes json_text).

    The batch's fast path: each text is read by orjson as _canonical_document reads it (the same
    refusals), but written back once, as the list of the documents, and compared with the texts
    joined the way json.dumps joins a list's items (`[t1, t2, ...]`). Equal means each text is
    the spaced spelling of its own document: both sides begin with `[` and the first item; the
    spaced spelling of a document is one complete JSON value, and so is each text (orjson read
    it alone), with nothing after it but blanks. Two complete values starting at the same place
    of the same string end at the same place (where the bracket opened first closes), and a
    text with blanks after its value would meet `, ` or `]` there on the other side; so the
    first items are equal, and the same holds item after item. The joined text holds
    "\\u0000" only if a text does (the separator holds no backslash); "e+" in the written list
    only if some document's compact spelling holds it. A text holding a NUL, a lone surrogate
    or anything but a str (a NULL) is not canonical here.
    """
    try:
        joined = ", ".join(texts)
        if "\\" in joined and "\\u0000" in joined:
            return False
        documents = list(map(orjson.loads, texts))
        if not set(map(type, documents)) <= {dict, list}:
            return False
        compact = orjson.dumps(documents)
        spelled = ("[" + joined + "]").encode("utf-8")
    except (TypeError, orjson.JSONDecodeError, orjson.JSONEncodeError, RecursionError, UnicodeEncodeError):
        return False
    return b"e+" not in compact and spaced_json(compact) == spelled


def json_text(raw: Any) -> str:
    """A JSON text that PostgreSQL reads as the document to_postgres(JSON, raw) gives.

    Raises `Rejected` as to_postgres does. Legacy text in a canonical
    spelling (see _canonical_document) comes back as it is, without being
    written again; anything else is dump_jsonb of the converted document.
    The first test is _json_read's path for an ASCII object or array
    without NUL, taken without its calls (the backfill's hot loop).
    """
    if type(raw) is str and raw[:1] in _OPENERS and "\x00" not in raw and raw.isascii():
        if _canonical_document(raw) is not None:
            return raw
    value, canonical = _json_read(raw)
    return raw if canonical else dump_jsonb(value)


def _json_document(raw: Any) -> Any:
    """A Python document (the PostgreSQL value) is accepted if it is exactly JSON."""
    try:
        text = dump_json(raw)
    except (TypeError, RecursionError):
        raise _unsupported(raw) from None
    except ValueError:  # NaN/Infinity are spelled, so this is an int too long to spell
        raise Rejected("json_number_not_exact", "integer too long") from None
    value = parse_json(text)
    if value != raw:  # tuples, non-string keys: not what JSONB would give back
        raise _unsupported(raw)
    return value


def _json(raw: Any) -> Any:
    return _json_read(raw)[0]


def _json_read(raw: Any) -> tuple[Any, bool]:
    """The document, and whether `raw` is text in a canonical spelling (see _canonical_document)."""
    if not isinstance(raw, str):
        if _is_blob(raw):
            raise Rejected("blob_in_json_column")
        if isinstance(raw, (dict, list, bool, int, float)):
            # a document (the PostgreSQL value); a number is also what TEXT affinity makes '14' of
            return _json_document(raw), False
        raise _unsupported(raw)
    if (not raw or raw[0] in _JSON_WHITESPACE) and raw.strip(_JSON_WHITESPACE) == "":
        raise Rejected("empty_json")
    if "\x00" in raw:
        raise Rejected("nul_byte_in_text")
    _check_utf8(raw)
    value = _canonical_document(raw)
    if value is not None:
        return value, True
    return json_document(parse_json(raw)), False


def json_document(value: Any) -> Any:
    """The value of a JSON text, as the rules take it for a document: `null` and a bare string refused."""
    if value is None:
        raise Rejected("json_null")
    if isinstance(value, str):
        raise Rejected("json_string_document")
    return value


def _blob(raw: Any) -> bytes:
    if _is_blob(raw):
        return bytes(raw)
    if _is_number(raw):
        raise Rejected("number_in_blob_column", repr(raw))
    if isinstance(raw, str):
        raise Rejected("text_in_blob_column")
    raise _unsupported(raw)


def _numeric(raw: Any) -> Decimal:
    """An exact decimal: a SQLite real as the shortest decimal that reads back as the same double."""
    if isinstance(raw, Decimal):
        if not raw.is_finite():
            raise Rejected("nan_in_numeric_column", str(raw))
        return raw
    if isinstance(raw, bool):
        return Decimal(int(raw))
    if isinstance(raw, int):
        if not _BIGINT[0] <= raw <= _BIGINT[1]:  # no SQLite value: SQLite would keep a double of it
            raise Rejected("integer_out_of_range", str(raw))
        return Decimal(raw)
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise Rejected("nan_in_numeric_column", repr(raw))
        return Decimal(repr(raw))
    if _is_blob(raw):
        raise Rejected("blob_in_numeric_column")
    if isinstance(raw, str):
        raise Rejected("text_in_numeric_column")
    raise _unsupported(raw)


def fits_numeric(value: Decimal, precision: int | None, scale: int | None) -> None:
    """Raise Rejected unless NUMERIC(precision, scale) holds `value` without rounding."""
    if precision is None:
        return
    scale = scale or 0
    sign, digits, exponent = value.normalize().as_tuple() if value else (0, (0,), 0)
    decimals = max(0, -exponent)
    whole = max(0, len(digits) + exponent)
    if decimals > scale or whole > precision - scale:
        raise Rejected("numeric_out_of_range", f"{value} in NUMERIC({precision},{scale})")


_TO_POSTGRES = {
    Kind.INTEGER: _integer,
    Kind.REAL: _real,
    Kind.TEXT: _text,
    Kind.BOOLEAN: _boolean,
    Kind.TIMESTAMP: _timestamp,
    Kind.DATE: _date,
    Kind.JSON: _json,
    Kind.BLOB: _blob,
    Kind.NUMERIC: _numeric,
}


def converter(kind: Kind) -> Any:
    """The conversion of one kind for non-NULL values: converter(kind)(raw) == to_postgres(kind, raw)."""
    return _TO_POSTGRES[Kind(kind)]


def to_postgres(kind: Kind, raw: Any) -> Any:
    """Convert a SQLite storage value to the value PostgreSQL stores, or raise `Rejected`."""
    if raw is None:
        return None
    return _TO_POSTGRES[Kind(kind)](raw)


def format_timestamp(value: dt.datetime) -> str:
    """The legacy spelling of a timestamp: UTC, 'YYYY-MM-DD HH:MM:SS[.ffffff]'."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    spelled = (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    )
    return f"{spelled}.{value.microsecond:06d}" if value.microsecond else spelled


def dump_json(value: Any) -> str:
    """The legacy spelling of a JSON document (what json.dumps writes)."""
    return json.dumps(value, ensure_ascii=False)


def dump_jsonb(value: Any) -> str:
    """A JSON document as PostgreSQL's JSONB should be given it: read back, it is the same value.

    JSONB keeps a number as a decimal and prints it without an exponent; a
    float as large as 1e16 is whole, so json.dumps' `1e+16` would come back as
    the integer 10000000000000000, and `1e+23` as an integer that is not even
    the float's value. Such a float is spelled here as its shortest decimal
    with `.0` (`10000000000000000.0`), which JSONB keeps and prints as it is
    and which reads back as the same float. Anything else is dump_json.
    """
    text = dump_json(value)
    if BIG_FLOAT_MARK not in text:
        return text
    big: list[str] = []

    def mark(item: Any) -> Any:
        if type(item) is float and math.isfinite(item) and BIG_FLOAT_MARK in repr(item):
            big.append(format(Decimal(repr(item)), "f") + ".0")
            return f"\x00{len(big) - 1}\x00"  # a NUL never survives the rules: no document holds one
        if isinstance(item, dict):
            return {key: mark(child) for key, child in item.items()}
        if isinstance(item, list):
            return [mark(child) for child in item]
        return item

    text = dump_json(mark(value))
    for index, digits in enumerate(big):
        text = text.replace(f'"\\u0000{index}\\u0000"', digits, 1)
    return text


def to_sqlite(kind: Kind, value: Any) -> Any:
    """Convert a PostgreSQL value to the storage value the legacy app writes."""
    if value is None:
        return None
    kind = Kind(kind)
    if kind is Kind.BOOLEAN:
        return 1 if value else 0
    if kind is Kind.TIMESTAMP:
        return format_timestamp(value)
    if kind is Kind.DATE:
        return value.isoformat()
    if kind is Kind.JSON:
        return dump_json(value)
    if kind is Kind.REAL:
        value = float(value)
        if math.isnan(value):  # PostgreSQL float8 holds NaN; SQLite would store NULL
            raise Rejected("nan_in_real_column")
        return value
    if kind is Kind.NUMERIC:
        return _numeric_storage(Decimal(value))
    if kind is Kind.BLOB:
        return bytes(value)
    return value


def _numeric_storage(value: Decimal) -> int | float:
    """What SQLite's NUMERIC affinity stores for this decimal: an integer if whole and in range, else
    the double (which is what the file held: _numeric reads a double back as its shortest decimal).
    A decimal no double holds exactly (more digits than a double keeps, 0.1 + 1e-20) is refused, as
    is NaN or an infinity (PostgreSQL's numeric holds them): SQLite would store another number, or NULL."""
    if not value.is_finite():
        raise Rejected("nan_in_numeric_column", str(value))
    if value == value.to_integral_value() and BIGINT_RANGE[0] <= value <= BIGINT_RANGE[1]:
        return int(value)
    stored = float(value)
    if not math.isfinite(stored) or Decimal(repr(stored)) != value:
        raise Rejected("numeric_out_of_range", f"{value} in SQLite's NUMERIC (an integer or a 64-bit double)")
    return stored
