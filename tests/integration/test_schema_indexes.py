"""Indexes the app's migrations create during the cutover: carried to the secondary with the same
name in both directions, dropped there when the primary drops one the layer carried; one that
cannot be carried with certainty is listed with its statement, and a unique one the new primary
would lack refuses the move of the primary, named."""

from __future__ import annotations

import sqlite3

import psycopg2
import pytest
from click.testing import CliRunner

from adapters.postgres import APPLYING_SETTING
from hrp_data.flip.move import move
from hrp_data.flip.readiness import NotReady, checklist, guarded_move
from hrp_data.cutover.phases import Phase
from hrp_data.verify.run import verify
from tests.integration import test_schema_changes
from tests.integration.test_schema_changes import _postgres, _wait
from tools.cli import cli

live = test_schema_changes.live  # the fixture: a seeded file in dual_write, its applier and watch running


def _pg_indexes(url: str, table: str) -> dict[str, str]:
    return dict(_postgres(url, f"SELECT indexname, indexdef FROM pg_indexes WHERE tablename = '{table}'"))


def _file_indexes(path, table: str) -> dict[str, str]:
    with sqlite3.connect(path) as raw:
        return dict(raw.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", (table,)))


def _schema_check(cutover, target: Phase):
    return {c.name: c for c in checklist(cutover, target)}["schema"]


def test_indexes_created_on_sqlite_reach_postgresql(live):
    """In dual_write the migration adds a column with a unique two-column index and a plain
    two-column index: within seconds PostgreSQL has both with the same names and definitions (the
    unique one refuses a duplicate there), and the flip's schema check passes."""
    cutover, path, postgres_url = live
    with sqlite3.connect(path) as raw:
        raw.execute("ALTER TABLE horses ADD COLUMN passport TEXT")
        raw.execute("CREATE UNIQUE INDEX ux_horses_passport_name ON horses (passport, horse_name)")
        raw.execute("CREATE INDEX ix_horses_trainer_age ON horses (trainer, age DESC)")
    _wait(lambda: {"ux_horses_passport_name", "ix_horses_trainer_age"} <= set(_pg_indexes(postgres_url, "horses")))
    found = _pg_indexes(postgres_url, "horses")
    assert found["ux_horses_passport_name"].startswith("CREATE UNIQUE INDEX ux_horses_passport_name ON public.horses")
    assert found["ux_horses_passport_name"].endswith("USING btree (passport, horse_name)")
    assert found["ix_horses_trainer_age"].endswith("USING btree (trainer, age DESC)")
    assert not found["ix_horses_trainer_age"].startswith("CREATE UNIQUE")
    connection = psycopg2.connect(_libpq(postgres_url))
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL {APPLYING_SETTING} = 'on'")  # past the secondary's guard, as the applier
            cursor.execute("INSERT INTO horses (horse_name, passport) VALUES ('Twin', 'GB-1')")
            with pytest.raises(psycopg2.errors.UniqueViolation, match="ux_horses_passport_name"):
                cursor.execute("INSERT INTO horses (horse_name, passport) VALUES ('Twin', 'GB-1')")
    finally:
        connection.rollback()
        connection.close()
    assert not cutover.schema_watch.indexes
    move(cutover, Phase.SHADOW)
    schema = _schema_check(cutover, Phase.POSTGRES_PRIMARY)
    assert schema.ok and "not carried" not in schema.detail, schema.detail

    with sqlite3.connect(path) as raw:  # the next migration drops one: the layer made it, so it goes too
        raw.execute("DROP INDEX ix_horses_trainer_age")
    _wait(lambda: "ix_horses_trainer_age" not in _pg_indexes(postgres_url, "horses"))
    assert "ux_horses_passport_name" in _pg_indexes(postgres_url, "horses")


def _libpq(url: str) -> str:
    from tests.integration.test_backfill import libpq

    return libpq(url)


def test_after_the_flip_an_index_created_on_postgresql_reaches_the_file(live):
    cutover, path, postgres_url = live
    move(cutover, Phase.SHADOW)
    move(cutover, Phase.POSTGRES_PRIMARY)
    with cutover.engine("postgres").begin() as connection:
        connection.exec_driver_sql("CREATE INDEX ix_races_surface_distance ON races (surface, distance DESC)")
        connection.exec_driver_sql("CREATE UNIQUE INDEX ux_races_name_id ON races (race_name, id)")
    _wait(lambda: {"ix_races_surface_distance", "ux_races_name_id"} <= set(_file_indexes(path, "races")))
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT name, \"desc\" FROM pragma_index_xinfo('ix_races_surface_distance') WHERE key = 1"
                           " ORDER BY seqno").fetchall() == [("surface", 0), ("distance", 1)]
        assert [row[2] for row in raw.execute("PRAGMA index_list(races)") if row[1] == "ux_races_name_id"] == [1]
    assert not cutover.schema_watch.indexes
    result = verify(cutover, record=False)
    assert result.equal, result.as_json()
    schema = _schema_check(cutover, Phase.SHADOW)
    assert schema.ok and "not carried" not in schema.detail, schema.detail

    with cutover.engine("postgres").begin() as connection:  # dropped on the primary: the layer made it in the file
        connection.exec_driver_sql("DROP INDEX ix_races_surface_distance")
    _wait(lambda: "ix_races_surface_distance" not in _file_indexes(path, "races"))


def test_an_expression_index_is_listed_with_its_statement_and_a_unique_one_refuses_the_flip(live):
    cutover, path, postgres_url = live
    statement = "CREATE INDEX ix_horses_lower_name ON horses (lower(horse_name))"
    with sqlite3.connect(path) as raw:
        raw.execute(statement)
    _wait(lambda: any(d.name == "ix_horses_lower_name" for d in cutover.schema_watch.indexes))
    [listed] = cutover.schema_watch.indexes
    assert listed.only_in == "sqlite" and listed.statement == statement and "expression" in listed.why
    assert "ix_horses_lower_name" not in _pg_indexes(postgres_url, "horses")
    move(cutover, Phase.SHADOW)
    schema = _schema_check(cutover, Phase.POSTGRES_PRIMARY)  # a plain one is listed, never a refusal
    assert schema.ok and "index ix_horses_lower_name on horses only in sqlite" in schema.detail, schema.detail
    assert f"run on postgres, its expression translated where the dialects differ: {statement}" in schema.detail
    status = CliRunner().invoke(cli, ["--sqlite", str(path), "--postgres", postgres_url, "status"])
    assert "INDEX      index ix_horses_lower_name on horses only in sqlite" in status.output, status.output
    assert statement in status.output, status.output

    unique = "CREATE UNIQUE INDEX ux_users_lower_email ON users (lower(email))"
    with sqlite3.connect(path) as raw:
        raw.execute(unique)
    schema = _schema_check(cutover, Phase.POSTGRES_PRIMARY)
    assert not schema.ok and "unique index ux_users_lower_email on users only in sqlite" in schema.detail, schema.detail
    assert f"run on postgres, its expression translated where the dialects differ: {unique}" in schema.detail
    with pytest.raises(NotReady, match="ux_users_lower_email"):
        guarded_move(cutover, Phase.POSTGRES_PRIMARY)
    assert cutover.phase(fresh=True).phase is Phase.SHADOW

    with cutover.engine("postgres").begin() as connection:  # the operator runs the statement it named
        connection.exec_driver_sql("CREATE UNIQUE INDEX ux_users_lower_email ON users (lower(email))")
    assert _schema_check(cutover, Phase.POSTGRES_PRIMARY).ok

    # a partial one spelled with SQLite's other quotes (EF Core's [Name], MySQL-style `name`): the
    # statement named uses PostgreSQL's, so where the expression means the same it runs as shown
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE UNIQUE INDEX [ux_users_admin_login] ON `users` ([last_login], `username`)"
                    " WHERE [is_admin] IS NOT NULL AND [username] <> '[x]'")
    schema = _schema_check(cutover, Phase.POSTGRES_PRIMARY)
    assert not schema.ok and "ux_users_admin_login" in schema.detail, schema.detail
    shown = ('CREATE UNIQUE INDEX "ux_users_admin_login" ON "users" ("last_login", "username")'
             ' WHERE "is_admin" IS NOT NULL AND "username" <> \'[x]\'')
    assert shown in schema.detail, schema.detail
    with cutover.engine("postgres").begin() as connection:
        connection.exec_driver_sql(shown)
    assert _schema_check(cutover, Phase.POSTGRES_PRIMARY).ok


def test_a_unique_index_the_watch_has_not_carried_yet_refuses_the_flip(live):
    """With no watch running (a role that may not create it; here no applier), a unique index the
    file got holds the flip, named with the statement that carries it."""
    cutover, path, postgres_url = live
    cutover.applier.stop()
    move(cutover, Phase.SHADOW)
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE UNIQUE INDEX ux_races_name_date ON races (race_name, race_date, id)")
    schema = _schema_check(cutover, Phase.POSTGRES_PRIMARY)
    assert not schema.ok and "unique index ux_races_name_date on races only in sqlite" in schema.detail, schema.detail
    assert 'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "ux_races_name_date" ON "races"' in schema.detail
    cutover.schema_watch.check()  # the watch's look carries it
    assert "ux_races_name_date" in _pg_indexes(postgres_url, "races")
    assert _schema_check(cutover, Phase.POSTGRES_PRIMARY).ok


def test_after_the_flip_a_unique_index_the_file_cannot_get_refuses_the_rollback_until_it_has_it(live):
    """The other direction: a unique expression index a migration makes on PostgreSQL after the flip
    is not carried to the file; the rollback, which would make SQLite the primary without it, is
    refused with the index named and the statement to run in the file, and goes once it is there."""
    cutover, path, postgres_url = live
    move(cutover, Phase.SHADOW)
    move(cutover, Phase.POSTGRES_PRIMARY)
    with cutover.engine("postgres").begin() as connection:
        connection.exec_driver_sql("CREATE UNIQUE INDEX ux_users_lower_email ON users (lower(email))")
    _wait(lambda: any(d.name == "ux_users_lower_email" for d in cutover.schema_watch.indexes))
    assert "ux_users_lower_email" not in _file_indexes(path, "users")
    schema = _schema_check(cutover, Phase.SHADOW)
    assert not schema.ok and "unique index ux_users_lower_email on users only in postgres" in schema.detail, schema.detail
    with pytest.raises(NotReady, match="ux_users_lower_email"):
        guarded_move(cutover, Phase.SHADOW)
    assert cutover.phase(fresh=True).phase is Phase.POSTGRES_PRIMARY
    refused = CliRunner().invoke(cli, ["--sqlite", str(path), "--postgres", postgres_url, "rollback"])
    assert refused.exit_code != 0 and "ux_users_lower_email" in refused.output, refused.output
    assert cutover.phase(fresh=True).phase is Phase.POSTGRES_PRIMARY

    with sqlite3.connect(path) as raw:  # the operator makes it in the file
        raw.execute("CREATE UNIQUE INDEX ux_users_lower_email ON users (lower(email))")
    assert _schema_check(cutover, Phase.SHADOW).ok
    with pytest.raises(NotReady) as still:  # this test ran no verify nor shadow reads: those still hold it
        guarded_move(cutover, Phase.SHADOW)
    assert "ux_users_lower_email" not in str(still.value) and "schema" not in {c.name for c in still.value.failed}
