"""Errors as JSON: {"error": "...", "field": "<name>"} with the right status, never a stack trace.

Bad input is 400 (with the field), unknown ids 404, a taken name 409, auth
401/403, too many attempts 429 (with Retry-After). A value a database refuses anyway is a 400 too; a database that is
down, a pool with no connection free (after a bounded wait) or a phase still
moving is 503. Anything else is logged without values
(describe_error) and answered with a bare 500.
"""

from __future__ import annotations

import sqlalchemy as sa
import structlog
from flask import Blueprint, Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from adapters.convert import Rejected
from hrp_data.cutover.dual_write import PhaseUnsettled
from hrp_data.errors import describe_error
from hrp_data.repositories import UnknownField
from hrp_data.web import services
from hrp_data.web.throttle import HashingBusy, Throttled
from hrp_data.web.validation import Invalid

log = structlog.get_logger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def error_response(status: int, message: str, field: str | None = None, headers: dict | None = None):
    response = jsonify({"error": message, "field": field})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _api_error(error: ApiError):
    return error_response(error.status, error.message, error.field)


def _invalid(error: Invalid):
    return error_response(error.status, error.message, error.field)


def _not_found(error: services.NotFound):
    return error_response(404, str(error), error.field)


def _conflict(error: services.Conflict):
    return error_response(409, str(error), error.field)


def _forbidden(error: services.Forbidden):
    return error_response(403, str(error))


def _unknown_field(error: UnknownField):
    return error_response(400, str(error))


def _statement_error(error: sa.exc.StatementError):
    if isinstance(error.orig, Rejected):
        return error_response(400, describe_error(error))
    if isinstance(error, sa.exc.IntegrityError):
        return error_response(409, describe_error(error))
    if isinstance(error, sa.exc.OperationalError):
        log.warning("api.database_unavailable", path=request.path, error=describe_error(error))
        return error_response(503, "database unavailable; retry shortly", headers={"Retry-After": "2"})
    return _unexpected(error)


def _pool_exhausted(error: sa.exc.TimeoutError):
    """Every connection of this process's pool stayed busy for HRP_POSTGRES_POOL_TIMEOUT seconds."""
    log.warning("api.pool_exhausted", path=request.path, error=describe_error(error))
    return error_response(503, "no database connection free; retry shortly", headers={"Retry-After": "1"})


def _unsettled(error: PhaseUnsettled):
    return error_response(503, str(error), headers={"Retry-After": "1"})


def _throttled(error: Throttled):
    return error_response(429, str(error), headers={"Retry-After": str(error.retry_after)})


def _hashing_busy(error: HashingBusy):
    log.warning("api.hashing_busy", path=request.path)
    return error_response(503, "busy; retry shortly", headers={"Retry-After": "1"})


def _unexpected(error: Exception):
    if isinstance(error, HTTPException):
        return http_error(error)
    log.error("api.error", path=request.path, method=request.method, error=describe_error(error))
    return error_response(500, "internal error")


def http_error(error: HTTPException):
    return error_response(error.code or 500, error.description or error.name)


def install(blueprint: Blueprint) -> None:
    """JSON error handlers for the views of an API blueprint."""
    handlers = [
        (ApiError, _api_error),
        (Invalid, _invalid),
        (services.NotFound, _not_found),
        (services.Conflict, _conflict),
        (services.Forbidden, _forbidden),
        (UnknownField, _unknown_field),
        (PhaseUnsettled, _unsettled),
        (Throttled, _throttled),
        (HashingBusy, _hashing_busy),
        (sa.exc.TimeoutError, _pool_exhausted),
        (sa.exc.StatementError, _statement_error),
        (HTTPException, http_error),
        (Exception, _unexpected),
    ]
    for kind, handler in handlers:
        blueprint.register_error_handler(kind, handler)


def install_app_fallback(app: Flask, prefix: str = "/api/") -> None:
    """404/405 for URLs under the API that match no view are JSON too; other paths are untouched."""

    def handler(error: HTTPException):
        if request.path.startswith(prefix):
            return http_error(error)
        return error

    app.register_error_handler(404, handler)
    app.register_error_handler(405, handler)
