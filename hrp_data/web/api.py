"""The HRP app's data as a JSON API. Reads are public; writes need a logged-in user, and
races, horses and credentials writes need an admin. Each view validates its input, calls one
service and renders the result. Every write honours an Idempotency-Key (hrp_data.web.idempotent).
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from hrp_data.web import errors, services
from hrp_data.web.auth import admin_required, login_required
from hrp_data.web.extension import current_cutover
from hrp_data.web.headers import hardened, no_store
from hrp_data.web.idempotent import idempotent
from hrp_data.web.inputs import json_body, query
from hrp_data.web.serialize import public, redacted_credential
from hrp_data.web.session_user import current_user
from hrp_data.web.validation import (
    CREDENTIAL,
    HORSE,
    HORSE_FILTERS,
    PAGE,
    PREDICTION,
    RACE,
    RACE_FILTERS,
    RUNNER,
    integer,
)

bp = Blueprint("hrp_api", __name__, url_prefix="/api")
errors.install(bp)
bp.after_request(hardened)

NOT_HRP = (
    "the HRP app needs the HRP tables (users, races, horses, race_horses, predictions, api_credentials);"
    " this SQLite file has not got them all, so only the cutover's CLI moves it (docs/schema.md)"
)


@bp.before_request
def _needs_the_hrp_tables():
    """A file without the HRP tables is another app's: its API answers 503 saying so, never a SQL error."""
    if not current_cutover.catalog.hrp:
        return errors.error_response(503, NOT_HRP)
    return None

PREDICTIONS_LIMIT = (integer("limit", low=1, high=1000),)


def _page(items, cursor, render=public):
    return jsonify({"items": [render(item) for item in items], "next": cursor})


# -- races ---------------------------------------------------------------------------------


@bp.get("/races")
def races():
    params = query(RACE_FILTERS)
    items, cursor = services.list_races(current_cutover, **params)
    return _page(items, cursor)


@bp.post("/races")
@admin_required
@idempotent
def race_create():
    race = services.create_race(current_cutover, json_body(RACE))
    return jsonify(public(race)), 201


@bp.get("/races/<hrp_id:race_id>")
def race(race_id: int):
    return jsonify(_race(services.get_race(current_cutover, race_id)))


def _race(race: dict) -> dict:
    out = public(race)
    out["runners"] = [public(r) for r in race.get("runners", [])]
    if "predictions" in race:
        out["predictions"] = [public(p) for p in race["predictions"]]
    return out


@bp.patch("/races/<hrp_id:race_id>")
@admin_required
@idempotent
def race_update(race_id: int):
    race = services.update_race(current_cutover, race_id, json_body(RACE, partial=True))
    return jsonify(_race(race))


@bp.delete("/races/<hrp_id:race_id>")
@admin_required
@idempotent
def race_delete(race_id: int):
    services.delete_race(current_cutover, race_id)
    return "", 204


@bp.put("/races/<hrp_id:race_id>/runners/<hrp_id:horse_id>")
@admin_required
@idempotent
def runner_set(race_id: int, horse_id: int):
    runner = services.set_runner(current_cutover, race_id, horse_id, json_body(RUNNER))
    return jsonify(public(runner))


@bp.delete("/races/<hrp_id:race_id>/runners/<hrp_id:horse_id>")
@admin_required
@idempotent
def runner_remove(race_id: int, horse_id: int):
    services.remove_runner(current_cutover, race_id, horse_id)
    return "", 204


@bp.get("/races/<hrp_id:race_id>/predictions")
def race_predictions(race_id: int):
    limit = query(PREDICTIONS_LIMIT).get("limit", 100)
    items = services.race_predictions(current_cutover, race_id, limit)
    return jsonify({"items": [public(p) for p in items]})


# -- horses --------------------------------------------------------------------------------


@bp.get("/horses")
def horses():
    items, cursor = services.list_horses(current_cutover, **query(HORSE_FILTERS))
    return _page(items, cursor)


@bp.post("/horses")
@admin_required
@idempotent
def horse_create():
    return jsonify(public(services.create_horse(current_cutover, json_body(HORSE)))), 201


@bp.get("/horses/<hrp_id:horse_id>")
def horse(horse_id: int):
    return jsonify(public(services.get_horse(current_cutover, horse_id)))


@bp.patch("/horses/<hrp_id:horse_id>")
@admin_required
@idempotent
def horse_update(horse_id: int):
    return jsonify(public(services.update_horse(current_cutover, horse_id, json_body(HORSE, partial=True))))


@bp.delete("/horses/<hrp_id:horse_id>")
@admin_required
@idempotent
def horse_delete(horse_id: int):
    services.delete_horse(current_cutover, horse_id)
    return "", 204


# -- predictions ---------------------------------------------------------------------------


@bp.post("/predictions")
@login_required
@idempotent
def prediction_create():
    fields = json_body(PREDICTION)
    prediction = services.create_prediction(current_cutover, current_user()["id"], fields)
    return jsonify(public(prediction)), 201


@bp.delete("/predictions/<hrp_id:prediction_id>")
@login_required
@idempotent
def prediction_delete(prediction_id: int):
    services.delete_prediction(current_cutover, prediction_id, current_user())
    return "", 204


# -- API credentials (admin) ---------------------------------------------------------------


@bp.get("/credentials")
@no_store
@admin_required
def credentials():
    items, cursor = services.list_credentials(current_cutover, **query(PAGE))
    return _page(items, cursor, redacted_credential)


@bp.post("/credentials")
@no_store
@admin_required
@idempotent
def credential_create():
    credential = services.create_credential(current_cutover, current_user()["id"], json_body(CREDENTIAL))
    shown = redacted_credential(credential)
    # The only time the key and secret are shown: the caller must keep them now.
    shown["api_key"] = credential["api_key"]
    shown["api_secret"] = credential["api_secret"]
    return jsonify(shown), 201


@bp.delete("/credentials/<hrp_id:credential_id>")
@admin_required
@idempotent
def credential_delete(credential_id: int):
    services.delete_credential(current_cutover, credential_id)
    return "", 204


# -- statistics ----------------------------------------------------------------------------


@bp.get("/stats/races")
def stats_races():
    items, cursor = services.race_statistics(current_cutover, **query(PAGE))
    return _page(items, cursor)


@bp.get("/stats/horses")
def stats_horses():
    items, cursor = services.horse_performance(current_cutover, **query(PAGE))
    return _page(items, cursor)
