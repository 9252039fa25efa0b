"""Response headers of the layer's pages and API: never framed, never sniffed, secrets never cached.

Each blueprint of the layer (API, sessions, dashboard, metrics) adds `hardened`
to its responses; the views that answer with a secret, a session or a CSRF
token add `no_store` (the dashboard: every page). The app's own pages are left
as the app sets them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Response, make_response

HARDENED = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


def hardened(response: Response) -> Response:
    for name, value in HARDENED.items():
        response.headers.setdefault(name, value)
    return response


def uncached(response: Response) -> Response:
    """Neither the browser nor a proxy keeps this response."""
    response.headers["Cache-Control"] = "no-store"
    return response


def no_store(view: Callable) -> Callable:
    @functools.wraps(view)
    def uncached_view(*args: Any, **kwargs: Any) -> Response:
        return uncached(make_response(view(*args, **kwargs)))

    return uncached_view
