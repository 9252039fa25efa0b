"""The file's schema as an Alembic revision of the app's own (`hrp-cutover schema --revision-dir DIR`).

For a file beyond the HRP schema, the app that had no migration history gets one: a single
revision whose `upgrade()` runs, statement for statement, the DDL `hrp-cutover schema` runs for
the file's tables (`catalog_ddl`, through `op.execute`, so nothing is re-interpreted), and whose
`downgrade()` drops those tables. The layer's own tables (hrp_cutover_*) are not in it. After the
cutover the app stamps PostgreSQL with it and its next revision revises it (docs/schema.md).

`prepare_revision` checks everything and builds the text without writing; `PreparedRevision.write`
writes it into the directory through a temporary file renamed into place, so a failure leaves
nothing half-written. The revision directory is read statically (`ast`), never imported: an app's
migrations import the app.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import datetime as dt
import hashlib
import os
import re
import tempfile
from pathlib import Path

from adapters.catalog import Catalog, quote
from hrp_data.schema.install import SchemaError, catalog_ddl

APP_VERSION_TABLE = "alembic_version"
"""The table where Alembic (and Flask-Migrate) keep an app's head."""

DIGEST_LINE = re.compile(r"^# hrp-cutover schema digest: (sha256:[0-9a-f]{64})$", re.M)


class RevisionRefused(SchemaError):
    """No revision is written: the file, or the directory, is not one to write it for (one line)."""


@dataclasses.dataclass(frozen=True)
class Found:
    """A revision already in the directory, read from its source."""

    path: Path
    revision: str
    down_revisions: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class PreparedRevision:
    """A revision ready to write (`existing` set: the directory holds this very schema already)."""

    directory: Path
    revision: str
    path: Path
    text: str
    existing: Path | None = None

    def write(self) -> Path:
        """Write the revision (a temporary file in the directory, renamed into place); its path."""
        if self.existing is not None:
            return self.existing
        handle, temporary = None, None
        try:
            handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".hrp-cutover-", suffix=".tmp")
            with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as out:
                handle = None
                out.write(self.text)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, 0o644)
            if self.path.exists():
                raise FileExistsError(f"{self.path} exists")
            os.replace(temporary, self.path)
            temporary = None
        except OSError as error:
            raise RevisionRefused(f"cannot write the revision into {self.directory}: {_reason(error)};"
                                  " nothing written") from None
        finally:
            if handle is not None:
                os.close(handle)
            if temporary is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
        return self.path


def _reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__


# -- what the revision holds ------------------------------------------------------


def upgrade_statements(catalog: Catalog) -> list[str]:
    """The DDL `hrp-cutover schema` runs for the file's tables, in its order (tables, indexes, foreign keys)."""
    return [statement for statement in catalog_ddl(catalog) if not statement.startswith("--")]


def drop_order(catalog: Catalog) -> list[tuple[str, bool]]:
    """(PostgreSQL table name, cascade) for every table of the revision, a table before the ones it
    references; `cascade` only for the one table of each foreign-key cycle whose drop has to take the
    other tables' foreign keys onto it along (a self-reference needs none)."""
    tables = [entry.postgres for entry in catalog.tables.values()]
    names = [table.name for table in tables]
    parents = {table.name: {fk.referred_table.name for fk in table.foreign_key_constraints} & set(names) - {table.name}
               for table in tables}
    reach = {name: _reachable(name, parents) for name in names}
    cycle = {name: {other for other in reach[name] if name in reach[other]} | {name} for name in names}
    remaining, order = list(names), []
    while remaining:
        referenced = {name: {other for other in remaining if other != name and name in parents[other]}
                      for name in remaining}
        leaves = [name for name in remaining if not referenced[name]]
        if leaves:
            pick, cascade = leaves[-1], False
        else:  # every table left is referenced: drop one of a cycle no table outside it references
            pick = [name for name in remaining if referenced[name] <= cycle[name]][-1]
            cascade = True
        order.append((pick, cascade))
        remaining.remove(pick)
    return order


def _reachable(start: str, parents: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    stack = list(parents[start])
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack.extend(parents[name])
    return seen


def downgrade_statements(catalog: Catalog) -> list[str]:
    return [f"DROP TABLE {quote(name)}{' CASCADE' if cascade else ''}" for name, cascade in drop_order(catalog)]


def not_carried_lines(catalog: Catalog) -> list[str]:
    """What PostgreSQL does not get, as `schema --sql` lists it, then its SQLite SQL (comment lines)."""
    lines = []
    for item in catalog.not_carried:
        lines.append(_one_line(f"not carried over: {item.what} {item.name}: {item.why}"))
        lines += [f"    {_printable(line).rstrip()}" for line in item.sql.splitlines() if line.strip()]
    return lines


def _one_line(text: str) -> str:
    return " ".join(_printable(text).split())


def _printable(text: str) -> str:
    """`text` with every character a comment or a docstring cannot hold as it is escaped."""
    return "".join(c if c.isprintable() or c in "\t\n" else repr(c)[1:-1] for c in text)


def digest(upgrade: list[str], downgrade: list[str], notes: list[str]) -> str:
    """What makes two revisions of a file's schema the same (not their id, date or source path)."""
    hashed = hashlib.sha256()
    for part in (upgrade, downgrade, notes):
        for text in part:
            hashed.update(text.encode("utf-8") + b"\0")
        hashed.update(b"\1")
    return f"sha256:{hashed.hexdigest()}"


def _literal(statement: str) -> str:
    """The statement as Python source, line by line (exact, whatever its characters)."""
    lines = statement.splitlines(keepends=True) or [""]
    if len(lines) == 1:
        return f"op.execute({lines[0]!r})"
    body = "".join(f"        {line!r}\n" for line in lines)
    return f"op.execute(\n{body}    )"


def _docstring_text(text: str) -> str:
    return _printable(text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"'))


def slug(source: str) -> str:
    name = Path(source).name or "file"
    return re.sub(r"\W+", "_", f"schema of {name}".lower()).strip("_")[:40].rstrip("_")


def revision_text(catalog: Catalog, *, source: str | Path, revision: str, created: dt.datetime) -> str:
    """The source of the revision: only `revision` and `created` change between two runs on one file."""
    upgrade, downgrade, notes = upgrade_statements(catalog), downgrade_statements(catalog), not_carried_lines(catalog)
    name = Path(source).name
    tables = len(downgrade)
    header = _docstring_text(
        f"The schema of {name}, generated by hrp-cutover\n\n"
        f"Revision ID: {revision}\n"
        f"Revises:\n"
        f"Create Date: {created.isoformat(sep=' ', timespec='seconds')}\n\n"
        f"Written by `hrp-cutover schema --revision-dir` from the SQLite file {source}.\n"
        f"upgrade() runs the DDL `hrp-cutover schema` runs for the file's {tables} table(s), statement for\n"
        f"statement; downgrade() drops them. The cutover layer's own tables (hrp_cutover_*) are not in it.\n\n"
        f"`hrp-cutover schema` created these tables on PostgreSQL: once the cutover is at postgres_only,\n"
        f"run `alembic stamp {revision}` (or `flask db stamp {revision}`) on PostgreSQL, and give the app's\n"
        f"next revision down_revision = {revision!r}. On an empty database `alembic upgrade head` creates\n"
        f"the tables.\n"
    )
    out = [f'"""{header}"""', "", "from alembic import op", "",
           f"revision = {revision!r}", "down_revision = None", "branch_labels = None", "depends_on = None", "",
           f"# hrp-cutover schema digest: {digest(upgrade, downgrade, notes)}", "", "",
           "def upgrade() -> None:"]
    out += [f"    {_literal(statement)}" for statement in upgrade] or ["    pass"]
    if notes:
        out += ["", "    # Not carried over (SQLite's dialect; translate by hand where the app needs it):"]
        out += [f"    # {line}".rstrip() for line in notes]
    out += ["", "", "def downgrade() -> None:"]
    out += [f"    {_literal(statement)}" for statement in downgrade] or ["    pass"]
    return "\n".join(out) + "\n"


# -- the directory ----------------------------------------------------------------


def revisions_in(directory: Path) -> list[Found]:
    """The revisions of the directory's *.py files, read as Alembic reads their `revision` and
    `down_revision` (module-level assignments), without importing them."""
    found = []
    for path in sorted(directory.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            continue
        values: dict[str, object] = {}
        for node in tree.body:
            targets, value = [], None
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            for target in targets:
                pairs = ([(target, value)] if isinstance(target, ast.Name) else
                         list(zip(target.elts, value.elts)) if isinstance(target, ast.Tuple)
                         and isinstance(value, ast.Tuple) and len(target.elts) == len(value.elts) else [])
                for name, expression in pairs:
                    if isinstance(name, ast.Name):
                        try:
                            values[name.id] = ast.literal_eval(expression)
                        except ValueError:
                            pass
        revision = values.get("revision")
        if not isinstance(revision, str):
            continue
        down = values.get("down_revision")
        downs = (down,) if isinstance(down, str) else tuple(d for d in down if isinstance(d, str)) \
            if isinstance(down, (tuple, list)) else ()
        found.append(Found(path, revision, downs))
    return found


def heads(found: list[Found]) -> list[str]:
    revised = {down for item in found for down in item.down_revisions}
    return sorted(item.revision for item in found if item.revision not in revised)


def prepare_revision(catalog: Catalog, directory: str | Path, *, source: str | Path,
                     revision: str | None = None, created: dt.datetime | None = None) -> PreparedRevision:
    """Check the file and the directory and build the revision, writing nothing; RevisionRefused
    (one line) where no revision is to be written."""
    if any(entry.name == APP_VERSION_TABLE for entry in catalog.tables.values()):
        raise RevisionRefused(
            f"the SQLite file has an Alembic history of its own (table {APP_VERSION_TABLE}): PostgreSQL gets it"
            " with the app's head and the app's own migrations carry on there (docs/schema.md); nothing written:"
            " run schema without --revision-dir")
    if catalog.hrp:
        raise RevisionRefused(
            "the SQLite file is the HRP app's: its schema is hrp-cutover's own Alembic migrations"
            " (hrp_data/schema/migrations); --revision-dir writes the schema of another app's file; nothing written")
    folder = Path(directory)
    if not folder.is_dir():
        what = "not a directory" if folder.exists() else "no such directory"
        raise RevisionRefused(f"--revision-dir {folder}: {what}; nothing written")
    if (folder / "env.py").is_file() and (folder / "versions").is_dir():
        raise RevisionRefused(f"--revision-dir {folder} is an Alembic script directory; give its versions"
                              f" directory ({folder / 'versions'}); nothing written")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RevisionRefused(f"--revision-dir {folder}: not writable; nothing written")
    revision = revision or _fresh_id()
    text = revision_text(catalog, source=source, revision=revision,
                         created=created or dt.datetime.now(dt.timezone.utc))
    path = folder / f"{revision}_{slug(str(source))}.py"
    found = revisions_in(folder)
    if found:
        tops = heads(found)
        same = _digest_of(text)
        mine = [item for item in found if item.revision in tops and _digest_of(_read(item.path)) == same]
        if len(tops) == 1 and mine:
            return PreparedRevision(folder, mine[0].revision, mine[0].path, _read(mine[0].path), existing=mine[0].path)
        where = "its head is" if len(tops) == 1 else "its heads are"
        raise RevisionRefused(
            f"--revision-dir {folder} already holds a migration history ({len(found)} revision(s); {where}"
            f" {', '.join(tops) or 'a cycle'}): the file's schema is the first revision of an app without one;"
            " give an empty versions directory; nothing written")
    return PreparedRevision(folder, revision, path, text)


def _fresh_id() -> str:
    from alembic.util import rev_id

    return rev_id()


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def _digest_of(text: str) -> str | None:
    match = DIGEST_LINE.search(text)
    return match.group(1) if match else None
