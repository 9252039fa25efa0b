"""An app that migrates with Alembic keeps its history through the cutover: its `alembic_version`
is a table of the file like any other, so after the flip its next migration runs on PostgreSQL
from the app's head, and the layer carries both the change and the new head back to the file."""

from __future__ import annotations

import sqlite3

import psycopg2
import psycopg2.extensions
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from click.testing import CliRunner

from adapters.postgres import create_postgres_engine
from hrp_data.cutover.assemble import open_cutover
from tests.conftest import libpq
from tests.integration.cutover_helpers import settings_for
from tools.cli import cli

ENV = """
from alembic import context

context.configure(connection=context.config.attributes["connection"], target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
"""
FIRST = """
import sqlalchemy as sa
from alembic import op

revision, down_revision = "a1", None


def upgrade():
    op.create_table("notes", sa.Column("id", sa.Integer, primary_key=True), sa.Column("body", sa.Text))
"""
SECOND = """
import sqlalchemy as sa
from alembic import op

revision, down_revision = "b2", "a1"


def upgrade():
    op.add_column("notes", sa.Column("tag", sa.Text))
"""


@pytest.fixture
def migrations(tmp_path):
    scripts = tmp_path / "migrations"
    (scripts / "versions").mkdir(parents=True)
    (scripts / "env.py").write_text(ENV)
    (scripts / "script.py.mako").write_text("")
    (scripts / "versions" / "a1_notes.py").write_text(FIRST)
    return scripts


def _upgrade(scripts, engine: sa.Engine, to: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(scripts))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, to)


def _cli(path, url: str, *args: str) -> str:
    psycopg2.extensions.set_wait_callback(None)  # the CLI's commands bound their own calls
    done = CliRunner().invoke(cli, ["--sqlite", f"sqlite:///{path}", "--postgres", url, *args])
    assert done.exit_code == 0, f"{' '.join(args)}: {done.output}"
    return done.output


def test_the_apps_next_migration_runs_on_postgresql_from_its_head(tmp_path, postgres_url, migrations):
    path = tmp_path / "app.db"
    legacy = sa.create_engine(f"sqlite:///{path}")
    _upgrade(migrations, legacy, "a1")
    with legacy.begin() as connection:
        connection.exec_driver_sql("INSERT INTO notes (body) VALUES ('one'), ('two')")
    legacy.dispose()
    for step in (["schema"], ["phase", "set", "dual_write"], ["backup"], ["backfill"], ["phase", "set", "shadow"],
                 ["verify"], ["flip"]):
        _cli(path, postgres_url, *step)

    (migrations / "versions" / "b2_tag.py").write_text(SECOND)  # the app ships a migration after the flip
    app = create_postgres_engine(postgres_url)
    _upgrade(migrations, app, "head")  # Alembic finds "a1" on PostgreSQL and runs b2 only
    with app.begin() as connection:
        connection.exec_driver_sql("INSERT INTO notes (body, tag) VALUES ('three', 'new')")
    app.dispose()
    with psycopg2.connect(libpq(postgres_url)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT version_num FROM alembic_version")
        assert cursor.fetchall() == [("b2",)]

    with open_cutover(settings_for(path, postgres_url)) as cutover:
        cutover.schema_watch.check()  # what every app process's applier (or `hrp-cutover apply`) does each second
    _cli(path, postgres_url, "replay")
    assert "EQUAL" in _cli(path, postgres_url, "verify")
    with sqlite3.connect(path) as raw:  # the file follows: the column, the row and the head
        assert raw.execute("SELECT version_num FROM alembic_version").fetchall() == [("b2",)]
        assert raw.execute("SELECT body, tag FROM notes ORDER BY id").fetchall() == [
            ("one", None), ("two", None), ("three", "new")]

    _cli(path, postgres_url, "rollback")  # back on the file: the app's schema and head are the ones it last shipped
    legacy = sa.create_engine(f"sqlite:///{path}")
    _upgrade(migrations, legacy, "head")  # nothing to run: the file is at b2
    with legacy.connect() as connection:
        assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").all() == [("b2",)]
    legacy.dispose()
