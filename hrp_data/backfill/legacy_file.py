"""The legacy file held against the HRP contract (../shared/legacy_schema.sql) before anything reads it.

A file is usable when it is a readable SQLite database. The cutover moves the
file's own schema (hrp_data.catalog), whatever it holds: a file holding every
HRP table is the HRP app's, and must then hold every contract column (an
older HRP schema is refused: bring it to the contract first). A file without
the HRP tables, or with only some (another app's `users` is not the HRP
app's), is moved by its own catalog. Columns and tables beyond the contract
are named (`Shape`) and carried. The cutover's own tables (hrp_cutover_*) and
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
    """The file's shape, or LegacyFileError when the file holds the HRP tables but lacks an HRP column."""
    shown = shown or str(path)
    found = shape(path, shown)
    if found.missing_tables:
        return found  # not the HRP app's file: moved by its own catalog
    if found.missing_columns:
        raise LegacyFileError(
            f"{shown} lacks the HRP columns {', '.join(found.missing_columns)} (an older schema?);"
            " bring the file to the HRP legacy schema (hrp_data/schema/legacy_schema.sql) first"
        )
    return found
