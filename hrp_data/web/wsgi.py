"""The WSGI entry: `make_app()` configures logging once for the process and builds the app.

waitress (what `hrp-cutover serve` runs):  waitress-serve --call hrp_data.web.wsgi:make_app
gunicorn:                                  gunicorn 'hrp_data.web.wsgi:make_app()'

No app exists at import: the factory builds it, and the app builds its Cutover
on the first request, in each worker process.
"""

from __future__ import annotations

import threading

from flask import Flask

from hrp_data.logs import configure_logging
from hrp_data.settings import Settings

_configured = threading.Event()


def configure_once(settings: Settings) -> None:
    """Configure logging for this process unless it already was (by this entry or the CLI)."""
    if not _configured.is_set():
        configure_logging(settings.log_format, settings.log_level)
        _configured.set()


def make_app(settings: Settings | None = None, *, configure_logs: bool = True) -> Flask:
    from hrp_data.web import create_app

    settings = settings or Settings.from_env()
    if configure_logs:
        configure_once(settings)
    else:
        _configured.set()
    return create_app(settings)
