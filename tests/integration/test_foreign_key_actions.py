"""The foreign-key action guard (hrp_data.cutover.apply.action_refusals) on each action it knows:
ON UPDATE onto a parent's unique non-key column, ON DELETE SET NULL / SET DEFAULT, a cascade two
levels deep, the same changes made with foreign keys on in SQLite, and NO ACTION / RESTRICT. Real
PostgreSQL, a SQLite file, the operator's CLI steps, writes by the plain sqlite3 module (foreign
keys off, its default) unless a test turns them on."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import sqlalchemy as sa

from adapters.catalog import tables_on
from adapters.convert import to_postgres
from adapters.types import kind_of
from hrp_data.cutover import outbox
from hrp_data.cutover.apply import KeyRef, _references, action_refusals, read_images
from hrp_data.cutover.assemble import open_cutover
from tests.integration.cutover_helpers import settings_for
from tests.integration.test_any_schema import _plain_sqlite
from tests.integration.test_northwind_findings import _ok, _run
from tests.integration.test_real_file_findings import _rows


def _cut_in(path: Path, url: str, script: str) -> None:
    _plain_sqlite(path, script)
    for step in (("schema",), ("phase", "set", "dual_write"), ("backfill", "--no-backup"), ("verify",)):
        _ok(path, url, *step)


def _held_replay(path: Path, url: str, *actions: str) -> str:
    """`replay` exits 1, naming the reason and each action."""
    replayed = _run(path, url, "replay")
    assert replayed.exit_code == 1, replayed.output
    assert "foreign_key_action" in replayed.output, replayed.output
    for action in actions:
        assert action in replayed.output, replayed.output
    return replayed.output


def _refused(path: Path, url: str) -> dict[str, int]:
    verified = _run(path, url, "verify", "--json")
    assert verified.exit_code == 1, verified.output
    result = json.loads(verified.output[verified.output.index("{"):])
    return {name: table["refused"] for name, table in result["tables"].items() if table.get("refused")}


def _with_foreign_keys(path: Path, script: str) -> None:
    """A write by an app that turns foreign keys on: SQLite runs the actions itself."""
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA foreign_keys = ON")
        connection.executescript(script)
        connection.commit()
    finally:
        connection.close()


HANDLES = (
    "CREATE TABLE authors (id INTEGER PRIMARY KEY, handle TEXT NOT NULL UNIQUE, name TEXT);"
    "CREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT,"
    " author_handle TEXT REFERENCES authors (handle) ON UPDATE CASCADE);"
    "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT,"
    " author_handle TEXT REFERENCES authors (handle) ON UPDATE SET NULL);"
    "INSERT INTO authors VALUES (1, 'ann', 'Ann'), (2, 'bob', 'Bob'), (3, 'cy', 'Cy');"
    "INSERT INTO posts VALUES (1, 'first', 'ann'), (2, 'second', 'ann'), (3, 'third', 'cy');"
    "INSERT INTO notes VALUES (1, 'a note', 'bob'), (2, 'another', 'cy');"
)


def test_a_unique_column_changed_without_foreign_keys_waits_until_the_children_follow(tmp_path, postgres_url):
    """posts and notes reference authors.handle, a UNIQUE column that is not the key, ON UPDATE
    CASCADE and ON UPDATE SET NULL. A writer without foreign keys renames a handle: SQLite keeps the
    children on the old handle, PostgreSQL's upsert of the author would cascade (or null) them.
    The author's change waits with the reason until the children agree in SQLite. Then the children
    carried in the same batch as the author waited for their parent ("waiting for its parent
    authors.handle=ann2"): the batch's parents were matched by their key, not by the referenced
    column, and `replay` exited 1 with two changes left; they are applied together."""
    path = tmp_path / "app.db"
    _cut_in(path, postgres_url, HANDLES)

    _plain_sqlite(path, "UPDATE authors SET handle = 'ann2' WHERE id = 1;"
                        "UPDATE authors SET handle = 'bob2' WHERE id = 2;")
    _held_replay(path, postgres_url, "ON UPDATE CASCADE", "ON UPDATE SET NULL")
    assert _rows(postgres_url, "SELECT id, handle FROM authors ORDER BY 1") == [(1, "ann"), (2, "bob"), (3, "cy")]
    assert _rows(postgres_url, "SELECT id, author_handle FROM posts ORDER BY 1") == [(1, "ann"), (2, "ann"), (3, "cy")]
    assert _rows(postgres_url, "SELECT id, author_handle FROM notes ORDER BY 1") == [(1, "bob"), (2, "cy")]
    assert _refused(path, postgres_url) == {"authors": 2}

    # only one child follows: the other still holds the change
    _plain_sqlite(path, "UPDATE posts SET author_handle = 'ann2' WHERE id = 1;")
    _held_replay(path, postgres_url, "ON UPDATE CASCADE")
    assert _rows(postgres_url, "SELECT id, handle FROM authors WHERE id = 1") == [(1, "ann")]

    _plain_sqlite(path, "UPDATE posts SET author_handle = 'ann2' WHERE author_handle = 'ann';"
                        "UPDATE notes SET author_handle = NULL WHERE author_handle = 'bob';")
    _ok(path, postgres_url, "replay")
    assert _rows(postgres_url, "SELECT id, handle FROM authors ORDER BY 1") == [(1, "ann2"), (2, "bob2"), (3, "cy")]
    assert _rows(postgres_url, "SELECT id, author_handle FROM posts ORDER BY 1") == [
        (1, "ann2"), (2, "ann2"), (3, "cy")]
    assert _rows(postgres_url, "SELECT id, author_handle FROM notes ORDER BY 1") == [(1, None), (2, "cy")]
    _ok(path, postgres_url, "verify")

    # a change of a column nothing references, or of an author without children, is applied at once
    _plain_sqlite(path, "UPDATE authors SET name = 'Cyrus' WHERE id = 3;"
                        "INSERT INTO authors VALUES (4, 'dee', 'Dee');"
                        "UPDATE authors SET handle = 'dee2' WHERE id = 4;")
    _ok(path, postgres_url, "replay")
    _ok(path, postgres_url, "verify")

    # with foreign keys on, SQLite cascades and nulls the children itself: applied at once
    _with_foreign_keys(path, "UPDATE authors SET handle = 'cy2' WHERE id = 3;")
    _ok(path, postgres_url, "replay")
    assert _rows(postgres_url, "SELECT id, author_handle FROM posts WHERE id = 3") == [(3, "cy2")]
    assert _rows(postgres_url, "SELECT id, author_handle FROM notes WHERE id = 2") == [(2, None)]
    _ok(path, postgres_url, "verify")


TEAMS = (
    "CREATE TABLE teams (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
    "CREATE TABLE members (id INTEGER PRIMARY KEY, name TEXT,"
    " team_id INTEGER REFERENCES teams (id) ON DELETE SET NULL);"
    "CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT,"
    " team_id INTEGER NOT NULL DEFAULT 0 REFERENCES teams (id) ON DELETE SET DEFAULT);"
    "INSERT INTO teams VALUES (0, 'unassigned'), (1, 'red'), (2, 'blue'), (3, 'green'), (4, 'grey');"
    "INSERT INTO members VALUES (1, 'ann', 1), (2, 'bob', 1), (3, 'cy', 3), (4, 'dee', 4);"
    "INSERT INTO tasks VALUES (1, 'paint', 2), (2, 'sweep', 3), (3, 'mend', 4);"
)


def test_a_delete_postgres_would_set_null_or_default_waits_until_the_children_follow(tmp_path, postgres_url):
    """members reference teams ON DELETE SET NULL, tasks ON DELETE SET DEFAULT (team 0). A writer
    without foreign keys deletes a team and leaves its members and tasks on it: PostgreSQL would
    null them, or move them to team 0, in silence. The delete waits until the children agree;
    one made with foreign keys on (SQLite set them itself) is applied at once."""
    path = tmp_path / "app.db"
    _cut_in(path, postgres_url, TEAMS)

    _plain_sqlite(path, "DELETE FROM teams WHERE id IN (1, 2);")
    _held_replay(path, postgres_url, "ON DELETE SET NULL", "ON DELETE SET DEFAULT")
    assert _rows(postgres_url, "SELECT id FROM teams ORDER BY 1") == [(0,), (1,), (2,), (3,), (4,)]
    assert _rows(postgres_url, "SELECT id, team_id FROM members ORDER BY 1") == [(1, 1), (2, 1), (3, 3), (4, 4)]
    assert _rows(postgres_url, "SELECT id, team_id FROM tasks ORDER BY 1") == [(1, 2), (2, 3), (3, 4)]
    assert _refused(path, postgres_url) == {"teams": 2}

    _plain_sqlite(path, "UPDATE members SET team_id = NULL WHERE team_id = 1;"
                        "UPDATE tasks SET team_id = 0 WHERE team_id = 2;")
    _ok(path, postgres_url, "replay")
    assert _rows(postgres_url, "SELECT id FROM teams ORDER BY 1") == [(0,), (3,), (4,)]
    assert _rows(postgres_url, "SELECT id, team_id FROM members ORDER BY 1") == [(1, None), (2, None), (3, 3), (4, 4)]
    assert _rows(postgres_url, "SELECT id, team_id FROM tasks ORDER BY 1") == [(1, 0), (2, 3), (3, 4)]
    _ok(path, postgres_url, "verify")

    # children deleted with their parent by the same writer: nothing for PostgreSQL to change
    _plain_sqlite(path, "DELETE FROM members WHERE team_id = 4; DELETE FROM tasks WHERE team_id = 4;"
                        "DELETE FROM teams WHERE id = 4;")
    _ok(path, postgres_url, "replay")
    _ok(path, postgres_url, "verify")

    _with_foreign_keys(path, "DELETE FROM teams WHERE id = 3;")
    _ok(path, postgres_url, "replay")
    assert _rows(postgres_url, "SELECT id, team_id FROM members ORDER BY 1") == [(1, None), (2, None), (3, None)]
    assert _rows(postgres_url, "SELECT id, team_id FROM tasks ORDER BY 1") == [(1, 0), (2, 0)]
    _ok(path, postgres_url, "verify")


ALBUMS = (
    "CREATE TABLE albums (id INTEGER PRIMARY KEY, title TEXT);"
    "CREATE TABLE tracks (id INTEGER PRIMARY KEY, name TEXT,"
    " album_id INTEGER NOT NULL REFERENCES albums (id) ON DELETE CASCADE);"
    "CREATE TABLE plays (id INTEGER PRIMARY KEY, at TEXT,"
    " track_id INTEGER NOT NULL REFERENCES tracks (id) ON DELETE CASCADE);"
    "INSERT INTO albums VALUES (1, 'one'), (2, 'two'), (3, 'three');"
    "INSERT INTO tracks VALUES (11, 'a', 1), (12, 'b', 1), (21, 'c', 2), (31, 'd', 3);"
    "INSERT INTO plays VALUES (101, 'mon', 11), (102, 'tue', 12), (103, 'wed', 12), (201, 'thu', 21),"
    " (301, 'fri', 31);"
)


def test_a_cascade_two_levels_deep_waits_for_the_grandchildren(tmp_path, postgres_url):
    """albums <- tracks <- plays, each ON DELETE CASCADE. A writer without foreign keys deletes an
    album and its tracks but forgets one track's plays: PostgreSQL's cascade through the track would
    delete plays SQLite keeps. The album's delete (and that track's) waits, naming the plays; with
    the plays gone too, or with foreign keys on, everything is applied."""
    path = tmp_path / "app.db"
    _cut_in(path, postgres_url, ALBUMS)

    _plain_sqlite(path, "DELETE FROM plays WHERE id = 101;"
                        "DELETE FROM tracks WHERE album_id = 1; DELETE FROM albums WHERE id = 1;")
    output = _held_replay(path, postgres_url, "ON DELETE CASCADE")
    assert "plays [102]" in output or "plays [103]" in output, output
    assert _rows(postgres_url, "SELECT id FROM albums ORDER BY 1") == [(1,), (2,), (3,)]
    # track 11 and its plays are gone in SQLite too: its delete is applied, PostgreSQL's cascade agrees
    assert _rows(postgres_url, "SELECT id FROM tracks ORDER BY 1") == [(12,), (21,), (31,)]
    assert _rows(postgres_url, "SELECT id FROM plays ORDER BY 1") == [(102,), (103,), (201,), (301,)]
    assert _refused(path, postgres_url) == {"albums": 1, "tracks": 1}

    _plain_sqlite(path, "DELETE FROM plays WHERE track_id = 12;")
    _ok(path, postgres_url, "replay")
    assert _rows(postgres_url, "SELECT id FROM plays ORDER BY 1") == [(201,), (301,)]
    _ok(path, postgres_url, "verify")

    # only the album deleted, its track and plays kept: the album waits (the grandchild is not reached)
    _plain_sqlite(path, "DELETE FROM albums WHERE id = 3;")
    output = _held_replay(path, postgres_url, "ON DELETE CASCADE")
    assert "tracks [31]" in output, output
    _plain_sqlite(path, "DELETE FROM tracks WHERE id = 31;")
    output = _held_replay(path, postgres_url, "ON DELETE CASCADE")
    assert "plays [301]" in output, output
    _plain_sqlite(path, "DELETE FROM plays WHERE id = 301;")
    _ok(path, postgres_url, "replay")
    _ok(path, postgres_url, "verify")

    _with_foreign_keys(path, "DELETE FROM albums WHERE id = 2;")
    _ok(path, postgres_url, "replay")
    assert _rows(postgres_url, "SELECT count(*) FROM albums") == [(0,)]
    assert _rows(postgres_url, "SELECT count(*) FROM tracks") == [(0,)]
    assert _rows(postgres_url, "SELECT count(*) FROM plays") == [(0,)]
    _ok(path, postgres_url, "verify")


SHELVES = (
    "CREATE TABLE shelves (id INTEGER PRIMARY KEY, name TEXT);"
    "CREATE TABLE books (id INTEGER PRIMARY KEY, title TEXT, shelf_id INTEGER REFERENCES shelves (id));"
    "CREATE TABLE loans (id INTEGER PRIMARY KEY, book_id INTEGER REFERENCES books (id) ON DELETE RESTRICT);"
    "INSERT INTO shelves VALUES (1, 'top'), (2, 'bottom');"
    "INSERT INTO books VALUES (1, 'Emma', 1), (2, 'Ulysses', 2);"
    "INSERT INTO loans VALUES (1, 1), (2, 2);"
)


def test_a_delete_with_no_action_or_restrict_is_left_to_postgres(tmp_path, postgres_url):
    """books reference shelves with no action, loans reference books ON DELETE RESTRICT. A parent
    deleted without its children is not the guard's: PostgreSQL refuses the delete itself (the
    foreign key), the change waits in the outbox as before, and is applied once the children go."""
    path = tmp_path / "app.db"
    _cut_in(path, postgres_url, SHELVES)

    _plain_sqlite(path, "DELETE FROM shelves WHERE id = 1; DELETE FROM books WHERE id = 2;")
    replayed = _run(path, postgres_url, "replay")
    assert replayed.exit_code == 1, replayed.output
    assert "foreign_key_action" not in replayed.output, replayed.output
    assert "ForeignKeyViolation" in replayed.output, replayed.output
    assert _rows(postgres_url, "SELECT id FROM shelves ORDER BY 1") == [(1,), (2,)]
    assert _rows(postgres_url, "SELECT id FROM books ORDER BY 1") == [(1,), (2,)]

    _plain_sqlite(path, "DELETE FROM loans; DELETE FROM books;")
    _ok(path, postgres_url, "replay")
    assert _rows(postgres_url, "SELECT id FROM shelves ORDER BY 1") == [(2,)]
    _ok(path, postgres_url, "verify")


STAFF = (
    "CREATE TABLE staff (id INTEGER PRIMARY KEY, name TEXT,"
    " manager_id INTEGER REFERENCES staff (id) ON DELETE CASCADE);"
    "INSERT INTO staff VALUES (1, 'ceo', 1), (2, 'cto', 1), (3, 'dev', 2), (4, 'cfo', 4), (5, 'clerk', 4);"
)


def test_a_cascade_through_a_row_that_references_itself_ends(tmp_path, postgres_url):
    """staff reference their manager ON DELETE CASCADE, and the top of a tree is its own manager.
    Following the cascade to the children met the deleted row again, and again: `replay` never
    ended. Each row is followed once."""
    path = tmp_path / "app.db"
    _cut_in(path, postgres_url, STAFF)

    _plain_sqlite(path, "DELETE FROM staff WHERE id IN (4, 5);")
    _ok(path, postgres_url, "replay")
    _plain_sqlite(path, "DELETE FROM staff WHERE id IN (1, 2);")
    output = _held_replay(path, postgres_url, "ON DELETE CASCADE")
    assert "staff [3]" in output, output
    assert _rows(postgres_url, "SELECT id FROM staff ORDER BY 1") == [(1,), (2,), (3,)]
    _with_foreign_keys(path, "DELETE FROM staff WHERE id = 3;")
    _ok(path, postgres_url, "replay")
    assert _rows(postgres_url, "SELECT count(*) FROM staff") == [(0,)]
    _ok(path, postgres_url, "verify")


# -- the batched lookups decide as the per-row ones did ------------------------------------------


def _per_row_refusals(postgres, sqlite, tables, images):
    """action_refusals as it was written first: two PostgreSQL lookups per row and foreign key
    (the reference the batched one is compared with; a row followed once)."""
    pg_tables = tables_on(tables, "postgresql")
    name_of = {table: name for name, table in pg_tables.items()}
    actions = {}
    for table in pg_tables.values():
        for constraint in table.foreign_key_constraints:
            if (constraint.ondelete or constraint.onupdate) and constraint.referred_table in name_of:
                actions.setdefault(name_of[constraint.referred_table], []).append(constraint)
    known = dict(images)
    held = {}
    work = [(ref, ref, image) for ref, image in images.items() if ref.table in actions]
    followed = set()
    while work:
        origin, ref, image = work.pop()
        if origin in held or (origin, ref) in followed:
            continue
        followed.add((origin, ref))
        parent = pg_tables[ref.table]
        for constraint in actions[ref.table]:
            referred = [element.column for element in constraint.elements]
            old = postgres.execute(sa.select(*referred).where(
                *(column == value for column, value in zip(parent.primary_key.columns, ref.key)))).first()
            if old is None or any(value is None for value in old):
                continue
            if image is None:
                action = constraint.ondelete
            elif all(column.primary_key for column in referred) or not constraint.onupdate:
                continue
            else:
                new = tuple(to_postgres(kind_of(column), image[column.key]) for column in referred)
                if new == tuple(old):
                    continue
                action = constraint.onupdate
            action = (action or "NO ACTION").upper()
            if action in ("NO ACTION", "RESTRICT"):
                continue
            child = constraint.table
            child_name = name_of[child]
            found = postgres.execute(sa.select(*child.primary_key.columns).where(
                *(column == value for column, value in zip(constraint.columns, old)))).all()
            columns = [column.key for column in constraint.columns]
            refs = [KeyRef(child_name, tuple(row)) for row in found]
            known.update(read_images(sqlite, tables, [r for r in refs if r not in known]))
            refs += [child_ref for child_ref, after in images.items()
                     if child_ref.table == child_name and child_ref not in refs and after is not None
                     and _references(child, columns, after, tuple(old))]
            for child_ref in refs:
                after = known[child_ref]
                if after is not None and _references(child, columns, after, tuple(old)):
                    held[origin] = constraint.name
                    break
                if after is None and action == "CASCADE" and image is None and child_name in actions:
                    work.append((origin, child_ref, None))
            if origin in held:
                break
    return held


MIX = (
    "CREATE TABLE parents (id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE, name TEXT);"
    "CREATE TABLE kids (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parents (id) ON DELETE CASCADE);"
    "CREATE TABLE nulled (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parents (id) ON DELETE SET NULL);"
    "CREATE TABLE defaulted (id INTEGER PRIMARY KEY,"
    " parent_id INTEGER NOT NULL DEFAULT 0 REFERENCES parents (id) ON DELETE SET DEFAULT);"
    "CREATE TABLE by_code (id INTEGER PRIMARY KEY,"
    " code TEXT REFERENCES parents (code) ON UPDATE CASCADE ON DELETE CASCADE);"
    "CREATE TABLE by_code_nulled (id INTEGER PRIMARY KEY, code TEXT REFERENCES parents (code) ON UPDATE SET NULL);"
    "CREATE TABLE kept (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parents (id) ON DELETE RESTRICT);"
    "CREATE TABLE grandkids (id INTEGER PRIMARY KEY, kid_id INTEGER REFERENCES kids (id) ON DELETE CASCADE);"
    "CREATE TABLE tree (id INTEGER PRIMARY KEY, up INTEGER REFERENCES tree (id) ON DELETE CASCADE);"
    "CREATE TABLE pairs (a INTEGER NOT NULL, b TEXT NOT NULL, PRIMARY KEY (a, b));"
    "CREATE TABLE pair_kids (id INTEGER PRIMARY KEY, a INTEGER, b TEXT,"
    " FOREIGN KEY (a, b) REFERENCES pairs (a, b) ON DELETE CASCADE);"
)

CHILDREN = {"kids": "parent_id", "nulled": "parent_id", "defaulted": "parent_id", "kept": "parent_id"}


def _mixed_file(path: Path, rng: random.Random) -> None:
    rows = ["INSERT INTO parents VALUES (0, 'zero', 'default');"]
    rows += [f"INSERT INTO parents VALUES ({i}, 'c{i}', 'p{i}');" for i in range(1, 61)]
    for n, table in enumerate(CHILDREN):
        rows += [f"INSERT INTO {table} VALUES ({n * 1000 + i}, {rng.randint(1, 60)});" for i in range(40)]
    rows += [f"INSERT INTO by_code VALUES ({i}, 'c{rng.randint(1, 60)}');" for i in range(40)]
    rows += [f"INSERT INTO by_code_nulled VALUES ({i}, 'c{rng.randint(1, 60)}');" for i in range(40)]
    rows += [f"INSERT INTO grandkids VALUES ({i}, {rng.randrange(40)});" for i in range(60)]
    rows += [f"INSERT INTO tree VALUES ({i}, {rng.randint(1, i)});" for i in range(1, 40)]
    rows += [f"INSERT INTO pairs VALUES ({i}, 'b{i % 3}');" for i in range(30)]
    rows += [f"INSERT INTO pair_kids VALUES ({i}, {i % 30}, 'b{i % 30 % 3}');" for i in range(45)]
    _plain_sqlite(path, MIX + "".join(rows))


def _random_writes(rng: random.Random) -> str:
    """Deletes and renames of parents, each child (and grandchild) following or not."""
    writes = []
    for _ in range(rng.randint(5, 15)):
        i = rng.randint(1, 60)
        choice = rng.random()
        if choice < 0.35:
            if rng.random() < 0.3:  # a child arriving in the batch that deletes its parent
                writes.append(f"INSERT INTO kids VALUES ({5000 + rng.randrange(999)}, {i}) ON CONFLICT DO NOTHING;")
            if rng.random() < 0.5:
                writes.append(f"DELETE FROM grandkids WHERE kid_id IN (SELECT id FROM kids WHERE parent_id = {i});")
            for table in CHILDREN:
                if rng.random() < 0.5:
                    writes.append(rng.choice([f"DELETE FROM {table} WHERE parent_id = {i};",
                                              f"UPDATE {table} SET parent_id = {rng.choice(['NULL', '0'])}"
                                              f" WHERE parent_id = {i};"]))
            if rng.random() < 0.5:
                writes.append(f"DELETE FROM by_code WHERE code = 'c{i}';")
            writes.append(f"DELETE FROM parents WHERE id = {i};")
        elif choice < 0.55:
            writes.append(f"UPDATE parents SET code = 'r{i}x{rng.randrange(99)}' WHERE id = {i};")
            if rng.random() < 0.5:
                writes.append("UPDATE by_code_nulled SET code = NULL WHERE code NOT IN (SELECT code FROM parents);")
            if rng.random() < 0.5:
                writes.append("DELETE FROM by_code WHERE code NOT IN (SELECT code FROM parents);")
        elif choice < 0.75:
            node = rng.randint(1, 39)
            if rng.random() < 0.5:
                writes.append(f"DELETE FROM tree WHERE up IN (SELECT id FROM tree WHERE up = {node}) AND id != {node};")
            if rng.random() < 0.5:
                writes.append(f"DELETE FROM tree WHERE up = {node};")
            writes.append(f"DELETE FROM tree WHERE id = {node};")
        elif choice < 0.9:
            writes.append(f"DELETE FROM pairs WHERE a = {rng.randrange(30)};")
            if rng.random() < 0.5:
                writes.append("DELETE FROM pair_kids WHERE NOT EXISTS"
                              " (SELECT 1 FROM pairs WHERE pairs.a = pair_kids.a AND pairs.b = pair_kids.b);")
        else:
            writes.append(f"UPDATE parents SET name = 'n{rng.randrange(99)}' WHERE id = {i};"
                          f"INSERT INTO kids VALUES ({5000 + rng.randrange(999)}, {i}) ON CONFLICT DO NOTHING;")
    return "".join(writes)


def _each(path: Path, script: str, foreign_keys: bool) -> None:
    """The statements one by one, each in its own transaction; one SQLite refuses (a RESTRICT, a
    missing parent, with foreign keys on) is left out."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        for statement in filter(None, script.split(";")):
            try:
                connection.execute(statement)
            except sqlite3.IntegrityError:
                pass
    finally:
        connection.close()


def test_the_batched_lookups_hold_what_the_per_row_ones_held(tmp_path, postgres_url):
    """Random deletes and renames of parents, by writers with foreign keys off and on, over every
    action the guard knows (CASCADE, SET NULL, SET DEFAULT, ON UPDATE onto a unique column, a
    composite key, a self-reference, a grandchild, RESTRICT): the batched action_refusals holds
    exactly the changes the per-row lookups held, with the same foreign key named, round after round."""
    rng = random.Random(20261207)
    path = tmp_path / "app.db"
    _mixed_file(path, rng)
    for step in (("schema",), ("phase", "set", "dual_write"), ("backfill", "--no-backup"), ("verify",)):
        _ok(path, postgres_url, *step)
    held, passed, named = set(), set(), set()
    with open_cutover(settings_for(path, postgres_url, "dual_write")) as cutover:
        tables = cutover.captured
        for round_ in range(12):
            script = _random_writes(rng)
            _each(path, script, foreign_keys=round_ % 3 == 2)
            refs = [pending.ref for pending in outbox.due(cutover.sqlite, limit=100_000, ignore_backoff=True)]
            with cutover.postgres.connect() as postgres, cutover.sqlite.connect() as sqlite:
                images = read_images(sqlite, tables, refs)
                batched = action_refusals(postgres, sqlite, tables, images)
                per_row = _per_row_refusals(postgres, sqlite, tables, images)
            assert set(batched) == set(per_row), (round_, script)
            for ref, constraint in per_row.items():
                assert batched[ref].startswith(f"rejected: foreign_key_action ({constraint}: "), (ref, batched[ref])
            held |= set(per_row)
            named |= set(per_row.values())
            passed |= {ref for ref in images if ref.table in ("parents", "kids", "tree", "pairs") and ref not in per_row}
            _run(path, postgres_url, "replay")
    assert len(held) > 10 and len(passed) > 10 and len(named) >= 5, (len(held), len(passed), named)


def test_a_delete_of_a_key_postgres_cannot_hold_is_not_looked_up_there(tmp_path, postgres_url):
    """`pairs (a INTEGER, b TEXT)` is referenced ON DELETE CASCADE; SQLite let a row with text in
    `a` in, which the backfill quarantined. Its delete was looked up in PostgreSQL by that key
    (`a = 'x'`: invalid input for a bigint), and the whole batch failed as "secondary unavailable",
    on every replay. No such row can exist there: the delete is applied, with the rest of its batch."""
    path = tmp_path / "app.db"
    _plain_sqlite(path, "CREATE TABLE pairs (a INTEGER NOT NULL, b TEXT NOT NULL, PRIMARY KEY (a, b));"
                        "CREATE TABLE pair_kids (id INTEGER PRIMARY KEY, a INTEGER, b TEXT,"
                        " FOREIGN KEY (a, b) REFERENCES pairs (a, b) ON DELETE CASCADE);"
                        "INSERT INTO pairs VALUES (1, 'one'), ('x', 'ex'), (2, 'two');"
                        "INSERT INTO pair_kids VALUES (1, 1, 'one'), (2, 2, 'two');")
    for step in (("schema",), ("phase", "set", "dual_write"), ("backfill", "--no-backup")):
        _ok(path, postgres_url, *step)
    _with_foreign_keys(path, "DELETE FROM pairs WHERE a = 'x'; DELETE FROM pairs WHERE a = 1;")
    _ok(path, postgres_url, "replay")
    assert _rows(postgres_url, "SELECT a, b FROM pairs") == [(2, "two")]
    assert _rows(postgres_url, "SELECT id FROM pair_kids") == [(2,)]


def test_a_held_change_is_listed_where_the_operator_looks(tmp_path, postgres_url):
    """A change held with `foreign_key_action` shows in `replay`, `status` (failing), `verify`
    (refused) and `quarantine`, whose `live` list is the changes the applier rejected: it was
    listed with the constraint and its explanation parsed as the `column`; it has no column, and
    the explanation is its `detail`."""
    path = tmp_path / "app.db"
    _cut_in(path, postgres_url, TEAMS)
    _plain_sqlite(path, "DELETE FROM teams WHERE id = 1;")
    _held_replay(path, postgres_url, "ON DELETE SET NULL")
    assert "1 failing" in _ok(path, postgres_url, "status")
    assert _refused(path, postgres_url) == {"teams": 1}

    listed = json.loads(_ok(path, postgres_url, "quarantine", "--format", "json"))
    assert listed["rows"] == []
    [live] = listed["live"]
    detail = live.pop("detail")
    assert live == {"database": "sqlite", "table": "teams", "key": [1], "column": None, "reason": "foreign_key_action"}
    assert detail.startswith("fk_members_1: PostgreSQL's ON DELETE SET NULL would change members [")
    assert detail.endswith("make the child rows agree in SQLite")
    text = _ok(path, postgres_url, "quarantine")
    assert f"teams [1] -: foreign_key_action ({detail}) (live, waiting in sqlite's outbox)" in text, text
    assert "1 live change(s) rejected by the applier" in text and "the child rows it names" in text, text

    _plain_sqlite(path, "UPDATE members SET team_id = NULL WHERE team_id = 1;")
    _ok(path, postgres_url, "replay")
    assert json.loads(_ok(path, postgres_url, "quarantine", "--format", "json")) == {"rows": [], "live": []}


def test_a_composite_foreign_key_with_a_null_part_is_applied_not_held_for_a_parent(tmp_path, postgres_url):
    """A composite foreign key with one part NULL is not checked (MATCH SIMPLE, in SQLite and in
    PostgreSQL alike), so its row needs no parent: it is applied at once, not held back "waiting for
    its parent" (the parent look-up checked each column of a composite key on its own, so the non-NULL
    part alone held the row back for good). Rows whose whole composite key has a parent, and one whose
    parent arrives in the same batch, are applied too; one whose pair no parent has is PostgreSQL's
    refusal, held with it until SQLite changes it."""
    path = tmp_path / "composite.db"
    _cut_in(path, postgres_url,
            "CREATE TABLE fixtures (id INTEGER PRIMARY KEY, track TEXT NOT NULL, day INTEGER NOT NULL,"
            " UNIQUE (track, day));"
            "CREATE TABLE bets (id INTEGER PRIMARY KEY, track TEXT, day INTEGER, stake REAL,"
            " FOREIGN KEY (track, day) REFERENCES fixtures (track, day));"
            "INSERT INTO fixtures VALUES (1, 'Ascot', 1);"
            "INSERT INTO bets VALUES (1, 'Ascot', 1, 2.5);")
    _plain_sqlite(path, "INSERT INTO bets VALUES (2, 'Nowhere', NULL, 1.0);"
                        "INSERT INTO bets VALUES (3, 'Ascot', 1, 4.0);"
                        "INSERT INTO fixtures VALUES (2, 'York', 7);"
                        "INSERT INTO bets VALUES (4, 'York', 7, 3.0);"
                        "INSERT INTO bets VALUES (5, 'Ascot', 7, 9.0);")  # no fixture has this pair
    replayed = _run(path, postgres_url, "replay")
    assert replayed.exit_code == 1, replayed.output
    assert "bets [5]" in replayed.output and "foreign key" in replayed.output, replayed.output
    assert "bets [2]" not in replayed.output, replayed.output
    _plain_sqlite(path, "DELETE FROM bets WHERE id = 5;")
    _ok(path, postgres_url, "replay")
    _ok(path, postgres_url, "verify")
    with sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg2://", 1)).connect() as pg:
        assert pg.execute(sa.text("SELECT id, track, day FROM bets ORDER BY id")).all() == [
            (1, "Ascot", 1), (2, "Nowhere", None), (3, "Ascot", 1), (4, "York", 7)]


def test_a_composite_foreign_key_is_checked_whole_by_assess_and_the_backfill(tmp_path, postgres_url):
    """bets (track, day) references fixtures (track, day). A bet whose pair no fixture has, though
    each part alone is some fixture's, is an orphan: assess counts it and the backfill quarantines
    it (its foreign-key triggers are off during the copy, so it would otherwise stay in PostgreSQL
    against the constraint). A bet with a NULL part needs no parent (MATCH SIMPLE): copied, counted
    by neither. Checked column by column, both had it the other way round."""
    path = tmp_path / "composite.db"
    _plain_sqlite(path,
                  "CREATE TABLE fixtures (id INTEGER PRIMARY KEY, track TEXT NOT NULL, day INTEGER NOT NULL,"
                  " UNIQUE (track, day));"
                  "CREATE TABLE bets (id INTEGER PRIMARY KEY, track TEXT, day INTEGER, stake REAL,"
                  " FOREIGN KEY (track, day) REFERENCES fixtures (track, day));"
                  "INSERT INTO fixtures VALUES (1, 'Ascot', 1), (2, 'York', 7);"
                  "INSERT INTO bets VALUES (1, 'Ascot', 1, 2.5), (2, 'Nowhere', NULL, 1.0), (3, 'Ascot', 7, 4.0),"
                  " (4, NULL, NULL, 3.0);")
    assessed = json.loads(_ok(path, postgres_url, "assess", "--json"))
    bets = [o for o in assessed["orphans"] if o["table"] == "bets"]
    assert bets == [{"table": "bets", "column": "track, day", "parent": "fixtures.(track, day)", "rows": 1,
                     "examples": [[3]]}], bets
    for step in (("schema",), ("phase", "set", "dual_write"), ("backfill", "--no-backup")):
        _ok(path, postgres_url, *step)
    with sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg2://", 1)).connect() as pg:
        assert pg.execute(sa.text("SELECT id FROM bets ORDER BY id")).scalars().all() == [1, 2, 4]
    listed = json.loads(_ok(path, postgres_url, "quarantine", "--format", "json"))
    rows = [r for r in listed["rows"] if r["table"] == "bets"]
    assert [(r["key"], r["column"], r["reason"]) for r in rows] == [([3], "track, day", "orphan_foreign_key")], rows


def test_an_orphan_whose_reference_is_a_secret_is_shown_by_its_fingerprint_only(tmp_path, postgres_url):
    """A row quarantined as an orphan names its missing parent: a reference through a secret-looking
    column (an API token) is shown as a fingerprint there too, never as the token."""
    path = tmp_path / "tokens.db"
    token = "sk_live_" + "Zq8" * 10
    _plain_sqlite(path, "CREATE TABLE api_keys (api_key TEXT PRIMARY KEY, owner TEXT);"
                        "CREATE TABLE calls (id INTEGER PRIMARY KEY, api_key TEXT REFERENCES api_keys (api_key));"
                        f"INSERT INTO calls VALUES (1, '{token}');")
    for step in (("schema",), ("phase", "set", "dual_write"), ("backfill", "--no-backup")):
        _ok(path, postgres_url, *step)
    for output in (_ok(path, postgres_url, "quarantine"), _ok(path, postgres_url, "quarantine", "--format", "json")):
        assert "orphan_foreign_key" in output and "sha256:" in output, output
        assert token not in output and "Zq8Zq8" not in output, output


def test_a_row_waiting_for_a_secret_parent_names_it_by_its_fingerprint(tmp_path, postgres_url):
    """A live row whose parent PostgreSQL lacks waits "for its parent" with the parent's value in its
    reason (replay, status, the log): a secret-looking reference is given as its fingerprint."""
    path = tmp_path / "tokens.db"
    token = "sk_live_" + "Qw7" * 10
    _cut_in(path, postgres_url, "CREATE TABLE api_keys (api_key TEXT PRIMARY KEY, owner TEXT);"
                                "CREATE TABLE calls (id INTEGER PRIMARY KEY, api_key TEXT REFERENCES api_keys (api_key));")
    # the parent's change is refused (a NUL in a text), so its child waits for it
    _plain_sqlite(path, f"INSERT INTO api_keys VALUES ('{token}', 'a' || char(0) || 'b');"
                        f"INSERT INTO calls VALUES (1, '{token}');")
    replayed = _run(path, postgres_url, "replay")
    assert replayed.exit_code == 1, replayed.output
    assert "waiting for its parent api_keys.api_key=sha256:" in replayed.output, replayed.output
    assert token not in replayed.output and "Qw7Qw7" not in replayed.output, replayed.output


def test_a_held_action_names_a_child_keyed_by_a_secret_by_its_fingerprint(tmp_path, postgres_url):
    """A parent's change held because PostgreSQL's ON DELETE CASCADE would change a child SQLite
    keeps: its reason names the child by key, and a child keyed by a secret-looking column (a
    session token) is named by the key's fingerprint, never by the token."""
    path = tmp_path / "sessions.db"
    token = "tok_" + "Hx4" * 12
    _cut_in(path, postgres_url,
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);"
            "CREATE TABLE sessions (session_token TEXT PRIMARY KEY,"
            " user_id INTEGER REFERENCES users (id) ON DELETE CASCADE);"
            f"INSERT INTO users VALUES (1, 'ann'); INSERT INTO sessions VALUES ('{token}', 1);")
    _plain_sqlite(path, "DELETE FROM users WHERE id = 1;")  # foreign keys off: the session stays in SQLite
    output = _held_replay(path, postgres_url, "ON DELETE CASCADE")
    assert "sessions [" in output and "sha256:" in output, output
    assert token not in output and "Hx4Hx4" not in output, output
