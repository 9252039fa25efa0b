"""Request input, checked before anything touches a database.

A field spec says what a field holds (text, integer, real, date, JSON object,
boolean) and its limits. `validate_body` and `validate_query` return the
values as the repositories take them, or raise `Invalid` naming the first bad
field, so a view answers 400 with {"error", "field"} and never a 500 for bad
input. Values go through the same conversion rules the databases use
(adapters.convert), so anything that passes here is storable on both sides:
no NUL bytes, no lone surrogates, no NaN, no inexact numbers, real dates.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from adapters.convert import REASONS, Kind, Rejected, dump_json, parse_json, to_postgres

BIGINT_MAX = 2**63 - 1
MAX_OBJECT_BYTES = 16_384
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
_QUERY_INTEGER = re.compile(r"[+-]?\d{1,19}", re.ASCII)


class Invalid(ValueError):
    """Bad input: `field` names the field (None: the request as a whole)."""

    def __init__(self, message: str, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    kind: str
    required: bool = False
    nullable: bool = True
    low: float | None = None
    high: float | None = None
    low_exclusive: bool = False
    min_length: int = 0
    max_length: int = 200
    choices: tuple[str, ...] | None = None
    pattern: re.Pattern | None = None
    pattern_text: str = ""


def text(name: str, **kw: Any) -> Field:
    return Field(name, "text", **kw)


def integer(name: str, **kw: Any) -> Field:
    return Field(name, "integer", **kw)


def real(name: str, **kw: Any) -> Field:
    return Field(name, "real", **kw)


def day(name: str, **kw: Any) -> Field:
    return Field(name, "date", **kw)


def document(name: str, **kw: Any) -> Field:
    return Field(name, "object", **kw)


def flag(name: str, **kw: Any) -> Field:
    return Field(name, "boolean", **kw)


def _reason(error: Rejected) -> str:
    return REASONS.get(error.reason, error.reason)


def _check_text(spec: Field, value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"{spec.name} must be a string", spec.name)
    try:
        to_postgres(Kind.TEXT, value)
    except Rejected as error:
        if error.reason == "nul_byte_in_text":
            raise Invalid(f"{spec.name} must not contain NUL bytes", spec.name) from None
        raise Invalid(f"{spec.name} must be valid UTF-8 text", spec.name) from None
    if len(value) < spec.min_length:
        if spec.min_length == 1:
            raise Invalid(f"{spec.name} must not be empty", spec.name)
        raise Invalid(f"{spec.name} must be at least {spec.min_length} characters", spec.name)
    if len(value) > spec.max_length:
        raise Invalid(f"{spec.name} must be at most {spec.max_length} characters", spec.name)
    if spec.choices is not None and value not in spec.choices:
        raise Invalid(f"{spec.name} must be one of: {', '.join(spec.choices)}", spec.name)
    if spec.pattern is not None and not spec.pattern.fullmatch(value):
        raise Invalid(f"{spec.name} must be {spec.pattern_text}", spec.name)
    return value


def _check_range(spec: Field, value: float) -> None:
    low, high = spec.low, spec.high
    if low is not None and (value <= low if spec.low_exclusive else value < low):
        raise Invalid(
            f"{spec.name} must be {'greater than' if spec.low_exclusive else 'at least'} {low:g}", spec.name
        )
    if high is not None and value > high:
        raise Invalid(f"{spec.name} must be at most {high:g}", spec.name)


def _check_integer(spec: Field, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"{spec.name} must be an integer", spec.name)
    if not -BIGINT_MAX - 1 <= value <= BIGINT_MAX:
        raise Invalid(f"{spec.name} is out of range", spec.name)
    _check_range(spec, value)
    return value


def _check_real(spec: Field, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"{spec.name} must be a number", spec.name)
    if isinstance(value, float) and not math.isfinite(value):
        raise Invalid(f"{spec.name} must be a finite number", spec.name)
    try:
        number = to_postgres(Kind.REAL, value)
    except Rejected:
        raise Invalid(f"{spec.name} is out of range", spec.name) from None
    _check_range(spec, number)
    return number


def _check_date(spec: Field, value: Any):
    if not isinstance(value, str):
        raise Invalid(f"{spec.name} must be a date 'YYYY-MM-DD'", spec.name)
    try:
        return to_postgres(Kind.DATE, value)
    except Rejected as error:
        if error.reason == "impossible_date":
            raise Invalid(f"{spec.name} is not a real date", spec.name) from None
        raise Invalid(f"{spec.name} must be a date 'YYYY-MM-DD'", spec.name) from None


def _check_object(spec: Field, value: Any) -> dict:
    if not isinstance(value, dict):
        raise Invalid(f"{spec.name} must be a JSON object", spec.name)
    try:
        checked = to_postgres(Kind.JSON, value)
        size = len(dump_json(checked).encode("utf-8"))
    except Rejected as error:
        raise Invalid(f"{spec.name} cannot be stored: {_reason(error)}", spec.name) from None
    except (ValueError, RecursionError):
        raise Invalid(f"{spec.name} cannot be stored as JSON", spec.name) from None
    if size > MAX_OBJECT_BYTES:
        raise Invalid(f"{spec.name} must be at most {MAX_OBJECT_BYTES} bytes of JSON", spec.name)
    return checked


def _check_boolean(spec: Field, value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"{spec.name} must be true or false", spec.name)
    return value


_CHECKS = {
    "text": _check_text,
    "integer": _check_integer,
    "real": _check_real,
    "date": _check_date,
    "object": _check_object,
    "boolean": _check_boolean,
}


def check(spec: Field, value: Any) -> Any:
    """One value of one field, as the repositories take it (or Invalid)."""
    if value is None:
        if not spec.nullable:
            raise Invalid(f"{spec.name} must not be null", spec.name)
        return None
    return _CHECKS[spec.kind](spec, value)


def validate(body: Any, fields: Sequence[Field], *, partial: bool = False) -> dict[str, Any]:
    """The fields of a JSON object body; `partial` (PATCH): only those given, at least one."""
    if not isinstance(body, dict):
        raise Invalid("the request body must be a JSON object")
    known = {spec.name: spec for spec in fields}
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise Invalid(f"unknown field {unknown[0]!r}; allowed: {', '.join(known)}", unknown[0])
    values: dict[str, Any] = {}
    for spec in fields:
        if spec.name not in body:
            if spec.required and not partial:
                raise Invalid(f"{spec.name} is required", spec.name)
            continue
        values[spec.name] = check(spec, body[spec.name])
    if partial and not values:
        raise Invalid(f"nothing to change; give one or more of: {', '.join(known)}")
    return values


def parse_body(data: bytes) -> Any:
    """The JSON document of a request body (strict: the project's one JSON reader)."""
    if not data.strip():
        raise Invalid("the request body is empty; send a JSON object")
    try:
        text_ = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("malformed JSON: the request body is not UTF-8") from None
    try:
        return parse_json(text_)
    except Rejected as error:
        if error.reason in ("nul_byte_in_json", "lone_surrogate_in_json"):
            # Well-formed JSON with a string no database can store: parse it plainly so the
            # field checks can name the field that holds it.
            return json.loads(text_)
        raise Invalid(f"malformed JSON: {_reason(error)}") from None


def _query_value(spec: Field, raw: str) -> Any:
    if spec.kind == "integer":
        if not _QUERY_INTEGER.fullmatch(raw):
            raise Invalid(f"{spec.name} must be an integer", spec.name)
        return check(spec, int(raw))
    return check(spec, raw)


def validate_query(args: Mapping[str, Any], fields: Sequence[Field]) -> dict[str, Any]:
    """Query-string parameters (a werkzeug MultiDict): known names, each at most once."""
    known = {spec.name: spec for spec in fields}
    values: dict[str, Any] = {}
    for name in args:
        if name not in known:
            raise Invalid(f"unknown parameter {name!r}; allowed: {', '.join(known)}", name)
        given = args.getlist(name) if hasattr(args, "getlist") else [args[name]]
        if len(given) > 1:
            raise Invalid(f"{name} is given more than once", name)
        values[name] = _query_value(known[name], given[0])
    return values


PAGE = (
    integer("after", low=0, high=BIGINT_MAX),
    integer("limit", low=1, high=MAX_LIMIT),
)

USERNAME = re.compile(r"[A-Za-z0-9_.-]+", re.ASCII)
EMAIL = re.compile(r"[^@\s]+@[^@\s]+", re.UNICODE)
URL = re.compile(r"https?://\S+", re.IGNORECASE)

USER = (
    text("username", required=True, nullable=False, min_length=3, max_length=64,
         pattern=USERNAME, pattern_text="letters, digits, '_', '.' or '-'"),
    text("email", required=True, nullable=False, min_length=3, max_length=254,
         pattern=EMAIL, pattern_text="an e-mail address"),
    text("password", required=True, nullable=False, min_length=8, max_length=1024),
)
LOGIN = (
    text("username", required=True, nullable=False, min_length=1, max_length=64),
    text("password", required=True, nullable=False, min_length=1, max_length=1024),
)

RACE_STATUSES = ("scheduled", "running", "finished", "cancelled")
RACE = (
    text("race_name", required=True, nullable=False, min_length=1, max_length=200),
    day("race_date"),
    text("track_name", max_length=200),
    text("race_type", max_length=100),
    real("distance", low=0, low_exclusive=True, high=100_000),
    text("surface", max_length=50),
    real("prize_money", low=0, high=1e12),
    document("weather_conditions"),
    text("status", nullable=False, choices=RACE_STATUSES),
)
RACE_FILTERS = (
    day("date"),
    text("track", max_length=200),
    text("status", choices=RACE_STATUSES),
    *PAGE,
)

HORSE = (
    text("horse_name", required=True, nullable=False, min_length=1, max_length=200),
    integer("age", low=0, high=50),
    real("weight", low=0, low_exclusive=True, high=2_000),
    text("jockey", max_length=200),
    text("trainer", max_length=200),
    text("owner", max_length=200),
    text("form", max_length=100),
)
HORSE_FILTERS = (text("name", min_length=1, max_length=200), *PAGE)

RUNNER = (
    integer("post_position", low=1, high=100),
    real("odds", low=0, low_exclusive=True, high=1_000_000),
    integer("finish_position", low=1, high=100),
)

PREDICTION = (
    integer("race_id", required=True, nullable=False, low=1, high=BIGINT_MAX),
    integer("horse_id", required=True, nullable=False, low=1, high=BIGINT_MAX),
    real("prediction_value", low=-1e9, high=1e9),
    real("confidence", low=0, high=1),
    text("algorithm_version", max_length=100),
    document("features"),
)

CREDENTIAL = (
    text("service_name", required=True, nullable=False, min_length=1, max_length=100),
    text("api_key", required=True, nullable=False, min_length=1, max_length=1000),
    text("api_secret", max_length=1000),
    text("endpoint_url", max_length=2000, pattern=URL, pattern_text="an http:// or https:// URL"),
    flag("is_active", nullable=False),
)

