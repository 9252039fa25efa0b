"""GET /metrics: the cutover's numbers for Prometheus (hrp_data.cutover.metrics).

Protected like the dashboard: an admin's session, or `Authorization: Bearer
<HRP_METRICS_TOKEN>` for a scraper (Prometheus `authorization: {credentials: ...}`).
Without HRP_METRICS_TOKEN only an admin's session is let in.
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, request
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from hrp_data.cutover.metrics import exposition
from hrp_data.web import services
from hrp_data.web.auth import current_user
from hrp_data.web.errors import error_response
from hrp_data.web.extension import HrpCutover, current_cutover
from hrp_data.web.headers import hardened

bp = Blueprint("hrp_metrics", __name__)
bp.after_request(hardened)


def _token_ok() -> bool:
    token = HrpCutover.state().settings.metrics_token
    given = request.headers.get("Authorization", "")
    return bool(token) and given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip(), token)


@bp.get("/metrics")
def metrics():
    if not _token_ok():
        user = current_user()
        if user is None:
            return error_response(401, "give Authorization: Bearer <HRP_METRICS_TOKEN>, or log in as an admin",
                                  headers={"WWW-Authenticate": "Bearer"})
        if not services.is_admin(user):
            return error_response(403, "the metrics are for admins and the scraper")
    return Response(exposition(current_cutover), mimetype=None, content_type=CONTENT_TYPE_LATEST)
