"""In-memory stand-ins for the unit of work and its repositories (cosmicpython's fakes).

`FakeCutover` is what the services take: `reading()` and `writing()` give a
`FakeUnitOfWork` over one shared `FakeStore`. A unit of work works on a copy
of the store; only `commit()` writes it back, and leaving the block without
a commit forgets everything, as the real unit of work rolls back. The
repositories keep the real ones' public methods and their answers (records as
dicts, None or False for a missing key), not their SQL. `FakeEngine` and
`FakePhaseStore` are parts a real `Cutover` can be assembled from without I/O.
"""

from __future__ import annotations

import copy
import itertools
import types
from typing import Any

import sqlalchemy as sa

from hrp_data.cutover.phase_store import PhaseRecord
from hrp_data.cutover.phases import PHASES, Phase, PhaseRow
from hrp_data.models import Base
from hrp_data.repositories import HIGH_CONFIDENCE, Record, UnknownField

COLUMNS = {
    name: tuple(Base.metadata.tables[name].columns.keys())
    for name in ("users", "races", "horses", "predictions", "api_credentials")
}
"""The models' own columns: a fake takes and gives the fields the real repository does."""
RUNNER_FIELDS = ("post_position", "odds", "finish_position")


class FakeStore:
    """The committed rows of every table, by primary key."""

    def __init__(self):
        self.tables: dict[str, dict[Any, Record]] = {name: {} for name in (*COLUMNS, "race_horses")}
        self.ids = itertools.count(1)
        self.commits = 0

    def rows(self, table: str) -> list[Record]:
        return [dict(row) for _, row in sorted(self.tables[table].items())]


class FakeRepository:
    table: str
    filters: dict[str, str] = {}
    """filter name -> the column it compares for equality"""

    def __init__(self, tables: dict[str, dict[Any, Record]], ids: itertools.count):
        self.tables, self.ids = tables, ids
        self.rows = tables[self.table]

    def _check(self, fields: dict[str, Any], *, allow_keys: bool) -> None:
        names = set(COLUMNS[self.table]) - (set() if allow_keys else {"id"})
        unknown = sorted(set(fields) - names)
        if unknown:
            raise UnknownField(f"{self.table} has no writable field {', '.join(unknown)}")

    def add(self, **fields: Any) -> Record:
        self._check(fields, allow_keys=True)
        record = {name: None for name in COLUMNS[self.table]} | fields
        if record["id"] is None:
            record["id"] = next(self.ids)
        self.rows[record["id"]] = record
        return dict(record)

    def get(self, key: Any) -> Record | None:
        row = self.rows.get(key)
        return None if row is None else dict(row)

    def list(self, *, after: Any = None, limit: int = 50, **filters: Any) -> list[Record]:
        unknown = sorted(set(filters) - set(self.filters))
        if unknown:
            raise UnknownField(f"{self.table} cannot be filtered by {', '.join(unknown)}")
        found = [
            dict(row) for key, row in sorted(self.rows.items())
            if (after is None or key > after)
            and all(value is None or row[self.filters[name]] == value for name, value in filters.items())
        ]
        return found[:limit]

    def update(self, key: Any, **changes: Any) -> Record | None:
        self._check(changes, allow_keys=False)
        row = self.rows.get(key)
        if row is None:
            return None
        row.update(changes)
        return dict(row)

    def delete(self, key: Any) -> bool:
        return self.rows.pop(key, None) is not None


class FakeUserRepository(FakeRepository):
    table = "users"
    filters = {"is_admin": "is_admin"}

    def add(self, **fields: Any) -> Record:
        for unique in ("username", "email"):
            if any(row[unique] == fields.get(unique) for row in self.rows.values()):
                raise sa.exc.IntegrityError("INSERT INTO users", {}, Exception(f"UNIQUE users.{unique}"))
        return super().add(**fields)

    def get_by_username(self, username: str) -> Record | None:
        return next((dict(row) for row in self.rows.values() if row["username"] == username), None)


class FakeRaceRepository(FakeRepository):
    table = "races"
    filters = {"date": "race_date", "track": "track_name", "status": "status"}

    def get(self, key: Any) -> Record | None:
        record = super().get(key)
        if record is not None:
            record["runners"] = self.runners(key)
        return record

    def runners(self, race_id: int) -> list[Record]:
        found = [dict(row) for (race, _), row in self.tables["race_horses"].items() if race == race_id]
        return sorted(found, key=lambda r: (r["post_position"] is None, r["post_position"] or 0, r["horse_id"]))

    def set_runner(self, race_id: int, horse_id: int, **fields: Any) -> Record:
        unknown = sorted(set(fields) - set(RUNNER_FIELDS))
        if unknown:
            raise UnknownField(f"race_horses has no writable field {', '.join(unknown)}")
        row = {"race_id": race_id, "horse_id": horse_id, **fields}
        self.tables["race_horses"][(race_id, horse_id)] = row
        return dict(row)

    def remove_runner(self, race_id: int, horse_id: int) -> bool:
        return self.tables["race_horses"].pop((race_id, horse_id), None) is not None

    def delete(self, key: Any) -> bool:
        if key in self.rows:
            _drop_where(self.tables["predictions"], lambda row: row["race_id"] == key)
            _drop_where(self.tables["race_horses"], lambda row: row["race_id"] == key)
        return super().delete(key)


class FakeHorseRepository(FakeRepository):
    table = "horses"
    filters = {"name": "horse_name", "jockey": "jockey"}

    def delete(self, key: Any) -> bool:
        if key in self.rows:
            _drop_where(self.tables["predictions"], lambda row: row["horse_id"] == key)
            _drop_where(self.tables["race_horses"], lambda row: row["horse_id"] == key)
        return super().delete(key)


def _drop_where(rows: dict[Any, Record], condition) -> None:
    for key in [key for key, row in rows.items() if condition(row)]:
        del rows[key]


class FakePredictionRepository(FakeRepository):
    table = "predictions"
    filters = {"race_id": "race_id", "horse_id": "horse_id", "user_id": "user_id"}

    def for_race(self, race_id: int, limit: int = 100) -> list[Record]:
        found = [dict(row) for row in self.rows.values() if row["race_id"] == race_id]
        found.sort(key=lambda r: (r["confidence"] is None, -(r["confidence"] or 0), r["id"]))
        return found[:limit]


class FakeCredentialRepository(FakeRepository):
    table = "api_credentials"
    filters = {"user_id": "user_id"}


class FakeStatisticsRepository:
    def __init__(self, tables: dict[str, dict[Any, Record]]):
        self.predictions = tables["predictions"]

    def _groups(self, key: str, after: int | None, limit: int) -> list[tuple[int, list[float]]]:
        groups: dict[int, list[float]] = {}
        for row in self.predictions.values():
            if row[key] is not None:
                groups.setdefault(row[key], []).append(row["confidence"])
        return [(k, groups[k]) for k in sorted(groups) if after is None or k > after][:limit]

    def race_statistics(self, *, after: int | None = None, limit: int = 100) -> list[Record]:
        return [
            {"race_id": race_id, "prediction_count": len(values), "avg_confidence": sum(values) / len(values),
             "min_confidence": min(values), "max_confidence": max(values)}
            for race_id, values in self._groups("race_id", after, limit)
        ]

    def horse_performance(self, *, after: int | None = None, limit: int = 100) -> list[Record]:
        return [
            {"horse_id": horse_id, "prediction_count": len(values), "avg_confidence": sum(values) / len(values),
             "max_confidence": max(values), "high_confidence_count": sum(v >= HIGH_CONFIDENCE for v in values)}
            for horse_id, values in self._groups("horse_id", after, limit)
        ]


class FakeUnitOfWork:
    """`with FakeUnitOfWork(store) as uow: ...; uow.commit()`: only a commit reaches the store."""

    def __init__(self, store: FakeStore, *, writable: bool = True):
        self.store, self.writable = store, writable
        self.committed = False

    def __enter__(self) -> "FakeUnitOfWork":
        self.tables = copy.deepcopy(self.store.tables)
        self.users = FakeUserRepository(self.tables, self.store.ids)
        self.races = FakeRaceRepository(self.tables, self.store.ids)
        self.horses = FakeHorseRepository(self.tables, self.store.ids)
        self.predictions = FakePredictionRepository(self.tables, self.store.ids)
        self.credentials = FakeCredentialRepository(self.tables, self.store.ids)
        self.statistics = FakeStatisticsRepository(self.tables)
        return self

    def __exit__(self, *exc_info) -> None:
        self.rollback()

    def commit(self) -> None:
        if not self.writable:
            raise AssertionError("commit() on a read-only unit of work")
        self.store.tables = copy.deepcopy(self.tables)
        self.store.commits += 1
        self.committed = True

    def rollback(self) -> None:
        for name, rows in copy.deepcopy(self.store.tables).items():
            self.tables[name].clear()
            self.tables[name].update(rows)


class FakeCutover:
    """The factory of units of work the services take (hrp_data.cutover.dual_write.Cutover)."""

    def __init__(self, store: FakeStore | None = None):
        self.store = store or FakeStore()
        self.units: list[FakeUnitOfWork] = []

    def _unit(self, writable: bool) -> FakeUnitOfWork:
        unit = FakeUnitOfWork(self.store, writable=writable)
        self.units.append(unit)
        return unit

    def writing(self) -> FakeUnitOfWork:
        return self._unit(True)

    def reading(self) -> FakeUnitOfWork:
        return self._unit(False)

    def seed(self, table: str, **fields: Any) -> Record:
        """A committed row, as if an earlier request had written it."""
        with self.writing() as uow:
            record = getattr(uow, _REPOSITORY[table]).add(**fields)
            uow.commit()
        self.store.commits = 0
        return record


_REPOSITORY = {"users": "users", "races": "races", "horses": "horses", "predictions": "predictions",
               "api_credentials": "credentials"}


class FakeEngine:
    """An engine that refuses every connection: a part handed it shows it did no I/O."""

    dialect = types.SimpleNamespace(name="fake")

    def __init__(self, name: str):
        self.name = name
        self.disposed = False

    def connect(self, *args: Any, **kwargs: Any):
        raise AssertionError(f"{self.name}: no connection expected")

    begin = raw_connection = connect

    def execution_options(self, **options: Any) -> "FakeEngine":
        return self

    def dispose(self) -> None:
        self.disposed = True


class FakePhaseStore:
    """The phase record in memory (hrp_data.cutover.phase_store.PhaseStore's reads)."""

    def __init__(self, phase: Phase):
        self.phase = phase
        self.fresh_reads = 0

    def current(self, *, fresh: bool = False) -> PhaseRecord:
        self.fresh_reads += fresh
        return PhaseRecord(self.phase, 1, "2025-01-01T00:00:00.000+00:00", "test")

    def row(self, *, fresh: bool = False) -> PhaseRow:
        return PHASES[self.current(fresh=fresh).phase]
