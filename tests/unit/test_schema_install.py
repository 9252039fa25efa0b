"""hrp_data.schema.install without a database: which objects the drift check compares, a URL refused
before connecting, and the migrations shipped as package data."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from hrp_data.models import TRIGRAM_INDEX, Base
from hrp_data.schema import install as schema
from tools.cli import cli

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def horses_index(name: str) -> sa.Index:
    return next(index for index in Base.metadata.tables["horses"].indexes if index.name == name)


class TestIncludeObject:
    trigram = horses_index(TRIGRAM_INDEX)
    jockey = horses_index("ix_horses_jockey")

    def test_skips_an_index_whose_extension_is_not_installed(self):
        """Only the model indexes that need a missing extension are skipped."""
        without = schema.include_object_for({"plpgsql"})
        with_trgm = schema.include_object_for({"plpgsql", "pg_trgm"})

        assert without(self.trigram, TRIGRAM_INDEX, "index", False, None) is False
        assert with_trgm(self.trigram, TRIGRAM_INDEX, "index", False, None) is True
        assert without(self.jockey, "ix_horses_jockey", "index", False, None) is True

    def test_reflected_objects_and_model_tables_are_compared(self):
        """Indexes found in the database are always compared; unknown tables never are."""
        include = schema.include_object_for(set())
        reflected = sa.Index("ix_horses_something", sa.Column("x"))

        assert include(reflected, "ix_horses_something", "index", True, None) is True
        assert include(None, "horses", "table", False, None) is True
        assert include(None, "hrp_cutover_outbox", "table", True, None) is False
        assert include(None, "hrp_cutover_alembic_version", "table", True, None) is False


def _run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize("url", ["mysql://hrp:s3cret-pw@db/hrp", "not a url"])
def test_bad_url_is_exit_code_2_and_one_line(url):
    """A URL that is not PostgreSQL is refused before connecting: exit 2, one line."""
    result = _run("schema", "--postgres", url)

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("Error: HRP_POSTGRES_URL=")
    assert result.stderr.count("\n") == 1
    assert "s3cret-pw" not in result.stderr


def test_migrations_ship_as_package_data():
    """Every file of the script directory matches the package-data globs, so a wheel carries it."""
    globs = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]["hrp_data.schema"]
    files = [
        path.relative_to(schema.MIGRATIONS.parent).as_posix()
        for path in schema.MIGRATIONS.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]

    assert "migrations/versions/0001_hrp_tables.py" in files
    assert [f for f in files if not any(fnmatch(f, g) and f.count("/") == g.count("/") for g in globs)] == []
