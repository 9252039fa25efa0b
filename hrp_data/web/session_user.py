"""Who is logged in: the user kept in the Flask session, read once per request.

The signed cookie holds the user id, when the session started, the user's
session version (hrp_data.web.session_versions) and a seal of the user's
password hash (an HMAC with the app's key). A cookie is a session only while
all of them hold: not older than HRP_SESSION_LIFETIME, not logged out since
(in any worker), and the password not changed since (by anybody).

Used by the auth guards and views (hrp_data.web.auth), the dashboard's login
(hrp_data.web.admin) and the Idempotency-Key scope (hrp_data.web.idempotent).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

from flask import current_app, g, session

from hrp_data.web import services
from hrp_data.web.extension import HrpCutover, current_cutover

SESSION_USER = "hrp_user_id"
SESSION_STARTED = "hrp_started"
SESSION_VERSION = "hrp_session_version"
SESSION_SEAL = "hrp_password_seal"


def current_user() -> dict[str, Any] | None:
    """The logged-in user of this request (read once per request), or None."""
    if "hrp_user" not in g:
        g.hrp_user = _session_user()
    return g.hrp_user


def _session_user() -> dict[str, Any] | None:
    user_id, started = session.get(SESSION_USER), session.get(SESSION_STARTED)
    if not isinstance(user_id, int) or not isinstance(started, (int, float)):
        return None
    state = HrpCutover.state()
    if time.time() - started > state.settings.session_lifetime:
        return None
    user = services.get_user(current_cutover, user_id)
    if user is None or session.get(SESSION_VERSION) != state.sessions.current(user_id):
        return None
    if not hmac.compare_digest(str(session.get(SESSION_SEAL, "")), _password_seal(user)):
        return None
    return user


def _password_seal(user: dict[str, Any]) -> str:
    key = current_app.secret_key
    key = key if isinstance(key, bytes) else str(key).encode()
    return hmac.new(key, str(user.get("password_hash") or "").encode(), hashlib.sha256).hexdigest()


def log_in(user: dict[str, Any]) -> None:
    session.clear()  # a fresh session: no fixation across a login
    session.permanent = True  # the browser drops the cookie after HRP_SESSION_LIFETIME too
    session[SESSION_USER] = user["id"]
    session[SESSION_STARTED] = round(time.time(), 3)
    session[SESSION_VERSION] = HrpCutover.state().sessions.current(user["id"])
    session[SESSION_SEAL] = _password_seal(user)
    g.hrp_user = user


def log_out() -> None:
    """End this session and every other session of the same user (in every worker)."""
    user = current_user()
    if user is not None:
        HrpCutover.state().sessions.end_all(user["id"])
    session.clear()
    g.hrp_user = None
