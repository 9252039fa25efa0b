"""States that take seconds to build (a seeded file carried to PostgreSQL, a backfill, a verify),
built once per test process and cloned for each test that starts from them: the file through
SQLite's backup API, the database with CREATE DATABASE ... TEMPLATE. Each test gets a copy of
its own, as fresh as a build of its own, in a fraction of the time."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from pathlib import Path
from typing import Callable, Iterator

import psycopg2
from sqlalchemy.engine import make_url


class Clones:
    """Templates of one server: key -> (template file, template database)."""

    def __init__(self, server_url: str, directory: Path):
        self.server_url = server_url
        self.directory = directory
        self.templates: dict[str, tuple[Path, str]] = {}

    def _admin(self):
        connection = psycopg2.connect(make_url(self.server_url).set(drivername="postgresql")
                                      .render_as_string(hide_password=False))
        connection.autocommit = True
        return connection

    def _url(self, database: str) -> str:
        return make_url(self.server_url).set(drivername="postgresql+psycopg2", database=database) \
            .render_as_string(hide_password=False)

    def _create(self, name: str, template: str | None = None) -> None:
        admin = self._admin()
        try:
            with admin.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        finally:
            admin.close()

    def _drop(self, name: str) -> None:
        admin = self._admin()
        try:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            admin.close()

    def template(self, key: str, build: Callable[[Path, str], None]) -> tuple[Path, str]:
        """The template of `key`, built by `build(file, postgres_url)` on first use; `build`
        must close every connection it opened (a template database takes none while cloned)."""
        if key not in self.templates:
            database = f"hrp_template_{key}_{uuid.uuid4().hex[:8]}"
            path = self.directory / f"{key}.db"
            self._create(database)
            try:
                build(path, self._url(database))
            except BaseException:
                self._drop(database)
                raise
            self.templates[key] = (path, database)
        return self.templates[key]

    @contextlib.contextmanager
    def clone(self, key: str, build: Callable[[Path, str], None], directory: Path,
              name: str = "hrp.db") -> Iterator[tuple[Path, str]]:
        """(a copy of the template's file in `directory`, the URL of a copy of its database);
        the database is dropped afterwards."""
        source, template = self.template(key, build)
        path = directory / name
        with contextlib.closing(sqlite3.connect(source)) as original, \
                contextlib.closing(sqlite3.connect(path)) as copy:
            original.backup(copy)
        database = f"hrp_clone_{uuid.uuid4().hex[:12]}"
        self._create(database, template)
        try:
            yield path, self._url(database)
        finally:
            self._drop(database)

    def close(self) -> None:
        for _path, database in self.templates.values():
            self._drop(database)
        self.templates.clear()
