"""The models created on SQLite are the legacy schema, compared by reflection."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from hrp_data.models import Base, TABLES


def describe(path: Path) -> dict:
    """Everything reflection tells about the six tables: columns, keys, uniques, foreign keys."""
    engine = sa.create_engine(f"sqlite:///{path}")
    inspector = sa.inspect(engine)
    described = {}
    for table in sorted(inspector.get_table_names()):
        if table.startswith("sqlite_"):
            continue
        pk = inspector.get_pk_constraint(table)["constrained_columns"]
        described[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"] or c["name"] in pk, _default(c["default"]))
                for c in inspector.get_columns(table)
            ],
            "primary_key": pk,
            "unique": sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)),
            "foreign_keys": _foreign_keys(engine, table),
            "indexes": sorted((i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(table)),
            "autoincrement": _autoincrement(engine, table),
        }
    engine.dispose()
    return described


def _default(value):
    return None if value is None else str(value).strip("'\"")


def _foreign_keys(engine, table: str) -> list:
    """(column, referred table, referred column, on delete, on update) from PRAGMA foreign_key_list."""
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(f'PRAGMA foreign_key_list("{table}")').mappings().all()
    return sorted((r["from"], r["table"], r["to"], r["on_delete"], r["on_update"]) for r in rows)


def _autoincrement(engine, table: str) -> bool:
    with engine.connect() as connection:
        sql = connection.execute(
            sa.text("SELECT sql FROM sqlite_master WHERE name = :t"), {"t": table}
        ).scalar_one()
    return "AUTOINCREMENT" in sql.upper()


def test_create_all_on_sqlite_gives_the_legacy_schema(tmp_path, legacy_file):
    modelled = tmp_path / "modelled.db"
    engine = sa.create_engine(f"sqlite:///{modelled}")
    Base.metadata.create_all(engine)
    engine.dispose()
    legacy = describe(legacy_file)
    assert set(legacy) == {t.name for t in TABLES}
    assert describe(modelled) == legacy
