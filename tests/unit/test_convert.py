"""The conversion rules of adapters.convert, one case per rule of the conversion table in docs/conversion.md.

`ACCEPTED` holds every accepted spelling with the exact PostgreSQL value and the
exact value written back to SQLite; `REJECTED` holds every rejection with its
exact reason, and every key of `REASONS` has at least one case. The property
tests below check the two promises of the module over generated values: an
accepted value converts back to a value equal to it (floats bit for bit,
timestamps as the same instant, JSON as the same document), and whatever is
given, the outcome is a value or `Rejected` with a known reason, never another
exception.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import struct
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from adapters.convert import (
    fits_numeric,
    REASONS,
    Kind,
    Rejected,
    dump_json,
    dump_jsonb,
    format_timestamp,
    parse_json,
    to_postgres,
    to_sqlite,
)
from tests.examples import examples

UTC = dt.timezone.utc


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=UTC)


def bits(value: float) -> bytes:
    return struct.pack(">d", value)


def same(a, b) -> bool:
    """Equal, of the same type, floats bit for bit, datetimes as the same instant with a zone."""
    if isinstance(a, float) and isinstance(b, float):
        return bits(a) == bits(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, dt.datetime):
        return a.tzinfo is not None and b.tzinfo is not None and a == b
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


# --------------------------------------------------------------------------------------
# The rules, case by case: (kind, SQLite storage value, PostgreSQL value, back to SQLite)
# --------------------------------------------------------------------------------------

ACCEPTED = [
    # every kind: NULL stays NULL
    *[pytest.param(kind, None, None, None, id=f"{kind.value}-null") for kind in Kind],
    # INTEGER
    pytest.param(Kind.INTEGER, 42, 42, 42, id="integer-int"),
    pytest.param(Kind.INTEGER, -(2**63), -(2**63), -(2**63), id="integer-bigint-min"),
    pytest.param(Kind.INTEGER, 2**63 - 1, 2**63 - 1, 2**63 - 1, id="integer-bigint-max"),
    pytest.param(Kind.INTEGER, True, 1, 1, id="integer-python-bool-is-1"),
    # REAL
    pytest.param(Kind.REAL, 14.5, 14.5, 14.5, id="real-float"),
    pytest.param(Kind.REAL, 0.1 + 0.2, 0.30000000000000004, 0.30000000000000004, id="real-inexact-decimal"),
    pytest.param(Kind.REAL, -0.0, -0.0, -0.0, id="real-negative-zero"),
    pytest.param(Kind.REAL, 1e308, 1e308, 1e308, id="real-1e308"),
    pytest.param(Kind.REAL, 1.7976931348623157e308, 1.7976931348623157e308, 1.7976931348623157e308, id="real-max"),
    pytest.param(Kind.REAL, 5e-324, 5e-324, 5e-324, id="real-smallest-denormal"),
    pytest.param(Kind.REAL, 2.225073858507201e-308, 2.225073858507201e-308, 2.225073858507201e-308, id="real-largest-denormal"),
    pytest.param(Kind.REAL, math.inf, math.inf, math.inf, id="real-infinity"),
    pytest.param(Kind.REAL, -math.inf, -math.inf, -math.inf, id="real-minus-infinity"),
    pytest.param(Kind.REAL, 7, 7.0, 7.0, id="real-exact-integer"),
    pytest.param(Kind.REAL, 2**53, 9007199254740992.0, 9007199254740992.0, id="real-integer-2**53"),
    # TEXT
    pytest.param(Kind.TEXT, "Red Rum", "Red Rum", "Red Rum", id="text-ascii"),
    pytest.param(Kind.TEXT, "", "", "", id="text-empty-is-not-null"),
    pytest.param(Kind.TEXT, "  padded\t\n", "  padded\t\n", "  padded\t\n", id="text-whitespace-kept"),
    pytest.param(Kind.TEXT, "Café 🐎 \u2028", "Café 🐎 \u2028", "Café 🐎 \u2028", id="text-unicode"),
    # BOOLEAN
    pytest.param(Kind.BOOLEAN, 0, False, 0, id="boolean-0"),
    pytest.param(Kind.BOOLEAN, 1, True, 1, id="boolean-1"),
    pytest.param(Kind.BOOLEAN, "true", True, 1, id="boolean-text-true"),
    pytest.param(Kind.BOOLEAN, "false", False, 0, id="boolean-text-false"),
    pytest.param(Kind.BOOLEAN, "True", True, 1, id="boolean-text-True"),
    pytest.param(Kind.BOOLEAN, "FALSE", False, 0, id="boolean-text-FALSE"),
    pytest.param(Kind.BOOLEAN, True, True, 1, id="boolean-python-bool"),
    # TIMESTAMP: text, naive = UTC
    pytest.param(Kind.TIMESTAMP, "2025-01-14 09:30:00", utc(2025, 1, 14, 9, 30), "2025-01-14 09:30:00", id="timestamp-legacy"),
    pytest.param(Kind.TIMESTAMP, "2025-01-14T09:30:00", utc(2025, 1, 14, 9, 30), "2025-01-14 09:30:00", id="timestamp-T"),
    pytest.param(Kind.TIMESTAMP, "2025-01-14t09:30:00", utc(2025, 1, 14, 9, 30), "2025-01-14 09:30:00", id="timestamp-lowercase-t"),
    pytest.param(Kind.TIMESTAMP, "2025-01-14T09:30:00Z", utc(2025, 1, 14, 9, 30), "2025-01-14 09:30:00", id="timestamp-Z"),
    pytest.param(Kind.TIMESTAMP, "2025-01-14 09:30:00z", utc(2025, 1, 14, 9, 30), "2025-01-14 09:30:00", id="timestamp-lowercase-z"),
    pytest.param(Kind.TIMESTAMP, "2025-01-14 09:30", utc(2025, 1, 14, 9, 30), "2025-01-14 09:30:00", id="timestamp-no-seconds"),
    pytest.param(Kind.TIMESTAMP, "2025-01-14", utc(2025, 1, 14), "2025-01-14 00:00:00", id="timestamp-date-only-is-midnight"),
    pytest.param(Kind.TIMESTAMP, "2025-01-14 09:30:00.123456", utc(2025, 1, 14, 9, 30, 0, 123456), "2025-01-14 09:30:00.123456", id="timestamp-micros"),
    pytest.param(Kind.TIMESTAMP, "2025-01-14 09:30:00.5", utc(2025, 1, 14, 9, 30, 0, 500000), "2025-01-14 09:30:00.500000", id="timestamp-short-fraction"),
    pytest.param(Kind.TIMESTAMP, "2025-01-14 09:30:00.000", utc(2025, 1, 14, 9, 30), "2025-01-14 09:30:00", id="timestamp-zero-fraction"),
    pytest.param(Kind.TIMESTAMP, "2025-01-14 09:30:00.123456000", utc(2025, 1, 14, 9, 30, 0, 123456), "2025-01-14 09:30:00.123456", id="timestamp-nanos-all-zero"),
    # TIMESTAMP: offsets are converted to UTC
    pytest.param(Kind.TIMESTAMP, "2025-01-14T10:30:00+01:00", utc(2025, 1, 14, 9, 30), "2025-01-14 09:30:00", id="timestamp-offset-colon"),
    pytest.param(Kind.TIMESTAMP, "2025-01-14T10:30:00+0100", utc(2025, 1, 14, 9, 30), "2025-01-14 09:30:00", id="timestamp-offset-4-digits"),
    pytest.param(Kind.TIMESTAMP, "2025-01-14 10:30:00+01", utc(2025, 1, 14, 9, 30), "2025-01-14 09:30:00", id="timestamp-offset-hours"),
    pytest.param(Kind.TIMESTAMP, "2025-01-14 10:30:00 +0100", utc(2025, 1, 14, 9, 30), "2025-01-14 09:30:00", id="timestamp-offset-after-space"),
    pytest.param(Kind.TIMESTAMP, "2025-01-14 04:00:00.25-05:30", utc(2025, 1, 14, 9, 30, 0, 250000), "2025-01-14 09:30:00.250000", id="timestamp-negative-offset-fraction"),
    pytest.param(Kind.TIMESTAMP, "2025-01-01 00:30:00+01:00", utc(2024, 12, 31, 23, 30), "2024-12-31 23:30:00", id="timestamp-offset-crosses-year"),
    pytest.param(Kind.TIMESTAMP, "0001-01-01 00:00:00", utc(1, 1, 1), "0001-01-01 00:00:00", id="timestamp-year-1"),
    pytest.param(Kind.TIMESTAMP, "9999-12-31 23:59:59.999999", utc(9999, 12, 31, 23, 59, 59, 999999), "9999-12-31 23:59:59.999999", id="timestamp-year-9999"),
    pytest.param(Kind.TIMESTAMP, "2024-02-29 12:00:00", utc(2024, 2, 29, 12), "2024-02-29 12:00:00", id="timestamp-leap-day"),
    # TIMESTAMP: epoch numbers (seconds)
    pytest.param(Kind.TIMESTAMP, 1736847000, utc(2025, 1, 14, 9, 30), "2025-01-14 09:30:00", id="timestamp-epoch-int"),
    pytest.param(Kind.TIMESTAMP, 0, utc(1970, 1, 1), "1970-01-01 00:00:00", id="timestamp-epoch-0"),
    pytest.param(Kind.TIMESTAMP, -1, utc(1969, 12, 31, 23, 59, 59), "1969-12-31 23:59:59", id="timestamp-epoch-negative"),
    pytest.param(Kind.TIMESTAMP, 1736847000.5, utc(2025, 1, 14, 9, 30, 0, 500000), "2025-01-14 09:30:00.500000", id="timestamp-epoch-exact-float"),
    pytest.param(Kind.TIMESTAMP, 1736847000.0, utc(2025, 1, 14, 9, 30), "2025-01-14 09:30:00", id="timestamp-epoch-whole-float"),
    pytest.param(Kind.TIMESTAMP, 253402300799, utc(9999, 12, 31, 23, 59, 59), "9999-12-31 23:59:59", id="timestamp-epoch-max"),
    pytest.param(Kind.TIMESTAMP, -62135596800, utc(1, 1, 1), "0001-01-01 00:00:00", id="timestamp-epoch-min"),
    # TIMESTAMP: the PostgreSQL value itself
    pytest.param(Kind.TIMESTAMP, dt.datetime(2025, 1, 14, 9, 30), utc(2025, 1, 14, 9, 30), "2025-01-14 09:30:00", id="timestamp-naive-datetime-is-utc"),
    pytest.param(
        Kind.TIMESTAMP,
        dt.datetime(2025, 1, 14, 15, 15, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=45))),
        utc(2025, 1, 14, 9, 30),
        "2025-01-14 09:30:00",
        id="timestamp-aware-datetime",
    ),
    # DATE
    pytest.param(Kind.DATE, "2025-01-14", dt.date(2025, 1, 14), "2025-01-14", id="date-iso"),
    pytest.param(Kind.DATE, "2024-02-29", dt.date(2024, 2, 29), "2024-02-29", id="date-leap-day"),
    pytest.param(Kind.DATE, "0001-01-01", dt.date(1, 1, 1), "0001-01-01", id="date-year-1"),
    pytest.param(Kind.DATE, "9999-12-31", dt.date(9999, 12, 31), "9999-12-31", id="date-year-9999"),
    pytest.param(Kind.DATE, dt.date(2025, 1, 14), dt.date(2025, 1, 14), "2025-01-14", id="date-date-object"),
    # JSON
    pytest.param(Kind.JSON, '{"temp_c": 14.5, "wind": "NW"}', {"temp_c": 14.5, "wind": "NW"}, '{"temp_c": 14.5, "wind": "NW"}', id="json-object"),
    pytest.param(Kind.JSON, '{"b":1,\n  "a":[1,2]}', {"b": 1, "a": [1, 2]}, '{"b": 1, "a": [1, 2]}', id="json-whitespace-normalized"),
    pytest.param(Kind.JSON, " [1, 2.5, null, true, false] ", [1, 2.5, None, True, False], "[1, 2.5, null, true, false]", id="json-array-padded"),
    pytest.param(Kind.JSON, "{}", {}, "{}", id="json-empty-object"),
    pytest.param(Kind.JSON, '{"a": null}', {"a": None}, '{"a": null}', id="json-nested-null"),
    pytest.param(Kind.JSON, "14", 14, "14", id="json-top-level-number"),
    pytest.param(Kind.JSON, "-2.5e3", -2500.0, "-2500.0", id="json-top-level-exponent"),
    pytest.param(Kind.JSON, "true", True, "true", id="json-top-level-boolean"),
    pytest.param(Kind.JSON, '{"x": 1e308}', {"x": 1e308}, '{"x": 1e+308}', id="json-1e308"),
    pytest.param(Kind.JSON, '{"x": 5e-324}', {"x": 5e-324}, '{"x": 5e-324}', id="json-denormal"),
    pytest.param(Kind.JSON, '{"x": 1.50}', {"x": 1.5}, '{"x": 1.5}', id="json-trailing-zero"),
    pytest.param(Kind.JSON, '{"x": -0.0}', {"x": -0.0}, '{"x": -0.0}', id="json-negative-zero"),
    pytest.param(Kind.JSON, '{"x": 123456789012345678901234567890}', {"x": 123456789012345678901234567890}, '{"x": 123456789012345678901234567890}', id="json-big-integer"),
    pytest.param(Kind.JSON, '{"s": "caf\\u00e9 \\ud83d\\udc0e"}', {"s": "café 🐎"}, '{"s": "café 🐎"}', id="json-escapes-decoded"),
    pytest.param(Kind.JSON, {"a": [1, 2.5, None, True, {"b": "c"}]}, {"a": [1, 2.5, None, True, {"b": "c"}]}, '{"a": [1, 2.5, null, true, {"b": "c"}]}', id="json-python-document"),
    pytest.param(Kind.JSON, 14, 14, "14", id="json-python-number"),
    pytest.param(Kind.JSON, 14.5, 14.5, "14.5", id="json-python-real"),
    pytest.param(Kind.JSON, False, False, "false", id="json-python-boolean"),
    # BLOB and NUMERIC (files beyond the HRP schema: adapters.catalog)
    pytest.param(Kind.BLOB, b"\x00\xff", b"\x00\xff", b"\x00\xff", id="blob-bytes"),
    pytest.param(Kind.BLOB, memoryview(b"ab"), b"ab", b"ab", id="blob-memoryview"),
    pytest.param(Kind.NUMERIC, 12, Decimal(12), 12, id="numeric-integer"),
    pytest.param(Kind.NUMERIC, 1.1, Decimal("1.1"), 1.1, id="numeric-real-shortest-decimal"),
    pytest.param(Kind.NUMERIC, Decimal("2.50"), Decimal("2.50"), 2.5, id="numeric-decimal"),
]


REJECTED = [
    # INTEGER
    pytest.param(Kind.INTEGER, "abc", "text_in_integer_column", id="integer-text"),
    pytest.param(Kind.INTEGER, "", "text_in_integer_column", id="integer-empty-text"),
    pytest.param(Kind.INTEGER, "42", "text_in_integer_column", id="integer-digit-text"),
    pytest.param(Kind.INTEGER, 4.5, "real_in_integer_column", id="integer-fractional-real"),
    pytest.param(Kind.INTEGER, 1e20, "real_in_integer_column", id="integer-huge-real"),
    pytest.param(Kind.INTEGER, math.inf, "real_in_integer_column", id="integer-infinity"),
    pytest.param(Kind.INTEGER, b"\x01", "blob_in_integer_column", id="integer-blob"),
    pytest.param(Kind.INTEGER, 2**63, "integer_out_of_range", id="integer-above-bigint"),
    pytest.param(Kind.INTEGER, -(2**63) - 1, "integer_out_of_range", id="integer-below-bigint"),
    # REAL
    pytest.param(Kind.REAL, "abc", "text_in_real_column", id="real-text"),
    pytest.param(Kind.REAL, "", "text_in_real_column", id="real-empty-text"),
    pytest.param(Kind.REAL, "0x10", "text_in_real_column", id="real-hex-text"),
    pytest.param(Kind.REAL, b"\x00\x01", "blob_in_real_column", id="real-blob"),
    pytest.param(Kind.REAL, math.nan, "nan_in_real_column", id="real-nan"),
    pytest.param(Kind.REAL, -math.nan, "nan_in_real_column", id="real-negative-nan"),
    pytest.param(Kind.REAL, 2**53 + 1, "integer_out_of_range", id="real-integer-not-exact"),
    pytest.param(Kind.REAL, 2**1024, "integer_out_of_range", id="real-integer-beyond-double"),
    # TEXT
    pytest.param(Kind.TEXT, "a\x00b", "nul_byte_in_text", id="text-nul"),
    pytest.param(Kind.TEXT, "\x00", "nul_byte_in_text", id="text-only-nul"),
    pytest.param(Kind.TEXT, "abc\udcff", "invalid_utf8_in_text", id="text-invalid-utf8"),
    pytest.param(Kind.TEXT, "\ud83d", "invalid_utf8_in_text", id="text-lone-surrogate"),
    pytest.param(Kind.TEXT, b"abc", "blob_in_text_column", id="text-blob"),
    pytest.param(Kind.TEXT, b"", "blob_in_text_column", id="text-empty-blob"),
    pytest.param(Kind.TEXT, 5, "number_in_text_column", id="text-integer"),
    pytest.param(Kind.TEXT, 1.5, "number_in_text_column", id="text-real"),
    # BOOLEAN
    pytest.param(Kind.BOOLEAN, 2, "non_boolean_integer", id="boolean-2"),
    pytest.param(Kind.BOOLEAN, -1, "non_boolean_integer", id="boolean-minus-1"),
    pytest.param(Kind.BOOLEAN, 0.5, "non_boolean_real", id="boolean-real"),
    pytest.param(Kind.BOOLEAN, 1.0, "non_boolean_real", id="boolean-real-one"),
    pytest.param(Kind.BOOLEAN, "yes", "unparseable_boolean", id="boolean-yes"),
    pytest.param(Kind.BOOLEAN, "t", "unparseable_boolean", id="boolean-t"),
    pytest.param(Kind.BOOLEAN, "1", "unparseable_boolean", id="boolean-digit-text"),
    pytest.param(Kind.BOOLEAN, " true", "unparseable_boolean", id="boolean-padded"),
    pytest.param(Kind.BOOLEAN, "", "unparseable_boolean", id="boolean-empty"),
    pytest.param(Kind.BOOLEAN, b"\x01", "blob_in_boolean_column", id="boolean-blob"),
    # TIMESTAMP
    pytest.param(Kind.TIMESTAMP, "", "empty_timestamp", id="timestamp-empty"),
    pytest.param(Kind.TIMESTAMP, "  \t", "empty_timestamp", id="timestamp-blank"),
    pytest.param(Kind.TIMESTAMP, "yesterday", "unparseable_timestamp", id="timestamp-word"),
    pytest.param(Kind.TIMESTAMP, "14/01/2025 09:30", "unparseable_timestamp", id="timestamp-day-first"),
    pytest.param(Kind.TIMESTAMP, "2025-1-14 09:30:00", "unparseable_timestamp", id="timestamp-one-digit-month"),
    pytest.param(Kind.TIMESTAMP, " 2025-01-14 09:30:00", "unparseable_timestamp", id="timestamp-leading-space"),
    pytest.param(Kind.TIMESTAMP, "2025-01-14 09:30:00\n", "unparseable_timestamp", id="timestamp-trailing-newline"),
    pytest.param(Kind.TIMESTAMP, "2025-01-14Z", "unparseable_timestamp", id="timestamp-offset-without-time"),
    pytest.param(Kind.TIMESTAMP, "2025-01-14 09:30:00.", "unparseable_timestamp", id="timestamp-empty-fraction"),
    pytest.param(Kind.TIMESTAMP, "2025-01-14 09:30:00 UTC", "unparseable_timestamp", id="timestamp-zone-name"),
    pytest.param(Kind.TIMESTAMP, "2025-01-14 09:30:00+1:00", "unparseable_timestamp", id="timestamp-short-offset"),
    pytest.param(Kind.TIMESTAMP, "\uff12\uff10\uff12\uff15-01-14 09:30:00", "unparseable_timestamp", id="timestamp-fullwidth-digits"),
    pytest.param(Kind.TIMESTAMP, "\u0662\u0660\u0662\u0665-\u0660\u0661-\u0661\u0664", "unparseable_timestamp", id="timestamp-arabic-indic-digits"),
    pytest.param(Kind.TIMESTAMP, "2025-02-30 00:00:00", "impossible_date", id="timestamp-feb-30"),
    pytest.param(Kind.TIMESTAMP, "2025-13-01 00:00:00", "impossible_date", id="timestamp-month-13"),
    pytest.param(Kind.TIMESTAMP, "2025-01-14 25:00:00", "impossible_date", id="timestamp-hour-25"),
    pytest.param(Kind.TIMESTAMP, "2025-01-14 24:00:00", "impossible_date", id="timestamp-hour-24"),
    pytest.param(Kind.TIMESTAMP, "2016-12-31 23:59:60", "impossible_date", id="timestamp-leap-second"),
    pytest.param(Kind.TIMESTAMP, "2025-01-14 09:30:00+24:00", "impossible_date", id="timestamp-offset-24h"),
    pytest.param(Kind.TIMESTAMP, "2025-01-14 09:30:00+01:60", "impossible_date", id="timestamp-offset-60min"),
    pytest.param(Kind.TIMESTAMP, "2025-01-14 09:30:00.1234567", "timestamp_precision_lost", id="timestamp-7-digit-fraction"),
    pytest.param(Kind.TIMESTAMP, "2025-01-14 09:30:00.000000001", "timestamp_precision_lost", id="timestamp-nanosecond"),
    pytest.param(Kind.TIMESTAMP, "0000-01-01 00:00:00", "timestamp_out_of_range", id="timestamp-year-0"),
    pytest.param(Kind.TIMESTAMP, "9999-12-31 23:00:00-01:00", "timestamp_out_of_range", id="timestamp-offset-past-9999"),
    pytest.param(Kind.TIMESTAMP, "0001-01-01 00:00:00+01:00", "timestamp_out_of_range", id="timestamp-offset-before-year-1"),
    pytest.param(Kind.TIMESTAMP, 253402300800, "timestamp_out_of_range", id="timestamp-epoch-year-10000"),
    pytest.param(Kind.TIMESTAMP, -62135596801, "timestamp_out_of_range", id="timestamp-epoch-year-0"),
    pytest.param(Kind.TIMESTAMP, 1736847000000, "timestamp_out_of_range", id="timestamp-epoch-milliseconds"),
    pytest.param(Kind.TIMESTAMP, 2**80, "timestamp_out_of_range", id="timestamp-epoch-huge"),
    pytest.param(Kind.TIMESTAMP, math.inf, "timestamp_out_of_range", id="timestamp-epoch-infinity"),
    pytest.param(Kind.TIMESTAMP, math.nan, "timestamp_out_of_range", id="timestamp-epoch-nan"),
    pytest.param(Kind.TIMESTAMP, 1e300, "timestamp_out_of_range", id="timestamp-epoch-1e300"),
    pytest.param(Kind.TIMESTAMP, 0.1, "fractional_epoch", id="timestamp-epoch-0.1"),
    pytest.param(Kind.TIMESTAMP, 1736847000.123, "fractional_epoch", id="timestamp-epoch-milliseconds-float"),
    pytest.param(Kind.TIMESTAMP, 5e-324, "fractional_epoch", id="timestamp-epoch-denormal"),
    pytest.param(Kind.TIMESTAMP, b"2025-01-14", "blob_in_timestamp_column", id="timestamp-blob"),
    # DATE
    pytest.param(Kind.DATE, "", "empty_date", id="date-empty"),
    pytest.param(Kind.DATE, "   ", "empty_date", id="date-blank"),
    pytest.param(Kind.DATE, "14/01/2025", "unparseable_date", id="date-day-first"),
    pytest.param(Kind.DATE, "2025-01-14 00:00:00", "unparseable_date", id="date-with-time"),
    pytest.param(Kind.DATE, "2025-01-14T00:00:00Z", "unparseable_date", id="date-iso-timestamp"),
    pytest.param(Kind.DATE, " 2025-01-14", "unparseable_date", id="date-leading-space"),
    pytest.param(Kind.DATE, "20250114", "unparseable_date", id="date-basic-format"),
    pytest.param(Kind.DATE, "\uff12\uff10\uff12\uff15-01-14", "unparseable_date", id="date-fullwidth-digits"),
    pytest.param(Kind.DATE, "2025-02-30", "impossible_date", id="date-feb-30"),
    pytest.param(Kind.DATE, "2023-02-29", "impossible_date", id="date-not-leap"),
    pytest.param(Kind.DATE, "2025-00-10", "impossible_date", id="date-month-0"),
    pytest.param(Kind.DATE, "0000-01-01", "impossible_date", id="date-year-0"),
    pytest.param(Kind.DATE, 20250114, "number_in_date_column", id="date-integer"),
    pytest.param(Kind.DATE, 1736812800.0, "number_in_date_column", id="date-real"),
    pytest.param(Kind.DATE, b"2025-01-14", "blob_in_date_column", id="date-blob"),
    # JSON
    pytest.param(Kind.JSON, "", "empty_json", id="json-empty"),
    pytest.param(Kind.JSON, " \n\t\r", "empty_json", id="json-whitespace"),
    pytest.param(Kind.JSON, "\x0c", "invalid_json", id="json-form-feed-is-not-json-whitespace"),
    pytest.param(Kind.JSON, "{", "invalid_json", id="json-truncated"),
    pytest.param(Kind.JSON, "{'a': 1}", "invalid_json", id="json-single-quotes"),
    pytest.param(Kind.JSON, '{"a": 1,}', "invalid_json", id="json-trailing-comma"),
    pytest.param(Kind.JSON, "NW", "invalid_json", id="json-bare-word"),
    pytest.param(Kind.JSON, '"a\tb"', "invalid_json", id="json-raw-control-character"),
    pytest.param(Kind.JSON, "[" * 100_000, "invalid_json", id="json-nested-too-deeply"),
    pytest.param(Kind.JSON, "[NaN]", "non_standard_json", id="json-nan"),
    pytest.param(Kind.JSON, '{"x": Infinity}', "non_standard_json", id="json-infinity"),
    pytest.param(Kind.JSON, "-Infinity", "non_standard_json", id="json-minus-infinity"),
    pytest.param(Kind.JSON, '{"a": 1, "a": 2}', "duplicate_json_key", id="json-duplicate-key"),
    pytest.param(Kind.JSON, '[{"k": {"a": 1, "a": 1}}]', "duplicate_json_key", id="json-nested-duplicate-key"),
    pytest.param(Kind.JSON, '{"a": "x\\u0000y"}', "nul_byte_in_json", id="json-escaped-nul-value"),
    pytest.param(Kind.JSON, '{"a\\u0000": 1}', "nul_byte_in_json", id="json-escaped-nul-key"),
    pytest.param(Kind.JSON, '["\\ud800"]', "lone_surrogate_in_json", id="json-lone-high-surrogate"),
    pytest.param(Kind.JSON, '{"\\udc00": 1}', "lone_surrogate_in_json", id="json-lone-low-surrogate-key"),
    pytest.param(Kind.JSON, "[0.1000000000000000055511151231257827]", "json_number_not_exact", id="json-too-many-digits"),
    pytest.param(Kind.JSON, "[1e400]", "json_number_not_exact", id="json-overflows-double"),
    pytest.param(Kind.JSON, "[1e-400]", "json_number_not_exact", id="json-underflows-double"),
    pytest.param(Kind.JSON, "[5e-99999999999999999999999]", "json_number_not_exact", id="json-exponent-beyond-decimal"),
    pytest.param(Kind.JSON, "[" + "9" * 5000 + "]", "json_number_not_exact", id="json-integer-too-long"),
    pytest.param(Kind.JSON, "null", "json_null", id="json-null"),
    pytest.param(Kind.JSON, " null\n", "json_null", id="json-padded-null"),
    pytest.param(Kind.JSON, '"NW"', "json_string_document", id="json-top-level-string"),
    pytest.param(Kind.JSON, '"{\\"temp_c\\": 14.5}"', "json_string_document", id="json-encoded-twice"),
    pytest.param(Kind.JSON, math.nan, "non_standard_json", id="json-python-nan-number"),
    pytest.param(Kind.JSON, -math.inf, "non_standard_json", id="json-python-infinite-number"),
    pytest.param(Kind.JSON, b"{}", "blob_in_json_column", id="json-blob"),
    pytest.param(Kind.JSON, '{"a": 1}\x00', "nul_byte_in_text", id="json-raw-nul"),
    pytest.param(Kind.JSON, '{"a": "\udcff"}', "invalid_utf8_in_text", id="json-invalid-utf8"),
    pytest.param(Kind.JSON, {"a": math.nan}, "non_standard_json", id="json-python-nan"),
    pytest.param(Kind.JSON, [math.inf], "non_standard_json", id="json-python-infinity"),
    pytest.param(Kind.JSON, {"a": "\x00"}, "nul_byte_in_json", id="json-python-nul"),
    pytest.param(Kind.JSON, [10**5000], "json_number_not_exact", id="json-python-integer-too-long"),
    # unsupported Python types: neither a SQLite storage value nor the PostgreSQL value
    pytest.param(Kind.JSON, {1: "a"}, "unsupported_type", id="json-python-non-string-key"),
    pytest.param(Kind.JSON, {"a": (1, 2)}, "unsupported_type", id="json-python-tuple"),
    pytest.param(Kind.JSON, {"a": dt.date(2025, 1, 14)}, "unsupported_type", id="json-python-date"),
    pytest.param(Kind.JSON, {"a", "b"}, "unsupported_type", id="json-python-set"),
    pytest.param(Kind.DATE, dt.datetime(2025, 1, 14), "unsupported_type", id="date-datetime-object"),
    pytest.param(Kind.TIMESTAMP, dt.date(2025, 1, 14), "unsupported_type", id="timestamp-date-object"),
    pytest.param(Kind.TEXT, dt.date(2025, 1, 14), "unsupported_type", id="text-date-object"),
    pytest.param(Kind.REAL, Decimal("1.5"), "unsupported_type", id="real-decimal"),
    *[pytest.param(kind, object(), "unsupported_type", id=f"{kind.value}-object") for kind in Kind],
    pytest.param(Kind.BLOB, 5, "number_in_blob_column", id="blob-number"),
    pytest.param(Kind.BLOB, "x", "text_in_blob_column", id="blob-text"),
    pytest.param(Kind.NUMERIC, "abc", "text_in_numeric_column", id="numeric-text"),
    pytest.param(Kind.NUMERIC, b"\x01", "blob_in_numeric_column", id="numeric-blob"),
    pytest.param(Kind.NUMERIC, math.inf, "nan_in_numeric_column", id="numeric-infinity"),
]

HELD_TO_SCALE = [  # fits_numeric: NUMERIC(p,s) columns (a column's rule, not a kind's)
    pytest.param(Decimal("123.456"), 5, 2, "numeric_out_of_range", id="numeric-scale-lost"),
    pytest.param(Decimal("1234"), 5, 2, "numeric_out_of_range", id="numeric-too-many-digits"),
]


@pytest.mark.parametrize(("kind", "raw", "postgres", "back"), ACCEPTED)
def test_accepted_value_converts_exactly(kind, raw, postgres, back):
    converted = to_postgres(kind, raw)
    assert same(converted, postgres)
    written = to_sqlite(kind, converted)
    assert same(written, back)
    assert same(to_postgres(kind, written), postgres), "the spelling written back reads as the same value"


@pytest.mark.parametrize(("kind", "raw", "reason"), REJECTED)
def test_rejected_value_carries_its_reason(kind, raw, reason):
    with pytest.raises(Rejected) as caught:
        to_postgres(kind, raw)
    assert caught.value.reason == reason
    assert str(caught.value).startswith(reason)


@pytest.mark.parametrize(("value", "precision", "scale", "reason"), HELD_TO_SCALE)
def test_numeric_column_refuses_what_it_would_round(value, precision, scale, reason):
    with pytest.raises(Rejected) as caught:
        fits_numeric(value, precision, scale)
    assert caught.value.reason == reason


@pytest.mark.parametrize(("value", "precision", "scale"), [
    (Decimal("123.45"), 5, 2), (Decimal("0"), 1, 0), (Decimal("-999.99"), 5, 2), (Decimal("1.50"), 3, 1),
    (Decimal("100"), 3, 0),
])
def test_numeric_column_holds_what_fits(value, precision, scale):
    fits_numeric(value, precision, scale)


def test_every_reason_has_a_case():
    covered = {case.values[2] for case in REJECTED} | {case.values[3] for case in HELD_TO_SCALE}
    assert covered == set(REASONS)


def test_reasons_are_machine_readable():
    for reason, description in REASONS.items():
        assert reason.isidentifier() and reason == reason.lower()
        assert description


def test_kind_may_be_given_by_name():
    assert to_postgres("boolean", "true") is True
    assert to_sqlite("boolean", True) == 1
    assert to_sqlite("timestamp", utc(2025, 1, 14, 9, 30)) == "2025-01-14 09:30:00"


def test_negative_zero_keeps_its_sign():
    assert bits(to_postgres(Kind.REAL, -0.0)) == bits(-0.0) != bits(0.0)
    assert bits(to_sqlite(Kind.REAL, -0.0)) == bits(-0.0)


def test_nan_from_postgres_is_refused_on_the_way_back():
    """PostgreSQL float8 can hold NaN (written by hand); SQLite would store it as NULL."""
    with pytest.raises(Rejected) as caught:
        to_sqlite(Kind.REAL, math.nan)
    assert caught.value.reason == "nan_in_real_column"


def test_rejected_is_a_value_error_with_detail():
    with pytest.raises(ValueError) as caught:
        to_postgres(Kind.INTEGER, 4.5)
    assert caught.value.reason == "real_in_integer_column"
    assert caught.value.detail == "4.5"
    assert str(caught.value) == "real_in_integer_column: 4.5"


def test_format_timestamp_pads_early_years_and_converts_to_utc():
    assert format_timestamp(dt.datetime(5, 1, 2, 3, 4, 5)) == "0005-01-02 03:04:05"
    assert format_timestamp(dt.datetime(999, 1, 1, microsecond=7)) == "0999-01-01 00:00:00.000007"
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert format_timestamp(dt.datetime(2025, 1, 14, 11, 30, tzinfo=plus_two)) == "2025-01-14 09:30:00"


def test_parse_json_is_strict_and_dump_json_is_the_legacy_spelling():
    assert parse_json('{"a": [1, 2.5]}') == {"a": [1, 2.5]}
    with pytest.raises(Rejected) as caught:
        parse_json('{"a": 1, "a": 1}')
    assert caught.value.reason == "duplicate_json_key"
    assert dump_json({"a": "é", "b": [True, None]}) == '{"a": "é", "b": [true, null]}'


def test_conversion_table_names_every_reason():
    """The conversion tables name every reason: docs/conversion.md, and docs/schema.md for the
    kinds of files beyond the HRP schema (BLOB, NUMERIC)."""
    docs = Path(__file__).resolve().parents[2] / "docs"
    text = "".join((docs / name).read_text(encoding="utf-8") for name in ("conversion.md", "schema.md"))
    assert "| column kind |" in text.lower()
    missing = sorted(reason for reason in REASONS if f"`{reason}`" not in text)
    assert not missing


# --------------------------------------------------------------------------------------
# Property tests
# --------------------------------------------------------------------------------------

EDGE_FLOATS = [0.0, -0.0, 5e-324, -5e-324, 2.225073858507201e-308, 2.2250738585072014e-308,
               1e308, 1.7976931348623157e308, -1.7976931348623157e308, math.inf, -math.inf]


@given(st.floats(allow_nan=False) | st.sampled_from(EDGE_FLOATS))
@example(-0.0)
@example(5e-324)
@example(1e308)
@example(math.inf)
def test_every_float_converts_bit_exactly_both_ways(x):
    converted = to_postgres(Kind.REAL, x)
    assert bits(converted) == bits(x)
    assert bits(to_sqlite(Kind.REAL, converted)) == bits(x)


@given(st.integers(min_value=0, max_value=2**52 - 1), st.booleans())
def test_every_nan_is_refused(payload, negative):
    nan = struct.unpack(">d", struct.pack(">Q", (negative << 63) | (0x7FF << 52) | (payload | 1)))[0]
    assert math.isnan(nan)
    with pytest.raises(Rejected) as caught:
        to_postgres(Kind.REAL, nan)
    assert caught.value.reason == "nan_in_real_column"


@given(st.integers())
def test_integers_are_kept_or_out_of_range(n):
    if -(2**63) <= n < 2**63:
        assert same(to_postgres(Kind.INTEGER, n), n)
        assert same(to_sqlite(Kind.INTEGER, n), n)
    else:
        with pytest.raises(Rejected) as caught:
            to_postgres(Kind.INTEGER, n)
        assert caught.value.reason == "integer_out_of_range"


@given(st.integers())
def test_integers_in_a_real_column_are_exact_or_refused(n):
    try:
        converted = to_postgres(Kind.REAL, n)
    except Rejected as error:
        assert error.reason == "integer_out_of_range"
        assert n >= 2**53 or n <= -(2**53)
    else:
        assert isinstance(converted, float) and int(converted) == n


@given(st.integers())
def test_booleans_are_0_or_1(n):
    if n in (0, 1):
        assert to_postgres(Kind.BOOLEAN, n) is bool(n)
        assert to_sqlite(Kind.BOOLEAN, bool(n)) == n
    else:
        with pytest.raises(Rejected) as caught:
            to_postgres(Kind.BOOLEAN, n)
        assert caught.value.reason == "non_boolean_integer"


@given(st.text().filter(lambda s: s.lower() not in ("true", "false")))
def test_text_other_than_true_false_is_not_a_boolean(text):
    with pytest.raises(Rejected) as caught:
        to_postgres(Kind.BOOLEAN, text)
    assert caught.value.reason == "unparseable_boolean"


STORABLE_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))


@given(STORABLE_TEXT)
def test_text_without_nul_round_trips_exactly(text):
    converted = to_postgres(Kind.TEXT, text)
    assert converted == text
    assert to_sqlite(Kind.TEXT, converted) == text


@given(STORABLE_TEXT, STORABLE_TEXT)
def test_text_with_nul_is_refused(before, after):
    with pytest.raises(Rejected) as caught:
        to_postgres(Kind.TEXT, before + "\x00" + after)
    assert caught.value.reason == "nul_byte_in_text"


@given(st.binary())
def test_blobs_are_refused_in_every_kind_but_blob(blob):
    assert to_postgres(Kind.BLOB, blob) == blob
    for kind in set(Kind) - {Kind.BLOB}:
        with pytest.raises(Rejected) as caught:
            to_postgres(kind, blob)
        assert caught.value.reason == f"blob_in_{kind.value}_column"


OFFSETS = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes))
)


@given(st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30), timezones=OFFSETS))
@example(dt.datetime(1, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=23, minutes=59))))
def test_every_datetime_round_trips_as_the_same_instant(value):
    spelled = to_sqlite(Kind.TIMESTAMP, value)
    back = to_postgres(Kind.TIMESTAMP, spelled)
    assert back == value and back.utcoffset() == dt.timedelta(0)
    assert to_sqlite(Kind.TIMESTAMP, back) == spelled
    assert spelled == format_timestamp(value)


@given(st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59, 999999)))
def test_every_legacy_spelling_is_a_fixed_point(naive):
    spelled = naive.strftime("%H:%M:%S")
    spelled = f"{naive.year:04d}-{naive.month:02d}-{naive.day:02d} {spelled}"
    if naive.microsecond:
        spelled += f".{naive.microsecond:06d}"
    converted = to_postgres(Kind.TIMESTAMP, spelled)
    assert converted == naive.replace(tzinfo=UTC)
    assert to_sqlite(Kind.TIMESTAMP, converted) == spelled


@given(st.integers(min_value=-62135596800, max_value=253402300799), st.integers(0, 999_999))
def test_epochs_within_range_are_exact(seconds, micros):
    expected = utc(1970, 1, 1) + dt.timedelta(seconds=seconds)
    assert to_postgres(Kind.TIMESTAMP, seconds) == expected
    as_float = seconds + micros / 1_000_000
    try:
        converted = to_postgres(Kind.TIMESTAMP, as_float)
    except Rejected as error:
        assert error.reason in ("fractional_epoch", "timestamp_out_of_range")
    else:
        # accepted only when the float is exactly a whole number of microseconds
        delta = converted - utc(1970, 1, 1)
        assert Decimal(as_float) == Decimal(delta.days * 86400 + delta.seconds) + Decimal(delta.microseconds) / 10**6


TIMESTAMP_LIKE = st.from_regex(
    r"\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?( ?([Zz]|[+-]\d{2}(:?\d{2})?))?)?",
    fullmatch=True,
)


def _oracle(text: str) -> dt.datetime:
    """Python's own ISO reader, for text the rules accepted (fraction cut to 6 digits)."""
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        rest = rest[: min(digits, 6)] + rest[digits:]
    normalized = (head + dot + rest).replace(" +", "+").replace(" -", "-").replace(" Z", "Z").replace(" z", "Z")
    parsed = dt.datetime.fromisoformat(normalized.replace("z", "Z"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@given(TIMESTAMP_LIKE)
@example("2025-01-14 09:30:00.123456000 +01:00")
@example("2025-01-14T09:30z")
def test_timestamp_text_is_read_as_python_reads_it_or_refused(text):
    try:
        converted = to_postgres(Kind.TIMESTAMP, text)
    except Rejected as error:
        assert error.reason in ("unparseable_timestamp", "impossible_date",
                                "timestamp_precision_lost", "timestamp_out_of_range")
        return
    assert text.isascii()
    assert converted == _oracle(text)
    spelled = to_sqlite(Kind.TIMESTAMP, converted)
    assert to_postgres(Kind.TIMESTAMP, spelled) == converted


@given(st.dates())
def test_every_date_round_trips(day):
    spelled = to_sqlite(Kind.DATE, day)
    assert to_postgres(Kind.DATE, spelled) == day
    assert to_postgres(Kind.DATE, day) == day


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | STORABLE_TEXT
)
JSON_DOCUMENTS = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(STORABLE_TEXT, children, max_size=5),
    max_leaves=20,
).filter(lambda doc: doc is not None)


@given(JSON_DOCUMENTS)
@example({"x": 1e308, "y": 5e-324, "z": -0.0})
def test_json_documents_round_trip_to_an_equal_document(doc):
    text = dump_json(doc)
    if isinstance(doc, str):  # a bare string document is refused: as a value it reads as JSON text
        with pytest.raises(Rejected) as caught:
            to_postgres(Kind.JSON, text)
        assert caught.value.reason == "json_string_document"
        return
    converted = to_postgres(Kind.JSON, text)
    assert same(converted, doc)
    assert to_sqlite(Kind.JSON, converted) == text
    assert same(to_postgres(Kind.JSON, doc), doc), "the PostgreSQL value converts to itself"


@given(JSON_DOCUMENTS, st.sampled_from([None, 0, 2, "\t"]), st.booleans())
def test_json_spelling_does_not_matter(doc, indent, ascii_only):
    assume(not isinstance(doc, str))
    text = json.dumps(doc, indent=indent, ensure_ascii=ascii_only)
    assert same(to_postgres(Kind.JSON, text), doc)


STORAGE_VALUES = (
    st.none()
    | st.integers()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | st.text()
    | st.binary()
    | st.booleans()
    | TIMESTAMP_LIKE
    | JSON_DOCUMENTS.map(dump_json)
    | st.sampled_from(["true", "false", "", " ", "null", "NaN", "[NaN]", "2025-01-14", "2025-02-30"])
)


@settings(max_examples=examples(300))
@given(st.sampled_from(list(Kind)), STORAGE_VALUES)
def test_any_value_converts_or_is_rejected_with_a_known_reason(kind, raw):
    try:
        converted = to_postgres(kind, raw)
    except Rejected as error:
        assert error.reason in REASONS
        return
    # accepted: converting back and forth again changes nothing
    written = to_sqlite(kind, converted)
    again = to_postgres(kind, written)
    assert same(again, converted)
    assert same(to_sqlite(kind, again), written)
    if not isinstance(raw, bool) and (
        kind in (Kind.INTEGER, Kind.TEXT) or (kind is Kind.REAL and isinstance(raw, float))
    ):
        assert same(written, raw), "nothing is silently changed"


def _json_outcome(read, text):
    try:
        return ("value", read(text))
    except Rejected as error:
        return ("rejected", error.reason)


def _orjson_spelling(doc) -> str:
    try:
        return orjson.dumps(doc).decode()
    except TypeError:  # an integer beyond 64 bits
        return dump_json(doc)


CANONICAL_JSON_TEXT = (
    JSON_DOCUMENTS.map(dump_json)
    | JSON_DOCUMENTS.map(_orjson_spelling)
    | st.lists(st.floats(allow_nan=False), min_size=1, max_size=8).map(_orjson_spelling)
    | st.lists(st.floats(allow_nan=False), min_size=1, max_size=8).map(dump_json)
    | st.builds(lambda doc, tail: dump_json(doc)[:-1] + tail, JSON_DOCUMENTS.filter(lambda d: isinstance(d, (dict, list))),
                st.sampled_from(["", ", 1]", "}", "]}", ', "a": 1}', ', NaN]', ', "\\u0000"]']))
    | st.sampled_from([
        '{"a": 1, "a": 2}', '{"a": NaN}', '[Infinity]', '[-Infinity]', '{"a": 1e400}', '[1E5]', '[-0]', '[-0.0]',
        '{"a": 0.1000000000000000055511151231257827}', '["\\u0000"]', '["\\ud800"]', '["\\ud83d\\udc0e"]',
        '["caf\\u00e9"]', '["\\/"]', '[1.0]', '[' * 5000 + ']' * 5000, '["\\u0001"]', '[' + '9' * 5000 + ']',
        '\ufeff[1]', '[1] ', ' [1]', '{"a":1}', '[true, false, null]', '["\ud800"]', '["tab\\there"]',
        '[1e16]', '[1e+16]', '[1e-7]', '[1e-07]', '[12345678901234567890123]', '[18446744073709551615]',
        '{"a": ", "}', '{"a":1,"a":2, "b": "\\": "}', '{"k": "a: b"}', '[1,  2]', '[1.50]',
        '{"k":"a,b"}', '{"k": "a,b"}', '{"a,": 1}', '{"a:": [1, 2]}', '{"a": "x, y"}', '["a", "b,c"]',
        '{"a":1, "b":2}', '{"a": 1,"b": 2}', '[1,2, 3]', '{"a":{"b": 1}}', '["\\\\u0000"]', '["\\\\"]',
    ])
)


@settings(max_examples=examples(400))
@given(CANONICAL_JSON_TEXT)
def test_the_canonical_json_fast_path_agrees_with_the_general_rules(text):
    """json_text and to_postgres take a shortcut for canonical text; it must give what parse_json gives."""
    from adapters.convert import _json, json_text

    def general(raw):
        value = parse_json(raw)
        if value is None or isinstance(value, str):
            raise Rejected("json_null" if value is None else "json_string_document")
        return value

    expected = _json_outcome(general, text)
    pre_checks = "\x00" in text or not text.strip(" \t\n\r")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        pre_checks = True
    if pre_checks:
        assert _json_outcome(_json, text)[0] == "rejected"
        return
    got = _json_outcome(_json, text)
    assert got[0] == expected[0] and (same(got[1], expected[1]) if got[0] == "value" else got[1] == expected[1])
    spelled = _json_outcome(json_text, text)
    if expected[0] == "value":  # a text PostgreSQL reads as the same document
        assert spelled[0] == "value" and same(parse_json(spelled[1]), expected[1])
        assert spelled[1] in (text, dump_jsonb(expected[1]))
    else:
        assert spelled == expected


def _spelled_plainly(doc) -> bool:
    """No string of `doc` holds a comma, a colon or a character a serializer escapes, no integer
    is beyond 64 bits, no float is spelled differently by json and orjson: its serializer
    spellings are the ones the fast path knows."""
    pending = [doc]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if any(c in ",:\\\"" or ord(c) < 0x20 for c in item):
                return False
        elif isinstance(item, int) and not isinstance(item, bool) and not -(2**63) <= item < 2**64:
            return False
        elif isinstance(item, float) and (orjson.dumps(item).decode() != repr(item) or "e+" in repr(item)):
            return False  # 1e-07 against 1e-7; 1e+16 needs dump_jsonb's spelling
        elif isinstance(item, dict):
            pending += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            pending += item
    return True


@given(JSON_DOCUMENTS.filter(lambda doc: isinstance(doc, (dict, list)) and _spelled_plainly(doc)))
@example({"odds": 55.94, "going": "good", "age": 7, "tiny": 5e-324, "big": 9999999999999998.0, "neg": -0.0})
def test_serializer_spellings_take_the_canonical_json_fast_path(doc):
    """Legacy text as json.dumps wrote it, and its compact spelling, are handed on without the
    general parser (the backfill's cost per prediction rests on it)."""
    from adapters.convert import _canonical_document

    for text in (dump_json(doc), _orjson_spelling(doc)):
        assert same(_canonical_document(text), doc), text


LEGACY_TIMESTAMP_LIKE = st.from_regex(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", fullmatch=True) | st.sampled_from(
    ["0000-01-01 00:00:00", "2025-02-30 10:00:00", "2025-01-14 24:00:00", "2025-01-14 23:59:60",
     "9999-12-31 23:59:59", "0001-01-01 00:00:00", "2024-02-29 00:00:00", "2023-02-29 00:00:00"]
)


@given(LEGACY_TIMESTAMP_LIKE)
def test_the_legacy_timestamp_fast_path_agrees_with_the_general_reader(text):
    from adapters.convert import _legacy_timestamp, _timestamp_text

    fast = _legacy_timestamp(text)
    general = _json_outcome(_timestamp_text, text)
    if fast is None:
        assert general[0] == "rejected"
    else:
        assert general[0] == "value" and fast == general[1] and fast.utcoffset() == dt.timedelta(0)
        assert to_postgres(Kind.TIMESTAMP, text) == fast


@given(LEGACY_TIMESTAMP_LIKE | TIMESTAMP_LIKE)
def test_timestamp_text_reads_back_as_the_converted_instant(text):
    from adapters.convert import timestamp_text

    try:
        expected = to_postgres(Kind.TIMESTAMP, text)
    except Rejected as error:
        with pytest.raises(Rejected) as caught:
            timestamp_text(text)
        assert caught.value.reason == error.reason
        return
    spelled = timestamp_text(text)
    assert dt.datetime.fromisoformat(spelled) == expected and dt.datetime.fromisoformat(spelled).utcoffset() is not None


@given(JSON_DOCUMENTS | st.lists(st.floats(allow_nan=False, allow_infinity=False, min_value=1e15), min_size=1))
@example([1e16, -1e23, 1.7976931348623157e308, {"a": 1.5e300, "s": "1e+16"}])
def test_jsonb_spelling_reads_back_as_the_same_value(doc):
    """JSONB prints a number as a decimal without exponent; dump_jsonb spells a float so large that
    it is whole with a point, so it comes back a float (json.dumps' 1e+16 would come back an int)."""
    from adapters.convert import json_text

    def exponents(text: str) -> list[str]:
        tokens: list[str] = []
        json.loads(text, parse_float=lambda token: tokens.append(token) or float(token))
        return [token for token in tokens if "e+" in token.lower()]

    spelled = dump_jsonb(doc)
    assert same(json.loads(spelled), doc) and exponents(spelled) == []
    if isinstance(doc, (dict, list)):  # the backfill's path, fast (canonical text) or general
        for text in (dump_json(doc), _orjson_spelling(doc)):
            try:
                sent = json_text(text)
            except Rejected:
                continue
            assert exponents(sent) == [] and same(json.loads(sent), json.loads(text))
