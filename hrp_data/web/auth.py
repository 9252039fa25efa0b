"""Users and sessions: register, log in and out (Flask's signed session cookie), and the guards.

POST /api/users {username, email, password}      -> 201, the user (no hash)
POST /api/session {username, password}           -> 200 and the session cookie
DELETE /api/session                              -> 204

Too many failed logins for an account or from an address, or too many registrations from an
address, answer 429 with Retry-After (hrp_data.web.throttle). A taken username and a taken
email get the same 409.

Registering honours an Idempotency-Key; logging in and out are repeatable as they are
(a stored answer could not carry the session cookie), so the header is ignored there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Blueprint, jsonify

from hrp_data.web import errors, services, throttle
from hrp_data.web.headers import hardened, no_store
from hrp_data.web.errors import ApiError
from hrp_data.web.extension import current_cutover, current_settings
from hrp_data.web.idempotent import idempotent
from hrp_data.web.inputs import json_body
from hrp_data.web.serialize import public
from hrp_data.web.session_user import current_user, log_in, log_out
from hrp_data.web.validation import LOGIN, USER

bp = Blueprint("hrp_auth", __name__, url_prefix="/api")
errors.install(bp)
bp.after_request(hardened)


def login_required(view: Callable) -> Callable:
    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any):
        if current_user() is None:
            raise ApiError(401, "log in first: POST /api/session")
        return view(*args, **kwargs)

    return guarded


def admin_required(view: Callable) -> Callable:
    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any):
        user = current_user()
        if user is None:
            raise ApiError(401, "log in first: POST /api/session")
        if not services.is_admin(user):
            raise ApiError(403, "this needs an admin")
        return view(*args, **kwargs)

    return guarded


def counted_registration(view: Callable) -> Callable:
    """A well-formed registration counts against the client address before the view's
    Idempotency-Key transaction opens (both write the SQLite file)."""

    @functools.wraps(view)
    def counted(*args: Any, **kwargs: Any):
        json_body(USER)  # a malformed body is a 400, not an attempt
        throttle.count_registration(current_cutover, current_settings, throttle.client_address())
        return view(*args, **kwargs)

    return counted


@bp.post("/users")
@counted_registration
@idempotent
def register():
    fields = json_body(USER)
    user = services.register_user(current_cutover, hashing=throttle.hashing(current_settings), **fields)
    return jsonify(public(user)), 201


@bp.post("/session")
@no_store
def login():
    fields = json_body(LOGIN)
    user = throttle.login(current_cutover, current_settings, fields["username"], fields["password"], throttle.client_address())
    if user is None:
        raise ApiError(401, "wrong username or password")
    log_in(user)
    return jsonify({"user": public(user)}), 200


@bp.delete("/session")
@no_store
def logout():
    log_out()
    return "", 204
