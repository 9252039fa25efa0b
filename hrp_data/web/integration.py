"""A Flask-SQLAlchemy app's own `db.session` follows the cutover.

    db = SQLAlchemy()                      # the app's, unchanged
    db.init_app(app)
    HrpCutover().init_app(app, db=db)      # after db.init_app

From then on `db.session` (models, `db.session.get`, `select()`, `Model.query`,
`db.session.execute(text(...))`) runs on the current primary through the
cutover's write gate (hrp_data.cutover.routing). The app keeps its
`SQLALCHEMY_DATABASE_URI`; the cutover's SQLite file defaults to it (and must
be the same file when HRP_SQLITE_URL is set too). Models of other bind keys
(SQLALCHEMY_BINDS) are left on their own engines.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, current_app, has_app_context
from sqlalchemy.engine import make_url

from hrp_data.cutover.routing import RoutingSession, SessionRouting, routing_for

EXTENSION = "hrp_cutover"


class FlaskRoutingSession(RoutingSession):
    """Mixed in before the app's Flask-SQLAlchemy Session class."""

    def hrp_routing(self) -> SessionRouting | None:
        if not has_app_context():
            return None
        state = current_app.extensions.get(EXTENSION)
        if state is None or getattr(state, "db", None) is not getattr(self, "_db", None):
            return None
        return routing_for(state.cutover)

    def _hrp_routes(self, mapper, clause, **kw: Any) -> bool:
        chosen = super(RoutingSession, self).get_bind(mapper=mapper, clause=clause, **kw)
        return chosen is self._db.engines.get(None)


def database_url(app: Flask, db: Any) -> str:
    """The SQLite URL Flask-SQLAlchemy uses for the app's default bind (relative paths resolved as it does)."""
    if "sqlalchemy" not in app.extensions:
        raise RuntimeError("call db.init_app(app) before HrpCutover().init_app(app, db=db)")
    with app.app_context():
        url = db.engine.url
    if url.get_backend_name() != "sqlite":
        raise RuntimeError(
            f"HrpCutover(db=...) moves an app from SQLite: SQLALCHEMY_DATABASE_URI is {url.get_backend_name()},"
            " set it to the legacy SQLite file"
        )
    return url.render_as_string(hide_password=False)


def same_file(left: str, right: str) -> bool:
    a, b = make_url(left).database or "", make_url(right).database or ""
    return os.path.realpath(a) == os.path.realpath(b)


def route_sessions(app: Flask, db: Any, state: Any) -> None:
    """Make `db.session` a routing session for this app (other apps on the same `db` are left as they are)."""
    url = database_url(app, db)
    if not same_file(url, state.settings.sqlite_url):
        raise RuntimeError(
            "HRP_SQLITE_URL and SQLALCHEMY_DATABASE_URI name different files; leave HRP_SQLITE_URL unset"
            " (it defaults to SQLALCHEMY_DATABASE_URI) or point both at the legacy file"
        )
    state.db = db
    factory = db.session.session_factory
    if not issubclass(factory.class_, FlaskRoutingSession):
        base = factory.class_
        factory.class_ = type(f"HrpRouting{base.__name__}", (FlaskRoutingSession, base), {})
