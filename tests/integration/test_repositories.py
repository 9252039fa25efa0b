"""The repositories, run unchanged against a legacy SQLite file and a migrated PostgreSQL."""

from __future__ import annotations

import datetime as dt
import time

import pytest
import sqlalchemy as sa

from hrp_data.repositories import UnknownField
from hrp_data.unit_of_work import UnitOfWork

UTC = dt.timezone.utc
SERVER_SET = {"created_at", "updated_at"}


def _stable(record):
    """A record without the columns the server fills with the current time."""
    if isinstance(record, list):
        return [_stable(r) for r in record]
    if isinstance(record, dict):
        return {k: _stable(v) for k, v in record.items() if k not in SERVER_SET}
    return record


def populate(engine) -> dict:
    """Write a small HRP world through the repositories; return what was read back."""
    out = {}
    with UnitOfWork(engine) as uow:
        admin = uow.users.add(username="ada", email="ada@example.org", password_hash="h1", is_admin=True)
        bob = uow.users.add(username="bob", email="bob@example.org", password_hash="h2")
        races = [
            uow.races.add(
                race_name=f"Race {i}",
                race_date=dt.date(2025, 1, 10 + i % 3),
                track_name="Ascot" if i % 2 else "York",
                distance=1609.34 + i,
                prize_money=50000.5,
                weather_conditions={"temp_c": 14.5, "wind": "NW", "i": i},
                status="finished" if i < 3 else "scheduled",
            )
            for i in range(6)
        ]
        horses = [
            uow.horses.add(horse_name=name, age=3 + i, weight=450.25 + i, jockey=f"J{i % 2}")
            for i, name in enumerate(["Red Rum", "Frankel", "Sea The Stars", "Red Cadeaux"])
        ]
        for race in races:
            for position, horse in enumerate(horses, start=1):
                uow.races.set_runner(race["id"], horse["id"], post_position=position, odds=2.5 * position)
                uow.predictions.add(
                    race_id=race["id"],
                    horse_id=horse["id"],
                    user_id=bob["id"],
                    prediction_value=0.1 * position,
                    confidence=round(0.2 * position + 0.01 * race["id"], 6),
                    algorithm_version="v2.3.1",
                    features={"form": [1, 3], "speed": 61.5 + position},
                )
        uow.credentials.add(user_id=admin["id"], service_name="odds-feed", api_key="k", api_secret="s")
        uow.commit()
    with UnitOfWork(engine, writable=False) as uow:
        out["race"] = uow.races.get(races[0]["id"])
        out["page1"] = uow.races.list(limit=4)
        out["page2"] = uow.races.list(after=out["page1"][-1]["id"], limit=4)
        out["ascot"] = uow.races.list(track="Ascot")
        out["on_date"] = uow.races.list(date=dt.date(2025, 1, 11))
        out["scheduled"] = uow.races.list(status="scheduled")
        out["red"] = uow.horses.list(name="red")
        out["for_race"] = uow.predictions.for_race(races[1]["id"])
        out["race_stats"] = uow.statistics.race_statistics()
        out["horse_stats"] = uow.statistics.horse_performance()
        out["jockeys"] = uow.statistics.jockey_leaderboard()
        out["top"] = uow.statistics.top_predictions_per_race(races=10, per_race=2)
        out["user"] = uow.users.get_by_username("ada")
        out["creds"] = uow.credentials.list(user_id=admin["id"])
    return out


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request, tmp_path):
    """An engine on a legacy file made by the sqlite3 shell, or on a migrated PostgreSQL."""
    if request.param == "sqlite":
        from adapters.sqlite import create_sqlite_engine

        legacy = request.getfixturevalue("legacy_file")
        engine = create_sqlite_engine(f"sqlite:///{legacy}")
    else:
        from adapters.postgres import create_postgres_engine
        from hrp_data.schema.install import upgrade

        url = request.getfixturevalue("postgres_url")
        upgrade(url)
        engine = create_postgres_engine(url)
    yield engine
    engine.dispose()


def test_reads_return_what_was_written(engine):
    out = populate(engine)
    race = out["race"]
    assert race["race_name"] == "Race 0"
    assert race["race_date"] == dt.date(2025, 1, 10)
    assert race["distance"] == 1609.34
    assert race["weather_conditions"] == {"temp_c": 14.5, "wind": "NW", "i": 0}
    assert race["created_at"].tzinfo is not None
    assert [r["post_position"] for r in race["runners"]] == [1, 2, 3, 4]
    assert [r["odds"] for r in race["runners"]] == [2.5, 5.0, 7.5, 10.0]
    assert out["user"]["is_admin"] is True
    assert out["creds"][0]["is_active"] is True


def test_keyset_pagination_and_filters(engine):
    out = populate(engine)
    ids = [r["id"] for r in out["page1"] + out["page2"]]
    assert ids == sorted(ids) and len(ids) == 6 and len(set(ids)) == 6
    assert {r["track_name"] for r in out["ascot"]} == {"Ascot"} and len(out["ascot"]) == 3
    assert [r["race_name"] for r in out["on_date"]] == ["Race 1", "Race 4"]
    assert len(out["scheduled"]) == 3
    assert sorted(h["horse_name"] for h in out["red"]) == ["Red Cadeaux", "Red Rum"]
    confidences = [p["confidence"] for p in out["for_race"]]
    assert confidences == sorted(confidences, reverse=True) and len(confidences) == 4


def test_statistics_match_a_computation_by_hand(engine):
    out = populate(engine)
    with UnitOfWork(engine, writable=False) as uow:
        predictions = []
        after = None
        while page := uow.predictions.list(after=after, limit=7):
            predictions += page
            after = page[-1]["id"]
    by_race: dict[int, list[float]] = {}
    for p in predictions:
        by_race.setdefault(p["race_id"], []).append(p["confidence"])
    expected = [
        (race_id, len(c), round(sum(c) / len(c), 10), min(c), max(c))
        for race_id, c in sorted(by_race.items())
    ]
    got = [
        (s["race_id"], s["prediction_count"], s["avg_confidence"], s["min_confidence"], s["max_confidence"])
        for s in out["race_stats"]
    ]
    assert got == expected
    high = {}
    for p in predictions:
        high[p["horse_id"]] = high.get(p["horse_id"], 0) + (p["confidence"] >= 0.8)
    assert {s["horse_id"]: s["high_confidence_count"] for s in out["horse_stats"]} == high


def test_top_predictions_per_race(engine):
    out = populate(engine)
    by_race: dict = {}
    for row in out["top"]:
        by_race.setdefault(row["race_id"], []).append(row["confidence"])
    assert len(by_race) == 6 and all(len(c) == 2 and c == sorted(c, reverse=True) for c in by_race.values())
    with UnitOfWork(engine, writable=False) as uow:
        assert by_race[1] == [p["confidence"] for p in uow.predictions.for_race(1)][:2]


def test_jockey_leaderboard_counts_rides(engine):
    out = populate(engine)
    rides = {row["jockey"]: row["rides"] for row in out["jockeys"]}
    assert rides == {"J0": 12, "J1": 12}
    assert all(row["wins"] == 0 and row["avg_odds"] > 0 for row in out["jockeys"])


def test_update_and_delete(engine):
    populate(engine)
    with UnitOfWork(engine) as uow:
        race = uow.races.list(limit=1)[0]
        updated = uow.races.update(race["id"], status="cancelled", distance=2000.0)
        assert updated["status"] == "cancelled" and updated["distance"] == 2000.0
        assert uow.races.update(10**9, status="x") is None
        assert uow.races.remove_runner(race["id"], race["id"]) in (True, False)
        assert uow.races.delete(race["id"]) is True
        assert uow.races.delete(race["id"]) is False
        uow.commit()
    with UnitOfWork(engine, writable=False) as uow:
        assert uow.races.get(race["id"]) is None
        assert uow.predictions.list(race_id=race["id"]) == []
        assert uow.races.runners(race["id"]) == []


def test_uncommitted_work_is_rolled_back(engine):
    with UnitOfWork(engine) as uow:
        uow.horses.add(horse_name="Ghost")
    with UnitOfWork(engine, writable=False) as uow:
        assert uow.horses.list(name="Ghost") == []


def test_unknown_fields_are_refused(engine):
    with UnitOfWork(engine) as uow:
        with pytest.raises(UnknownField, match="horses has no writable field colour"):
            uow.horses.add(horse_name="X", colour="bay")
        with pytest.raises(UnknownField, match="cannot be filtered by colour"):
            uow.horses.list(colour="bay")


def test_both_engines_give_equal_results(tmp_path, legacy_file, postgres_url):
    from adapters.postgres import create_postgres_engine
    from adapters.sqlite import create_sqlite_engine
    from hrp_data.schema.install import upgrade

    upgrade(postgres_url)
    sqlite_engine = create_sqlite_engine(f"sqlite:///{legacy_file}")
    postgres_engine = create_postgres_engine(postgres_url)
    try:
        assert _stable(populate(sqlite_engine)) == _stable(populate(postgres_engine))
    finally:
        sqlite_engine.dispose()
        postgres_engine.dispose()


def test_works_on_a_legacy_file_written_by_the_legacy_app(legacy_file):
    """Rows inserted by plain SQL, as the legacy app does, are read through the models."""
    import sqlite3

    from adapters.sqlite import create_sqlite_engine

    with sqlite3.connect(legacy_file) as raw:
        raw.execute(
            "INSERT INTO races (race_name, race_date, distance, weather_conditions, created_at)"
            " VALUES ('Legacy', '2024-05-01', 1200, '{\"wind\": \"N\"}', '2024-04-30 08:00:00')"
        )
    engine = create_sqlite_engine(f"sqlite:///{legacy_file}")
    with UnitOfWork(engine, writable=False) as uow:
        race = uow.races.list()[0]
    engine.dispose()
    assert race["race_date"] == dt.date(2024, 5, 1)
    assert race["distance"] == 1200.0
    assert race["weather_conditions"] == {"wind": "N"}
    assert race["created_at"] == dt.datetime(2024, 4, 30, 8, 0, tzinfo=UTC)
    assert race["status"] == "scheduled"
    with sqlite3.connect(legacy_file) as raw:
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert not {t for t in tables if not t.startswith("sqlite_")} - {
        "users", "races", "horses", "race_horses", "predictions", "api_credentials"
    }


def test_top_predictions_per_race_ties_by_id_skips_null_and_pages(engine):
    """Equal confidences rank by id, a NULL confidence is left out, `after` pages by race id: the
    same rows on both databases (PostgreSQL takes them through LATERAL, SQLite through a window)."""
    populate(engine)
    with UnitOfWork(engine) as uow:
        best = max(p["confidence"] for p in uow.predictions.list(race_id=3, limit=100))
        for horse in (1, 2):
            uow.predictions.add(race_id=3, horse_id=horse, user_id=2, confidence=best)
        uow.predictions.add(race_id=3, horse_id=3, user_id=2, confidence=None)
        uow.commit()
    with UnitOfWork(engine, writable=False) as uow:
        top = uow.statistics.top_predictions_per_race(after=2, races=2, per_race=3)
        predictions = uow.predictions.list(limit=1000)
    expected = []
    for race_id in (3, 4):
        ranked = sorted((p for p in predictions if p["race_id"] == race_id and p["confidence"] is not None),
                        key=lambda p: (-p["confidence"], p["id"]))[:3]
        expected += [{"race_id": race_id, "id": p["id"], "horse_id": p["horse_id"], "confidence": p["confidence"],
                      "rank": rank} for rank, p in enumerate(ranked, start=1)]
    assert top == expected
    assert [row["confidence"] for row in top[:3]] == [best, best, best]


def test_a_read_only_unit_of_work_on_postgres_reads_in_autocommit(postgres_url):
    """No BEGIN and ROLLBACK around a read-only unit's reads on PostgreSQL: each statement is a
    transaction of its own (under READ COMMITTED it had a snapshot of its own anyway); a writable
    unit keeps one transaction."""
    from adapters.postgres import create_postgres_engine

    engine = create_postgres_engine(postgres_url)
    started = "SELECT transaction_timestamp()"
    try:
        for writable, separate in ((False, True), (True, False)):
            with UnitOfWork(engine, writable=writable) as uow:
                first = uow.session.execute(sa.text(started)).scalar()
                time.sleep(0.01)
                assert (uow.session.execute(sa.text(started)).scalar() > first) is separate
    finally:
        engine.dispose()
