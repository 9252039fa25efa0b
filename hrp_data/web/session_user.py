"""Who is logged in: the user id kept in the Flask session, read once per request.

Used by the auth guards and views (hrp_data.web.auth), the dashboard's login
(hrp_data.web.admin) and the Idempotency-Key scope (hrp_data.web.idempotent).
"""

from __future__ import annotations

from typing import Any

from flask import g, session

from hrp_data.web import services
from hrp_data.web.extension import current_cutover

SESSION_USER = "hrp_user_id"


def current_user() -> dict[str, Any] | None:
    """The logged-in user of this request (read once per request), or None."""
    if "hrp_user" not in g:
        user_id = session.get(SESSION_USER)
        g.hrp_user = services.get_user(current_cutover, user_id) if isinstance(user_id, int) else None
    return g.hrp_user


def log_in(user: dict[str, Any]) -> None:
    session.clear()  # a fresh session: no fixation across a login
    session[SESSION_USER] = user["id"]
    g.hrp_user = user


def log_out() -> None:
    session.clear()
    g.hrp_user = None
