"""What the cutover moves: the SQLite file's own tables, with the HRP models on top where they apply.

`file_catalog(sqlite)` reads the file's schema (adapters.catalog). Where the
file is the HRP app's (it holds all six HRP tables), the HRP tables are the
models' richer definitions (the optimized types, JSONB, the app's indexes),
and every column the file has beyond a model is merged into a copy of it, so
its values are carried too. Every other table comes from the file as it is.
A file without the HRP tables (or with only some: another app's `users` is
not the HRP app's) is moved by its own schema alone.

The idempotency keys (hrp_cutover_idempotency) are the layer's, not the
file's: they are captured and applied like a table of the catalog
(`captured`), never backfilled or verified as the user's data.

One catalog is read per process (per command, per `Cutover`) and handed to
every part; nothing computes it at import.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlalchemy as sa

from adapters.catalog import Catalog, CatalogError, CatalogTable, ColumnMapping, TwoSided, read_catalog
from adapters.sqlite import decode_text
from adapters.types import kind_of
from hrp_data.cutover import idempotency
from hrp_data.models import TABLES

HRP_TABLES = tuple(table.name for table in TABLES)


def file_catalog(sqlite: sa.Engine | sa.Connection | sqlite3.Connection,
                 column_types: dict[tuple[str, str], str] | None = None) -> Catalog:
    """The catalog of the SQLite file behind `sqlite`, the HRP models merged on top where they apply.
    `column_types`: the operator's choices (Settings.column_types); None: those kept in the file."""
    catalog = read_catalog(sqlite, column_types)
    catalog.hrp = is_hrp_file(catalog)
    if not catalog.hrp:
        return catalog
    return _with_models(catalog, strict=column_types is not None)


def catalog_of_file(path: str | Path, column_types: dict[tuple[str, str], str] | None = None) -> Catalog:
    """file_catalog of the file at `path`, read through a read-only connection of its own."""
    connection = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    connection.text_factory = decode_text
    try:
        return file_catalog(connection, column_types)
    finally:
        connection.close()


def is_hrp_file(catalog: Catalog) -> bool:
    """Whether the file holds every HRP table (then it is the HRP app's file)."""
    present = {entry.name for entry in catalog.tables.values()}
    return all(name in present for name in HRP_TABLES)


MODELLED = frozenset((table.name, column.name) for table in TABLES for column in table.columns)
"""(table, column) of every column the HRP models type: in the HRP file the models decide these, and the
operator's column types and assess's suggestions apply to the file's other columns only."""


def _with_models(catalog: Catalog, *, strict: bool = True) -> Catalog:
    by_file_name = {entry.name: entry for entry in catalog.tables.values()}
    models = {table.name: table for table in TABLES}
    modelled = sorted(f"{table}.{column}" for table, column in catalog.chosen_types if (table, column) in MODELLED)
    if modelled and strict:
        raise CatalogError(f"the column types choose a type for {', '.join(modelled)}, which the HRP models type"
                           " (docs/schema.md); remove those lines")
    extra = {
        name: [c for c in by_file_name[name].postgres.columns if c.key not in models[name].c]
        for name in HRP_TABLES
    }
    if any(extra.values()):
        metadata = sa.MetaData()
        for table in TABLES:
            copy = table.to_metadata(metadata)
            for column in extra[table.name]:
                copy.append_column(column._copy())
        models = {name: metadata.tables[name] for name in HRP_TABLES}
    tables: dict[str, CatalogTable] = {}
    for name in HRP_TABLES:
        entry = by_file_name[name]
        model = models[name]
        mapping = [_model_mapping(row, model) for row in entry.mapping]
        tables[name] = CatalogTable(name=name, postgres=model, sqlite=model, mapping=mapping,
                                    autoincrement=entry.autoincrement)
    for key, entry in catalog.tables.items():
        if entry.name not in models:
            tables[key] = entry
    merged = Catalog(tables, catalog.not_carried, catalog.metadata, chosen_types={  # the models type their own
        key: kind for key, kind in catalog.chosen_types.items() if key not in MODELLED},
        decided_types={key: kind for key, kind in catalog.decided_types.items() if key not in MODELLED})
    merged.hrp = True
    return merged


def _model_mapping(row: ColumnMapping, model: sa.Table) -> ColumnMapping:
    """The mapping row of an HRP column says what the model makes of it."""
    column = model.c.get(row.postgres_name)
    if column is None or column.key not in {c.key for c in TABLES[HRP_TABLES.index(model.name)].columns}:
        return row
    postgres_type = column.type.compile(dialect=sa.dialects.postgresql.dialect())
    return ColumnMapping(row.table, row.column, row.postgres_name, row.declared, row.values,
                         kind_of(column), postgres_type.lower(), "the HRP model's type")


def captured(catalog: Catalog) -> TwoSided:
    """What the capture triggers record and the applier carries: the catalog, then the idempotency keys
    (TwoSided: `.sqlite` names them as the file does)."""
    return catalog.postgres_tables() | {idempotency.keys.name: idempotency.keys}
