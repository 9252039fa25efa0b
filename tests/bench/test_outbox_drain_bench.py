"""Benchmark: draining a deep outbox (HRP_BENCH_OUTBOX_ROWS pending changes, 1,000,000 by default)
with the applier's drain_once, in both directions. The rate of the last 10% must match the first 10%:
each batch reads a bounded number of rows, whatever the depth."""

from __future__ import annotations

import os
import time

import pybreaker
import pytest
import sqlalchemy as sa

from adapters.postgres import create_postgres_engine
from adapters.sqlite import create_sqlite_engine
from hrp_data.cutover import outbox
from hrp_data.catalog import captured, file_catalog
from hrp_data.cutover.applier import Counters, Route, drain_once
from hrp_data.schema.install import upgrade

ROWS = int(os.environ.get("HRP_BENCH_OUTBOX_ROWS", "1000000"))
CHUNK = 50_000


def _fill_sqlite(engine: sa.Engine, rows: int, catalog) -> None:
    """Insert `rows` horses through the capture triggers: one outbox entry each."""
    with engine.begin() as connection:
        outbox.install_triggers(connection, catalog)
    for start in range(0, rows, CHUNK):
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
                " INSERT INTO horses (horse_name, age, weight) SELECT 'bench ' || i, i % 12, 450.5 FROM n",
                (start, min(rows, start + CHUNK) - 1),
            )


def _fill_postgres(engine: sa.Engine, rows: int, catalog) -> None:
    with engine.begin() as connection:
        outbox.install_triggers(connection, catalog)
    for start in range(0, rows, CHUNK):
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "INSERT INTO horses (horse_name, age, weight)"
                " SELECT 'bench ' || i, i %% 12, 450.5 FROM generate_series(%s, %s) AS i",
                (start, min(rows, start + CHUNK) - 1),
            )


def _drain(primary: sa.Engine, secondary: sa.Engine, rows: int, catalog) -> dict:
    """Drain with drain_once until empty; rows/s over the first and the last 10% of the rows."""
    route = Route(primary, secondary, captured(catalog))
    breaker, counters = pybreaker.CircuitBreaker(fail_max=1000), Counters()
    tenth = rows // 10
    marks: dict[str, float] = {}
    done = 0
    started = time.perf_counter()
    while True:
        applied, failed = drain_once(route, breaker, counters)
        assert failed == 0
        if applied == 0:
            break
        done += applied
        now = time.perf_counter() - started
        if done >= tenth and "first" not in marks:
            marks["first"] = now
        if done >= rows - tenth and "last_start" not in marks:
            marks["last_start"] = now
    total = time.perf_counter() - started
    assert done == rows and outbox.depth(primary).pending == 0
    return {
        "rows": rows,
        "seconds": round(total, 1),
        "rows_per_s": round(rows / total),
        "first_10pct_rows_per_s": round(tenth / marks["first"]),
        "last_10pct_rows_per_s": round(tenth / (total - marks["last_start"])),
    }


def _figures(fill_s: float, drained: dict) -> dict:
    drained["fill_s"] = round(fill_s, 1)
    drained["last_over_first"] = round(drained["last_10pct_rows_per_s"] / drained["first_10pct_rows_per_s"], 2)
    return drained


@pytest.mark.bench
def test_a_deep_sqlite_outbox_drains_at_a_steady_rate(legacy_file, postgres_url, record_bench):
    upgrade(postgres_url)
    sqlite = create_sqlite_engine(f"sqlite:///{legacy_file}")
    postgres = create_postgres_engine(postgres_url)
    outbox.install_tables(sqlite)
    started = time.perf_counter()
    catalog = file_catalog(sqlite)
    _fill_sqlite(sqlite, ROWS, catalog)
    figures = _figures(time.perf_counter() - started, _drain(sqlite, postgres, ROWS, catalog))
    record_bench("outbox_drain_sqlite", figures)
    assert figures["last_over_first"] > 0.7, figures


@pytest.mark.bench
def test_a_deep_postgres_outbox_drains_at_a_steady_rate(legacy_file, postgres_url, record_bench):
    upgrade(postgres_url)
    sqlite = create_sqlite_engine(f"sqlite:///{legacy_file}")
    postgres = create_postgres_engine(postgres_url)
    outbox.install_tables(postgres)
    started = time.perf_counter()
    catalog = file_catalog(sqlite)
    _fill_postgres(postgres, ROWS, catalog)
    with postgres.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE hrp_cutover_outbox")
    figures = _figures(time.perf_counter() - started, _drain(postgres, sqlite, ROWS, catalog))
    record_bench("outbox_drain_postgres", figures)
    assert figures["last_over_first"] > 0.7, figures
