"""The HRP app's services: one unit of work per call, plain records in and out.

Views validate input first (hrp_data.web.validation) and then call exactly
one function here. Each takes the `Cutover` (the factory of units of work for
the current phase): reads run in `cutover.reading()`, writes in one
`cutover.writing()` that commits once, so a request never leaves anything
half-written. Errors are plain exceptions the views turn into 404/409/403.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import sqlalchemy as sa
from werkzeug.security import check_password_hash, generate_password_hash

from hrp_data.cutover.dual_write import Cutover
from hrp_data.repositories import Record


class NotFound(LookupError):
    def __init__(self, what: str, key: Any, field: str | None = None):
        super().__init__(f"{what} {key} not found")
        self.field = field


class Conflict(ValueError):
    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class Forbidden(PermissionError):
    """The user may not do this to this record."""


Page = tuple[list[Record], Any]

TAKEN = "that username or email is taken"


def _page(rows: list[Record], limit: int, key: str = "id") -> Page:
    """The first `limit` rows and the cursor of the next page (None: this is the last)."""
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, rows[-1][key]
    return rows, None


# -- users and sessions ------------------------------------------------------------------


@functools.cache
def _dummy_hash() -> str:
    return generate_password_hash("not a password of anybody")


def _password_matches(stored: str | None, password: str) -> bool:
    try:
        return bool(stored) and check_password_hash(stored, password)
    except (ValueError, TypeError):  # a hash in a format werkzeug does not know
        return False


Hashing = Callable[[], AbstractContextManager]
"""Held around each password hash (hrp_data.web.throttle.hashing_slot bounds them per process)."""


def register_user(
    cutover: Cutover, *, username: str, email: str, password: str, is_admin: bool = False,
    hashing: Hashing = contextlib.nullcontext,
) -> Record:
    """The new user; Conflict says the same for a taken username and a taken email (no enumeration)."""
    with hashing():
        password_hash = generate_password_hash(password)
    with cutover.writing() as uow:
        if uow.users.get_by_username(username) is not None:
            raise Conflict(TAKEN)
        try:
            user = uow.users.add(username=username, email=email, password_hash=password_hash, is_admin=is_admin)
        except sa.exc.IntegrityError:
            raise Conflict(TAKEN) from None
        uow.commit()
    return user


def authenticate(
    cutover: Cutover, username: str, password: str, *, hashing: Hashing = contextlib.nullcontext
) -> Record | None:
    """The user with these credentials (its last_login updated), or None."""
    with cutover.reading() as uow:
        user = uow.users.get_by_username(username)
    with hashing():
        if user is None:
            _password_matches(_dummy_hash(), password)  # the same work for unknown names
            return None
        matches = _password_matches(user["password_hash"], password)
    if not matches:
        return None
    with cutover.writing() as uow:
        updated = uow.users.update(user["id"], last_login=dt.datetime.now(dt.timezone.utc))
        uow.commit()
    return updated or user


def get_user(cutover: Cutover, user_id: int) -> Record | None:
    with cutover.reading() as uow:
        return uow.users.get(user_id)


# -- races ---------------------------------------------------------------------------------


def list_races(cutover: Cutover, *, after: int | None, limit: int, **filters: Any) -> Page:
    with cutover.reading() as uow:
        return _page(uow.races.list(after=after, limit=limit + 1, **filters), limit)


def get_race(cutover: Cutover, race_id: int) -> Record:
    with cutover.reading() as uow:
        race = uow.races.get(race_id)
        if race is None:
            raise NotFound("race", race_id)
        race["predictions"] = uow.predictions.for_race(race_id)
    return race


def create_race(cutover: Cutover, fields: dict[str, Any]) -> Record:
    with cutover.writing() as uow:
        race = uow.races.add(**fields)
        uow.commit()
    race["runners"] = []
    return race


def update_race(cutover: Cutover, race_id: int, changes: dict[str, Any]) -> Record:
    with cutover.writing() as uow:
        if uow.races.update(race_id, **changes) is None:
            raise NotFound("race", race_id)
        race = uow.races.get(race_id)
        uow.commit()
    return race


def delete_race(cutover: Cutover, race_id: int) -> None:
    with cutover.writing() as uow:
        if not uow.races.delete(race_id):
            raise NotFound("race", race_id)
        uow.commit()


def set_runner(cutover: Cutover, race_id: int, horse_id: int, fields: dict[str, Any]) -> Record:
    """Add or replace one runner; fields not given are cleared (PUT)."""
    values = {"post_position": None, "odds": None, "finish_position": None, **fields}
    with cutover.writing() as uow:
        if uow.races.get(race_id) is None:
            raise NotFound("race", race_id)
        if uow.horses.get(horse_id) is None:
            raise NotFound("horse", horse_id)
        runner = uow.races.set_runner(race_id, horse_id, **values)
        uow.commit()
    return runner


def remove_runner(cutover: Cutover, race_id: int, horse_id: int) -> None:
    with cutover.writing() as uow:
        if not uow.races.remove_runner(race_id, horse_id):
            raise NotFound("runner", f"{horse_id} of race {race_id}")
        uow.commit()


# -- horses --------------------------------------------------------------------------------


def list_horses(cutover: Cutover, *, after: int | None, limit: int, name: str | None = None) -> Page:
    with cutover.reading() as uow:
        return _page(uow.horses.list(after=after, limit=limit + 1, name=name), limit)


def get_horse(cutover: Cutover, horse_id: int) -> Record:
    with cutover.reading() as uow:
        horse = uow.horses.get(horse_id)
    if horse is None:
        raise NotFound("horse", horse_id)
    return horse


def create_horse(cutover: Cutover, fields: dict[str, Any]) -> Record:
    with cutover.writing() as uow:
        horse = uow.horses.add(**fields)
        uow.commit()
    return horse


def update_horse(cutover: Cutover, horse_id: int, changes: dict[str, Any]) -> Record:
    with cutover.writing() as uow:
        horse = uow.horses.update(horse_id, **changes)
        if horse is None:
            raise NotFound("horse", horse_id)
        uow.commit()
    return horse


def delete_horse(cutover: Cutover, horse_id: int) -> None:
    with cutover.writing() as uow:
        if not uow.horses.delete(horse_id):
            raise NotFound("horse", horse_id)
        uow.commit()


# -- predictions ---------------------------------------------------------------------------


def create_prediction(cutover: Cutover, user_id: int, fields: dict[str, Any]) -> Record:
    with cutover.writing() as uow:
        if uow.races.get(fields["race_id"]) is None:
            raise NotFound("race", fields["race_id"], "race_id")
        if uow.horses.get(fields["horse_id"]) is None:
            raise NotFound("horse", fields["horse_id"], "horse_id")
        prediction = uow.predictions.add(user_id=user_id, **fields)
        uow.commit()
    return prediction


def race_predictions(cutover: Cutover, race_id: int, limit: int) -> list[Record]:
    """A race's predictions, most confident first."""
    with cutover.reading() as uow:
        if uow.races.get(race_id) is None:
            raise NotFound("race", race_id)
        return uow.predictions.for_race(race_id, limit=limit)


def is_admin(user: Record | None) -> bool:
    """Whether `user` is an admin: only a stored true says so (fail closed).

    A legacy users.is_admin that does not convert ('no', 'f', 2, -1, a blob)
    is read back as it is stored (the verifier and the quarantine must see
    it), and such a value, truthy or not, never grants anything.
    """
    return user is not None and user.get("is_admin") is True


def delete_prediction(cutover: Cutover, prediction_id: int, user: Record) -> None:
    """Delete a prediction: its author's or, for an admin, anybody's."""
    with cutover.writing() as uow:
        prediction = uow.predictions.get(prediction_id)
        if prediction is None:
            raise NotFound("prediction", prediction_id)
        if not is_admin(user) and prediction["user_id"] != user["id"]:
            raise Forbidden("only its author or an admin may delete a prediction")
        uow.predictions.delete(prediction_id)
        uow.commit()


# -- API credentials -----------------------------------------------------------------------


def list_credentials(cutover: Cutover, *, after: int | None, limit: int) -> Page:
    with cutover.reading() as uow:
        return _page(uow.credentials.list(after=after, limit=limit + 1), limit)


def create_credential(cutover: Cutover, user_id: int, fields: dict[str, Any]) -> Record:
    with cutover.writing() as uow:
        credential = uow.credentials.add(user_id=user_id, **fields)
        uow.commit()
    return credential


def delete_credential(cutover: Cutover, credential_id: int) -> None:
    with cutover.writing() as uow:
        if not uow.credentials.delete(credential_id):
            raise NotFound("credential", credential_id)
        uow.commit()


# -- statistics ----------------------------------------------------------------------------


def race_statistics(cutover: Cutover, *, after: int | None, limit: int) -> Page:
    with cutover.reading() as uow:
        return _page(uow.statistics.race_statistics(after=after, limit=limit + 1), limit, "race_id")


def horse_performance(cutover: Cutover, *, after: int | None, limit: int) -> Page:
    with cutover.reading() as uow:
        return _page(uow.statistics.horse_performance(after=after, limit=limit + 1), limit, "horse_id")
