"""Findings of an acceptance run on real SQLite files of other public projects (Chinook, Sakila's
SQLite port, Datasette's fixtures, a Django shop's db.sqlite3, Firefox places, anytizer's
multilingual sample...), each reduced to the smallest file that shows it. Real PostgreSQL, the
operator's CLI steps, writes by the plain sqlite3 module."""

from __future__ import annotations

import json
import sqlite3

import psycopg2
import psycopg2.extensions
from click.testing import CliRunner

from tools.cli import cli
from tests.integration.test_any_schema import _plain_sqlite
from tests.integration.test_backfill import libpq
from tests.integration.test_northwind_findings import _ok, _run

MULTILINGUAL = (
    "CREATE TABLE languages (language_id TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (language_id)) WITHOUT ROWID;"
    "CREATE TABLE phrases (phrase_id TEXT NOT NULL, latin TEXT NOT NULL, PRIMARY KEY (phrase_id)) WITHOUT ROWID;"
    "CREATE TABLE translations (translation_id TEXT NOT NULL, language_id TEXT, phrase_id TEXT NOT NULL,"
    " text TEXT NOT NULL, PRIMARY KEY (translation_id),"
    " FOREIGN KEY (language_id) REFERENCES languages (language_id) ON UPDATE CASCADE ON DELETE SET NULL,"
    " FOREIGN KEY (phrase_id) REFERENCES phrases (phrase_id) ON UPDATE CASCADE ON DELETE CASCADE) WITHOUT ROWID;"
    "INSERT INTO languages VALUES ('ne', 'Nepali'), ('en', 'English'), ('fr', 'French');"
    "INSERT INTO phrases VALUES ('p1', 'Name'), ('p2', 'Goodbye'), ('p3', 'Hello');"
    "INSERT INTO translations VALUES ('t1', 'ne', 'p1', 'नाम'), ('t2', 'fr', 'p2', 'Au revoir'),"
    " ('t3', 'en', 'p3', 'Hello'), ('t4', 'fr', 'p3', 'Bonjour');"
)


def _rows(url: str, sql: str) -> list[tuple]:
    with psycopg2.connect(libpq(url)) as pg, pg.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def _flipped(path, url: str) -> None:
    """A file the test made, through the operator's steps to PostgreSQL primary."""
    for step in (("schema",), ("phase", "set", "dual_write"), ("backfill", "--no-backup"), ("verify",),
                 ("phase", "set", "shadow"), ("flip",)):
        _ok(path, url, *step)


def _multilingual_in_shadow(tmp_path, postgres_url: str):
    """The multilingual file, backfilled and verified, in the phase shadow; its path."""
    path = tmp_path / "app.db"
    _plain_sqlite(path, MULTILINGUAL)
    for step in (("schema",), ("phase", "set", "dual_write"), ("backfill", "--no-backup"), ("verify",),
                 ("phase", "set", "shadow")):
        _ok(path, postgres_url, *step)
    return path


def test_a_delete_postgres_would_cascade_while_sqlite_did_not_is_refused(tmp_path, postgres_url):
    """anytizer/pragma.sqlite's multilingual.db: `translations` references `phrases` and `languages`
    ON DELETE CASCADE / SET NULL, ON UPDATE CASCADE. SQLite applies them only on a connection with
    `PRAGMA foreign_keys = ON`, which the plain sqlite3 module does not set: a phrase deleted or
    renamed there left its translations as they were, but the applier's delete on PostgreSQL ran the
    foreign key's action and deleted (or nulled) them too. `replay` said nothing was left (exit 0):
    rows gone from PostgreSQL that SQLite keeps. Such a delete waits in the outbox with its reason;
    one whose action SQLite did too (foreign keys on) is applied."""
    path = _multilingual_in_shadow(tmp_path, postgres_url)

    _plain_sqlite(path, "UPDATE phrases SET phrase_id = 'p2-renamed' WHERE phrase_id = 'p2';"
                        "DELETE FROM languages WHERE language_id = 'ne';")
    replayed = _run(path, postgres_url, "replay")
    assert replayed.exit_code == 1, replayed.output
    assert "ON DELETE CASCADE" in replayed.output and "ON DELETE SET NULL" in replayed.output
    assert _rows(postgres_url, "SELECT translation_id, language_id, phrase_id FROM translations ORDER BY 1") == [
        ("t1", "ne", "p1"), ("t2", "fr", "p2"), ("t3", "en", "p3"), ("t4", "fr", "p3")]
    assert _rows(postgres_url, "SELECT phrase_id FROM phrases ORDER BY 1") == [("p1",), ("p2",), ("p2-renamed",), ("p3",)]
    verified = _run(path, postgres_url, "verify", "--json")
    assert verified.exit_code == 1
    result = json.loads(verified.output[verified.output.index("{"):])
    assert result["tables"]["phrases"]["refused"] == 1 and result["tables"]["languages"]["refused"] == 1
    # the flip's checks say the outbox will not drain (the move's drain would stop on them), not [x]
    checked = _run(path, postgres_url, "flip", "--check")
    assert checked.exit_code != 0
    outbox_line = next(line for line in checked.output.splitlines() if "outbox" in line)
    assert "2 change(s) refused until their rows are fixed" in outbox_line and "[x]" not in outbox_line, checked.output
    assert "(2 refused until their rows are fixed" in _ok(path, postgres_url, "status")

    # the operator makes SQLite say what it means: the children follow, as the actions would have
    _plain_sqlite(path, "UPDATE translations SET phrase_id = 'p2-renamed' WHERE phrase_id = 'p2';"
                        "UPDATE translations SET language_id = NULL WHERE language_id = 'ne';")
    _ok(path, postgres_url, "replay")
    _ok(path, postgres_url, "verify")

    # an app with foreign keys on: SQLite ran the actions itself, PostgreSQL's agree
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA foreign_keys = ON")
    with connection:
        connection.execute("DELETE FROM phrases WHERE phrase_id = 'p3'")
        connection.execute("DELETE FROM languages WHERE language_id = 'fr'")
    connection.close()
    _ok(path, postgres_url, "replay")
    assert _rows(postgres_url, "SELECT translation_id, language_id, phrase_id FROM translations ORDER BY 1") == [
        ("t1", None, "p1"), ("t2", None, "p2-renamed")]
    _ok(path, postgres_url, "verify")


def test_a_child_arriving_with_its_parents_delete_is_not_cascaded_away(tmp_path, postgres_url):
    """The same file, one replay carrying three writes of a program without foreign keys: a new
    translation of phrase p2, then p2 renamed. The batch upserted the translation (p2 still in
    PostgreSQL), then deleted p2, whose ON DELETE CASCADE took the translation just written: a row
    SQLite has, missing from PostgreSQL, with `replay` at exit 0."""
    path = tmp_path / "app.db"
    _plain_sqlite(path, MULTILINGUAL)
    for step in (("schema",), ("phase", "set", "dual_write"), ("backfill", "--no-backup")):
        _ok(path, postgres_url, *step)
    _plain_sqlite(path, "INSERT INTO translations VALUES ('t9', 'en', 'p1', 'Name');"
                        "UPDATE translations SET phrase_id = 'p2' WHERE translation_id = 't9';"
                        "UPDATE phrases SET phrase_id = 'p2-renamed' WHERE phrase_id = 'p2';"
                        "UPDATE translations SET phrase_id = 'p2-renamed' WHERE translation_id = 't2';")
    replayed = _run(path, postgres_url, "replay")
    assert replayed.exit_code == 1 and "foreign_key_action" in replayed.output, replayed.output
    assert _rows(postgres_url, "SELECT translation_id, phrase_id FROM translations ORDER BY 1") == [
        ("t1", "p1"), ("t2", "p2-renamed"), ("t3", "p3"), ("t4", "p3"), ("t9", "p2")]
    _plain_sqlite(path, "UPDATE translations SET phrase_id = 'p2-renamed' WHERE translation_id = 't9';")
    _ok(path, postgres_url, "replay")
    _ok(path, postgres_url, "verify")


def test_an_index_on_a_collation_only_the_app_defines_is_refused_in_one_line(tmp_path, postgres_url):
    """An Anki collection (collection.anki2) declares `name text COLLATE unicase` and `tags (tag
    PRIMARY KEY COLLATE unicase)`: Anki registers the collation in its own code. Without it SQLite
    cannot use those indexes (a count(*) picks one), so `assess` crashed with a traceback ("no such
    collation sequence: unicase"), `backup` failed, `verify` said "database unavailable", while
    `schema` and `phase set dual_write` went ahead on a file no backfill could read. Every command
    refuses in one line naming the table, the index and the collation, before anything is created."""
    path = tmp_path / "collection.anki2"
    connection = sqlite3.connect(path)
    connection.create_collation("unicase", lambda a, b: (a.lower() > b.lower()) - (a.lower() < b.lower()))
    connection.executescript(
        "CREATE TABLE tags (tag text NOT NULL PRIMARY KEY COLLATE unicase, usn integer NOT NULL) WITHOUT ROWID;"
        "INSERT INTO tags VALUES ('Verb', 0), ('noun', -1);"
        "CREATE TABLE decks (id integer PRIMARY KEY NOT NULL, name text NOT NULL COLLATE unicase);"
        "CREATE UNIQUE INDEX idx_decks_name ON decks (name);"
        "INSERT INTO decks VALUES (1, 'Default'), (2, 'Français');"
        "CREATE TABLE notes (id integer PRIMARY KEY, sfld text COLLATE NOCASE);"
        "CREATE INDEX ix_notes_sfld ON notes (sfld);"
    )
    connection.commit()
    connection.close()
    for step in (("assess",), ("schema",), ("phase", "set", "dual_write"), ("verify",), ("backfill", "--no-backup")):
        done = _run(path, postgres_url, *step)
        assert done.exit_code == 2 and isinstance(done.exception, SystemExit), f"{step}: {done.output}"
        assert "COLLATE unicase" in done.output and ("idx_decks_name" in done.output or "tags" in done.output), done.output
    backup = _run(path, postgres_url, "backup")  # SQLite's integrity check says it itself, in one line
    assert backup.exit_code == 1 and "no such collation sequence: unicase" in backup.output, backup.output
    assert _rows(postgres_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]

    # the operator rebuilds the tables without it (as NOCASE), through the app: every step goes through
    connection = sqlite3.connect(path)
    connection.create_collation("unicase", lambda a, b: (a.lower() > b.lower()) - (a.lower() < b.lower()))
    connection.executescript("CREATE TABLE tags2 (tag text NOT NULL PRIMARY KEY COLLATE NOCASE, usn integer NOT NULL)"
                             " WITHOUT ROWID; INSERT INTO tags2 SELECT * FROM tags; DROP TABLE tags;"
                             " ALTER TABLE tags2 RENAME TO tags;"
                             "CREATE TABLE decks2 (id integer PRIMARY KEY NOT NULL, name text NOT NULL COLLATE NOCASE);"
                             " INSERT INTO decks2 SELECT * FROM decks; DROP TABLE decks; ALTER TABLE decks2 RENAME TO decks;"
                             " CREATE UNIQUE INDEX idx_decks_name ON decks (name);")
    connection.commit()
    connection.close()
    for step in (("assess",), ("schema",), ("phase", "set", "dual_write"), ("backfill", "--no-backup"), ("verify",)):
        _ok(path, postgres_url, *step)
    assert _rows(postgres_url, "SELECT name FROM decks ORDER BY id") == [("Default",), ("Français",)]


GEOPACKAGE = (  # the shape of a GeoPackage feature table, as GDAL writes it (Nowosad/spData_files cycle_hire.gpkg)
    'CREATE TABLE "cycle_hire" ("fid" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, "geom" POINT, "name" TEXT,'
    ' "nbikes" MEDIUMINT);'
    "INSERT INTO cycle_hire (geom, name, nbikes) VALUES"
    " (X'47500001E61000000101000000C4334CEC7A28C5BF02F38A4B20BB4940', 'River Street', 4),"
    " (X'47500001E6100000010100000053783D89E971BFBFA99F79317BBC4940', 'Phillimore Gardens', 2), (NULL, 'none', 0);"
)


def _cli_with_types(path, url: str, types_file, *args: str):
    psycopg2.extensions.set_wait_callback(None)
    return CliRunner().invoke(cli, ["--sqlite", f"sqlite:///{path}", "--postgres", url, *args],
                              env={"HRP_COLUMN_TYPES_FILE": str(types_file)})


def test_a_geometry_column_declared_point_can_be_chosen_as_bytea(tmp_path, postgres_url):
    """A GeoPackage's geometry column is declared with its geometry type, `geom POINT`, which contains
    INT: SQLite's INTEGER affinity, so it was mapped to bigint, and every feature (a GeoPackage binary
    blob) was quarantined `blob_in_integer_column`, every live write of a feature rejected, with no
    choice to make: the column types offered jsonb and text only. Grafana's dashboard.data (TEXT
    holding blobs) was stuck the same way. `geom = "bytea"` carries the bytes as they are."""
    path = tmp_path / "cycle.gpkg"
    _plain_sqlite(path, GEOPACKAGE)
    types = tmp_path / "hrp-cutover.toml"
    types.write_text('[column-types.cycle_hire]\ngeom = "bytea"\n')
    report = _cli_with_types(path, postgres_url, types, "assess", "--json")
    assert report.exit_code == 0, report.output
    mapping = {m["column"]: m["postgres_type"] for m in json.loads(report.output)["mapping"]}
    assert mapping["geom"] == "bytea" and mapping["nbikes"] == "bigint"
    for step in (("schema",), ("phase", "set", "dual_write"), ("backfill", "--no-backup")):
        done = _cli_with_types(path, postgres_url, types, *step)
        assert done.exit_code == 0, done.output
    _plain_sqlite(path, "INSERT INTO cycle_hire (geom, name, nbikes) VALUES (X'0001FF', 'new', 1);"
                        "UPDATE cycle_hire SET geom = X'00' WHERE fid = 1;")
    for step in (("replay",), ("verify",), ("quarantine",)):
        done = _cli_with_types(path, postgres_url, types, *step)
        assert done.exit_code == 0, done.output
    assert "no quarantined rows" in done.output
    assert [(fid, bytes(geom) if geom is not None else None) for fid, geom in _rows(
        postgres_url, "SELECT fid, geom FROM cycle_hire ORDER BY fid")] == [
        (1, b"\x00"), (2, bytes.fromhex("47500001E6100000010100000053783D89E971BFBFA99F79317BBC4940")), (3, None),
        (4, b"\x00\x01\xff")]


def test_a_column_typed_by_its_values_keeps_the_type_postgresql_was_given(tmp_path, postgres_url):
    """A column without a declared type is typed from its values when the schema is created: `t.v`,
    empty, became text; `u.v`, integers, bigint. Every later process decided again from the values
    it found: after the app wrote 42 and 7.5 into t.v, `replay` read t.v as double precision and
    wrote '42.0' into PostgreSQL's text (a value changed), and read u.v as text once the app wrote
    'seven', so the apply failed with PostgreSQL's raw error and the backfill quarantined good rows;
    every move was refused ("type is text on postgres, bytea as the file declares it"). The schema
    step keeps its decision in the file, and a value the column's type cannot hold is rejected."""
    path = tmp_path / "app.db"
    _plain_sqlite(path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v); CREATE TABLE u (id INTEGER PRIMARY KEY, v);"
                        "INSERT INTO u VALUES (1, 5), (2, 6);")
    for step in (("schema",), ("schema",), ("phase", "set", "dual_write"), ("backfill", "--no-backup")):
        _ok(path, postgres_url, *step)
    _plain_sqlite(path, "INSERT INTO t VALUES (1, 42), (2, 7.5);"
                        "UPDATE u SET v = 'seven' WHERE id = 2; INSERT INTO u VALUES (3, 7);")
    replayed = _run(path, postgres_url, "replay")
    assert replayed.exit_code == 1, replayed.output
    assert "number_in_text_column" in replayed.output and "text_in_integer_column" in replayed.output
    assert "InvalidTextRepresentation" not in replayed.output
    assert _rows(postgres_url, "SELECT id, v FROM t ORDER BY id") == []  # not '42.0'
    _plain_sqlite(path, "INSERT INTO t VALUES (3, 'text');")
    assert _run(path, postgres_url, "replay").exit_code == 1
    assert _rows(postgres_url, "SELECT id, v FROM t ORDER BY id") == [(3, "text")]
    assert _rows(postgres_url, "SELECT id, v FROM u ORDER BY id") == [(1, 5), (2, 6), (3, 7)]
    assessed = json.loads(_ok(path, postgres_url, "assess", "--json"))
    assert {(m["table"], m["postgres_type"]) for m in assessed["mapping"] if m["column"] == "v"} == {
        ("t", "text"), ("u", "bigint")}
    assert _run(path, postgres_url, "verify").exit_code == 1

    _plain_sqlite(path, "UPDATE t SET v = CAST(v AS TEXT); UPDATE u SET v = 6 WHERE id = 2;")
    _ok(path, postgres_url, "replay")
    _ok(path, postgres_url, "verify")
    assert _rows(postgres_url, "SELECT id, v FROM t ORDER BY id") == [(1, "42"), (2, "7.5"), (3, "text")]
    _ok(path, postgres_url, "phase", "set", "shadow", "--check")


def test_a_child_whose_parent_neither_database_holds_is_refused_as_an_orphan_not_left_waiting(tmp_path, postgres_url):
    """A writer with foreign keys off adds a translation of a phrase that does not exist. The applier
    held it "waiting for its parent ... in PostgreSQL", a wait no parent would ever end, while
    verify said EQUAL and the flip's check passed the outbox: only the move's drain stopped on it.
    It is refused as an orphan (the backfill's word), named by replay, verify, quarantine and the
    readiness check, and applies once SQLite holds its parent."""
    path = _multilingual_in_shadow(tmp_path, postgres_url)

    _plain_sqlite(path, "INSERT INTO translations VALUES ('t5', 'en', 'p9', 'Nine');"
                        "INSERT INTO translations VALUES ('t6', 'en', 'p1', 'Name');")
    replayed = _run(path, postgres_url, "replay")
    assert replayed.exit_code == 1 and "orphan_foreign_key (phrase_id)" in replayed.output, replayed.output
    assert _rows(postgres_url, "SELECT translation_id FROM translations WHERE translation_id IN ('t5', 't6')") == [("t6",)]
    verified = _run(path, postgres_url, "verify", "--json")
    assert verified.exit_code == 1, verified.output
    assert json.loads(verified.output[verified.output.index("{"):])["tables"]["translations"]["refused"] == 1
    checked = _run(path, postgres_url, "flip", "--check")
    assert checked.exit_code != 0
    assert "1 change(s) refused until their rows are fixed" in checked.output, checked.output
    listed = json.loads(_ok(path, postgres_url, "quarantine", "--format", "json"))
    assert [(e["table"], e["key"], e["column"], e["reason"]) for e in listed["live"]] == [
        ("translations", ["t5"], "phrase_id", "orphan_foreign_key")], listed

    _plain_sqlite(path, "INSERT INTO phrases VALUES ('p9', 'Nine');")
    _ok(path, postgres_url, "replay")
    assert _rows(postgres_url, "SELECT phrase_id FROM translations WHERE translation_id = 't5'") == [("p9",)]
    _ok(path, postgres_url, "verify")


def test_rows_left_behind_by_accept_quarantine_are_not_extra_rows_after_the_flip(tmp_path, postgres_url):
    """Zotero's zotero.sqlite: `settings (setting, key, value)` with `value` untyped, holding text, an
    integer and a zlib blob. The column is text (a mix), so the blob and the integer are quarantined
    with their reasons and the operator flips with --accept-quarantine. Before the flip, verify counted
    those rows as quarantined; after it (PostgreSQL primary) it counted them as rows extra on SQLite:
    NOT EQUAL, the rollback refused ("run verify --repair"), and `verify --repair` deleted them from
    SQLite, their only copy. They stay quarantined in either direction, and the rollback goes ahead."""
    path = tmp_path / "zotero.sqlite"
    _plain_sqlite(path, "CREATE TABLE settings (setting TEXT, key TEXT, value, PRIMARY KEY (setting, key));"
                        "INSERT INTO settings VALUES ('globalSchema', 'data', x'789c0300'),"
                        " ('globalSchema', 'migrateExtra', 1), ('client', 'lastVersion', '5.0.82'),"
                        " ('account', 'localUserKey', 'sn3LXRcO');")
    for step in (("schema",), ("phase", "set", "dual_write"), ("backfill", "--no-backup"), ("verify",),
                 ("phase", "set", "shadow"), ("flip", "--accept-quarantine")):
        _ok(path, postgres_url, *step)

    verified = _run(path, postgres_url, "verify", "--json")
    assert verified.exit_code == 0, verified.output
    result = json.loads(verified.output[verified.output.index("{"):])
    assert result["tables"]["settings"]["quarantined"] == 2 and result["tables"]["settings"]["extra"] == 0
    _ok(path, postgres_url, "verify", "--repair")
    _ok(path, postgres_url, "rollback", "--accept-quarantine")
    connection = sqlite3.connect(path)
    assert connection.execute("SELECT key, value FROM settings WHERE setting = 'globalSchema' ORDER BY key").fetchall() == [
        ("data", b"x\x9c\x03\x00"), ("migrateExtra", 1)]
    connection.close()


def test_a_numeric_column_in_a_table_with_a_secret_column_is_applied(tmp_path, postgres_url):
    """Chrome's History: `content_annotations (visit_id INTEGER PRIMARY KEY, visibility_score NUMERIC,
    ..., password_state INTEGER)`. `password_state` looks secret, so the table's changes are applied
    by COPY (no values in a logged statement), and COPY had no spelling for the Decimal a NUMERIC
    value converts to: every live write to the table waited in the outbox with "TypeError: no COPY
    text spelling for Decimal", and the flip could not drain it. They are applied, exactly."""
    path = tmp_path / "History"
    _plain_sqlite(path, "CREATE TABLE content_annotations (visit_id INTEGER PRIMARY KEY, visibility_score NUMERIC,"
                        " categories VARCHAR, password_state INTEGER DEFAULT 0 NOT NULL);"
                        "INSERT INTO content_annotations VALUES (1, 0.5, '', 0);")
    for step in (("schema",), ("phase", "set", "dual_write"), ("backfill", "--no-backup")):
        _ok(path, postgres_url, *step)
    _plain_sqlite(path, "INSERT INTO content_annotations VALUES (2, 0.1, 'x', 1), (3, 12345678901234567, 'y', 0),"
                        " (4, 1e-7, 'z', 0);"
                        "UPDATE content_annotations SET visibility_score = -2.5 WHERE visit_id = 1;")
    _ok(path, postgres_url, "replay")
    assert _rows(postgres_url, "SELECT visit_id, visibility_score::text FROM content_annotations ORDER BY 1") == [
        (1, "-2.5"), (2, "0.1"), (3, "12345678901234567"), (4, "0.0000001")]
    _ok(path, postgres_url, "verify")


def test_a_value_sqlite_cannot_hold_names_its_column_on_the_way_back(tmp_path, postgres_url):
    """Chrome's History again, PostgreSQL primary: a plain INSERT on PostgreSQL of a decimal no
    double holds (`visibility_score` NUMERIC) is refused on its way to SQLite, as it should be, but
    `replay` and `quarantine` said only "numeric_out_of_range" with no column ("-"), where a value
    SQLite wrote names it: in a wide table the operator could not tell which value to fix."""
    path = tmp_path / "History"
    _plain_sqlite(path, "CREATE TABLE content_annotations (visit_id INTEGER PRIMARY KEY, visibility_score NUMERIC,"
                        " categories VARCHAR, annotation_flags INTEGER NOT NULL, page_language VARCHAR);"
                        "INSERT INTO content_annotations VALUES (1, 0.5, '', 0, 'en');")
    _flipped(path, postgres_url)
    ((new_id,),) = _rows(postgres_url, "INSERT INTO content_annotations (visibility_score, annotation_flags,"
                                       " page_language) VALUES ('0.1000000000000000055511151231257827', 0, 'fr')"
                                       " RETURNING visit_id")
    replayed = _run(path, postgres_url, "replay")
    assert replayed.exit_code == 1
    assert f"[{new_id}]: rejected: numeric_out_of_range (visibility_score)" in replayed.output, replayed.output
    listed = json.loads(_ok(path, postgres_url, "quarantine", "--format", "json"))
    assert [(entry["database"], entry["key"], entry["column"], entry["reason"]) for entry in listed["live"]] == [
        ("postgres", [new_id], "visibility_score", "numeric_out_of_range")]


def test_a_quoted_whole_number_default_of_an_integer_column_is_carried(tmp_path, postgres_url):
    """WordPress's SQLite database (.ht.sqlite of the sqlite-database-integration plugin) declares its
    integer columns `integer NOT NULL ON CONFLICT REPLACE DEFAULT '0'`. SQLite applies the column's
    INTEGER affinity to the default, so it stores the integer 0; the schema step called its meaning
    uncertain and left PostgreSQL without it (listed under *not carried*), and after the flip an
    insert that leaves `post_author` to its default failed on PostgreSQL where SQLite took it. It
    is carried as 0; a quoted default that is not a whole number a bigint holds stays listed."""
    path = tmp_path / ".ht.sqlite"
    _plain_sqlite(path, 'CREATE TABLE "wp_posts" ("ID" integer PRIMARY KEY AUTOINCREMENT NOT NULL ON CONFLICT REPLACE'
                        " DEFAULT 0, \"post_author\" integer NOT NULL ON CONFLICT REPLACE DEFAULT '0',"
                        " \"menu_order\" integer NOT NULL DEFAULT '+7',"
                        " \"post_title\" text NOT NULL ON CONFLICT REPLACE DEFAULT '' COLLATE NOCASE);"
                        "CREATE TABLE wp_odd (id integer PRIMARY KEY, odd integer DEFAULT '99999999999999999999');"
                        "INSERT INTO wp_posts (post_title) VALUES ('Hello world!');")
    assert sqlite3.connect(path).execute("SELECT post_author, typeof(post_author), menu_order FROM wp_posts").fetchall() == [
        (0, "integer", 7)]
    assessed = _ok(path, postgres_url, "assess")
    assert "default wp_posts.post_author" not in assessed and "default wp_posts.menu_order" not in assessed
    assert "default wp_odd.odd" in assessed
    _flipped(path, postgres_url)
    ((new_id,),) = _rows(postgres_url, "INSERT INTO wp_posts (post_title) VALUES ('from postgres') RETURNING \"ID\"")
    _ok(path, postgres_url, "replay")
    assert sqlite3.connect(path).execute(
        "SELECT post_author, typeof(post_author), menu_order FROM wp_posts WHERE ID = ?", (new_id,)).fetchall() == [
        (0, "integer", 7)]


def test_a_quoted_zero_or_one_default_of_a_boolean_column_is_carried(tmp_path, postgres_url):
    """ownCloud's and Nextcloud's owncloud.db (Doctrine) declare boolean columns `BOOLEAN DEFAULT '0' NOT
    NULL` (oc_authtoken.password_invalid, oc_share.password_by_talk, oc_richdocuments_wopi.canwrite).
    BOOLEAN has NUMERIC affinity, so SQLite stores the default as the integer 0; the schema step
    called its meaning uncertain and left PostgreSQL without it (listed under *not carried*), and
    after the flip an insert that leaves `password_invalid` to its default failed on PostgreSQL
    ("null value in column ... violates not-null constraint") where SQLite took it. '0' and '1'
    are carried as false and true; a quoted default that is neither stays listed."""
    path = tmp_path / "owncloud.db"
    _plain_sqlite(path, "CREATE TABLE oc_authtoken (id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,"
                        " token VARCHAR(200) DEFAULT '' NOT NULL COLLATE BINARY,"
                        " password_invalid BOOLEAN DEFAULT '0' NOT NULL, remember BOOLEAN DEFAULT '1' NOT NULL,"
                        " odd BOOLEAN DEFAULT '2');"
                        "INSERT INTO oc_authtoken (token, odd) VALUES ('t1', NULL);")
    assert sqlite3.connect(path).execute(
        "SELECT password_invalid, typeof(password_invalid), remember FROM oc_authtoken").fetchall() == [(0, "integer", 1)]
    assessed = _ok(path, postgres_url, "assess")
    assert "default oc_authtoken.password_invalid" not in assessed and "default oc_authtoken.remember" not in assessed
    assert "default oc_authtoken.odd" in assessed
    _flipped(path, postgres_url)
    ((new_id,),) = _rows(postgres_url, "INSERT INTO oc_authtoken (token) VALUES ('from postgres') RETURNING id")
    _ok(path, postgres_url, "replay")
    assert sqlite3.connect(path).execute(
        "SELECT password_invalid, typeof(password_invalid), remember FROM oc_authtoken WHERE id = ?",
        (new_id,)).fetchall() == [(0, "integer", 1)]
