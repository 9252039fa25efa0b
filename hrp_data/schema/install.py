"""The PostgreSQL schema service: Alembic upgrade to head, and drift against the models.

The optimized PostgreSQL schema lives as Alembic migrations shipped inside the
package (hrp_data/schema/migrations), so it keeps evolving after the cutover.
`upgrade(url)` brings a database to head, idempotently and under an advisory
lock; `drift(url)` lists, in plain words, every difference Alembic's
autogenerate finds between `hrp_data.models` and that database. Both are
called by `hrp-cutover schema` and by the tests; passwords in URLs never reach
a message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.util import CommandError
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.schema import AddConstraint, CreateColumn, CreateIndex, CreateTable

from adapters.catalog import Catalog, enforced_spelling, quote, store_column_types, store_decided_types
from adapters.postgres import create_postgres_engine, create_tables
from adapters.urls import redact_url
from hrp_data.models import Base

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
"""The Alembic script directory, shipped as package data next to this module."""

VERSION_TABLE = "hrp_cutover_alembic_version"

LOCK_KEY = 0x4852505F534348  # "HRP_SCH": an advisory lock serializing upgrades across processes

_ALEMBIC = threading.Lock()  # alembic.context and alembic.op are process-global proxies


class SchemaError(RuntimeError):
    """The schema could not be read or upgraded; the message is one line, password-free."""


@dataclasses.dataclass(frozen=True)
class SchemaResult:
    changed: bool
    message: str
    revision: str | None


def upgrade(url: str) -> SchemaResult:
    """Upgrade the database at `url` to the head revision; a second run changes nothing."""
    applied: list[MigrationInfo] = []

    def record(*, step: MigrationInfo, **_: Any) -> None:
        applied.append(step)

    engine = engine_for(url)
    try:
        with _ALEMBIC, engine.begin() as connection:
            config = alembic_config(connection=connection)
            config.attributes["on_version_apply"] = record
            command.upgrade(config, "head")
            revision = _current_revision(connection)
            tables = len(set(sa.inspect(connection).get_table_names()) & set(Base.metadata.tables))
    except (sa.exc.SQLAlchemyError, CommandError) as error:
        raise SchemaError(_one_line(f"cannot upgrade the schema at {url}", error)) from None
    finally:
        engine.dispose()

    if not applied:
        return SchemaResult(False, f"schema already at head {revision}: nothing to do", revision)
    before = ", ".join(applied[0].source_revision_ids) or "<none>"
    return SchemaResult(
        True, f"schema upgraded from {before} to {revision} ({tables} tables)", revision
    )


def drift(url: str, catalog: Catalog | None = None) -> list[str]:
    """Differences between what PostgreSQL should hold and what it holds, one sentence each.

    Without a catalog, or for the HRP file: what Alembic's autogenerate finds
    between the models and the database (tables the models do not define,
    the version table and the hrp_cutover_* tables, are ignored, and so are
    indexes needing an extension this database lacks). With a catalog, also
    every table and column of the file beyond the models (catalog_drift); a
    file without the HRP tables is compared with its catalog only.
    """
    engine = engine_for(url)
    try:
        with engine.connect() as connection:
            found: list[str] = []
            if catalog is None or catalog.hrp:
                options = comparison_options(connection, skip_columns=_extra_columns(catalog),
                                             model_indexes_only=catalog is not None)
                context = MigrationContext.configure(connection, opts={"target_metadata": Base.metadata, **options})
                found += [describe(diff) for diff in _flatten(compare_metadata(context, Base.metadata))]
            if catalog is not None:
                found += catalog_drift(connection, catalog)
    except sa.exc.SQLAlchemyError as error:
        raise SchemaError(_one_line(f"cannot read the schema at {url}", error)) from None
    finally:
        engine.dispose()
    return found


def _extra_columns(catalog: Catalog | None) -> set[tuple[str, str]]:
    """(table, column) of the file's columns beyond the HRP models (compared by catalog_drift)."""
    if catalog is None or not catalog.hrp:
        return set()
    return {
        (name, column.name)
        for name, model in Base.metadata.tables.items()
        if name in catalog.tables
        for column in catalog.tables[name].postgres.columns
        if column.key not in model.c
    }


def _beyond_models(catalog: Catalog) -> list[sa.Table]:
    """The catalog's tables PostgreSQL gets from the catalog (not from the HRP migrations)."""
    if not catalog.hrp:
        return [entry.postgres for entry in catalog.tables.values()]
    return [entry.postgres for name, entry in catalog.tables.items() if name not in Base.metadata.tables]


def _type_spelling(type_: Any, dialect: Any) -> str:
    text = type_.compile(dialect=dialect).lower()
    return {"float": "double precision", "float(53)": "double precision"}.get(text, text)


def _type_text(type_: Any, dialect: Any) -> str:
    return _type_spelling(type_, dialect).replace(" ", "")


@dataclasses.dataclass(frozen=True)
class TypeDrift:
    """A column PostgreSQL holds with another type than the file's declaration maps to (a migration
    changed the declaration, e.g. an Alembic batch-mode rebuild, and PostgreSQL did not follow)."""

    table: str
    column: str
    in_postgres: str
    in_file: str

    def __str__(self) -> str:
        return (f"column {self.table}.{self.column}: type is {self.in_postgres} on postgres,"
                f" {self.in_file} as the file declares it")

    def as_dict(self) -> dict:
        return {"table": self.table, "column": self.column, "kind": "column_type_differs",
                "postgres": self.in_postgres, "file": self.in_file}


def catalog_drift(connection: sa.Connection, catalog: Catalog) -> list[str]:
    """Every table, column, column type and NOT NULL of the catalog (beyond the HRP models) that
    PostgreSQL does not hold as the catalog says."""
    return [str(found) if isinstance(found, TypeDrift) else found for found in _catalog_differences(connection, catalog)]


def type_drift(connection: sa.Connection, catalog: Catalog, tables: Collection[str] | None = None) -> list[TypeDrift]:
    """The columns of `tables` (default: all) whose type on PostgreSQL is not the one the catalog maps
    the file's declaration to (the columns beyond the HRP models: the models fix the others)."""
    return [found for found in _catalog_differences(connection, catalog, tables) if isinstance(found, TypeDrift)]


def _catalog_differences(connection: sa.Connection, catalog: Catalog,
                         tables: Collection[str] | None = None) -> list[str | TypeDrift]:
    inspector = sa.inspect(connection)
    present = set(inspector.get_table_names())
    found: list[str | TypeDrift] = []
    wanted = [(table, list(table.columns)) for table in _beyond_models(catalog)]
    for name, column_name in sorted(_extra_columns(catalog)):
        wanted.append((catalog.tables[name].postgres, [catalog.tables[name].postgres.c[column_name]]))
    declared_as = {(entry.key, m.postgres_name): enforced_spelling(m.declared)
                   for entry in catalog.tables.values() for m in entry.mapping}
    for table, columns in wanted:
        if tables is not None and table.name not in tables:
            continue
        if table.name not in present:
            found.append(f"table {table.name}: in the SQLite file, missing from the database")
            continue
        held = {c["name"]: c for c in inspector.get_columns(table.name)}
        for column in columns:
            there = held.get(column.name)
            if there is None:
                found.append(f"column {table.name}.{column.name}: in the SQLite file, missing from the database")
                continue
            want, have = _type_text(column.type, connection.dialect), _type_text(there["type"], connection.dialect)
            if want != have and have != declared_as.get((table.name, column.name)):
                found.append(TypeDrift(table.name, column.name, _type_spelling(there["type"], connection.dialect),
                                       _type_spelling(column.type, connection.dialect)))
            if bool(there["nullable"]) != bool(column.nullable):
                found.append(f"column {table.name}.{column.name}: nullable is {there['nullable']} in the database,"
                             f" {column.nullable} in the catalog")
    return found


def keep_chosen_types(url: str, catalog: Catalog, sqlite_file: str | Path) -> list[str]:
    """After `install`: keep the column types the operator chose (catalog.chosen_types) in the SQLite
    file, once PostgreSQL holds each of them (adapters.catalog.store_column_types). A chosen column
    whose table PostgreSQL created earlier with another type is a SchemaError, and nothing is kept:
    every process goes on reading the file with the types its tables have. The lines to print."""
    chosen = {(entry.key, m.postgres_name): f"{m.table}.{m.column} {m.postgres_type}"
              for entry in catalog.tables.values() for m in entry.mapping
              if (m.table, m.column) in catalog.chosen_types}
    engine = engine_for(url)
    try:
        with engine.connect() as connection:
            held = [d for d in type_drift(connection, catalog, {table for table, _ in chosen})
                    if (d.table, d.column) in chosen]
    except sa.exc.SQLAlchemyError as error:
        raise SchemaError(_one_line(f"cannot read the schema at {url}", error)) from None
    finally:
        engine.dispose()
    if held:
        first = held[0]
        raise SchemaError(
            f"the column types choose {first.in_file} for {first.table}.{first.column}, but PostgreSQL created it as"
            f" {first.in_postgres} before ({len(held)} such column(s)); before the backfill drop that table in"
            " PostgreSQL and run schema again, or remove the choice"
        )
    with contextlib.closing(sqlite3.connect(Path(sqlite_file), isolation_level=None)) as connection:
        connection.execute("BEGIN IMMEDIATE")
        store_column_types(connection, catalog.chosen_types)
        connection.execute("COMMIT")
    return [f"column type kept in the SQLite file: {line}" for line in sorted(chosen.values())]


def keep_decided_types(catalog: Catalog, sqlite_file: str | Path) -> None:
    """After `install`: keep in the SQLite file the types decided from the values of the columns no
    declaration types (catalog.decided_types), as PostgreSQL now holds them: a later process reads
    such a column as this type, not as the values that came since would decide (an empty column
    decided text, then given integers, would be read as bigint and written to PostgreSQL's text)."""
    if not catalog.decided_types:
        return
    with contextlib.closing(sqlite3.connect(Path(sqlite_file), isolation_level=None)) as connection:
        connection.execute("BEGIN IMMEDIATE")
        store_decided_types(connection, catalog.decided_types)
        connection.execute("COMMIT")


def catalog_ddl(catalog: Catalog) -> list[str]:
    """The DDL `install` runs for the catalog (the HRP tables come from the migrations: named, not spelled)."""
    dialect = postgresql.dialect()
    statements = []
    if catalog.hrp:
        statements.append("-- the HRP tables: the Alembic migrations in hrp_data/migrations, to head")
        for name, column_name in sorted(_extra_columns(catalog)):
            column = catalog.tables[name].postgres.c[column_name]
            statements.append(f"ALTER TABLE {quote(name)} ADD COLUMN {CreateColumn(column).compile(dialect=dialect)}")
    tables = _beyond_models(catalog)
    for table in tables:
        statements.append(str(CreateTable(table).compile(dialect=dialect)).strip())
    for table in tables:
        for index in sorted(table.indexes, key=lambda i: i.name or ""):
            statements.append(str(CreateIndex(index).compile(dialect=dialect)).strip())
    for table in tables:
        for constraint in sorted(table.foreign_key_constraints, key=lambda c: c.name or ""):
            statements.append(str(AddConstraint(constraint).compile(dialect=dialect)).strip())
    return statements


def install(url: str, catalog: Catalog) -> SchemaResult:
    """Create in PostgreSQL what the catalog holds (idempotent): for the HRP file the Alembic
    migrations to head, then the columns and tables beyond the models; for another file its
    tables, indexes and foreign keys (the foreign keys after every table, so cycles are fine)."""
    result = upgrade(url) if catalog.hrp else None
    engine = engine_for(url)
    created: list[str] = []
    try:
        with engine.begin() as connection:
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(LOCK_KEY)))
            inspector = sa.inspect(connection)
            present = set(inspector.get_table_names())
            for name, column_name in sorted(_extra_columns(catalog)):
                if column_name in {c["name"] for c in inspector.get_columns(name)}:
                    continue
                column = catalog.tables[name].postgres.c[column_name]
                connection.exec_driver_sql(
                    f"ALTER TABLE {quote(name)} ADD COLUMN {CreateColumn(column).compile(dialect=connection.dialect)}"
                )
                created.append(f"{name}.{column_name}")
            missing = [t for t in _beyond_models(catalog) if t.name not in present]
            create_tables(connection, missing)
            created += [table.name for table in missing]
    except sa.exc.SQLAlchemyError as error:
        raise SchemaError(_one_line(f"cannot create the schema at {url}", error)) from None
    finally:
        engine.dispose()
    parts = [result.message] if result is not None else []
    if created:
        parts.append(f"created from the SQLite file: {', '.join(created)}")
    elif result is None:
        parts.append("every table of the SQLite file exists already: nothing to do")
    changed = bool(created) or bool(result is not None and result.changed)
    return SchemaResult(changed, "; ".join(parts), result.revision if result is not None else None)


def alembic_config(url: str | None = None, *, connection: sa.Connection | None = None) -> Config:
    """A programmatic Alembic config (no alembic.ini) on the packaged script directory.

    Give `connection` to run commands inside the caller's transaction, or `url`
    for commands that connect on their own (e.g. `alembic.command.check`,
    `alembic.command.revision(..., autogenerate=True)`).
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def comparison_options(connection: sa.Connection, skip_columns: set[tuple[str, str]] = frozenset(),
                       model_indexes_only: bool = False) -> dict[str, Any]:
    """Options for the migration context: version table and what autogenerate compares."""
    installed = set(connection.execute(sa.text("SELECT extname FROM pg_extension")).scalars())
    return {
        "version_table": VERSION_TABLE,
        "compare_type": True,
        "compare_server_default": True,
        "include_object": include_object_for(installed, skip_columns, model_indexes_only),
    }


def include_object_for(
    installed_extensions: Iterable[str], skip_columns: set[tuple[str, str]] = frozenset(),
    model_indexes_only: bool = False,
) -> Callable[..., bool]:
    """An autogenerate `include_object` hook for a database with these extensions.

    It skips tables the models do not define, model indexes whose
    info["requires_extension"] is not installed, the file's columns beyond
    the models (`skip_columns`, compared by catalog_drift) and, with
    `model_indexes_only`, the database's indexes the models do not name (an
    index the app's migration made during a cutover: the two live sides are
    compared by hrp_data.cutover.indexes); everything else is compared.
    """
    installed = frozenset(installed_extensions)
    model_tables = frozenset(Base.metadata.tables)
    model_indexes = frozenset((table.name, index.name) for table in Base.metadata.tables.values()
                              for index in table.indexes)

    def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if type_ == "table":
            return name in model_tables
        if type_ == "column" and reflected and (obj.table.name, name) in skip_columns:
            return False
        if type_ == "index" and not reflected:
            needed = obj.info.get("requires_extension")
            return needed is None or needed in installed
        if type_ == "index" and model_indexes_only:
            return (obj.table.name, name) in model_indexes
        return True

    return include_object


def describe(diff: tuple) -> str:
    """One autogenerate diff tuple as a sentence."""
    kind = diff[0]
    if kind in ("add_table", "remove_table"):
        return f"table {diff[1].name}: {_where(kind)}"
    if kind in ("add_column", "remove_column"):
        _, _, table, column = diff
        return f"column {table}.{column.name} ({column.type}): {_where(kind)}"
    if kind in ("add_index", "remove_index"):
        index = diff[1]
        columns = ", ".join(
            expr.name if isinstance(expr, sa.Column) else str(expr) for expr in index.expressions
        )
        return f"index {index.name} on {index.table.name} ({columns}): {_where(kind)}"
    if kind in ("add_constraint", "remove_constraint", "add_fk", "remove_fk"):
        constraint = diff[1]
        label = "foreign key" if kind.endswith("_fk") else "constraint"
        return f"{label} {constraint.name} on {constraint.table.name}: {_where(kind)}"
    if kind.startswith("modify_"):
        _, _, table, column, _, database_value, model_value = diff
        what = kind.removeprefix("modify_").replace("_", " ")
        return (
            f"column {table}.{column}: {what} is {_show(database_value)} in the database,"
            f" {_show(model_value)} in the models"
        )
    return f"{kind}: {diff[1:]!r}"


def _where(kind: str) -> str:
    if kind.startswith("add"):
        return "in the models, missing from the database"
    return "in the database, not in the models"


def _show(value: Any) -> str:
    if isinstance(value, sa.schema.DefaultClause):
        value = value.arg
    if isinstance(value, sa.sql.ClauseElement):
        return str(value)
    return repr(value) if value is None or isinstance(value, str) else str(value)


def _flatten(diffs: list) -> list[tuple]:
    flat: list[tuple] = []
    for diff in diffs:
        flat.extend(diff if isinstance(diff, list) else [diff])
    return flat


def _current_revision(connection: sa.Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def engine_for(url: str) -> sa.Engine:
    """An engine on psycopg2 (the installed driver) whatever driver the URL names by default."""
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() != "postgresql":
            raise ValueError("not a PostgreSQL URL")
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg2")
        return create_postgres_engine(parsed.render_as_string(hide_password=False))
    except (sa.exc.ArgumentError, ValueError, ImportError) as error:
        raise SchemaError(_one_line(f"bad PostgreSQL URL {url}", error)) from None


def _one_line(context: str, error: BaseException) -> str:
    detail = getattr(error, "orig", None) or error
    lines = [line.strip() for line in str(detail).splitlines() if line.strip()]
    first = lines[0] if lines else type(detail).__name__
    return redact_url(f"{context}: {first}")
