"""`hrp-cutover schema --revision-dir`: the file's schema as the first Alembic revision of an app
without a migration history, run by Alembic itself on an empty PostgreSQL database, gives what
`hrp-cutover schema` creates, table for table; its downgrade leaves no table of the app; and the
app's next revision carries on from it (docs/schema.md, the schema step)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from click.testing import CliRunner

from tests.conftest import libpq, scratch_database
from tests.schema_corpus import SHAPE_IDS, SHAPES
from tools.cli import cli

ENV = """
from alembic import context
from sqlalchemy import create_engine

engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
"""
"""The app's env.py, as `alembic init` makes it in spirit: its URL from the config, nothing else."""

NEXT = """
import sqlalchemy as sa
from alembic import op

revision = "next01"
down_revision = {down!r}


def upgrade():
    op.add_column("Artist", sa.Column("Country", sa.Text))


def downgrade():
    op.drop_column("Artist", "Country")
"""
"""The app's next revision, written by hand after the generated one."""

LAYER = ("hrp_cutover_", "hrp_shadow_")


def _cli(path: Path, url: str, *args: str):
    psycopg2.extensions.set_wait_callback(None)  # the CLI's commands bound their own calls
    return CliRunner().invoke(cli, ["--sqlite", f"sqlite:///{path}", "--postgres", url, *args])


def _file(path: Path, ddl: str) -> Path:
    connection = sqlite3.connect(path)
    connection.executescript(ddl)
    connection.close()
    return path


def _alembic(tmp_path: Path, versions: Path, url: str) -> Config:
    scripts = tmp_path / "alembic"
    scripts.mkdir(exist_ok=True)
    (scripts / "env.py").write_text(ENV)
    (scripts / "script.py.mako").write_text("")
    config = Config()
    config.set_main_option("script_location", str(scripts))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(versions))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _query(url: str, sql: str) -> list[tuple]:
    with psycopg2.connect(libpq(url)) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        rows = cursor.fetchall()
    connection.close()
    return rows


def _app_schema(url: str) -> dict[str, list[tuple]]:
    """The app's tables as PostgreSQL holds them: columns and types, indexes, constraints (the layer's
    tables and Alembic's version table left out)."""
    own = " AND ".join(f"{{0}} NOT LIKE '{prefix}%'" for prefix in LAYER) + " AND {0} <> 'alembic_version'"
    return {
        "columns": _query(url, (
            "SELECT table_name, column_name, ordinal_position, data_type, udt_name, character_maximum_length,"
            " numeric_precision, numeric_scale, is_nullable, column_default, is_identity, identity_generation"
            " FROM information_schema.columns WHERE table_schema = 'public' AND " + own.format("table_name")
            + " ORDER BY table_name, ordinal_position")),
        "indexes": _query(url, (
            "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND "
            + own.format("tablename") + " ORDER BY tablename, indexname")),
        "constraints": _query(url, (
            "SELECT c.conrelid::regclass::text, c.conname, c.contype, pg_get_constraintdef(c.oid)"
            " FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'public'"
            " AND " + own.format("c.conrelid::regclass::text") + " ORDER BY 1, 2")),
    }


def _app_tables(url: str) -> list[str]:
    return [name for (name,) in _query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                                            " ORDER BY tablename")
            if not name.startswith(LAYER) and name != "alembic_version"]


def test_the_revision_gives_what_schema_creates_and_the_app_carries_on_from_it(tmp_path, postgres_url,
                                                                                 postgres_server_url):
    path = _file(tmp_path / "app.db", "".join(shape.ddl for shape in SHAPES))  # mixed case, a cycle, keyless...
    versions = tmp_path / "versions"
    versions.mkdir()

    done = _cli(path, postgres_url, "schema", "--revision-dir", str(versions))
    assert done.exit_code == 0, done.output
    (written,) = versions.iterdir()
    assert f"written: {written}" in done.stdout
    revision = ScriptDirectory.from_config(_alembic(tmp_path, versions, postgres_url)).get_current_head()
    assert written.name.startswith(f"{revision}_") and f"alembic stamp {revision}" in done.stdout
    created = _app_schema(postgres_url)
    assert {row[0] for row in created["columns"]} >= {"Artist", "Album", "node", "team", "player", "log"}
    assert {(table, kind) for table, _, kind, _ in created["constraints"]} >= {("team", "f"), ("player", "f"), ("node", "f")}
    assert ("log", "hrp_cutover_rowid") in {row[:2] for row in created["columns"]}, "a keyless table's key is the app's"
    assert any(name == "IFK_AlbumArtistId" for _, name, _ in created["indexes"])

    with scratch_database(postgres_server_url) as empty:
        config = _alembic(tmp_path, versions, empty)
        command.upgrade(config, "head")
        assert _app_schema(empty) == created
        assert _query(empty, "SELECT version_num FROM alembic_version") == [(revision,)]

        command.downgrade(config, "base")
        assert _app_tables(empty) == []

        command.upgrade(config, "head")
        (versions / "next01_artist_country.py").write_text(NEXT.format(down=revision))
        command.upgrade(config, "head")  # the app's next revision revises the generated one
        assert _query(empty, "SELECT version_num FROM alembic_version") == [("next01",)]
        assert ("Artist", "Country", "text") in _query(
            empty, "SELECT table_name, column_name, data_type FROM information_schema.columns"
                   " WHERE table_name = 'Artist'")


def test_the_app_stamps_the_cutover_database_and_carries_on(tmp_path, postgres_url):
    """On the database the cutover made (hrp-cutover schema), the app stamps the revision and its next
    revision runs there."""
    path = _file(tmp_path / "app.db", SHAPES[SHAPE_IDS.index("mixed_case")].ddl)
    versions = tmp_path / "versions"
    versions.mkdir()
    assert _cli(path, postgres_url, "schema", "--revision-dir", str(versions)).exit_code == 0
    config = _alembic(tmp_path, versions, postgres_url)
    revision = ScriptDirectory.from_config(config).get_current_head()
    command.stamp(config, revision)
    (versions / "next01_artist_country.py").write_text(NEXT.format(down=revision))
    command.upgrade(config, "head")
    assert _query(postgres_url, "SELECT version_num FROM alembic_version") == [("next01",)]
    again = _cli(path, postgres_url, "schema", "--revision-dir", str(versions))
    assert again.exit_code == 2 and "its head is next01" in again.stderr


def test_a_file_with_an_alembic_history_is_refused_and_nothing_is_created(tmp_path, postgres_url):
    path = _file(tmp_path / "app.db", SHAPES[SHAPE_IDS.index("mixed_case")].ddl + (
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY);"
        " INSERT INTO alembic_version VALUES ('a1');"))
    versions = tmp_path / "versions"
    versions.mkdir()
    done = _cli(path, postgres_url, "schema", "--revision-dir", str(versions))
    assert done.exit_code == 2 and done.stderr.count("\n") == 1
    assert "Alembic history of its own" in done.stderr and "migrations carry on" in done.stderr
    assert list(versions.iterdir()) == []
    assert _query(postgres_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


@pytest.mark.parametrize("bad", ["missing", "a_file"])
def test_a_bad_directory_is_refused_before_postgresql_is_touched(tmp_path, postgres_url, bad):
    path = _file(tmp_path / "app.db", SHAPES[SHAPE_IDS.index("mixed_case")].ddl)
    target = tmp_path / bad
    if bad == "a_file":
        target.write_text("not a directory")
    done = _cli(path, postgres_url, "schema", "--revision-dir", str(target))
    assert done.exit_code == 2 and done.stderr.count("\n") == 1 and "nothing written" in done.stderr
    assert _query(postgres_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]
