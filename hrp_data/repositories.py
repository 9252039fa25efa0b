"""Repositories: one per aggregate the HRP app uses, one implementation for either engine.

Each repository works inside a unit of work's session and returns plain
records (dicts of column values), so results from SQLite and PostgreSQL can be
compared as they are. Public methods: add, get, list (filters + keyset
pagination on the primary key), update, delete; races also carry their
runners, and StatisticsRepository holds the app's complex reads (race
statistics, horse performance, top predictions per race, jockey leaderboard).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from adapters.upsert import upsert
from hrp_data.models import ApiCredential, Base, Horse, Prediction, Race, RaceHorse, User

Record = dict[str, Any]
HIGH_CONFIDENCE = 0.8
STAT_DIGITS = 10
"""Averages are given to 10 decimals: summation order differs between engines in the last bits."""


class UnknownField(ValueError):
    """A field name the table does not have (or may not be changed)."""


def as_record(obj: Base) -> Record:
    """The column values of a model instance, in column order."""
    return {column.key: getattr(obj, column.key) for column in obj.__table__.columns}


class Repository:
    """add/get/list/update/delete over one model."""

    model: ClassVar[type[Base]]
    filters: ClassVar[dict[str, Callable[[Any], sa.ColumnElement[bool]]]] = {}
    touch_updated_at: ClassVar[bool] = False

    def __init__(self, session: Session):
        self.session = session
        self.table: sa.Table = self.model.__table__
        self.key_columns = list(self.table.primary_key.columns)

    def _check_fields(self, fields: dict[str, Any], *, allow_keys: bool) -> None:
        names = set(self.table.columns.keys())
        if not allow_keys:
            names -= {c.name for c in self.key_columns}
        unknown = sorted(set(fields) - names)
        if unknown:
            raise UnknownField(f"{self.table.name} has no writable field {', '.join(unknown)}")

    def add(self, **fields: Any) -> Record:
        self._check_fields(fields, allow_keys=True)
        obj = self.model(**fields)
        self.session.add(obj)
        self.session.flush()
        self.session.refresh(obj)
        return as_record(obj)

    def get(self, key: Any) -> Record | None:
        obj = self.session.get(self.model, key)
        return None if obj is None else as_record(obj)

    def list(self, *, after: Any = None, limit: int = 50, **filters: Any) -> list[Record]:
        """Rows in primary-key order after the key `after` (keyset pagination)."""
        unknown = sorted(set(filters) - set(self.filters))
        if unknown:
            raise UnknownField(f"{self.table.name} cannot be filtered by {', '.join(unknown)}")
        statement = sa.select(self.model)
        for name, value in filters.items():
            if value is not None:
                statement = statement.where(self.filters[name](value))
        if after is not None:
            statement = statement.where(sa.tuple_(*self.key_columns) > sa.tuple_(*_as_tuple(after)))
        statement = statement.order_by(*self.key_columns).limit(limit)
        return [as_record(obj) for obj in self.session.scalars(statement)]

    def update(self, key: Any, **changes: Any) -> Record | None:
        self._check_fields(changes, allow_keys=False)
        obj = self.session.get(self.model, key)
        if obj is None:
            return None
        for name, value in changes.items():
            setattr(obj, name, value)
        if self.touch_updated_at and "updated_at" not in changes:
            obj.updated_at = sa.func.current_timestamp()
        self.session.flush()
        self.session.refresh(obj)
        return as_record(obj)

    def delete(self, key: Any) -> bool:
        obj = self.session.get(self.model, key)
        if obj is None:
            return False
        self._delete_dependents(obj)
        self.session.delete(obj)
        self.session.flush()
        return True

    def _delete_dependents(self, obj: Base) -> None:
        """Rows that reference `obj` and go with it (none by default)."""


def _as_tuple(key: Any) -> Sequence[Any]:
    return tuple(key) if isinstance(key, (tuple, list)) else (key,)


def _delete_where(session: Session, model: type[Base], condition: sa.ColumnElement[bool]) -> None:
    session.execute(sa.delete(model).where(condition), execution_options={"synchronize_session": False})


class UserRepository(Repository):
    model = User
    filters = {"is_admin": lambda v: User.is_admin == v}

    def get_by_username(self, username: str) -> Record | None:
        obj = self.session.scalars(sa.select(User).where(User.username == username)).first()
        return None if obj is None else as_record(obj)


class RaceRepository(Repository):
    """Races with their runners (race_horses)."""

    model = Race
    touch_updated_at = True
    filters = {
        "date": lambda v: Race.race_date == v,
        "track": lambda v: Race.track_name == v,
        "status": lambda v: Race.status == v,
    }

    def get(self, key: Any) -> Record | None:
        record = super().get(key)
        if record is not None:
            record["runners"] = self.runners(key)
        return record

    def runners(self, race_id: int) -> list[Record]:
        statement = sa.select(RaceHorse).where(RaceHorse.race_id == race_id).order_by(
            RaceHorse.post_position, RaceHorse.horse_id
        )
        return [as_record(obj) for obj in self.session.scalars(statement)]

    def set_runner(self, race_id: int, horse_id: int, **fields: Any) -> Record:
        """Add or replace one runner of a race."""
        unknown = sorted(set(fields) - {"post_position", "odds", "finish_position"})
        if unknown:
            raise UnknownField(f"race_horses has no writable field {', '.join(unknown)}")
        row = {"race_id": race_id, "horse_id": horse_id, **fields}
        self.session.execute(upsert(self.session.get_bind().dialect.name, RaceHorse.__table__, row))
        self.session.expire_all()
        return as_record(self.session.get(RaceHorse, (race_id, horse_id)))

    def remove_runner(self, race_id: int, horse_id: int) -> bool:
        obj = self.session.get(RaceHorse, (race_id, horse_id))
        if obj is None:
            return False
        self.session.delete(obj)
        self.session.flush()
        return True

    def _delete_dependents(self, obj: Base) -> None:
        _delete_where(self.session, Prediction, Prediction.race_id == obj.id)
        _delete_where(self.session, RaceHorse, RaceHorse.race_id == obj.id)


class HorseRepository(Repository):
    model = Horse
    touch_updated_at = True
    filters = {
        "name": lambda v: Horse.horse_name.ilike(f"%{_escape_like(v)}%", escape="\\"),
        "jockey": lambda v: Horse.jockey == v,
    }

    def _delete_dependents(self, obj: Base) -> None:
        _delete_where(self.session, Prediction, Prediction.horse_id == obj.id)
        _delete_where(self.session, RaceHorse, RaceHorse.horse_id == obj.id)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class PredictionRepository(Repository):
    model = Prediction
    filters = {
        "race_id": lambda v: Prediction.race_id == v,
        "horse_id": lambda v: Prediction.horse_id == v,
        "user_id": lambda v: Prediction.user_id == v,
    }

    def for_race(self, race_id: int, limit: int = 100) -> list[Record]:
        """A race's predictions, most confident first."""
        statement = (
            sa.select(Prediction)
            .where(Prediction.race_id == race_id)
            .order_by(Prediction.confidence.desc().nulls_last(), Prediction.id)
            .limit(limit)
        )
        return [as_record(obj) for obj in self.session.scalars(statement)]


class ApiCredentialRepository(Repository):
    model = ApiCredential
    filters = {"user_id": lambda v: ApiCredential.user_id == v}


class StatisticsRepository:
    """The app's complex reads: aggregates paginated by the grouping key, and top picks per race.

    They return thousands of plain rows, so they run on the session's connection (SQLAlchemy
    Core: no ORM loading step) and build each record from the result's keys once (not a
    RowMapping per row): for 6,000 rows that was most of the read's time on PostgreSQL."""

    def __init__(self, session: Session):
        self.session = session

    def _rows(self, statement: sa.Select) -> sa.CursorResult:
        if self.session.autoflush:  # as session.execute would: the unit of work's pending writes count
            self.session.flush()
        return self.session.connection().execute(statement)

    def race_statistics(self, *, after: int | None = None, limit: int = 100) -> list[Record]:
        """Per race with predictions: count, avg/min/max confidence."""
        statement = (
            sa.select(
                Prediction.race_id,
                sa.func.count().label("prediction_count"),
                sa.func.avg(Prediction.confidence).label("avg_confidence"),
                sa.func.min(Prediction.confidence).label("min_confidence"),
                sa.func.max(Prediction.confidence).label("max_confidence"),
            )
            .where(Prediction.race_id.is_not(None))
            .group_by(Prediction.race_id)
            .order_by(Prediction.race_id)
            .limit(limit)
        )
        if after is not None:
            statement = statement.where(Prediction.race_id > after)
        return _plain(self._rows(statement))

    def horse_performance(self, *, after: int | None = None, limit: int = 100) -> list[Record]:
        """Per horse with predictions: count, avg/max confidence, high-confidence count."""
        statement = (
            sa.select(
                Prediction.horse_id,
                sa.func.count().label("prediction_count"),
                sa.func.avg(Prediction.confidence).label("avg_confidence"),
                sa.func.max(Prediction.confidence).label("max_confidence"),
                sa.func.count()
                .filter(Prediction.confidence >= HIGH_CONFIDENCE)
                .label("high_confidence_count"),
            )
            .where(Prediction.horse_id.is_not(None))
            .group_by(Prediction.horse_id)
            .order_by(Prediction.horse_id)
            .limit(limit)
        )
        if after is not None:
            statement = statement.where(Prediction.horse_id > after)
        return _plain(self._rows(statement))


    def top_predictions_per_race(
        self, *, after: int | None = None, races: int = 100, per_race: int = 3
    ) -> list[Record]:
        """The `per_race` most confident predictions of each of `races` races (by race id), ties by id.

        Both databases give the same rows in the same order, each its own way. PostgreSQL: for each
        race a LATERAL subquery takes its first `per_race` entries of the index on (race_id,
        confidence DESC, id) INCLUDE (horse_id), index-only, and stops there. SQLite has no LATERAL:
        it ranks every prediction of the races with row_number() and keeps the first `per_race`."""
        race_ids = sa.select(Race.id).order_by(Race.id).limit(races)
        if after is not None:
            race_ids = race_ids.where(Race.id > after)
        chosen = race_ids.subquery("chosen")
        best_first = (Prediction.confidence.desc(), Prediction.id)
        if self.session.get_bind().dialect.name == "postgresql":
            picks = (
                sa.select(Prediction.id, Prediction.horse_id, Prediction.confidence,
                          sa.func.row_number().over(order_by=best_first).label("rank"))
                .where(Prediction.race_id == chosen.c.id, Prediction.confidence.is_not(None))
                .order_by(*best_first)
                .limit(per_race)
                .lateral("picks")
            )
            statement = (
                sa.select(chosen.c.id.label("race_id"), picks.c.id, picks.c.horse_id, picks.c.confidence, picks.c.rank)
                .select_from(chosen.join(picks, sa.true()))
                .order_by(chosen.c.id, picks.c.rank)
            )
            return _records(self._rows(statement))
        rank = sa.func.row_number().over(partition_by=Prediction.race_id, order_by=best_first).label("rank")
        ranked = (
            sa.select(Prediction.race_id, Prediction.id, Prediction.horse_id, Prediction.confidence, rank)
            .join(chosen, chosen.c.id == Prediction.race_id)
            .where(Prediction.confidence.is_not(None))
            .subquery()
        )
        statement = (
            sa.select(ranked).where(ranked.c.rank <= per_race).order_by(ranked.c.race_id, ranked.c.rank)
        )
        return _records(self._rows(statement))

    def jockey_leaderboard(self, *, limit: int = 20) -> list[Record]:
        """Jockeys by wins: rides, wins (finish position 1) and average odds of their rides."""
        wins = sa.func.count().filter(RaceHorse.finish_position == 1)
        statement = (
            sa.select(
                Horse.jockey,
                sa.func.count().label("rides"),
                wins.label("wins"),
                sa.func.avg(RaceHorse.odds).label("avg_odds"),
            )
            .join(Horse, Horse.id == RaceHorse.horse_id)
            .where(Horse.jockey.is_not(None))
            .group_by(Horse.jockey)
            .order_by(wins.desc(), Horse.jockey)
            .limit(limit)
        )
        return _plain(self._rows(statement))


def _records(result: Any) -> list[Record]:
    keys = list(result.keys())
    return [dict(zip(keys, row)) for row in result.all()]


def _plain(result: Any) -> list[Record]:
    """The rows of a statistics read as records, averages rounded to STAT_DIGITS (both databases
    then give the same figures). One pass per average column over the built records: a read
    returns thousands of rows, and this runs on both databases."""
    records = _records(result)
    for key in [key for key in result.keys() if key.startswith("avg_")]:
        for record in records:
            value = record[key]
            if value is not None:
                record[key] = round(value if type(value) is float else float(value), STAT_DIGITS)
    return records
