"""The `Idempotency-Key` request header on the API's write endpoints (`@idempotent`).

A write sent with a key runs in one transaction on the primary
(`Cutover.one_transaction()`): claim the key, run the view, store the
response, commit. A repeat of the same key by the same user gets the stored
response (status and body, header `Idempotent-Replayed: true`) and writes
nothing; the same key with another request (method, path or body) is a 422.
A repeat sent while the first is still running waits for it and then gets its
response. Only 2xx answers are stored: an error rolls everything back, so the
repeat simply runs again. Stored bodies lose their secret fields (an API
key and secret are shown once, at creation, never replayed). Without the
header a write runs as before. See hrp_data.cutover.idempotency for the store.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from flask import Response, current_app, make_response, request

from hrp_data.cutover import idempotency
from hrp_data.models import SECRET_COLUMNS
from hrp_data.web.errors import ApiError
from hrp_data.web.extension import HrpCutover, current_cutover
from hrp_data.web.session_user import current_user

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"


def idempotent(view: Callable) -> Callable:
    """Honour an Idempotency-Key on this write view (put it below the auth guard)."""

    @functools.wraps(view)
    def keyed(*args: Any, **kwargs: Any):
        raw = request.headers.get(HEADER)
        if raw is None:
            return view(*args, **kwargs)
        try:
            key = idempotency.check_key(raw)
        except idempotency.BadKey as error:
            raise ApiError(400, str(error), HEADER) from None
        user = current_user()
        scope = f"user:{user['id']}" if user else "anonymous"
        print_ = idempotency.fingerprint(
            _secret(), method=request.method, path=request.path, scope=scope, body=request.get_data(cache=True)
        )
        with current_cutover.one_transaction() as uow:
            connection = uow.session.connection()
            stored = idempotency.claim(connection, scope, key, print_)
            if stored is not None:
                if stored.fingerprint != print_:
                    raise ApiError(422, f"this {HEADER} was already used with another request; use a new key", HEADER)
                return _replay(stored)
            response = make_response(view(*args, **kwargs))
            if not 200 <= response.status_code < 300:
                return response
            idempotency.record(connection, scope, key, response.status_code, _storable(response))
            uow.commit()
        return response

    return keyed


def _secret() -> bytes:
    secret = current_app.secret_key or HrpCutover.state().secret_key()
    return secret if isinstance(secret, bytes) else str(secret).encode()


def _storable(response: Response) -> str:
    """The body to keep: a JSON object loses its secret fields."""
    body = response.get_data(as_text=True)
    if not body:
        return ""
    document = json.loads(body)
    if isinstance(document, dict):
        document = {k: v for k, v in document.items() if k not in SECRET_COLUMNS}
    return json.dumps(document, separators=(",", ":"))


def _replay(stored: idempotency.Stored) -> Response:
    if stored.body:
        response = Response(stored.body, status=stored.status, mimetype="application/json")
    else:
        response = Response(status=stored.status)
    response.headers[REPLAYED] = "true"
    return response
