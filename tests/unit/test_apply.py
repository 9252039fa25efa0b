"""hrp_data.cutover.apply's decisions made before anything is sent: which keys and row images
PostgreSQL would refuse, with what reason, and which errors are the connection's, not the row's."""

from __future__ import annotations

import psycopg2
import pytest
import sqlalchemy as sa

from hrp_data.cutover.apply import ApplyResult, KeyRef, _is_disconnect, image_refusal, key_refusal, postgres_refusals
from hrp_data.models import Base

TABLES = dict(Base.metadata.tables)
RACES, RUNNERS = TABLES["races"], TABLES["race_horses"]


class TestKeyRefusal:
    def test_a_whole_number_key_is_held(self):
        assert key_refusal(RACES, (7,)) is None
        assert key_refusal(RUNNERS, (7, 9)) is None

    @pytest.mark.parametrize(("key", "reason"), [
        (("7a", 9), "race_id: text_in_integer_column"),
        ((7, 2.5), "horse_id: real_in_integer_column"),
        ((7, b"\x01"), "horse_id: blob_in_integer_column"),
        ((None, 9), "race_id: null_in_required_column"),
    ])
    def test_a_key_sqlite_keeps_but_postgresql_cannot_names_its_column_and_reason(self, key, reason):
        assert key_refusal(RUNNERS, key) == reason


class TestImageRefusal:
    def test_an_image_postgresql_holds_is_not_refused(self):
        assert image_refusal(RACES, {"id": 1, "race_name": "Derby", "distance": 1200.0, "status": None}) is None

    @pytest.mark.parametrize(("image", "reason"), [
        ({"id": 1, "race_name": "bad\x00name"}, "rejected: nul_byte_in_text (race_name)"),
        ({"id": 1, "race_name": None}, "rejected: null_in_required_column (race_name)"),
        ({"id": 1, "race_name": "Derby", "distance": "far"}, "rejected: text_in_real_column (distance)"),
    ])
    def test_the_first_value_postgresql_would_refuse_is_named(self, image, reason):
        assert image_refusal(RACES, image) == reason


class TestPostgresRefusals:
    def test_each_key_is_sent_applied_already_or_failed_with_its_reason(self):
        sent = KeyRef("races", (1,))
        bad_value = KeyRef("races", (2,))
        gone_bad_key = KeyRef("race_horses", ("7a", 1))
        live_bad_key = KeyRef("race_horses", ("7b", 1))
        deleted = KeyRef("races", (3,))
        images = {
            sent: {"id": 1, "race_name": "Derby"},
            bad_value: {"id": 2, "race_name": "bad\x00name"},
            gone_bad_key: None,
            live_bad_key: {"race_id": "7b", "horse_id": 1, "post_position": 1, "odds": None, "finish_position": None},
            deleted: None,
        }
        refused = postgres_refusals(TABLES, images, list(images))
        assert refused.applied == [gone_bad_key]
        assert refused.failed == {
            bad_value: "rejected: nul_byte_in_text (race_name)",
            live_bad_key: "a key PostgreSQL cannot hold (race_id: text_in_integer_column)",
        }
        assert (refused.upserted, refused.deleted) == (0, 0)

    def test_nothing_to_refuse_is_an_empty_result(self):
        ref = KeyRef("races", (1,))
        assert postgres_refusals(TABLES, {ref: {"id": 1, "race_name": "Oaks"}}, [ref]) == ApplyResult()


class TestKeyRef:
    def test_the_lock_id_is_stable_and_tells_tables_and_keys_apart(self):
        ref = KeyRef("races", (1,))
        assert ref.lock_id == KeyRef("races", (1,)).lock_id
        assert len({ref.lock_id, KeyRef("horses", (1,)).lock_id, KeyRef("races", (2,)).lock_id}) == 3
        assert -(2**63) <= ref.lock_id < 2**63


class TestDisconnect:
    @pytest.mark.parametrize("error", [
        sa.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection")),
        psycopg2.OperationalError("server closed the connection"),
        psycopg2.InterfaceError("connection already closed"),
    ])
    def test_connection_errors_retry_the_whole_batch(self, error):
        assert _is_disconnect(error)

    @pytest.mark.parametrize("error", [
        sa.exc.IntegrityError("INSERT", {}, Exception("foreign key")),
        ValueError("A string literal cannot contain NUL (0x00) characters."),
    ])
    def test_row_errors_fail_only_their_key(self, error):
        assert not _is_disconnect(error)
