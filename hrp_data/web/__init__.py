"""The HRP Flask app on the repository layer: a JSON API and the cutover dashboard.

`create_app(settings=None)` builds the app (settings default to the HRP_*
environment). The database work goes through the `HrpCutover` extension
(hrp_data.web.extension); `register_blueprints(app)` adds the API and the
dashboard to any app that has the extension, including the user's own.
"""

from __future__ import annotations

from flask import Flask
from werkzeug.routing import IntegerConverter

from hrp_data.settings import Settings
from hrp_data.web.extension import HrpCutover, current_cutover

__all__ = ["create_app", "register_blueprints", "HrpCutover", "current_cutover"]

MAX_BODY_BYTES = 256 * 1024


class IdConverter(IntegerConverter):
    """<hrp_id:name>: a positive id that fits a BIGINT (anything else is a 404, never a 500)."""

    def __init__(self, map, *args, **kwargs):  # noqa: A002 - werkzeug's signature
        super().__init__(map, min=1, max=2**63 - 1)


def register_blueprints(app: Flask, *, api: bool = True, dashboard: bool = True, metrics: bool = True) -> None:
    """Add the JSON API (/api), the cutover dashboard (/admin) and /metrics to an app with HrpCutover."""
    from hrp_data.web import admin, auth, errors
    from hrp_data.web import api as api_views

    HrpCutover.state(app)  # fails clearly if init_app has not run
    app.url_map.converters.setdefault("hrp_id", IdConverter)
    app.register_blueprint(auth.bp)
    if api:
        app.register_blueprint(api_views.bp)
    if dashboard:
        app.register_blueprint(admin.bp)
    if metrics:
        from hrp_data.web import metrics as metrics_view

        app.register_blueprint(metrics_view.bp)
    errors.install_app_fallback(app)


def create_app(settings: Settings | None = None, *, applier: bool = True) -> Flask:
    """The HRP app: settings from the environment unless given."""
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_NAME="hrp_session",
    )
    app.json.sort_keys = False
    HrpCutover().init_app(app, settings, applier=applier)
    register_blueprints(app)
    return app
