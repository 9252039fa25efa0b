"""Benchmarks on the big seed (HRP_BENCH_RACES, default 100000: about 1M predictions):
full verify vs a naive fetch-and-compare baseline, and the app's complex reads on SQLite vs PostgreSQL
right after the backfill, quiet and under write load. The complex reads run on a PostgreSQL with the
standard contrib modules where the machine has one (tests/bench/conftest.py)."""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import structlog

from adapters.postgres import create_postgres_engine
from adapters.sqlite import create_sqlite_engine
from adapters.types import kind_of
from hrp_data.cutover.assemble import open_cutover
from hrp_data.flip.move import move
from hrp_data.logs import configure_logging
from hrp_data.models import TABLES
from hrp_data.cutover.phases import Phase
from hrp_data.schema.install import upgrade
from tools.seed import seed_database
from hrp_data.unit_of_work import UnitOfWork
from hrp_data.verify.run import repair, verify
from shadow.normalize import normalize_row
from tests.integration.cutover_helpers import settings_for, wait_drained

HRP = str(Path(sys.executable).parent / "hrp-cutover")


@pytest.fixture(scope="module")
def big_seed(tmp_path_factory, bench_races) -> Path:
    """The big seed, made once for the module; each database below backfills a copy of it."""
    path = tmp_path_factory.mktemp("seed") / "hrp.db"
    seed_database(path, races=bench_races, seed=42)
    return path


@contextlib.contextmanager
def backfilled(seed: Path, work: Path, server_url: str) -> Iterator[tuple[Path, str]]:
    """A copy of `seed` in dual_write, backfilled into a fresh database of `server_url` by the
    `hrp-cutover backfill` command; (the file, the database's URL). Dropped afterwards."""
    import uuid

    import psycopg2
    from sqlalchemy.engine import make_url

    path = work / "hrp.db"
    shutil.copyfile(seed, path)
    name = f"hrp_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(make_url(server_url).set(drivername="postgresql").render_as_string(hide_password=False))
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    url = make_url(server_url).set(drivername="postgresql+psycopg2", database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        with open_cutover(settings_for(path, url), bound_calls=False) as cutover:
            move(cutover, Phase.DUAL_WRITE)
        env = {"HRP_SQLITE_URL": f"sqlite:///{path}", "HRP_POSTGRES_URL": url, "PATH": str(Path(sys.executable).parent)}
        subprocess.run([HRP, "backfill", "--no-backup", "--json"], env=env, check=True, stdout=subprocess.DEVNULL)
        yield path, url
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="module")
def big(big_seed, tmp_path_factory, postgres_server_url):
    """The big seed, backfilled into a fresh database of the suite's server."""
    with backfilled(big_seed, tmp_path_factory.mktemp("big"), postgres_server_url) as made:
        yield made


@pytest.fixture(scope="module")
def reads_big(big_seed, tmp_path_factory, reads_postgres_server_url):
    """The big seed, backfilled into a fresh database of the server the complex reads run on (one
    with pg_trgm where the machine has one, see tests/bench/conftest.py)."""
    with backfilled(big_seed, tmp_path_factory.mktemp("reads"), reads_postgres_server_url) as made:
        yield made


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


REPEAT, MOST_RUNS, BUDGET_S = 5, 25, 2.0
"""Timed runs per read and side, interleaved with the other side's: at least REPEAT, more for a fast
read (up to MOST_RUNS, as many as fit BUDGET_S), whose medians the machine's other work moves most."""
WRITERS, WRITE_PAUSE_S = 2, 0.01
"""The write load: threads writing through the cutover, each pausing this long between writes."""


def _sql(statement: str, **params):
    """A read the app runs as SQL of its own, fetching every row; floats rounded to 9 digits so
    both databases' sums in another order compare equal."""
    def read(uow):
        rows = uow.session.execute(sa.text(statement), params).all()
        return [[round(v, 9) if isinstance(v, float) else v for v in row] for row in rows]
    return read


def complex_reads(path: Path) -> tuple[dict, dict]:
    """The app's complex reads, their parameters taken from the data: a busy track and a month in the
    middle; for the name search, what a user types looking for one horse: the first five letters of
    a word of the name of the horse in the middle of the table, the word whose letters fewest names
    hold (a few matches, counted in `search_matches`). Returns (the reads by name, the parameters chosen)."""
    with sqlite3.connect(path) as connection:
        track = connection.execute(
            "SELECT track_name FROM races GROUP BY track_name ORDER BY count(*) DESC, track_name LIMIT 1"
        ).fetchone()[0]
        month = connection.execute(
            "SELECT substr(race_date, 1, 7) FROM races ORDER BY id LIMIT 1 OFFSET (SELECT count(*) / 2 FROM races)"
        ).fetchone()[0]
        name = connection.execute(
            "SELECT horse_name FROM horses ORDER BY id LIMIT 1 OFFSET (SELECT count(*) / 2 FROM horses)"
        ).fetchone()[0]
        prefixes = sorted({word[:5].lower() for word in name.split() if len(word) >= 3})
        term = min(prefixes, key=lambda prefix: connection.execute(
            "SELECT count(*) FROM horses WHERE lower(horse_name) LIKE ?", (f"%{prefix}%",)).fetchone()[0])
        found = connection.execute(
            "SELECT count(*) FROM horses WHERE lower(horse_name) LIKE ?", (f"%{term}%",)).fetchone()[0]
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
        "horse_name_search": lambda uow: uow.horses.list(name=term, limit=50),  # the app's search: ILIKE '%term%'
        "race_statistics": lambda uow: uow.statistics.race_statistics(limit=1000),
        "horse_performance": lambda uow: uow.statistics.horse_performance(limit=1000),
        "top_predictions_per_race": lambda uow: uow.statistics.top_predictions_per_race(races=2000, per_race=3),
        "jockey_leaderboard": lambda uow: uow.statistics.jockey_leaderboard(limit=20),
    }
    return reads, {"track": track, "month": month, "search_term": term, "search_matches": found}


def _run(engine: sa.Engine, read) -> tuple[float, object]:
    started = time.perf_counter()
    with UnitOfWork(engine, writable=False) as uow:
        result = read(uow)
    return time.perf_counter() - started, result


def _comparable(result) -> list[str]:
    return sorted(json.dumps(r, default=str, sort_keys=True) for r in result)


def time_reads(engines: dict[str, sa.Engine], reads: dict, *, compare: bool = True) -> dict:
    """Each read on each side, interleaved (SQLite then PostgreSQL, the other way round the next
    time), so that both sides meet the same load; after one run each not timed, whose results are
    compared when `compare`. Per read: the median ms of each side, the median of the runs' ratios
    (speedup) and every run."""
    figures = {}
    sides = list(engines)
    for name, read in reads.items():
        first = {side: _run(engine, read) for side, engine in engines.items()}
        if compare:
            assert _comparable(first["sqlite"][1]) == _comparable(first["postgres"][1]), (
                f"{name}: the two databases give different results")
        pair_s = sum(seconds for seconds, _ in first.values())
        runs: dict[str, list[float]] = {side: [] for side in sides}
        for i in range(max(REPEAT, min(MOST_RUNS, int(BUDGET_S / pair_s)))):
            for side in sides if i % 2 == 0 else reversed(sides):
                runs[side].append(_run(engines[side], read)[0])
        figures[name] = {
            "sqlite_ms": round(statistics.median(runs["sqlite"]) * 1000, 2),
            "postgres_ms": round(statistics.median(runs["postgres"]) * 1000, 2),
            "speedup": round(statistics.median(a / b for a, b in zip(runs["sqlite"], runs["postgres"])), 2),
            "sqlite_runs_ms": [round(t * 1000, 2) for t in runs["sqlite"]],
            "postgres_runs_ms": [round(t * 1000, 2) for t in runs["postgres"]],
        }
    return figures


def _server(engine: sa.Engine) -> dict:
    with engine.connect() as connection:
        version = connection.exec_driver_sql("SHOW server_version").scalar()
        trigram = connection.exec_driver_sql("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'").scalar()
    return {"postgres_version": version, "pg_trgm": bool(trigram)}


def _summary(figures: dict) -> str:
    return ", ".join(f"{n} x{f['speedup']}" for n, f in figures.items() if isinstance(f, dict) and "speedup" in f)


@pytest.mark.bench
def test_complex_reads_sqlite_vs_postgres(reads_big, record_bench):
    """Right after the backfill returned (it vacuums and analyzes each table it loaded; nothing else
    runs before): every complex read on both sides, results compared."""
    path, url = reads_big
    engines = {"sqlite": create_sqlite_engine(f"sqlite:///{path}"), "postgres": create_postgres_engine(url)}
    reads, chosen = complex_reads(path)
    figures = time_reads(engines, reads)
    figures.update(chosen, **_server(engines["postgres"]))
    for engine in engines.values():
        engine.dispose()
    figures["summary"] = _summary(figures)
    record_bench("complex_reads", figures)


def _write_load(cutover, stop: threading.Event, seed: int, counts: dict, done: list, failures: list) -> None:
    """The app's writes through the cutover (SQLite primary, the applier carrying them to PostgreSQL):
    a prediction on a random race and a status change of another, one unit of work each time."""
    rng = random.Random(seed)
    while not stop.is_set():
        try:
            with cutover.writing() as uow:
                uow.predictions.add(
                    race_id=rng.randint(1, counts["races"]), horse_id=rng.randint(1, counts["horses"]),
                    user_id=rng.randint(1, counts["users"]), prediction_value=rng.random(),
                    confidence=round(rng.random(), 3), algorithm_version="write-load",
                )
                uow.races.update(rng.randint(1, counts["races"]), status=rng.choice(["scheduled", "finished"]))
                uow.commit()
            done.append(1)
        except Exception as error:  # counted, the load goes on
            failures.append(repr(error))
        stop.wait(WRITE_PAUSE_S)


@pytest.mark.bench
def test_complex_reads_under_write_load(reads_big, record_bench):
    """The same reads while the app writes (WRITERS threads through the cutover, the applier carrying
    their writes to PostgreSQL), on the database the backfill just made (no VACUUM in between);
    the results compared once the writes stop and the outbox is drained."""
    path, url = reads_big
    engines = {"sqlite": create_sqlite_engine(f"sqlite:///{path}"), "postgres": create_postgres_engine(url)}
    reads, chosen = complex_reads(path)
    with sqlite3.connect(path) as connection:
        counts = {t: connection.execute(f"SELECT max(id) FROM {t}").fetchone()[0] for t in ("races", "horses", "users")}
    stop, done, failures = threading.Event(), [], []
    previous_logging = structlog.get_config()
    configure_logging(level="WARNING")  # not a line per write
    with contextlib.ExitStack() as stack:
        stack.callback(structlog.configure, **previous_logging)
        cutover = stack.enter_context(open_cutover(settings_for(path, url)).start())
        writers = [threading.Thread(target=_write_load, args=(cutover, stop, n, counts, done, failures))
                   for n in range(WRITERS)]
        started = time.perf_counter()
        for writer in writers:
            writer.start()
        try:
            time.sleep(2)  # the load under way, the applier busy
            figures = time_reads(engines, reads, compare=False)
        finally:
            stop.set()
            for writer in writers:
                writer.join()
        seconds = time.perf_counter() - started
        wait_drained(cutover, timeout=300)
    for name, read in reads.items():
        assert _comparable(_run(engines["sqlite"], read)[1]) == _comparable(_run(engines["postgres"], read)[1]), (
            f"{name}: the two databases give different results once the writes are applied")
    figures.update(chosen, **_server(engines["postgres"]))
    for engine in engines.values():
        engine.dispose()
    assert failures == []
    figures["writes"] = len(done)
    figures["writes_per_s"] = round(len(done) / seconds, 1)
    figures["summary"] = _summary(figures)
    record_bench("complex_reads_under_write_load", figures)
