"""The legacy file held against the HRP contract (../shared/legacy_schema.sql) before anything reads it.

A file is usable when it is a SQLite database holding every HRP table with
every contract column. What lies beyond the contract is named, never skipped
in silence: a column an HRP table has beyond the contract would not reach
PostgreSQL (the backfill copies contract columns only, so it refuses unless
told to leave such columns behind), and a table beyond the contract is not
the app's and is not copied. The cutover's own tables (hrp_cutover_*) and
SQLite's (sqlite_*) are neither.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import urllib.parse
from pathlib import Path

from hrp_data.models import TABLES

OWN_PREFIXES = ("sqlite_", "hrp_cutover_")


class LegacyFileError(ValueError):
    """The file is not a legacy HRP database this tool can read; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Shape:
    """How the file's tables and columns compare with the contract ('table.column' names)."""

    missing_tables: list[str]
    missing_columns: list[str]
    extra_columns: list[str]
    extra_tables: list[str]

    def as_json(self) -> dict:
        return dataclasses.asdict(self)


def shape(path: str | Path, shown: str | None = None) -> Shape:
    """Compare the file's tables and columns with the contract (the file is only read).

    `shown` is how messages name the file (default: its path)."""
    shown = shown or str(path)
    try:
        connection = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise LegacyFileError(f"{shown} cannot be opened: {error}") from None
    try:
        present = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        columns = {name: [row[0] for row in connection.execute("SELECT name FROM pragma_table_info(?)", (name,))]
                   for name in present}
    except sqlite3.DatabaseError as error:
        raise LegacyFileError(f"{shown} is not a readable SQLite database ({error})") from None
    finally:
        connection.close()
    contract = {table.name: [c.name for c in table.columns] for table in TABLES}
    return Shape(
        missing_tables=[name for name in contract if name not in columns],
        missing_columns=[f"{name}.{c}" for name, wanted in contract.items() if name in columns
                         for c in wanted if c not in columns[name]],
        extra_columns=[f"{name}.{c}" for name, wanted in contract.items() if name in columns
                       for c in columns[name] if c not in wanted],
        extra_tables=sorted(name for name in columns if name not in contract and not name.startswith(OWN_PREFIXES)),
    )


def require_contract(path: str | Path, shown: str | None = None) -> Shape:
    """The file's shape, or LegacyFileError when an HRP table or column is missing."""
    shown = shown or str(path)
    found = shape(path, shown)
    if found.missing_tables:
        raise LegacyFileError(
            f"{shown} lacks the HRP tables {', '.join(found.missing_tables)}; is it the app's database?"
        )
    if found.missing_columns:
        raise LegacyFileError(
            f"{shown} lacks the HRP columns {', '.join(found.missing_columns)} (an older schema?);"
            " bring the file to the HRP legacy schema (hrp_data/schema/legacy_schema.sql) first"
        )
    return found


def refuse_extra_columns(found: Shape) -> None:
    """LegacyFileError naming the columns beyond the contract, whose values the backfill would not copy."""
    if found.extra_columns:
        raise LegacyFileError(
            f"the legacy file has columns beyond the HRP schema: {', '.join(found.extra_columns)};"
            " the backfill copies contract columns only, so their values would not reach PostgreSQL:"
            " save and drop them in SQLite, or pass --leave-extra-columns to copy the rest without them"
        )
