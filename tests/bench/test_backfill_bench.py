"""Benchmark: backfill throughput on a seeded file (HRP_BENCH_RACES, default 100000 races).

Figures, all in this process on the same data:
- the backfill of the whole file, wall time from start to the end of its last
  step (indexes built again, foreign keys checked, identities moved, ANALYZE),
  and per table rows/s of the copy; run twice (into fresh databases), best of
  the two, alternated with two pgloader runs, best of those: the first heavy
  writer on a fresh server also pays for creating its WAL files;
- predictions: a bare psycopg2 COPY of the already-converted rows in one
  stream and one commit, the physical limit of one Python process, into the
  table as the backfill loads it (primary key only: secondary indexes and
  foreign-key triggers held back), and for reference into the table with
  everything on; against the backfill of the same table (read, convert,
  COPY/merge, checkpoint, zombie re-check), alternated ROUNDS times, best of each;
- Debian's pgloader on the same file (installed by `make bench`'s set-up step).

Every measured run starts after a CHECKPOINT, so none pays for the dirty pages of the one before.
  pgloader creates its own schema: REAL as float4 (values lose bits), JSON
  as text, no GIN indexes, foreign keys and indexes built after the load.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid

import psycopg2
import pytest
from sqlalchemy.engine import make_url

from adapters import pg_copy
from hrp_data.backfill import holds
from hrp_data.backfill.run import Options, run_backfill
from hrp_data.cutover.assemble import open_cutover
from hrp_data.flip.move import move
from hrp_data.backfill.legacy_rows import TableReader, connect
from hrp_data.models import TABLES
from hrp_data.cutover.phases import Phase
from hrp_data.schema.install import upgrade
from tools.seed import seed_database
from tests.conftest import scratch_database
from tests.integration.cutover_helpers import settings_for

TABLE_MAP = {t.name: t for t in TABLES}
ROUNDS = 2


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _pgloader_url(url: str) -> str:
    parsed = make_url(url)
    host = parsed.query.get("host")
    if host:  # a unix socket directory (pgserver)
        return f"postgresql://{parsed.username or 'postgres'}@unix:{host}:{parsed.port or 5432}/{parsed.database}"
    password = f":{parsed.password}" if parsed.password else ""
    return f"postgresql://{parsed.username}{password}@{parsed.host}:{parsed.port or 5432}/{parsed.database}"


def _checkpoint(url: str) -> None:
    """Write out what earlier runs left dirty, so that no measured run pays for its predecessor's
    checkpoint (the COPY into the fully indexed table leaves gigabytes of WAL behind)."""
    connection = psycopg2.connect(_libpq(url))
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("CHECKPOINT")
    finally:
        connection.close()


def _converted_predictions(path) -> tuple[bytes, int, float]:
    reader = TableReader(TABLE_MAP["predictions"])
    connection = connect(path)
    started = time.perf_counter()
    rows = reader.page(connection, None, 10**9)
    converted = reader.convert(rows)
    connection.close()
    return converted.payload, converted.staged, time.perf_counter() - started


MAINTENANCE = "SET hrp_cutover.maintenance = 'on'"
"""A write of the bench's own on PostgreSQL while it is the secondary (docs/operations.md, the guard)."""


def _bare_copy(url: str, payload: bytes, *, held: bool) -> float:
    """Seconds for one COPY of `payload` into predictions (held: as the backfill loads it)."""
    connection = psycopg2.connect(_libpq(url))
    try:
        with connection.cursor() as cursor:
            cursor.execute(MAINTENANCE)  # PostgreSQL is the secondary: its guard refuses other writes
            cursor.execute("TRUNCATE predictions")
            if held:
                holds.hold_indexes(cursor, "predictions")
                cursor.execute("SET session_replication_role = replica")
            connection.commit()
            _checkpoint(url)
            started = time.perf_counter()
            pg_copy.copy_in(cursor, "predictions", [c.name for c in TABLE_MAP["predictions"].columns], payload)
            connection.commit()
            seconds = time.perf_counter() - started
            cursor.execute("SET session_replication_role = origin")
            connection.commit()
        holds.restore_indexes(connection, "predictions")
        return seconds
    finally:
        connection.close()


def _reset_predictions(url: str) -> None:
    connection = psycopg2.connect(_libpq(url))
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(MAINTENANCE)
            cursor.execute("TRUNCATE predictions")
            cursor.execute("DELETE FROM hrp_cutover_backfill WHERE table_name IN ('predictions', '*')")
    finally:
        connection.close()


def _ensure_pgloader() -> str | None:
    """None when pgloader is installed; else what to run (the bench targets' set-up step)."""
    if shutil.which("pgloader"):
        return None
    return "pgloader is missing: run `make bench-packages` (tools/setup/system_packages.sh bench)"


def _pgloader(path, server_url: str) -> dict:
    missing = _ensure_pgloader()
    if missing:
        pytest.fail(missing, pytrace=False)
    name = f"hrp_pgloader_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(_libpq(server_url))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        target = make_url(server_url).set(drivername="postgresql", database=name)
        _checkpoint(server_url)
        started = time.perf_counter()
        done = subprocess.run(
            ["pgloader", "--no-ssl-cert-verification", f"sqlite://{path}", _pgloader_url(target.render_as_string(hide_password=False))],
            capture_output=True, text=True, timeout=1800,
        )
        seconds = time.perf_counter() - started
        summary = [line for line in done.stdout.splitlines() + done.stderr.splitlines() if "Total import time" in line]
        return {
            "seconds": round(seconds, 2),
            "exit_code": done.returncode,
            "summary": summary[-1].strip() if summary else None,
            "note": "pgloader's own schema: REAL as float4 (values lose bits), JSON as text, no GIN indexes,"
                    " indexes and foreign keys built after the load",
        }
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.mark.bench
def test_backfill_throughput(tmp_path, postgres_url, postgres_server_url, bench_races, record_bench):
    path = tmp_path / "hrp_database.db"
    started = time.perf_counter()
    counts = seed_database(path, races=bench_races, seed=1)
    seed_s = time.perf_counter() - started
    pgloader_runs = [_pgloader(path, postgres_server_url)]  # the whole file: alternated with ours, best of each
    upgrade(postgres_url)
    with open_cutover(settings_for(path, postgres_url), bound_calls=False) as cutover:
        move(cutover, Phase.DUAL_WRITE)
        _checkpoint(postgres_url)
        started = time.perf_counter()
        full = run_backfill(cutover, Options())
        whole_runs = [time.perf_counter() - started]
        assert full.complete
        for name, count in counts.items():
            assert full.tables[name].copied == count, name

        payload, rows, convert_s = _converted_predictions(path)
        bare_runs, full_runs, backfill_runs = [], [], []
        for _ in range(ROUNDS):  # alternated, so all three see the same machine
            bare_runs.append(_bare_copy(postgres_url, payload, held=True))
            full_runs.append(_bare_copy(postgres_url, payload, held=False))
            _reset_predictions(postgres_url)
            _checkpoint(postgres_url)
            again = run_backfill(cutover, Options(tables=("predictions",)))
            assert again.tables["predictions"].copied == rows
            backfill_runs.append(again.tables["predictions"].seconds)
        bare_s, full_s, predictions_s = min(bare_runs), min(full_runs), min(backfill_runs)

    pgloader_runs.append(_pgloader(path, postgres_server_url))
    with scratch_database(postgres_server_url, "hrp_bench_whole") as again_url:
        upgrade(again_url)
        with open_cutover(settings_for(path, again_url), bound_calls=False) as cutover:
            _checkpoint(again_url)
            started = time.perf_counter()
            assert run_backfill(cutover, Options()).complete
            whole_runs.append(time.perf_counter() - started)
    total_s = min(whole_runs)
    pgloader = min(pgloader_runs, key=lambda run: run["seconds"])
    pgloader["runs_seconds"] = [run["seconds"] for run in pgloader_runs]
    figures = {
        "predictions_rows_per_s": round(rows / predictions_s),
        "copy_rows_per_s": round(rows / bare_s),
        "ratio_vs_copy": round(bare_s / predictions_s, 3),
        "total_s": round(total_s, 2),
        "copy_with_indexes_rows_per_s": round(rows / full_s),
        "pgloader_s": pgloader["seconds"],
        "races": bench_races,
        "rows": sum(counts.values()),
        "rows_per_table": counts,
        "seed_seconds": round(seed_s, 2),
        "backfill": {
            "total_seconds": round(total_s, 2),
            "whole_file_runs_seconds": [round(v, 2) for v in whole_runs],
            "tables": {name: s.as_json() for name, s in full.tables.items()},
        },
        "predictions": {
            "rows": rows,
            "backfill_seconds": round(predictions_s, 2),
            "backfill_rows_per_s": round(rows / predictions_s),
            "backfill_runs_seconds": [round(v, 2) for v in backfill_runs],
            "bare_copy_seconds": round(bare_s, 2),
            "bare_copy_runs_seconds": [round(v, 2) for v in bare_runs],
            "bare_copy_rows_per_s": round(rows / bare_s),
            "copy_with_indexes_seconds": round(full_s, 2),
            "copy_with_indexes_runs_seconds": [round(v, 2) for v in full_runs],
            "ratio_to_bare_copy": round(bare_s / predictions_s, 3),
            "convert_only_seconds": round(convert_s, 2),
        },
        "pgloader": pgloader,
        "whole_file_vs_pgloader": round(pgloader["seconds"] / total_s, 3),
    }
    record_bench("backfill", figures)
