"""Holds a request's shadow samples until its response has gone out: the WSGI layer of shadow reads.

A shadowed read's candidate runs on a background worker. Handing it over
wakes that worker, and a woken worker competes with the request for the CPU
(and, in this process, for the interpreter lock). So the whole HTTP request,
not only its unit of work, is one `Laboratory.serving()` span: the samples of
its reads are queued only when the server closes the response (WSGI
`close()`, called once the body has been written), so the caller has its
answer before any shadow work starts. A request that fails before it has a
response ends the span at once. A span whose response was never closed (a
test client's response left open, an abandoned stream) ends when the next
request starts on the same thread: a WSGI thread serves one request at a time.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.wsgi import ClosingIterator


class HoldShadowSamples:
    """WSGI middleware: `app.wsgi_app = HoldShadowSamples(app.wsgi_app, lambda: cutover.shadow.lab)`.

    `laboratory` is called per request; None (the process's Cutover is not built yet)
    serves the request without a span, exactly as before.
    """

    def __init__(self, wsgi_app: Callable, laboratory: Callable[[], Any]):
        self.wsgi_app = wsgi_app
        self.laboratory = laboratory
        self._open = threading.local()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        self._end()
        laboratory = self.laboratory()
        if laboratory is None:
            return self.wsgi_app(environ, start_response)
        span = contextlib.ExitStack()
        span.enter_context(laboratory.serving())
        self._open.span = span
        try:
            body = self.wsgi_app(environ, start_response)
        except BaseException:
            self._end()
            raise
        return ClosingIterator(body, self._end)

    def _end(self) -> None:
        span = getattr(self._open, "span", None)
        if span is not None:
            self._open.span = None
            span.close()
