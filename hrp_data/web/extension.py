"""HrpCutover: the Flask extension that gives request handlers the units of work of the current phase.

    cutover = HrpCutover()
    cutover.init_app(app)                 # settings: HRP_* from app.config, then the environment
    ...
    with current_cutover.writing() as uow:  # the current primary; commit() once
        uow.races.add(race_name="Derby"); uow.commit()
    with current_cutover.reading() as uow:  # the current read source
        uow.races.list(track="Ascot")

One `Cutover` (both engines, the phase record, the applier thread) per
process and app, built on first use (never at import or in init_app, so a
pre-forking server builds it in each worker) and closed at exit. Each request
is one shadow-read span (hrp_data.web.shadow_hold): its shadow samples reach
the workers once the server has closed the response. The Flask
session is signed with HRP_SECRET_KEY, or with the app's own secret key (in
production one of them is required, 32+ characters); only with
HRP_ENV=development, without either, with a random key kept in the SQLite file
(table hrp_cutover_app_secret), so every worker on the file shares it.
"""

from __future__ import annotations

import atexit
import os
import secrets
import threading
from typing import Any

from flask import Flask, current_app
from flask.sessions import SecureCookieSessionInterface
from werkzeug.local import LocalProxy

from adapters.binds import writing
from hrp_data.cutover.dual_write import Cutover
from hrp_data.cutover.assemble import open_cutover
from hrp_data.settings import Settings
from hrp_data.verify.run import carry_gap
from hrp_data.web.session_versions import SessionVersions
from hrp_data.web.shadow_hold import HoldShadowSamples

EXTENSION = "hrp_cutover"
SECRET_TABLE = "hrp_cutover_app_secret"


def file_secret(sqlite_engine) -> str:
    """The app secret kept in the SQLite file, made on first use (all workers share it)."""
    with writing(sqlite_engine) as connection:
        connection.exec_driver_sql(
            f"CREATE TABLE IF NOT EXISTS {SECRET_TABLE} (id INTEGER PRIMARY KEY CHECK (id = 1),"
            " secret TEXT NOT NULL, created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        )
        connection.exec_driver_sql(
            f"INSERT OR IGNORE INTO {SECRET_TABLE} (id, secret) VALUES (1, ?)", (secrets.token_hex(32),)
        )
        return connection.exec_driver_sql(f"SELECT secret FROM {SECRET_TABLE} WHERE id = 1").scalar_one()


class CutoverState:
    """What the extension keeps per app: the settings and, once used, the process's Cutover."""

    def __init__(self, settings: Settings, *, applier: bool = True):
        self.settings = settings
        self.applier = applier
        self._cutover: Cutover | None = None
        self._secret: str | None = None
        self._sessions: SessionVersions | None = None
        self.db: Any = None
        """The app's flask_sqlalchemy.SQLAlchemy whose sessions follow the phase (None: none)."""
        self._lock = threading.Lock()
        self._pid = os.getpid()

    @property
    def cutover(self) -> Cutover:
        if self._cutover is None or self._pid != os.getpid():
            with self._lock:
                if self._cutover is None or self._pid != os.getpid():
                    self._pid = os.getpid()
                    self._cutover = open_cutover(self.settings, carry=carry_gap)
                    if self.applier:
                        self._cutover.start()
                    atexit.register(self.close)
        return self._cutover

    def laboratory(self):
        """The shadow laboratory of this process's Cutover once it is built (None before)."""
        cutover = self._cutover
        return cutover.shadow.lab if cutover is not None and self._pid == os.getpid() else None

    @property
    def sessions(self) -> SessionVersions:
        """The users' session versions, in the SQLite file of this process's Cutover."""
        sqlite = self.cutover.sqlite
        if self._sessions is None or self._sessions.engine is not sqlite:
            self._sessions = SessionVersions(sqlite)
        return self._sessions

    def secret_key(self) -> str:
        if self._secret is None:
            self._secret = file_secret(self.cutover.sqlite)
        return self._secret

    def close(self) -> None:
        with self._lock:
            cutover, self._cutover = self._cutover, None
        if cutover is not None:
            cutover.close()


class _FileKeySessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, keyed by the secret in the SQLite file when none is set."""

    def get_signing_serializer(self, app: Flask):
        if not app.secret_key:
            app.secret_key = app.extensions[EXTENSION].secret_key()
        return super().get_signing_serializer(app)


def _settings_for(app: Flask, defaults: dict[str, str] | None = None) -> Settings:
    """HRP_* keys of app.config win over the environment, which wins over `defaults`."""
    env: dict[str, str] = dict(defaults or {})
    env.update(os.environ)
    env.update({k: str(v) for k, v in app.config.items() if k.startswith("HRP_") and v is not None})
    return Settings.from_env(env)


class HrpCutover:
    """The Flask extension (works with app factories: state lives in app.extensions)."""

    def __init__(self, app: Flask | None = None, settings: Settings | None = None, **kw: Any):
        if app is not None:
            self.init_app(app, settings, **kw)

    def init_app(
        self, app: Flask, settings: Settings | None = None, *, applier: bool = True, db: Any = None
    ) -> CutoverState:
        """`db`: the app's flask_sqlalchemy.SQLAlchemy; its db.session then follows the phase
        (hrp_data.web.integration), and HRP_SQLITE_URL defaults to its SQLALCHEMY_DATABASE_URI."""
        if EXTENSION in app.extensions:
            raise RuntimeError("HrpCutover is already initialised on this app; call init_app once")
        defaults = {}
        if db is not None:
            from hrp_data.web import integration

            defaults["HRP_SQLITE_URL"] = integration.database_url(app, db)
        settings = (settings or _settings_for(app, defaults)).validated()
        state = CutoverState(settings, applier=applier)
        if db is not None:
            integration.route_sessions(app, db, state)
        app.extensions[EXTENSION] = state
        app.wsgi_app = HoldShadowSamples(app.wsgi_app, state.laboratory)
        key = settings.session_key(app.secret_key)  # production: HRP_SECRET_KEY or the app's, else SettingsError
        if key:
            app.secret_key = key
        else:
            app.session_interface = _FileKeySessionInterface()
        app.permanent_session_lifetime = settings.session_lifetime
        if settings.session_cookie_secure:
            app.config["SESSION_COOKIE_SECURE"] = True
        return state

    @staticmethod
    def state(app: Flask | None = None) -> CutoverState:
        app = app or current_app
        try:
            return app.extensions[EXTENSION]
        except KeyError:
            raise RuntimeError(
                "HrpCutover is not initialised on this app: call HrpCutover().init_app(app) in your app factory"
            ) from None


def _current_cutover() -> Cutover:
    return HrpCutover.state().cutover


def _current_settings() -> Settings:
    return HrpCutover.state().settings


current_cutover: Cutover = LocalProxy(_current_cutover)  # type: ignore[assignment]
"""The Cutover of the current app (inside a request or app context)."""

current_settings: Settings = LocalProxy(_current_settings)  # type: ignore[assignment]
