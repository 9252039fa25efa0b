"""Benchmarks on the big seed (HRP_BENCH_RACES, default 100000: about 1M predictions):
full verify vs a naive fetch-and-compare baseline, and the app's complex reads on SQLite vs PostgreSQL."""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from adapters.postgres import create_postgres_engine
from adapters.sqlite import create_sqlite_engine
from adapters.types import kind_of
from hrp_data.cutover.assemble import open_cutover
from hrp_data.flip.move import move
from hrp_data.models import TABLES
from hrp_data.cutover.phases import Phase
from hrp_data.schema.install import upgrade
from tools.seed import seed_database
from hrp_data.unit_of_work import UnitOfWork
from hrp_data.verify.run import repair, verify
from shadow.normalize import normalize_row
from tests.integration.cutover_helpers import settings_for

HRP = str(Path(sys.executable).parent / "hrp-cutover")


@pytest.fixture(scope="module")
def big(tmp_path_factory, postgres_server_url, bench_races):
    """The big seed, backfilled into a fresh PostgreSQL database (made once for the module)."""
    import uuid

    import psycopg2
    from sqlalchemy.engine import make_url

    work = tmp_path_factory.mktemp("big")
    path = work / "hrp.db"
    seed_database(path, races=bench_races, seed=42)
    name = f"hrp_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(make_url(postgres_server_url).set(drivername="postgresql").render_as_string(hide_password=False))
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    url = make_url(postgres_server_url).set(drivername="postgresql+psycopg2", database=name).render_as_string(hide_password=False)
    upgrade(url)
    with open_cutover(settings_for(path, url), bound_calls=False) as cutover:
        move(cutover, Phase.DUAL_WRITE)
    env = {"HRP_SQLITE_URL": f"sqlite:///{path}", "HRP_POSTGRES_URL": url, "PATH": str(Path(sys.executable).parent)}
    subprocess.run([HRP, "backfill", "--no-backup", "--json"], env=env, check=True, stdout=subprocess.DEVNULL)
    yield path, url
    admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def naive_compare(sqlite_url: str, postgres_url: str) -> tuple[int, int]:
    """The baseline: fetch every row of both sides through the models' types and compare in Python."""
    sqlite_engine, postgres_engine = create_sqlite_engine(sqlite_url), create_postgres_engine(postgres_url)
    rows = differences = 0
    for table in TABLES:
        kinds = {c.name: kind_of(c) for c in table.columns}
        keys = list(table.primary_key.columns)
        statement = sa.select(table).order_by(*keys)
        with sqlite_engine.connect() as left, postgres_engine.connect() as right:
            left_rows = {tuple(r[k.name] for k in keys): normalize_row(r, kinds) for r in left.execute(statement).mappings()}
            right_rows = {tuple(r[k.name] for k in keys): normalize_row(r, kinds) for r in right.execute(statement).mappings()}
        rows += len(left_rows) + len(right_rows)
        differences += sum(1 for k in left_rows.keys() | right_rows.keys() if left_rows.get(k) != right_rows.get(k))
    sqlite_engine.dispose()
    postgres_engine.dispose()
    return rows, differences


@pytest.mark.bench
def test_verify_vs_naive_fetch_and_compare(big, record_bench):
    path, url = big
    with open_cutover(settings_for(path, url), bound_calls=False) as cutover:
        started = time.perf_counter()
        clean = verify(cutover, record=False)
        verify_s = time.perf_counter() - started
        assert clean.equal, clean.as_json()
        rows = sum(t.rows_primary + t.rows_secondary for t in clean.tables.values())
        started = time.perf_counter()
        naive_rows, naive_differences = naive_compare(f"sqlite:///{path}", url)
        naive_s = time.perf_counter() - started
        assert naive_differences == 0 and naive_rows == rows
        rng = random.Random(3)
        planted = rng.sample(range(1, clean.tables["predictions"].rows_primary + 1), 100)
        with cutover.engine("postgres").begin() as connection:
            connection.exec_driver_sql("SET LOCAL hrp_cutover.maintenance = 'on'")  # planted differences
            connection.execute(
                sa.text("UPDATE predictions SET confidence = confidence + 1 WHERE id = ANY(:ids)"), {"ids": planted}
            )
        started = time.perf_counter()
        dirty = verify(cutover, record=False)
        dirty_s = time.perf_counter() - started
        assert dirty.tables["predictions"].different == 100
        repair(cutover, dirty)
        assert verify(cutover, ["predictions"], record=False).equal
    record_bench("verify", {
        "rows_compared": rows,
        "verify_s": round(verify_s, 2),
        "rows_per_s": round(rows / verify_s),
        "naive_s": round(naive_s, 2),
        "naive_rows_per_s": round(rows / naive_s),
        "speedup": round(naive_s / verify_s, 2),
        "with_100_differences_s": round(dirty_s, 2),
        "with_100_differences_rows_per_s": round(rows / dirty_s),
    })


def _median_seconds(function, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _sql(statement: str, **params):
    """A read the app runs as SQL of its own, fetching every row; floats rounded to 9 digits so
    both databases' sums in another order compare equal."""
    def read(uow):
        rows = uow.session.execute(sa.text(statement), params).all()
        return [[round(v, 9) if isinstance(v, float) else v for v in row] for row in rows]
    return read


@pytest.mark.bench
def test_complex_reads_sqlite_vs_postgres(big, record_bench):
    path, url = big
    engines = {"sqlite": create_sqlite_engine(f"sqlite:///{path}"), "postgres": create_postgres_engine(url)}
    # timed right after the backfill returned: it vacuums and analyzes each table it loaded
    with engines["sqlite"].connect() as connection:  # a busy track and a month in the middle of the data
        track = connection.exec_driver_sql(
            "SELECT track_name FROM races GROUP BY track_name ORDER BY count(*) DESC, track_name LIMIT 1"
        ).scalar()
        month = connection.exec_driver_sql(
            "SELECT substr(race_date, 1, 7) FROM races ORDER BY id LIMIT 1 OFFSET (SELECT count(*) / 2 FROM races)"
        ).scalar()
    year, number = (int(part) for part in month.split("-"))
    start, end = f"{month}-01", f"{year + number // 12:04d}-{number % 12 + 1:02d}-01"
    reads = {
        "track_month_with_predictions": _sql(
            "SELECT r.id, r.race_name, r.race_date, p.id, p.horse_id, p.confidence FROM races r"
            " JOIN predictions p ON p.race_id = r.id WHERE r.track_name = :track"
            " AND r.race_date >= :start AND r.race_date < :end ORDER BY r.race_date, r.id, p.id",
            track=track, start=start, end=end,
        ),
        "top_horses_having": _sql(
            "SELECT h.id, h.horse_name, avg(p.confidence) AS confidence, count(*) AS predictions"
            " FROM predictions p JOIN horses h ON h.id = p.horse_id GROUP BY h.id, h.horse_name"
            " HAVING count(*) >= 5 ORDER BY confidence DESC, h.id LIMIT 50"
        ),
        "window_top3_per_race_month": _sql(
            "SELECT race_id, horse_id, confidence, rank FROM (SELECT p.race_id, p.horse_id, p.confidence,"
            " row_number() OVER (PARTITION BY p.race_id ORDER BY p.confidence DESC, p.id) AS rank"
            " FROM predictions p JOIN races r ON r.id = p.race_id"
            " WHERE r.race_date >= :start AND r.race_date < :end) ranked WHERE rank <= 3 ORDER BY race_id, rank",
            start=start, end=end,
        ),
        "horse_name_search": _sql(
            "SELECT id, horse_name FROM horses WHERE lower(horse_name) LIKE :pattern ORDER BY id LIMIT 100",
            pattern="%ra%",
        ),
        "race_statistics": lambda uow: uow.statistics.race_statistics(limit=1000),
        "horse_performance": lambda uow: uow.statistics.horse_performance(limit=1000),
        "top_predictions_per_race": lambda uow: uow.statistics.top_predictions_per_race(races=2000, per_race=3),
        "jockey_leaderboard": lambda uow: uow.statistics.jockey_leaderboard(limit=20),
    }
    figures = {}
    for name, read in reads.items():
        timings = {}
        results = {}
        for side, engine in engines.items():
            def run(engine=engine, read=read, side=side):
                with UnitOfWork(engine, writable=False) as uow:
                    results[side] = read(uow)
            run()
            timings[side] = _median_seconds(run)
        same = [sorted(json.dumps(r, default=str, sort_keys=True) for r in results[side]) for side in engines]
        assert same[0] == same[1], f"{name}: the two databases give different results"
        figures[name] = {
            "sqlite_ms": round(timings["sqlite"] * 1000, 2),
            "postgres_ms": round(timings["postgres"] * 1000, 2),
            "speedup": round(timings["sqlite"] / timings["postgres"], 2),
        }
    for engine in engines.values():
        engine.dispose()
    figures["summary"] = ", ".join(f"{n} x{f['speedup']}" for n, f in figures.items())
    record_bench("complex_reads", figures)
