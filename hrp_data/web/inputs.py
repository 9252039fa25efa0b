"""The request's input, validated: the JSON body and the query string."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask import request

from hrp_data.web.errors import ApiError
from hrp_data.web.validation import DEFAULT_LIMIT, Field, parse_body, validate, validate_query


def json_body(fields: Sequence[Field], *, partial: bool = False) -> dict[str, Any]:
    """The body as validated field values; 415 unless it is sent as application/json."""
    if request.mimetype != "application/json":
        raise ApiError(415, "send the body as JSON with Content-Type: application/json")
    return validate(parse_body(request.get_data(cache=True)), fields, partial=partial)


def query(fields: Sequence[Field]) -> dict[str, Any]:
    """The query-string parameters as validated values (limit defaults to DEFAULT_LIMIT)."""
    values = validate_query(request.args, fields)
    if any(spec.name == "limit" for spec in fields):
        values.setdefault("limit", DEFAULT_LIMIT)
        values.setdefault("after", None)
    return values
