"""Backups of the live legacy file: an online snapshot, checked, with a manifest beside it.

`backup(sqlite_file)` copies the file with SQLite's online backup API in one
step (a single read transaction: a consistent snapshot; in WAL mode writers
keep going meanwhile), runs PRAGMA integrity_check on the copy, and writes a
manifest next to it: source, path, size, SHA-256, row counts per table,
created_at. Both files appear under their final names only when complete.
The default place is `hrp_cutover_backups/` beside the live file.
A backup holds everything the file holds (password hashes, API secrets), so
both files are the owner's only (0600) and a folder the backup makes, or the
default folder, is too (0700).

The backfill refuses to start unless the newest manifest for the file is
younger than HRP_BACKUP_MAX_AGE (default 24h) and its backup is still there.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from adapters.catalog import quote, user_tables
from hrp_data.backfill.legacy_rows import connect

BACKUP_DIR = "hrp_cutover_backups"
PRIVATE_FILE, PRIVATE_DIR = 0o600, 0o700


class BackupError(RuntimeError):
    """A backup failed, or none recent enough exists; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Manifest:
    source: str
    path: str
    size: int
    sha256: str
    row_counts: dict[str, int]
    integrity_check: str
    created_at: str
    manifest_path: str = ""

    @property
    def age_s(self) -> float:
        created = dt.datetime.fromisoformat(self.created_at)
        return (dt.datetime.now(dt.timezone.utc) - created).total_seconds()

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "manifest_path"}


def default_dir(sqlite_file: Path) -> Path:
    return Path(sqlite_file).resolve().parent / BACKUP_DIR


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _private_dir(folder: Path, *, ours: bool) -> None:
    """Make `folder` if missing; the owner's only when this made it or it is the layer's own."""
    made = not folder.exists()
    folder.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    if made or ours:
        os.chmod(folder, PRIVATE_DIR)  # mkdir's mode is narrowed by the umask, never widened


def _private_file(path: Path) -> Path:
    """A new empty file only its owner can read (SQLite gives its journal the same mode)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    os.chmod(path, PRIVATE_FILE)
    return path


def backup(sqlite_file: Path, out_dir: Path | None = None) -> Manifest:
    """Snapshot `sqlite_file` into `out_dir` (default: hrp_cutover_backups/ beside it), checked."""
    source = Path(sqlite_file).resolve()
    if not source.is_file():
        raise BackupError(f"no SQLite file at {source}")
    target_dir = Path(out_dir).resolve() if out_dir else default_dir(source)
    _private_dir(target_dir, ours=target_dir == default_dir(source))
    now = dt.datetime.now(dt.timezone.utc)
    stem = f"{source.stem}-{now.strftime('%Y%m%dT%H%M%S.%fZ')}"
    final, partial = target_dir / f"{stem}.db", target_dir / f".{stem}.db.partial"
    live = connect(source)
    try:
        copy = sqlite3.connect(_private_file(partial))
        try:
            live.backup(copy, pages=-1)  # one step: one read transaction, one consistent snapshot
            copy.execute("PRAGMA journal_mode = DELETE")
            problems = [row[0] for row in copy.execute("PRAGMA integrity_check")]
            counts = {name: copy.execute(f"SELECT count(*) FROM {quote(name)}").fetchone()[0]
                      for name, _sql in user_tables(copy)}
        finally:
            copy.close()
    except (sqlite3.Error, OSError) as error:
        partial.unlink(missing_ok=True)
        raise BackupError(f"backup of {source} failed: {error}") from None
    finally:
        live.close()
    verdict = "ok" if problems == ["ok"] else "; ".join(problems[:5])
    if verdict != "ok":
        partial.unlink(missing_ok=True)
        raise BackupError(f"the snapshot of {source} fails PRAGMA integrity_check: {verdict}")
    os.replace(partial, final)
    manifest = Manifest(
        source=str(source), path=str(final), size=final.stat().st_size, sha256=_sha256(final),
        row_counts=counts, integrity_check=verdict, created_at=now.isoformat(),
    )
    manifest_path = final.with_suffix(".json")
    temporary = manifest_path.with_name("." + manifest_path.name + ".partial")
    _private_file(temporary).write_text(json.dumps(manifest.as_json(), indent=2) + "\n")
    os.replace(temporary, manifest_path)
    return dataclasses.replace(manifest, manifest_path=str(manifest_path))


def newest(sqlite_file: Path, backup_dir: Path | None = None) -> Manifest | None:
    """The newest manifest of a backup of `sqlite_file` whose backup file is still there, whole."""
    source = str(Path(sqlite_file).resolve())
    folder = Path(backup_dir) if backup_dir else default_dir(Path(sqlite_file))
    found: list[Manifest] = []
    for path in folder.glob("*.json"):
        try:
            data = json.loads(path.read_text())
            manifest = Manifest(**{f.name: data[f.name] for f in dataclasses.fields(Manifest) if f.name != "manifest_path"},
                                manifest_path=str(path))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        backup_file = Path(manifest.path)
        if manifest.source == source and backup_file.is_file() and backup_file.stat().st_size == manifest.size:
            found.append(manifest)
    return max(found, key=lambda m: m.created_at, default=None)


def require_recent(sqlite_file: Path, max_age: float, backup_dir: Path | None = None) -> Manifest:
    """The newest backup if younger than `max_age` seconds; else BackupError saying what to do."""
    folder = Path(backup_dir) if backup_dir else default_dir(Path(sqlite_file))
    manifest = newest(sqlite_file, backup_dir)
    limit = _spell(max_age)
    if manifest is None:
        raise BackupError(
            f"no backup of {Path(sqlite_file).resolve()} in {folder}: run `hrp-cutover backup` first"
            " (or pass --no-backup)"
        )
    if manifest.age_s > max_age:
        raise BackupError(
            f"the newest backup of {manifest.source} is {_spell(manifest.age_s)} old (max {limit},"
            " HRP_BACKUP_MAX_AGE): run `hrp-cutover backup` first (or pass --no-backup)"
        )
    return manifest


def _spell(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    if seconds >= 60:
        return f"{seconds / 60:.0f}m"
    return f"{seconds:.0f}s"
