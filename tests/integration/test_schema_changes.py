"""The app's own migrations during the cutover: a table rebuilt the way Alembic's batch mode does it
gets its capture back within seconds and the writes made meanwhile are carried; a column on one
side only is never EQUAL and holds every move back, named."""

from __future__ import annotations

import random
import sqlite3
import threading
from decimal import Decimal
import time

import pytest
from click.testing import CliRunner

from hrp_data.flip import journal as move_journal
from hrp_data.cutover.assemble import open_cutover
from hrp_data.flip.move import move
from hrp_data.cutover.phases import Phase
from hrp_data.flip.readiness import checklist
from hrp_data.schema.install import upgrade
from hrp_data.cutover.schema_watch import uncaptured
from tools.seed import seed_database
from hrp_data.verify.run import carry_gap, verify
from tools.cli import cli
from tests.integration.cutover_helpers import assert_equal, settings_for, wait_drained


@pytest.fixture
def live(tmp_path, postgres_url):
    """A seeded file in dual_write with its applier (and schema watch) running, carried to PostgreSQL."""
    path = tmp_path / "hrp.db"
    seed_database(path, races=20, seed=3)
    upgrade(postgres_url)
    cutover = open_cutover(settings_for(path, postgres_url), carry=carry_gap).start()
    move(cutover, Phase.DUAL_WRITE)
    with cutover.sqlite.begin() as connection:  # touch every row so the outbox carries it over
        for table in ("users", "races", "horses", "race_horses", "predictions", "api_credentials"):
            connection.exec_driver_sql(f'UPDATE "{table}" SET rowid = rowid')
    wait_drained(cutover, timeout=120)
    assert_equal(path, postgres_url)
    yield cutover, path, postgres_url
    cutover.close()


def _wait(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _rebuild_with_writes(path, table: str) -> dict:
    """Alembic batch mode's rebuild (copy, drop, rename) and, in the same transaction, writes the old
    capture triggers would have recorded: they went with the dropped table."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        create = connection.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()[0]
        connection.execute("PRAGMA foreign_keys = OFF")
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(create.replace(f"CREATE TABLE {table}", f"CREATE TABLE _alembic_tmp_{table}", 1)
                           .replace(f'CREATE TABLE "{table}"', f'CREATE TABLE "_alembic_tmp_{table}"', 1))
        connection.execute(f"INSERT INTO _alembic_tmp_{table} SELECT * FROM {table}")
        connection.execute(f"DROP TABLE {table}")
        connection.execute(f"ALTER TABLE _alembic_tmp_{table} RENAME TO {table}")
        ids = [row[0] for row in connection.execute(f"SELECT id FROM {table} ORDER BY id LIMIT 10")]
        connection.execute(f"UPDATE {table} SET age = coalesce(age, 0) + 1 WHERE id IN ({', '.join(map(str, ids))})")
        new_id = connection.execute(
            f"INSERT INTO {table} (horse_name, age) VALUES ('Rebuilt Runner', 4)"
        ).lastrowid
        lonely = connection.execute(
            f"SELECT id FROM {table} WHERE id NOT IN (SELECT horse_id FROM race_horses)"
            " AND id NOT IN (SELECT horse_id FROM predictions) AND id <> ? ORDER BY id LIMIT 1", (new_id,)
        ).fetchone()
        if lonely:
            connection.execute(f"DELETE FROM {table} WHERE id = ?", lonely)
        connection.execute("COMMIT")
        return {"updated": ids, "inserted": new_id, "deleted": lonely[0] if lonely else None}
    finally:
        connection.close()


def test_a_rebuilt_table_is_captured_again_and_its_gap_carried(live):
    cutover, path, postgres_url = live
    changed = _rebuild_with_writes(path, "horses")
    with cutover.sqlite.connect() as connection:
        def captured() -> bool:
            missing = uncaptured(connection, [cutover.captured.sqlite["horses"]])
            connection.rollback()
            return not missing

        _wait(captured)  # the watch re-armed capture on its own
    reset = move_journal.evidence_reset(cutover.sqlite)  # no move passes before a fresh full verify
    assert reset is not None and reset[1].startswith("capture of horses was missing"), reset
    with sqlite3.connect(path) as raw:  # a write right after the re-arm is captured as usual
        raw.execute("UPDATE horses SET age = 17 WHERE id = ?", (changed["updated"][0],))
    _wait(lambda: verify(cutover, ["horses"], record=False).equal, timeout=60)
    wait_drained(cutover, timeout=60)
    assert_equal(path, postgres_url)


def test_a_column_on_one_side_only_is_never_equal_and_holds_the_flip(live):
    """While the column is not carried (here: no applier, so no watch; in production also a role
    that may not alter the table), it is named everywhere and holds the moves."""
    cutover, path, postgres_url = live
    cutover.applier.stop()
    with sqlite3.connect(path) as raw:
        raw.execute("ALTER TABLE horses ADD COLUMN sire TEXT")
        raw.execute("UPDATE horses SET sire = 'Galileo' WHERE id <= 5")
    result = verify(cutover, record=False)
    assert not result.equal
    assert {"table": "horses", "column": "sire", "kind": "column_only_in_sqlite"} in result.schema
    move(cutover, Phase.SHADOW)
    schema = {c.name: c for c in checklist(cutover, Phase.POSTGRES_PRIMARY)}["schema"]
    assert not schema.ok and "horses.sire" in schema.detail and "missing from the database" in schema.detail, schema.detail
    status = CliRunner().invoke(cli, ["--sqlite", str(path), "--postgres", postgres_url, "status"])
    assert status.exit_code == 0 and "SCHEMA     horses.sire only in sqlite" in status.output, status.output
    with sqlite3.connect(path) as raw:  # a table too: the CLI reads the file's catalog afresh
        raw.execute("CREATE TABLE race_notes (id INTEGER PRIMARY KEY, note TEXT)")
    checked = CliRunner().invoke(cli, ["--sqlite", str(path), "--postgres", postgres_url, "verify"])
    assert checked.exit_code == 1 and checked.exception is None or isinstance(checked.exception, SystemExit), checked.output
    assert "race_notes" in checked.output and "sire" in checked.output and "NOT EQUAL" in checked.output, checked.output


def _postgres(url: str, sql: str) -> list[tuple]:
    import psycopg2

    from tests.integration.test_backfill import libpq

    with psycopg2.connect(libpq(url)) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def test_a_column_added_on_sqlite_is_carried_with_its_values(live):
    """The app's migration adds a column on the primary and writes it at once: within seconds the
    column is on PostgreSQL with the same mapping the schema command uses, the values written
    before it got there are carried, later writes carry it, and verify is EQUAL on both schemas."""
    cutover, path, postgres_url = live
    with sqlite3.connect(path) as raw:  # the migration, then the app's writes right after it
        raw.execute("ALTER TABLE horses ADD COLUMN sire TEXT")
        raw.execute("ALTER TABLE horses ADD COLUMN foaled DATETIME")
        raw.execute("UPDATE horses SET sire = 'Galileo', foaled = '2019-03-01 06:00:00' WHERE id <= 5")
        raw.execute("INSERT INTO horses (horse_name, sire) VALUES ('Migrated Runner', 'Galileo')")

    def carried() -> bool:
        columns = dict(_postgres(postgres_url, "SELECT column_name, data_type FROM information_schema.columns"
                                               " WHERE table_name = 'horses'"))
        if "sire" not in columns or "foaled" not in columns:
            return False
        return _postgres(postgres_url, "SELECT count(*) FROM horses WHERE sire = 'Galileo'")[0][0] == 6

    _wait(carried)
    types = dict(_postgres(postgres_url, "SELECT column_name, data_type FROM information_schema.columns"
                                         " WHERE table_name = 'horses' AND column_name IN ('sire', 'foaled')"))
    assert types == {"sire": "text", "foaled": "timestamp without time zone"}
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE horses SET sire = 'Frankel' WHERE id = 1")
    _wait(lambda: _postgres(postgres_url, "SELECT sire FROM horses WHERE id = 1")[0][0] == "Frankel")
    assert move_journal.evidence_reset(cutover.sqlite) is not None  # an older verify no longer counts
    result = verify(cutover, record=False)
    assert result.equal and not result.schema, result.as_json()
    assert_equal(path, postgres_url)


def _file_columns(path) -> dict[str, str]:
    with sqlite3.connect(path) as raw:
        return {name: declared for _, name, declared, *_ in raw.execute("PRAGMA table_info(races)")}


def test_after_the_flip_a_column_added_on_postgresql_is_carried_to_the_file(live):
    """The app's migration now runs on PostgreSQL and writes the new columns at once: within
    seconds the file has them (declared so its catalog reads back the same types), the values are
    carried, later writes carry them, verify is EQUAL and the rollback is possible again."""
    cutover, path, postgres_url = live
    move(cutover, Phase.SHADOW)
    move(cutover, Phase.POSTGRES_PRIMARY)
    with cutover.engine("postgres").begin() as connection:  # the migration, then the app's writes
        connection.exec_driver_sql("ALTER TABLE races ADD COLUMN going varchar(20)")
        connection.exec_driver_sql("ALTER TABLE races ADD COLUMN purse numeric(12,2) NOT NULL DEFAULT 0")
        connection.exec_driver_sql("ALTER TABLE races ADD COLUMN checked_at timestamp")
        connection.exec_driver_sql("UPDATE races SET going = 'soft', purse = 1250.50,"
                                   " checked_at = '2026-05-01 10:00:00' WHERE id <= 4")

    def carried() -> bool:
        if not {"going", "purse", "checked_at"} <= set(_file_columns(path)):
            return False
        with sqlite3.connect(path) as raw:
            return raw.execute("SELECT count(*) FROM races WHERE going = 'soft' AND purse = 1250.5"
                               " AND checked_at = '2026-05-01 10:00:00'").fetchone()[0] == 4

    _wait(carried)
    declared = _file_columns(path)
    assert (declared["going"], declared["purse"], declared["checked_at"]) == ("VARCHAR(20)", "NUMERIC(12,2)", "DATETIME")
    with cutover.engine("postgres").begin() as connection:
        connection.exec_driver_sql("UPDATE races SET going = 'heavy' WHERE id = 1")
    with sqlite3.connect(path) as raw:
        _wait(lambda: raw.execute("SELECT going FROM races WHERE id = 1").fetchone()[0] == "heavy")
    assert move_journal.evidence_reset(cutover.sqlite) is not None  # an older verify no longer counts
    result = verify(cutover, record=False)
    assert result.equal and not result.schema, result.as_json()
    schema = {c.name: c for c in checklist(cutover, Phase.SHADOW)}["schema"]
    assert schema.ok, schema.detail
    assert_equal(path, postgres_url)


def test_after_the_flip_a_column_no_sqlite_type_holds_stays_named_and_holds_the_rollback(live):
    cutover, path, postgres_url = live
    move(cutover, Phase.SHADOW)
    move(cutover, Phase.POSTGRES_PRIMARY)
    with cutover.engine("postgres").begin() as connection:  # jsonb: no SQLite declaration reads back as it
        connection.exec_driver_sql("ALTER TABLE races ADD COLUMN extras jsonb")
        connection.exec_driver_sql("ALTER TABLE races ADD COLUMN going text")
    _wait(lambda: "going" in _file_columns(path))
    cutover.schema_watch.check()
    assert "extras" not in _file_columns(path)
    assert [str(d) for d in cutover.schema_watch.drift] == ["races.extras only in postgres"]
    result = verify(cutover, record=False)
    assert not result.equal and {"table": "races", "column": "extras", "kind": "column_only_in_postgres"} in result.schema
    schema = {c.name: c for c in checklist(cutover, Phase.SHADOW)}["schema"]
    assert not schema.ok and "races.extras" in schema.detail, schema.detail


def test_a_table_rebuilt_on_the_secondary_gets_its_guard_back(live):
    """After the flip the app's migration also runs on SQLite (to keep the rollback possible); a batch
    rebuild there drops the guard with the table: the watch puts it back."""
    cutover, path, postgres_url = live
    move(cutover, Phase.SHADOW)
    move(cutover, Phase.POSTGRES_PRIMARY)
    wait_drained(cutover, timeout=60)
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("ATTACH ':memory:' AS hrp_cutover_layer")  # the documented maintenance bypass
        create = connection.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'horses'").fetchone()[0]
        connection.execute("PRAGMA foreign_keys = OFF")
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(create.replace("CREATE TABLE horses", "CREATE TABLE _alembic_tmp_horses", 1))
        connection.execute("INSERT INTO _alembic_tmp_horses SELECT * FROM horses")
        connection.execute("DROP TABLE horses")
        connection.execute("ALTER TABLE _alembic_tmp_horses RENAME TO horses")
        connection.execute("COMMIT")
    finally:
        connection.close()
    from hrp_data.cutover.schema_watch import unguarded
    from hrp_data.models import TABLES

    horses = [t for t in TABLES if t.name == "horses"]
    with cutover.sqlite.connect() as probe:
        def guarded() -> bool:
            missing = unguarded(probe, horses)
            probe.rollback()
            return not missing

        _wait(guarded)
    with pytest.raises(sqlite3.DatabaseError, match="hrp-cutover guard"), sqlite3.connect(path) as raw:
        raw.execute("UPDATE horses SET age = 30 WHERE id = 1")


def test_every_process_takes_a_column_another_process_carried(live):
    """Two app processes: once one has added the column on PostgreSQL, the other (which sees no
    drift any more) still reads the file's columns again, so its applier carries them too."""
    cutover, path, postgres_url = live
    other = open_cutover(settings_for(path, postgres_url), carry=carry_gap)  # no applier: a worker that lags
    try:
        with sqlite3.connect(path) as raw:
            raw.execute("ALTER TABLE horses ADD COLUMN sire TEXT")
        _wait(lambda: ("sire",) in _postgres(postgres_url, "SELECT column_name FROM information_schema.columns"
                                                          " WHERE table_name = 'horses'"))
        assert "sire" not in other.captured["horses"].c
        other.schema_watch.check()
        assert "sire" in other.captured["horses"].c
    finally:
        other.close()


def _file_rows(path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as raw:
        try:
            return raw.execute(sql).fetchall()
        except sqlite3.OperationalError:  # no such table yet
            return []


def test_a_table_created_on_sqlite_is_carried_with_its_rows(live):
    """The app's migration creates a table on the primary and writes it at once: within seconds
    PostgreSQL has it (the any-schema mapping, its foreign key), its rows are carried, later writes
    are captured, the evidence resets and verify is EQUAL."""
    cutover, path, postgres_url = live
    other = open_cutover(settings_for(path, postgres_url), carry=carry_gap)  # a second app process, lagging
    with sqlite3.connect(path) as raw:  # one migration: a column and a table, seen in the same look
        raw.execute("ALTER TABLE horses ADD COLUMN sire TEXT")
        raw.execute("CREATE TABLE race_notes (id INTEGER PRIMARY KEY, race_id INTEGER REFERENCES races(id),"
                    " note TEXT NOT NULL, written_at DATETIME DEFAULT CURRENT_TIMESTAMP)")
        raw.executemany("INSERT INTO race_notes (race_id, note) VALUES (?, ?)", [(1, "wet"), (2, "fast")])

    def rows() -> list[tuple]:
        try:
            return _postgres(postgres_url, "SELECT id, note FROM race_notes ORDER BY id")
        except Exception:  # noqa: BLE001 - not created yet
            return []

    _wait(lambda: rows() == [(1, "wet"), (2, "fast")])
    try:  # the other process adopts the table the first one carried, and creates nothing
        other.schema_watch.check()
        assert "race_notes" in other.catalog.tables and not other.schema_watch.drift
    finally:
        other.close()
    types = dict(_postgres(postgres_url, "SELECT column_name, data_type FROM information_schema.columns"
                                         " WHERE table_name = 'race_notes'"))
    assert types == {"id": "bigint", "race_id": "bigint", "note": "text", "written_at": "timestamp without time zone"}
    assert _postgres(postgres_url, "SELECT count(*) FROM pg_constraint WHERE conrelid = 'race_notes'::regclass"
                                   " AND contype = 'f'") == [(1,)]
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE race_notes SET note = 'soft' WHERE id = 1")
        raw.execute("INSERT INTO race_notes (race_id, note) VALUES (3, 'firm')")
        raw.execute("DELETE FROM race_notes WHERE id = 2")
    _wait(lambda: rows() == [(1, "soft"), (3, "firm")])
    assert move_journal.evidence_reset(cutover.sqlite) is not None
    result = verify(cutover, record=False)
    assert result.equal and not result.schema and "race_notes" in result.tables, result.as_json()
    schema = {c.name: c for c in checklist(cutover, Phase.SHADOW)}["schema"]
    assert schema.ok, schema.detail


def test_after_the_flip_a_table_created_on_postgresql_reaches_the_file_with_its_rows(live):
    """After the flip the migration creates tables on PostgreSQL: one the file can hold is created
    there (guarded, its rows carried, later writes captured) and the rollback's schema check passes;
    one it cannot (a jsonb column) stays named and holds the rollback."""
    cutover, path, postgres_url = live
    move(cutover, Phase.SHADOW)
    move(cutover, Phase.POSTGRES_PRIMARY)
    other = open_cutover(settings_for(path, postgres_url), carry=carry_gap)  # another app process, lagging
    with cutover.engine("postgres").begin() as connection:
        connection.exec_driver_sql("CREATE TABLE race_notes (id serial PRIMARY KEY, race_id integer REFERENCES races(id),"
                                   " note varchar(200) NOT NULL, written_at timestamp DEFAULT now())")
        connection.exec_driver_sql("INSERT INTO race_notes (race_id, note) VALUES (1, 'wet'), (2, 'fast')")
    _wait(lambda: _file_rows(path, "SELECT id, note FROM race_notes ORDER BY id") == [(1, "wet"), (2, "fast")])
    try:
        other.schema_watch.check()  # adopts the table the first process carried; creates nothing
        assert "race_notes" in other.catalog.tables and not other.schema_watch.drift
    finally:
        other.close()
    with cutover.engine("postgres").begin() as connection:
        connection.exec_driver_sql("UPDATE race_notes SET note = 'soft' WHERE id = 1")
        connection.exec_driver_sql("INSERT INTO race_notes (race_id, note) VALUES (3, 'firm')")
        connection.exec_driver_sql("DELETE FROM race_notes WHERE id = 2")
    _wait(lambda: _file_rows(path, "SELECT id, note FROM race_notes ORDER BY id") == [(1, "soft"), (3, "firm")])
    with pytest.raises(sqlite3.DatabaseError, match="hrp-cutover guard"), sqlite3.connect(path) as raw:
        raw.execute("INSERT INTO race_notes (race_id, note) VALUES (4, 'behind the layer')")
    assert move_journal.evidence_reset(cutover.sqlite) is not None
    result = verify(cutover, record=False)
    assert result.equal and not result.schema, result.as_json()
    schema = {c.name: c for c in checklist(cutover, Phase.SHADOW)}["schema"]
    assert schema.ok, schema.detail

    with cutover.engine("postgres").begin() as connection:
        connection.exec_driver_sql("CREATE TABLE race_extras (id integer PRIMARY KEY, doc jsonb)")
    _wait(lambda: any(d.table == "race_extras" for d in cutover.schema_watch.drift))
    assert _file_rows(path, "SELECT count(*) FROM race_extras") == []
    schema = {c.name: c for c in checklist(cutover, Phase.SHADOW)}["schema"]
    assert not schema.ok and "race_extras" in schema.detail, schema.detail
    status = CliRunner().invoke(cli, ["--sqlite", str(path), "--postgres", postgres_url, "status"])
    assert "SCHEMA     table race_extras only in postgres" in status.output, status.output


def test_a_column_dropped_on_sqlite_keeps_writes_flowing_and_holds_the_flip_until_postgresql_drops_it(live):
    """A dropped column is not carried (it may be half of a rename): it is named and holds the flip,
    while every write made after the DROP still reaches PostgreSQL; once the same migration runs
    there, verify is EQUAL and the flip's schema check passes."""
    cutover, path, postgres_url = live
    with sqlite3.connect(path) as raw:
        raw.execute("ALTER TABLE horses ADD COLUMN sire TEXT")
    _wait(lambda: ("sire",) in _postgres(postgres_url, "SELECT column_name FROM information_schema.columns"
                                                      " WHERE table_name = 'horses'"))
    with sqlite3.connect(path) as raw:
        raw.execute("ALTER TABLE horses DROP COLUMN sire")
        raw.execute("UPDATE horses SET age = 11 WHERE id = 1")
        raw.execute("INSERT INTO horses (horse_name, age) VALUES ('After The Drop', 4)")
    _wait(lambda: _postgres(postgres_url, "SELECT age FROM horses WHERE id = 1")[0][0] == 11
          and _postgres(postgres_url, "SELECT count(*) FROM horses WHERE horse_name = 'After The Drop'")[0][0] == 1)
    move(cutover, Phase.SHADOW)
    schema = {c.name: c for c in checklist(cutover, Phase.POSTGRES_PRIMARY)}["schema"]
    assert not schema.ok and "horses.sire" in schema.detail, schema.detail
    assert not verify(cutover, record=False).equal
    with cutover.engine("postgres").begin() as connection:  # the same migration, on the other side
        connection.exec_driver_sql("ALTER TABLE horses DROP COLUMN sire")
    result = verify(cutover, record=False)
    assert result.equal and not result.schema, result.as_json()
    schema = {c.name: c for c in checklist(cutover, Phase.POSTGRES_PRIMARY)}["schema"]
    assert schema.ok, schema.detail


def test_after_the_flip_a_column_dropped_or_renamed_on_postgresql_is_followed_by_the_file(live):
    """After the flip the file mirrors PostgreSQL: a dropped column is dropped there too (the
    applier would otherwise read a column PostgreSQL no longer has and carry nothing), a rename
    arrives as a drop and an add with its values, and writes keep reaching the file."""
    cutover, path, postgres_url = live
    move(cutover, Phase.SHADOW)
    move(cutover, Phase.POSTGRES_PRIMARY)
    with cutover.engine("postgres").begin() as connection:
        connection.exec_driver_sql("ALTER TABLE races ADD COLUMN going text")
        connection.exec_driver_sql("ALTER TABLE races ADD COLUMN purse bigint")
        connection.exec_driver_sql("UPDATE races SET going = 'soft', purse = 100 WHERE id = 1")
    _wait(lambda: _file_rows(path, "SELECT going, purse FROM races WHERE id = 1") == [("soft", 100)])
    with cutover.engine("postgres").begin() as connection:
        connection.exec_driver_sql("ALTER TABLE races DROP COLUMN purse")
        connection.exec_driver_sql("ALTER TABLE races RENAME COLUMN going TO ground")
        connection.exec_driver_sql("UPDATE races SET distance = 1234.5 WHERE id = 2")
    _wait(lambda: _file_rows(path, "SELECT ground FROM races WHERE id = 1") == [("soft",)]
          and _file_rows(path, "SELECT distance FROM races WHERE id = 2") == [(1234.5,)])
    assert not {"purse", "going"} & set(_file_columns(path))
    result = verify(cutover, record=False)
    assert result.equal and not result.schema, result.as_json()
    schema = {c.name: c for c in checklist(cutover, Phase.SHADOW)}["schema"]
    assert schema.ok, schema.detail


def test_the_files_own_triggers_do_not_fire_on_what_the_layer_writes_while_it_is_the_secondary(live):
    """A real file has triggers of its own (an audit row per update). Before the flip they fire on
    the app's writes and their rows are carried like any other; after the flip the file is the
    secondary and only the layer writes it, with rows PostgreSQL made whole: the triggers are
    parked in the flip's own step, so the sides stay EQUAL, and the rollback puts them back."""
    cutover, path, postgres_url = live
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE horse_audit (id INTEGER PRIMARY KEY, what TEXT NOT NULL)")
        raw.execute("CREATE TRIGGER horses_audit AFTER UPDATE ON horses"
                    " BEGIN INSERT INTO horse_audit (what) VALUES ('horse ' || NEW.id); END")
        raw.execute("UPDATE horses SET age = 7 WHERE id = 1")  # the app's write, on the primary
    _wait(lambda: _postgres_rows(postgres_url, "SELECT what FROM horse_audit") == [("horse 1",)])
    move(cutover, Phase.SHADOW)
    move(cutover, Phase.POSTGRES_PRIMARY)
    assert "horses_audit" not in {name for name, in _file_rows(path, "SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    with cutover.engine("postgres").begin() as connection:  # the app's writes, now on PostgreSQL
        connection.exec_driver_sql("UPDATE horses SET age = 8 WHERE id = 2")
    _wait(lambda: _file_rows(path, "SELECT age FROM horses WHERE id = 2") == [(8,)])
    assert _file_rows(path, "SELECT what FROM horse_audit") == [("horse 1",)]
    status = CliRunner().invoke(cli, ["--sqlite", str(path), "--postgres", postgres_url, "status"])
    assert "triggers   1 of the file's own parked while it is the secondary (horses_audit)" in status.output, status.output
    result = verify(cutover, record=False)
    assert result.equal, result.as_json()
    verify(cutover)  # the rollback's evidence
    move(cutover, Phase.SHADOW)
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE horses SET age = 9 WHERE id = 3")
    assert _file_rows(path, "SELECT what FROM horse_audit ORDER BY id") == [("horse 1",), ("horse 3",)]
    _wait(lambda: _postgres_rows(postgres_url, "SELECT what FROM horse_audit ORDER BY id") == [("horse 1",), ("horse 3",)])


def _postgres_rows(url: str, sql: str) -> list[tuple]:
    try:
        return _postgres(url, sql)
    except Exception:  # noqa: BLE001 - the table is not there yet
        return []


def _batch_rebuild(path, table: str, columns: str, *after: tuple[str, tuple]) -> None:
    """Alembic batch mode's rebuild of `table` as `columns` (create the copy, copy, drop, rename), and
    `after`'s statements in the same transaction: the writes right behind the migration."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(f"CREATE TABLE _alembic_tmp_{table} ({columns})")
        connection.execute(f"INSERT INTO _alembic_tmp_{table} SELECT * FROM {table}")
        connection.execute(f"DROP TABLE {table}")
        connection.execute(f"ALTER TABLE _alembic_tmp_{table} RENAME TO {table}")
        for statement, parameters in after:
            connection.execute(statement, parameters)
        connection.execute("COMMIT")
    finally:
        connection.close()


def _postgres_type(url: str, table: str, column: str) -> str:
    [(spelled,)] = _postgres(url, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
                                  f" WHERE attrelid = '{table}'::regclass AND attname = '{column}'")
    return spelled


def test_a_column_whose_type_a_rebuild_changed_is_never_equal_and_holds_the_flip(live):
    """A batch-mode rebuild that changes a column's type (TEXT -> REAL): PostgreSQL still holds text,
    so the app would read '1.5' where SQLite gives 1.5. Verify names the column with both types and is
    not EQUAL, readiness refuses, until PostgreSQL holds the type the file declares."""
    cutover, path, postgres_url = live
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE race_scores (id INTEGER PRIMARY KEY, score TEXT)")
        raw.executemany("INSERT INTO race_scores (score) VALUES (?)", [("1.5",), ("2",)])
    _wait(lambda: _postgres_rows(postgres_url, "SELECT count(*) FROM race_scores WHERE true") == [(2,)])
    _batch_rebuild(path, "race_scores", "id INTEGER PRIMARY KEY, score REAL")
    _wait(lambda: next(m.declared for m in cutover.catalog.tables["race_scores"].mapping if m.column == "score")
          == "REAL")  # the watch reads the file again: the applier converts by the new type
    with sqlite3.connect(path) as raw:  # a write right after the migration reaches PostgreSQL all the same
        raw.execute("INSERT INTO race_scores (score) VALUES (3.25)")
    _wait(lambda: _postgres_rows(postgres_url, "SELECT count(*) FROM race_scores WHERE true") == [(3,)])
    move(cutover, Phase.SHADOW)
    result = verify(cutover, record=False)
    assert not result.equal, result.as_json()
    assert {"table": "race_scores", "column": "score", "kind": "column_type_differs", "postgres": "text",
            "file": "double precision"} in result.schema, result.schema
    schema = {c.name: c for c in checklist(cutover, Phase.POSTGRES_PRIMARY)}["schema"]
    assert not schema.ok and "race_scores.score" in schema.detail, schema.detail

    with cutover.engine("postgres").begin() as pg:  # the same migration on PostgreSQL
        pg.exec_driver_sql("ALTER TABLE race_scores ALTER COLUMN score TYPE double precision USING score::double precision")
    result = verify(cutover, record=False)
    assert not result.schema and result.equal, result.as_json()
    assert _postgres(postgres_url, "SELECT score FROM race_scores ORDER BY id") == [(1.5,), (2.0,), (3.25,)]


def test_a_type_a_rebuild_widened_is_carried_to_postgresql_and_a_longer_value_follows(live):
    """NUMERIC(5,2) -> NUMERIC(8,2) by a batch-mode rebuild, and at once a value the old one refuses:
    the watch widens PostgreSQL's column (no value changes), the write lands, verify is EQUAL and the
    schema check passes. A narrowing is never carried by itself."""
    cutover, path, postgres_url = live
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE race_labels (id INTEGER PRIMARY KEY, label NUMERIC(5,2), n INTEGER)")
        raw.executemany("INSERT INTO race_labels (label, n) VALUES (?, ?)", [(1.5, 1), (999.99, 2)])
    _wait(lambda: _postgres_rows(postgres_url, "SELECT count(*) FROM race_labels WHERE true") == [(2,)])
    assert _postgres_type(postgres_url, "race_labels", "label") == "numeric(5,2)"
    long = Decimal("123456.78")
    _batch_rebuild(path, "race_labels", "id INTEGER PRIMARY KEY, label NUMERIC(8,2), n INTEGER",
                   ("INSERT INTO race_labels (label, n) VALUES (?, 3)", (str(long),)))
    _wait(lambda: _postgres_rows(postgres_url, "SELECT label FROM race_labels WHERE n = 3") == [(long,)], timeout=60)
    assert _postgres_type(postgres_url, "race_labels", "label") == "numeric(8,2)"
    move(cutover, Phase.SHADOW)
    result = verify(cutover, record=False)
    assert result.equal and not result.schema, result.as_json()
    schema = {c.name: c for c in checklist(cutover, Phase.POSTGRES_PRIMARY)}["schema"]
    assert schema.ok, schema.detail


class _HorseWrites:
    """The app writing horses through the layer without pause (inserts and updates of `age`), each
    acknowledged write recorded: {id: age}."""

    def __init__(self, cutover):
        self.cutover = cutover
        self.acked: dict[int, int] = {}
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def __enter__(self) -> "_HorseWrites":
        self.thread.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        self.thread.join(30)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                with self.cutover.writing() as uow:
                    horse = uow.horses.add(horse_name=f"under load {n}", age=n % 20)
                    uow.commit()
                    self.acked[horse["id"]] = n % 20
                if n % 2 == 0:
                    target = random.choice(list(self.acked))
                    with self.cutover.writing() as uow:
                        uow.horses.update(target, age=n % 30)
                        uow.commit()
                    self.acked[target] = n % 30
            except Exception as error:  # noqa: BLE001 - a failed write is the finding
                self.failures.append(f"{type(error).__name__}: {error}")
            time.sleep(0.01)

    def ages(self, rows: list[tuple]) -> dict[int, int]:
        found = dict(rows)
        return {horse: found.get(horse) for horse in self.acked}


def test_a_column_dropped_on_sqlite_under_write_load_loses_no_write_and_holds_the_flip(live):
    """The app's DROP COLUMN runs on the file while the app writes the same table without pause:
    no write fails, every acknowledged write reaches PostgreSQL, the flip is held with the column
    named until PostgreSQL drops it too, then verify is EQUAL."""
    cutover, path, postgres_url = live
    with sqlite3.connect(path, timeout=10) as raw:
        raw.execute("ALTER TABLE horses ADD COLUMN sire TEXT")
        raw.execute("UPDATE horses SET sire = 'Galileo' WHERE id <= 5")
    _wait(lambda: _postgres_rows(postgres_url, "SELECT count(*) FROM horses WHERE sire = 'Galileo'") == [(5,)])
    with _HorseWrites(cutover) as load:
        with sqlite3.connect(path, timeout=10) as raw:
            raw.execute("ALTER TABLE horses DROP COLUMN sire")
        time.sleep(1.5)
    assert load.failures == [] and len(load.acked) > 10, load.failures[:3]
    wait_drained(cutover, timeout=60)
    assert load.ages(_postgres(postgres_url, "SELECT id, age FROM horses")) == load.acked
    move(cutover, Phase.SHADOW)
    schema = {c.name: c for c in checklist(cutover, Phase.POSTGRES_PRIMARY)}["schema"]
    assert not schema.ok and "horses.sire" in schema.detail, schema.detail
    assert not verify(cutover, record=False).equal
    with cutover.engine("postgres").begin() as connection:
        connection.exec_driver_sql("ALTER TABLE horses DROP COLUMN sire")
    result = verify(cutover, record=False)
    assert result.equal and not result.schema, result.as_json()


def test_after_the_flip_a_column_dropped_on_postgresql_under_write_load_loses_no_write(live):
    """After the flip the app's DROP COLUMN runs on PostgreSQL while the app writes the same table
    without pause, changes recorded before the drop still on their way: the file follows, no write
    fails, every acknowledged write reaches the file, verify is EQUAL and the rollback's schema
    check passes."""
    cutover, path, postgres_url = live
    move(cutover, Phase.SHADOW)
    move(cutover, Phase.POSTGRES_PRIMARY)
    with cutover.engine("postgres").begin() as connection:
        connection.exec_driver_sql("ALTER TABLE horses ADD COLUMN sire text")
        connection.exec_driver_sql("UPDATE horses SET sire = 'Frankel' WHERE id <= 5")
    _wait(lambda: _file_rows(path, "SELECT count(*) FROM horses WHERE sire = 'Frankel'") == [(5,)])
    with _HorseWrites(cutover) as load:
        with cutover.engine("postgres").begin() as connection:
            connection.exec_driver_sql("UPDATE horses SET sire = 'Dubawi' WHERE id <= 5")
            connection.exec_driver_sql("ALTER TABLE horses DROP COLUMN sire")
        time.sleep(1.5)
    assert load.failures == [] and len(load.acked) > 10, load.failures[:3]
    wait_drained(cutover, timeout=60)
    _wait(lambda: "sire" not in {row[1] for row in _file_rows(path, "PRAGMA table_info(horses)")})
    assert load.ages(_file_rows(path, "SELECT id, age FROM horses")) == load.acked
    result = verify(cutover, record=False)
    assert result.equal and not result.schema, result.as_json()
    schema = {c.name: c for c in checklist(cutover, Phase.SHADOW)}["schema"]
    assert schema.ok, schema.detail
