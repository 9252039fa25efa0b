"""hrp_data.web.services with a fake unit of work: what each service refuses, what it writes, what it commits."""

from __future__ import annotations

import contextlib

import pytest

from hrp_data.web import services
from hrp_data.web.services import Conflict, Forbidden, NotFound
from tests.unit.fakes import FakeCutover


@pytest.fixture
def cutover() -> FakeCutover:
    return FakeCutover()


def _race(cutover: FakeCutover, **fields) -> dict:
    return cutover.seed("races", race_name="Derby", **fields)


def _horse(cutover: FakeCutover, **fields) -> dict:
    return cutover.seed("horses", horse_name="Comet", **fields)


class TestFakes:
    def test_only_a_commit_reaches_the_store(self, cutover):
        with cutover.writing() as uow:
            uow.horses.add(horse_name="Left uncommitted")
        with cutover.writing() as uow:
            uow.horses.add(horse_name="Kept")
            uow.commit()
        assert [row["horse_name"] for row in cutover.store.rows("horses")] == ["Kept"]

    def test_a_read_only_unit_refuses_to_commit(self, cutover):
        with cutover.reading() as uow, pytest.raises(AssertionError):
            uow.commit()


class TestUsers:
    def test_register_stores_a_hash_not_the_password_and_commits_once(self, cutover):
        held = []

        @contextlib.contextmanager
        def hashing():
            held.append("hash")
            yield

        user = services.register_user(cutover, username="ann", email="ann@example.com", password="pw-123456",
                                      hashing=hashing)
        stored = cutover.store.rows("users")
        assert [row["username"] for row in stored] == ["ann"] and stored[0]["id"] == user["id"]
        assert stored[0]["password_hash"] != "pw-123456" and stored[0]["password_hash"]
        assert stored[0]["is_admin"] is False
        assert cutover.store.commits == 1 and held == ["hash"]

    @pytest.mark.parametrize(("username", "email"), [("ann", "other@example.com"), ("bob", "ann@example.com")])
    def test_a_taken_username_or_email_is_one_conflict_and_writes_nothing(self, cutover, username, email):
        cutover.seed("users", username="ann", email="ann@example.com", password_hash="x")
        with pytest.raises(Conflict) as raised:
            services.register_user(cutover, username=username, email=email, password="pw-123456")
        assert str(raised.value) == services.TAKEN
        assert len(cutover.store.rows("users")) == 1 and cutover.store.commits == 0

    def test_authenticate_with_the_right_password_stamps_last_login(self, cutover):
        services.register_user(cutover, username="ann", email="ann@example.com", password="pw-123456")
        user = services.authenticate(cutover, "ann", "pw-123456")
        assert user is not None and user["username"] == "ann"
        assert user["last_login"] is not None
        assert cutover.store.rows("users")[0]["last_login"] == user["last_login"]
        assert cutover.store.commits == 2

    def test_a_wrong_password_or_an_unknown_name_is_none_and_writes_nothing(self, cutover, monkeypatch):
        services.register_user(cutover, username="ann", email="ann@example.com", password="pw-123456")
        checked = []
        real = services._password_matches
        monkeypatch.setattr(services, "_password_matches", lambda stored, pw: checked.append(pw) or real(stored, pw))

        assert services.authenticate(cutover, "ann", "wrong-password") is None
        assert services.authenticate(cutover, "nobody", "pw-123456") is None
        assert checked == ["wrong-password", "pw-123456"], "an unknown name costs a hash check too"
        assert cutover.store.rows("users")[0]["last_login"] is None and cutover.store.commits == 1

    def test_a_stored_hash_werkzeug_cannot_read_never_matches(self, cutover):
        cutover.seed("users", username="ann", email="ann@example.com", password_hash="plain-text-from-1999")
        assert services.authenticate(cutover, "ann", "plain-text-from-1999") is None

    def test_get_user(self, cutover):
        user = cutover.seed("users", username="ann", email="ann@example.com", password_hash="x")
        assert services.get_user(cutover, user["id"])["username"] == "ann"
        assert services.get_user(cutover, user["id"] + 1) is None

    @pytest.mark.parametrize(("stored", "admin"), [(True, True), (False, False), (None, False), (1, False),
                                                   ("yes", False), (b"\x01", False)])
    def test_only_a_stored_true_is_an_admin(self, stored, admin):
        assert services.is_admin({"is_admin": stored}) is admin
        assert services.is_admin(None) is False


class TestRaces:
    def test_pages_end_with_a_cursor_until_the_last(self, cutover):
        ids = [_race(cutover, track_name="Ascot" if i % 2 else "York")["id"] for i in range(5)]
        first, cursor = services.list_races(cutover, after=None, limit=2)
        assert [r["id"] for r in first] == ids[:2] and cursor == ids[1]
        rest, cursor = services.list_races(cutover, after=cursor, limit=10)
        assert [r["id"] for r in rest] == ids[2:] and cursor is None
        york, _ = services.list_races(cutover, after=None, limit=10, track="York")
        assert [r["id"] for r in york] == ids[0::2]

    def test_a_page_exactly_as_long_as_the_limit_is_the_last(self, cutover):
        for _ in range(3):
            _race(cutover)
        page, cursor = services.list_races(cutover, after=None, limit=3)
        assert len(page) == 3 and cursor is None

    def test_get_race_carries_runners_and_predictions_most_confident_first(self, cutover):
        race, horse = _race(cutover), _horse(cutover)
        services.set_runner(cutover, race["id"], horse["id"], {"post_position": 3})
        low = cutover.seed("predictions", race_id=race["id"], horse_id=horse["id"], confidence=0.2)
        high = cutover.seed("predictions", race_id=race["id"], horse_id=horse["id"], confidence=0.9)
        got = services.get_race(cutover, race["id"])
        assert [p["id"] for p in got["predictions"]] == [high["id"], low["id"]]
        assert [(r["horse_id"], r["post_position"]) for r in got["runners"]] == [(horse["id"], 3)]

    def test_a_missing_race_is_not_found_for_every_service(self, cutover):
        for call in (
            lambda: services.get_race(cutover, 404),
            lambda: services.update_race(cutover, 404, {"status": "done"}),
            lambda: services.delete_race(cutover, 404),
            lambda: services.race_predictions(cutover, 404, 10),
            lambda: services.remove_runner(cutover, 404, 1),
        ):
            with pytest.raises(NotFound):
                call()
        assert cutover.store.commits == 0

    def test_create_update_delete_commit_once_each(self, cutover):
        race = services.create_race(cutover, {"race_name": "Oaks", "status": "open"})
        assert race["runners"] == [] and cutover.store.rows("races")[0]["race_name"] == "Oaks"
        updated = services.update_race(cutover, race["id"], {"status": "closed"})
        assert updated["status"] == "closed" and updated["runners"] == []
        assert cutover.store.rows("races")[0]["status"] == "closed"
        services.delete_race(cutover, race["id"])
        assert cutover.store.rows("races") == [] and cutover.store.commits == 3

    def test_deleting_a_race_takes_its_runners_and_predictions(self, cutover):
        race, other, horse = _race(cutover), _race(cutover), _horse(cutover)
        services.set_runner(cutover, race["id"], horse["id"], {})
        services.set_runner(cutover, other["id"], horse["id"], {})
        cutover.seed("predictions", race_id=race["id"], horse_id=horse["id"], confidence=0.5)
        services.delete_race(cutover, race["id"])
        assert [r["race_id"] for r in cutover.store.rows("race_horses")] == [other["id"]]
        assert cutover.store.rows("predictions") == []

    def test_set_runner_needs_the_race_and_the_horse_and_writes_nothing_otherwise(self, cutover):
        race, horse = _race(cutover), _horse(cutover)
        with pytest.raises(NotFound, match="race 404"):
            services.set_runner(cutover, 404, horse["id"], {})
        with pytest.raises(NotFound, match="horse 404"):
            services.set_runner(cutover, race["id"], 404, {})
        assert cutover.store.rows("race_horses") == [] and cutover.store.commits == 0

    def test_set_runner_replaces_the_whole_runner(self, cutover):
        """PUT: a field not given is cleared, not kept."""
        race, horse = _race(cutover), _horse(cutover)
        services.set_runner(cutover, race["id"], horse["id"], {"post_position": 2, "odds": 4.5})
        runner = services.set_runner(cutover, race["id"], horse["id"], {"finish_position": 1})
        assert runner == {"race_id": race["id"], "horse_id": horse["id"], "post_position": None, "odds": None,
                          "finish_position": 1}
        assert cutover.store.rows("race_horses") == [runner]

    def test_remove_runner(self, cutover):
        race, horse = _race(cutover), _horse(cutover)
        services.set_runner(cutover, race["id"], horse["id"], {})
        services.remove_runner(cutover, race["id"], horse["id"])
        assert cutover.store.rows("race_horses") == []
        with pytest.raises(NotFound, match=f"runner {horse['id']} of race {race['id']}"):
            services.remove_runner(cutover, race["id"], horse["id"])

    def test_race_predictions_are_limited(self, cutover):
        race, horse = _race(cutover), _horse(cutover)
        for confidence in (0.1, 0.7, 0.4):
            cutover.seed("predictions", race_id=race["id"], horse_id=horse["id"], confidence=confidence)
        assert [p["confidence"] for p in services.race_predictions(cutover, race["id"], 2)] == [0.7, 0.4]


class TestHorses:
    def test_missing_horse_is_not_found_and_nothing_is_committed(self, cutover):
        for call in (
            lambda: services.get_horse(cutover, 404),
            lambda: services.update_horse(cutover, 404, {"age": 5}),
            lambda: services.delete_horse(cutover, 404),
        ):
            with pytest.raises(NotFound, match="horse 404"):
                call()
        assert cutover.store.commits == 0

    def test_create_update_list_delete(self, cutover):
        comet = services.create_horse(cutover, {"horse_name": "Comet", "jockey": "Lee"})
        services.create_horse(cutover, {"horse_name": "Dancer", "jockey": "Kim"})
        assert services.update_horse(cutover, comet["id"], {"age": 5})["age"] == 5
        assert services.get_horse(cutover, comet["id"])["age"] == 5
        page, cursor = services.list_horses(cutover, after=None, limit=1)
        assert [h["horse_name"] for h in page] == ["Comet"] and cursor == comet["id"]
        services.delete_horse(cutover, comet["id"])
        assert [h["horse_name"] for h in cutover.store.rows("horses")] == ["Dancer"]
        assert cutover.store.commits == 4


class TestPredictions:
    def test_create_names_the_missing_field_and_writes_nothing(self, cutover):
        race, horse = _race(cutover), _horse(cutover)
        with pytest.raises(NotFound) as missing_race:
            services.create_prediction(cutover, 1, {"race_id": 404, "horse_id": horse["id"], "confidence": 0.5})
        with pytest.raises(NotFound) as missing_horse:
            services.create_prediction(cutover, 1, {"race_id": race["id"], "horse_id": 404, "confidence": 0.5})
        assert (missing_race.value.field, missing_horse.value.field) == ("race_id", "horse_id")
        assert cutover.store.rows("predictions") == [] and cutover.store.commits == 0

    def test_create_records_its_author(self, cutover):
        race, horse = _race(cutover), _horse(cutover)
        made = services.create_prediction(cutover, 7, {"race_id": race["id"], "horse_id": horse["id"],
                                                       "confidence": 0.5})
        assert made["user_id"] == 7 and cutover.store.rows("predictions") == [made]
        assert cutover.store.commits == 1

    def test_only_the_author_or_an_admin_deletes(self, cutover):
        race, horse = _race(cutover), _horse(cutover)
        fields = {"race_id": race["id"], "horse_id": horse["id"], "confidence": 0.5}
        first = services.create_prediction(cutover, 1, fields)
        second = services.create_prediction(cutover, 1, fields)
        with pytest.raises(Forbidden):
            services.delete_prediction(cutover, first["id"], {"id": 2, "is_admin": "yes"})
        assert len(cutover.store.rows("predictions")) == 2
        services.delete_prediction(cutover, first["id"], {"id": 1, "is_admin": False})
        services.delete_prediction(cutover, second["id"], {"id": 2, "is_admin": True})
        assert cutover.store.rows("predictions") == []
        with pytest.raises(NotFound):
            services.delete_prediction(cutover, first["id"], {"id": 1, "is_admin": True})


class TestCredentials:
    def test_create_list_delete(self, cutover):
        made = services.create_credential(cutover, 3, {"service_name": "odds", "api_key": "k"})
        assert made["user_id"] == 3
        page, cursor = services.list_credentials(cutover, after=None, limit=5)
        assert page == [made] and cursor is None
        services.delete_credential(cutover, made["id"])
        assert cutover.store.rows("api_credentials") == []
        with pytest.raises(NotFound, match=f"credential {made['id']}"):
            services.delete_credential(cutover, made["id"])
        assert cutover.store.commits == 2


class TestStatistics:
    def test_pages_are_keyed_by_the_grouping_column(self, cutover):
        races = [_race(cutover) for _ in range(3)]
        horses = [_horse(cutover) for _ in range(2)]
        for race in races:
            for horse in horses:
                cutover.seed("predictions", race_id=race["id"], horse_id=horse["id"], confidence=0.9)
        page, cursor = services.race_statistics(cutover, after=None, limit=2)
        assert [r["race_id"] for r in page] == [races[0]["id"], races[1]["id"]] and cursor == races[1]["id"]
        page, cursor = services.horse_performance(cutover, after=None, limit=2)
        assert [r["horse_id"] for r in page] == [h["id"] for h in horses] and cursor is None
        assert page[0]["high_confidence_count"] == 3
