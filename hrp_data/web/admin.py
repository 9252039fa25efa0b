"""The cutover dashboard (server-rendered HTML, admins only) and its login form.

GET  /admin/login, POST /admin/login, POST /admin/logout
GET  /admin/cutover                the page; it refreshes itself from:
GET  /admin/cutover/status.json    the same data plus each section rendered
POST /admin/cutover/move           flip / rollback: CSRF token, then the CLI's preflight
"""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from flask import (
    Blueprint,
    flash,
    get_template_attribute,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from hrp_data.cutover.dual_write import PhaseUnsettled
from hrp_data.errors import describe_error
from hrp_data.flip.move import DrainFailed
from hrp_data.cutover.phase_store import PhaseConflict
from hrp_data.cutover.phases import MoveRefused, parse_phase
from hrp_data.flip.readiness import NotReady
from hrp_data.settings import SettingsError
from hrp_data.web import dashboard, services, throttle
from hrp_data.web.errors import error_response
from hrp_data.web.extension import current_cutover, current_settings
from hrp_data.web.headers import hardened, uncached
from hrp_data.web.session_user import current_user, log_in, log_out
from hrp_data.web.validation import LOGIN, Invalid, check

bp = Blueprint("hrp_admin", __name__, url_prefix="/admin", template_folder="templates")
bp.after_request(hardened)
bp.after_request(uncached)  # every page carries a CSRF token, the status or a session

CSRF_KEY = "hrp_csrf"
SECTIONS = ("phase", "outbox", "workers", "backfill", "verify", "shadow", "readiness")
REFRESH_MS = 3000


def csrf_token() -> str:
    """This session's CSRF token (made on first use)."""
    token = session.get(CSRF_KEY)
    if not isinstance(token, str):
        token = session[CSRF_KEY] = secrets.token_urlsafe(32)
    return token


def _csrf_ok() -> bool:
    sent = request.form.get("csrf_token", "")
    expected = session.get(CSRF_KEY)
    return isinstance(expected, str) and hmac.compare_digest(sent.encode(), expected.encode())


def _refuse_csrf():
    return render_template("hrp_message.html", title="Refused",
                           message="The form's CSRF token is missing or wrong: reload the page and try again."), 400


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/admin/") and not target.startswith("//"):
        return target
    return url_for("hrp_admin.cutover")


def admin_page(view: Callable) -> Callable:
    """HTML pages: to the login form when not logged in; 403 for a user who is not an admin."""

    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any):
        user = current_user()
        if user is None:
            return redirect(url_for("hrp_admin.login", next=request.path))
        if not services.is_admin(user):
            return render_template("hrp_message.html", title="Forbidden", message="The dashboard is for admins."), 403
        return view(*args, **kwargs)

    return guarded


@bp.get("/login")
def login():
    return render_template("hrp_login.html", csrf_token=csrf_token(), next=request.args.get("next", ""), error=None)


@bp.post("/login")
def login_submit():
    if not _csrf_ok():
        return _refuse_csrf()
    next_url = request.form.get("next", "")
    try:
        username = check(LOGIN[0], request.form.get("username", ""))
        password = check(LOGIN[1], request.form.get("password", ""))
    except Invalid as error:
        return render_template("hrp_login.html", csrf_token=csrf_token(), next=next_url, error=error.message), 400
    try:
        user = throttle.login(current_cutover, current_settings, username, password, throttle.client_address())
    except throttle.Throttled as error:
        page = render_template("hrp_login.html", csrf_token=csrf_token(), next=next_url, error=str(error).capitalize() + ".")
        return page, 429, {"Retry-After": str(error.retry_after)}
    except throttle.HashingBusy:
        page = render_template("hrp_login.html", csrf_token=csrf_token(), next=next_url, error="Busy; retry shortly.")
        return page, 503, {"Retry-After": "1"}
    if user is None or not services.is_admin(user):
        message = "Wrong username or password." if user is None else "The dashboard is for admins."
        return render_template("hrp_login.html", csrf_token=csrf_token(), next=next_url, error=message), 401
    log_in(user)
    return redirect(_safe_next(next_url), code=303)


@bp.post("/logout")
def logout():
    if not _csrf_ok():
        return _refuse_csrf()
    log_out()
    return redirect(url_for("hrp_admin.login"), code=303)


@bp.get("/cutover")
@admin_page
def cutover():
    data = dashboard.overview(current_cutover)
    return render_template(
        "hrp_cutover.html", o=data, sections=SECTIONS, csrf_token=csrf_token(), refresh_ms=REFRESH_MS,
        user=current_user(),
    )


@bp.get("/cutover/status.json")
def status_json():
    user = current_user()
    if user is None:
        return error_response(401, "log in first: /admin/login")
    if not services.is_admin(user):
        return error_response(403, "the dashboard is for admins")
    data = dashboard.overview(current_cutover)
    token = csrf_token()
    html = {
        f"section-{name}": get_template_attribute("hrp_sections.html", name)(data, token)
        for name in SECTIONS
    }
    return jsonify({"overview": data, "html": {k: str(v) for k, v in html.items()}})


@bp.post("/cutover/move")
@admin_page
def move():
    if not _csrf_ok():
        return _refuse_csrf()
    try:
        target = parse_phase(request.form.get("target", ""))
        accept = request.form.get("accept_quarantine") == "1"
        result = dashboard.move(current_cutover, target, by=current_user(), accept_quarantine=accept)
    except NotReady as refused:
        flash(str(refused), "error")
    except (MoveRefused, PhaseConflict, DrainFailed, PhaseUnsettled, SettingsError) as error:
        flash(str(error), "error")
    except sa.exc.SQLAlchemyError as error:
        flash(f"database unavailable: {describe_error(error)}", "error")
    else:
        flash(
            f"Moved {result.from_phase.value} -> {result.to_phase.value} (version {result.version});"
            f" writes held {result.hold_ms:.1f} ms; {result.drained} outbox changes drained.",
            "ok",
        )
    return redirect(url_for("hrp_admin.cutover"), code=303)
