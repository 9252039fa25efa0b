"""A corpus of SQLite schema shapes beyond the HRP schema, built in the tests (docs/schema.md).

Each shape is DDL, a few rows written with the plain sqlite3 module, and what
an operator's later writes look like: `more` and `after_backfill` (plain
sqlite3, while SQLite is the primary: before the backup and after the backfill), `postgres_insert` (a plain INSERT on PostgreSQL without an id,
after the flip: table and columns) and `sqlite_write` (plain sqlite3, after
the rollback).
"""

from __future__ import annotations

import dataclasses

LONG_A = "t" * 63 + "a"
LONG_B = "t" * 63 + "b"
"""Two 64-byte table names that are equal when PostgreSQL cuts them to 63 bytes."""


@dataclasses.dataclass(frozen=True)
class Shape:
    name: str
    ddl: str
    rows: str
    more: str
    postgres_insert: tuple[str, dict]
    """(table, {column: value}): inserted on PostgreSQL without the key."""
    sqlite_write: str
    after_backfill: str = ""
    """Plain sqlite3 writes after the backfill, before the replay."""


SHAPES = [
    Shape(
        "mixed_case",
        """
        CREATE TABLE "Artist" ("ArtistId" INTEGER PRIMARY KEY AUTOINCREMENT, "Name" NVARCHAR(120));
        CREATE TABLE "Album" ("AlbumId" INTEGER PRIMARY KEY AUTOINCREMENT, "Title" NVARCHAR(160) NOT NULL,
            "ArtistId" INTEGER NOT NULL REFERENCES "Artist" ("ArtistId") ON DELETE CASCADE ON UPDATE NO ACTION);
        CREATE INDEX "IFK_AlbumArtistId" ON "Album" ("ArtistId");
        """,
        """
        INSERT INTO "Artist" ("Name") VALUES ('AC/DC'), ('Accept'), ('Aerosmith');
        INSERT INTO "Album" ("Title", "ArtistId") VALUES ('For Those About To Rock', 1), ('Balls to the Wall', 2),
            ('Restless and Wild', 2);
        """,
        """
        INSERT INTO "Artist" ("Name") VALUES ('Alanis Morissette');
        UPDATE "Album" SET "Title" = 'Let There Be Rock' WHERE "AlbumId" = 1;
        DELETE FROM "Album" WHERE "AlbumId" = 3;
        """,
        ("Artist", {"Name": "Alice In Chains"}),
        """INSERT INTO "Album" ("Title", "ArtistId") VALUES ('Jagged Little Pill', 4)""",
        after_backfill="""INSERT INTO "Album" ("Title", "ArtistId") VALUES ('Big Ones', 3)""",
    ),
    Shape(
        "reserved_words",
        """
        CREATE TABLE "user" (id INTEGER PRIMARY KEY, "references" TEXT, "my col" REAL DEFAULT 1.5,
            "order" INT NOT NULL DEFAULT 0, "select" BOOLEAN DEFAULT 1);
        """,
        """INSERT INTO "user" ("references", "my col", "order") VALUES ('a', 2.25, 1), ('b', -0.0, 2), (NULL, NULL, 3);""",
        """UPDATE "user" SET "references" = 'changed' WHERE id = 1; INSERT INTO "user" ("references") VALUES ('new');""",
        ("user", {"references": "from postgres", "order": 9}),
        """INSERT INTO "user" ("references", "order") VALUES ('after rollback', 10)""",
        after_backfill="""DELETE FROM "user" WHERE id = 2""",
    ),
    Shape(
        "long_names",
        f"""
        CREATE TABLE "{LONG_A}" (id INTEGER PRIMARY KEY, v TEXT);
        CREATE TABLE "{LONG_B}" (id INTEGER PRIMARY KEY, v TEXT,
            "{'c' * 70}" INTEGER REFERENCES "{LONG_A}" (id));
        """,
        f"""
        INSERT INTO "{LONG_A}" (v) VALUES ('a1'), ('a2');
        INSERT INTO "{LONG_B}" (v, "{'c' * 70}") VALUES ('b1', 1), ('b2', 2);
        """,
        f"""DELETE FROM "{LONG_B}" WHERE id = 2; INSERT INTO "{LONG_A}" (v) VALUES ('a3');""",
        (LONG_A, {"v": "from postgres"}),
        f"""INSERT INTO "{LONG_B}" (v) VALUES ('after rollback')""",
        after_backfill=f"""UPDATE "{LONG_A}" SET v = 'a1 changed' WHERE id = 1""",
    ),
    Shape(
        "keyless",
        """CREATE TABLE log (msg TEXT, n INTEGER, at DATETIME);
        CREATE TABLE ledger ("RowID" TEXT, oid INTEGER, amount REAL);""",
        """INSERT INTO log VALUES ('one', 1, '2025-01-14 09:30:00'), ('two', 2, NULL), ('one', 1, '2025-01-14 09:30:00');
        INSERT INTO ledger VALUES ('a', 7, 1.5), ('a', 7, 1.5), (NULL, NULL, -2.25);""",
        """DELETE FROM log WHERE rowid = 2; UPDATE log SET n = 11 WHERE rowid = 1; INSERT INTO log VALUES ('four', 4, NULL);
        UPDATE ledger SET amount = 3 WHERE _rowid_ = 2; DELETE FROM ledger WHERE _rowid_ = 1;""",
        ("log", {"msg": "from postgres", "n": 5}),
        """INSERT INTO log (msg, n) VALUES ('after rollback', 6); INSERT INTO ledger VALUES ('b', 1, 0)""",
        after_backfill="""INSERT INTO log VALUES ('five', 5, '2025-02-01T10:00:00'); UPDATE ledger SET "RowID" = 'z' WHERE _rowid_ = 3""",
    ),
    Shape(
        "without_rowid_and_text_keys",
        """
        CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;
        CREATE TABLE tag (name TEXT PRIMARY KEY, hits INT DEFAULT 0);
        CREATE TABLE pair (a INTEGER, b TEXT, note TEXT, PRIMARY KEY (a, b));
        CREATE TABLE seq (id INTEGER PRIMARY KEY, label TEXT);
        """,
        """
        INSERT INTO kv VALUES ('alpha', x'00ff'), ('beta', NULL), ('caf\u00e9', x'');
        INSERT INTO tag VALUES ('red', 3), ('green', 0);
        INSERT INTO pair VALUES (1, 'x', 'first'), (1, 'y', 'second'), (2, 'x', NULL);
        INSERT INTO seq (label) VALUES ('s1');
        """,
        """
        UPDATE kv SET v = x'01' WHERE k = 'beta'; DELETE FROM tag WHERE name = 'green';
        INSERT INTO pair VALUES (3, 'z', 'third'); UPDATE pair SET note = 'changed' WHERE a = 1 AND b = 'y';
        """,
        ("seq", {"label": "from postgres"}),
        """INSERT INTO kv VALUES ('gamma', x'abcd')""",
        after_backfill="""DELETE FROM kv WHERE k = 'alpha'; INSERT INTO tag VALUES ('blue', 1)""",
    ),
    Shape(
        "numeric_blob_untyped",
        """
        CREATE TABLE money (id INTEGER PRIMARY KEY, price NUMERIC(10,2), total DECIMAL, raw BLOB, anything,
            flag BOOLEAN, day DATE, weight DOUBLE);
        """,
        """
        INSERT INTO money (price, total, raw, anything, flag, day, weight) VALUES
            (12.5, 100, x'DEADBEEF', 'text', 1, '2025-01-14', 0.1),
            (0.01, 2.75, NULL, 'more text', 0, NULL, -1e300),
            (NULL, NULL, x'', NULL, NULL, '1999-12-31', NULL);
        """,
        """UPDATE money SET price = 99.99 WHERE id = 1; INSERT INTO money (price, anything) VALUES (1.1, 'x');""",
        ("money", {"price": "7.25", "anything": "from postgres"}),
        """INSERT INTO money (price, raw) VALUES (3.3, x'01')""",
        after_backfill="""UPDATE money SET raw = x'00', day = '2025-03-01' WHERE id = 2""",
    ),
    Shape(
        "nocase_view_trigger_defaults",
        """
        CREATE TABLE person (id INTEGER PRIMARY KEY, email TEXT COLLATE NOCASE UNIQUE NOT NULL,
            created TIMESTAMP DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
            seen DATETIME DEFAULT (datetime('now', 'localtime')), age INT CHECK (age >= 0));
        CREATE TABLE audit (id INTEGER PRIMARY KEY, what TEXT NOT NULL);
        CREATE TABLE note (id INTEGER PRIMARY KEY, body TEXT);
        CREATE VIEW adults AS SELECT * FROM person WHERE age >= 18;
        CREATE TRIGGER person_audit AFTER INSERT ON person BEGIN INSERT INTO audit (what) VALUES ('person ' || NEW.id); END;
        CREATE VIRTUAL TABLE note_search USING fts5(body, content=note, content_rowid=id);
        CREATE TRIGGER note_indexed AFTER INSERT ON note BEGIN
            INSERT INTO note_search (rowid, body) VALUES (NEW.id, NEW.body); END;
        CREATE VIRTUAL TABLE scratch USING fts5(words);
        INSERT INTO scratch VALUES ('kept in the file');
        """,
        """INSERT INTO person (email, age) VALUES ('Ann@example.com', 30), ('bob@example.com', 12);""",
        """INSERT INTO person (email, age) VALUES ('cy@example.com', 40); UPDATE person SET age = 31 WHERE id = 1;""",
        ("note", {"body": "from postgres"}),
        """INSERT INTO person (email, age) VALUES ('dee@example.com', 50)""",
        after_backfill="""INSERT INTO note (body) VALUES ('a note')""",
    ),
    Shape(
        "self_reference_and_cycle",
        """
        CREATE TABLE node (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES node (id) ON DELETE CASCADE, label TEXT);
        CREATE TABLE team (id INTEGER PRIMARY KEY, captain INTEGER REFERENCES player (id) ON DELETE SET NULL, name TEXT);
        CREATE TABLE player (id INTEGER PRIMARY KEY, team INTEGER REFERENCES team (id), name TEXT);
        """,
        """
        INSERT INTO node VALUES (1, NULL, 'root'), (2, 1, 'child'), (3, 2, 'grandchild'), (4, 5, 'before its parent'),
            (5, 1, 'parent later');
        INSERT INTO team VALUES (1, NULL, 'red');
        INSERT INTO player VALUES (1, 1, 'ann'), (2, 1, 'bob');
        UPDATE team SET captain = 2 WHERE id = 1;
        """,
        """PRAGMA foreign_keys = ON; DELETE FROM node WHERE id = 2; INSERT INTO team VALUES (2, 1, 'blue');""",
        ("node", {"parent": 1, "label": "from postgres"}),
        """INSERT INTO player (team, name) VALUES (2, 'cy')""",
        after_backfill="""INSERT INTO node VALUES (6, 5, 'late leaf'); UPDATE team SET captain = 1 WHERE id = 1""",
    ),
]

SHAPE_IDS = [shape.name for shape in SHAPES]
