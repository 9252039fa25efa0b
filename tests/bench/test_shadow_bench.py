"""Benchmark: read latency with shadow reads at sample 1.0 against the same reads without, same run.

Three figures. `shadow_http`: what the site's users see, GET /api/races/<id> on two app
processes serving the same files in phase shadow, one with shadow reads switched off
(HRP_SHADOW_ENABLED=0), requests alternating between them in blocks. `shadow`: the
repository call alone (`cutover.reading()` + `races.get`), in one process, the laboratory
switched on and off in blocks. `shadow_orm`: the example app's own ORM reads against the
repository's, each with shadow reads over without, in rounds of one block per arm (arms shuffled
per round); its ratio of ratios comes with a bootstrap interval over the rounds
(HRP_BENCH_SHADOW_ROUNDS, HRP_BENCH_SHADOW_BLOCK, HRP_BENCH_SHADOW_MARGIN).

After each shadowed block the bench waits until the mismatch store holds a result for
every read of the block (`catch_up_s`): shadow work left over from one block would
otherwise run during the next block of the other app (the machine's cores are shared),
slowing the requests without shadow reads instead of its own.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import sqlite3
import statistics
import subprocess
import time

import pytest

from tools.demo import free_port, hrp_cutover
from hrp_data.cutover.assemble import open_cutover
from hrp_data.flip.move import move
from hrp_data.cutover.phases import Phase
from hrp_data.schema.install import upgrade
from tests.integration.cutover_helpers import settings_for, wait_drained

RACES = 300
READS = 3000
BLOCK = 100
PACE_S = float(os.environ.get("PACE", "0.002"))
READS_PER_REQUEST = 2
"""GET /api/races/<id> reads races.get and predictions.for_race (hrp_data.web.services.get_race)."""
CATCH_UP_S = 60.0


def _world(cutover) -> list[int]:
    with cutover.writing() as uow:
        horses = [uow.horses.add(horse_name=f"H{i}", age=3 + i % 5, weight=450.5) for i in range(40)]
        races = []
        for i in range(RACES):
            race = uow.races.add(race_name=f"R{i}", distance=1000.0 + i, weather_conditions={"wind": "N"})
            for position, horse in enumerate(random.Random(i).sample(horses, 8), start=1):
                uow.races.set_runner(race["id"], horse["id"], post_position=position, odds=2.5 + position)
                uow.predictions.add(race_id=race["id"], horse_id=horse["id"], confidence=position / 10)
            races.append(race["id"])
        uow.commit()
    return races


def _read(cutover, race_id: int) -> float:
    started = time.perf_counter()
    with cutover.reading() as uow:
        uow.races.get(race_id)
    return time.perf_counter() - started


def _shadow_world(legacy_file, postgres_url) -> list[int]:
    upgrade(postgres_url)
    with open_cutover(settings_for(legacy_file, postgres_url)).start() as cutover:
        move(cutover, Phase.DUAL_WRITE)
        races = _world(cutover)
        wait_drained(cutover, timeout=120)
        move(cutover, Phase.SHADOW)
    return races


def _start_app(env: dict, log_path) -> tuple[subprocess.Popen, http.client.HTTPConnection]:
    port = free_port()
    log = open(log_path, "a")
    app = subprocess.Popen([hrp_cutover(), "serve", "--port", str(port), "--threads", "4"],
                           env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            if _get(connection, "/api/races?limit=1") == 200:
                return app, connection
        except OSError:
            connection.close()
        time.sleep(0.2)
    app.terminate()
    raise RuntimeError(f"the app did not start; see {log_path}")


def _published(legacy_file) -> int:
    """Shadow results in the store (every outcome, dropped samples included); the app flushes every second."""
    with sqlite3.connect(f"file:{legacy_file}?mode=ro", uri=True) as store:
        try:
            found = store.execute(
                "SELECT COALESCE(SUM(matched + mismatched + lag + unsettled + errors + timeouts + dropped"
                " + candidate_errors), 0) FROM hrp_cutover_shadow_reads").fetchone()
        except sqlite3.OperationalError:  # no result flushed yet
            return 0
    return int(found[0])


def _catch_up(legacy_file, expected: int) -> float:
    """Wait until the store holds `expected` results; how long that took."""
    started = time.monotonic()
    while _published(legacy_file) < expected and time.monotonic() - started < CATCH_UP_S:
        time.sleep(0.05)
    return time.monotonic() - started


def _get(connection: http.client.HTTPConnection, path: str) -> int:
    connection.request("GET", path)
    response = connection.getresponse()
    response.read()
    return response.status


@pytest.mark.bench
def test_shadow_http_latency_ratio(legacy_file, postgres_url, record_bench, tmp_path):
    races = _shadow_world(legacy_file, postgres_url)
    env = os.environ | {
        "HRP_SQLITE_URL": f"sqlite:///{legacy_file}", "HRP_POSTGRES_URL": postgres_url,
        "HRP_LOG_LEVEL": "WARNING", "HRP_SHADOW_SAMPLE": "1.0",
    }
    apps = {True: _start_app(env | {"HRP_SHADOW_ENABLED": "1"}, tmp_path / "shadowed.log"),
            False: _start_app(env | {"HRP_SHADOW_ENABLED": "0"}, tmp_path / "plain.log")}
    try:
        rng = random.Random(7)
        timings = {True: [], False: []}
        expected = _published(legacy_file)
        catch_up = []
        for block in range(READS * 2 // BLOCK):
            shadowed = block % 2 == 1
            connection = apps[shadowed][1]
            for _ in range(BLOCK):
                path = f"/api/races/{rng.choice(races)}"
                started = time.perf_counter()
                assert _get(connection, path) == 200
                timings[shadowed].append(time.perf_counter() - started)
                time.sleep(PACE_S)
            if shadowed:
                expected += BLOCK * READS_PER_REQUEST
                catch_up.append(_catch_up(legacy_file, expected))
    finally:
        for app, connection in apps.values():
            connection.close()
            app.terminate()
            app.wait(timeout=30)
    report = subprocess.run([hrp_cutover(), "report", "--format", "json"], env=env,
                            capture_output=True, text=True, check=True)
    totals = json.loads(report.stdout)["totals"]
    without = statistics.median(timings[False]) * 1000
    shadowed_ms = statistics.median(timings[True]) * 1000
    figures = {
        "reads_each": len(timings[True]),
        "pace_ms": PACE_S * 1000,
        "request": "GET /api/races/<id>",
        "p50_ms_without": round(without, 3),
        "p50_ms_shadow": round(shadowed_ms, 3),
        "p95_ms_without": round(sorted(timings[False])[int(0.95 * len(timings[False]))] * 1000, 3),
        "p95_ms_shadow": round(sorted(timings[True])[int(0.95 * len(timings[True]))] * 1000, 3),
        "ratio_p50": round(shadowed_ms / without, 3),
        "compared": totals["compared"],
        "mismatched": totals["mismatched"],
        "dropped": totals["dropped"],
        "catch_up_s_median": round(statistics.median(catch_up), 3),
        "catch_up_s_max": round(max(catch_up), 3),
    }
    record_bench("shadow_http", figures)
    assert totals["compared"] >= READS * 0.9
    assert totals["mismatched"] == 0


@pytest.mark.bench
def test_shadow_read_latency_ratio(legacy_file, postgres_url, record_bench):
    races = _shadow_world(legacy_file, postgres_url)
    with open_cutover(settings_for(legacy_file, postgres_url)).start() as cutover:
        lab = cutover.shadow.lab
        rng = random.Random(7)
        timings = {True: [], False: []}
        for block in range(READS * 2 // BLOCK):
            lab.enabled = block % 2 == 1
            for _ in range(BLOCK):
                timings[lab.enabled].append(_read(cutover, rng.choice(races)))
                time.sleep(PACE_S)
            cutover.shadow.lab.wait_idle(30)
        cutover.shadow.flush()
        stats = lab.stats()
    without = statistics.median(timings[False]) * 1000
    shadowed = statistics.median(timings[True]) * 1000
    figures = {
        "reads_each": len(timings[True]),
        "pace_ms": PACE_S * 1000,
        "p50_ms_without": round(without, 3),
        "p50_ms_shadow": round(shadowed, 3),
        "p95_ms_without": round(sorted(timings[False])[int(0.95 * len(timings[False]))] * 1000, 3),
        "p95_ms_shadow": round(sorted(timings[True])[int(0.95 * len(timings[True]))] * 1000, 3),
        "ratio_p50": round(shadowed / without, 3),
        "outcomes": stats,
    }
    record_bench("shadow", figures)
    assert stats.get("match", 0) >= READS * 0.9


ROUNDS = int(os.environ.get("HRP_BENCH_SHADOW_ROUNDS", "60"))
"""Rounds of the ORM-vs-repository comparison; each runs every arm once, in an order of its own."""
ROUND_BLOCK = int(os.environ.get("HRP_BENCH_SHADOW_BLOCK", "50"))
"""Reads per arm and round."""
NO_MORE_MARGIN = float(os.environ.get("HRP_BENCH_SHADOW_MARGIN", "0.03"))
"""`orm_costs_no_more`: the upper bound of the 95% interval of ORM-over-repository is at most 1 + this
(a p50 of about 1.2 ms, 3% is some 35 us; equal costs can never show an upper bound below 1)."""
BOOTSTRAP = 1000


def _timed_rounds(lab, reads: dict, races: list[int], rng: random.Random) -> list[dict[tuple[str, bool], list[float]]]:
    """Each of `reads` ({name: read(race_id)}) with the laboratory off and on, in `ROUNDS` rounds of
    one block per arm, the arms in a random order per round (so the machine's drift and any order
    effect reach all of them alike); each block's samples finished before the next block (so one
    block's shadow work never runs during another's). One {arm: timings} per round."""
    arms = [(name, enabled) for name in reads for enabled in (False, True)]
    rounds = []
    for _ in range(ROUNDS):
        timings: dict[tuple[str, bool], list[float]] = {arm: [] for arm in arms}
        for name, enabled in rng.sample(arms, len(arms)):
            lab.enabled = enabled
            for _ in range(ROUND_BLOCK):
                started = time.perf_counter()
                reads[name](rng.choice(races))
                timings[name, enabled].append(time.perf_counter() - started)
                time.sleep(PACE_S)
            lab.wait_idle(30)
        rounds.append(timings)
    return rounds


def _pooled(rounds: list[dict], arm: tuple[str, bool]) -> list[float]:
    return [t for timings in rounds for t in timings[arm]]


def _p50_ms(timings: list[float]) -> float:
    return round(statistics.median(timings) * 1000, 3)


def _ratio(rounds: list[dict], name: str) -> float:
    return statistics.median(_pooled(rounds, (name, True))) / statistics.median(_pooled(rounds, (name, False)))


def _ratio_of_ratios(rounds: list[dict]) -> float:
    return _ratio(rounds, "orm") / _ratio(rounds, "repository")


def _spread(rounds: list[dict], rng: random.Random) -> dict:
    """How far the ratio of ratios can be trusted: its 95% bootstrap interval (rounds resampled with
    replacement, the pooled p50s taken again) and the per-round ratios' quartiles."""
    resampled = sorted(_ratio_of_ratios(rng.choices(rounds, k=len(rounds))) for _ in range(BOOTSTRAP))
    per_round = [
        (statistics.median(r["orm", True]) / statistics.median(r["orm", False]))
        / (statistics.median(r["repository", True]) / statistics.median(r["repository", False]))
        for r in rounds
    ]
    quartiles = statistics.quantiles(per_round, n=4)
    return {
        "ci95": [round(resampled[int(0.025 * BOOTSTRAP)], 3), round(resampled[int(0.975 * BOOTSTRAP) - 1], 3)],
        "per_round_median": round(statistics.median(per_round), 3),
        "per_round_iqr": [round(quartiles[0], 3), round(quartiles[2], 3)],
    }


@pytest.mark.bench
def test_orm_shadow_reads_cost_no_more_than_repository_ones(legacy_file, postgres_url, record_bench):
    """Issue 19: the app's own ORM reads at sample 1.0 (the example app's GET /races/<id>: the race by
    db.get_or_404 and its predictions by the relationship, two statements) against the repository's
    (races.get and predictions.for_race, two reads), each with shadow reads over without, same process."""
    from hrp_data.web import HrpCutover
    from tests.e2e.example_app.app import create_app

    races = _shadow_world(legacy_file, postgres_url)
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{legacy_file}", "HRP_POSTGRES_URL": postgres_url,
                      "SECRET_KEY": "k" * 40})
    cutover = HrpCutover.state(app).cutover
    client = app.test_client()

    def orm_read(race_id: int) -> None:
        response = client.get(f"/races/{race_id}")
        assert response.status_code == 200
        response.close()  # the request's samples are queued as its response closes

    def repository_read(race_id: int) -> None:
        with cutover.reading() as uow:
            uow.races.get(race_id)
            uow.predictions.for_race(race_id)

    try:
        lab = cutover.shadow.lab
        for read in (orm_read, repository_read):  # warm both paths (statement caches, pools) before timing
            for race_id in races[:50]:
                read(race_id)
        lab.wait_idle(30)
        load = os.getloadavg()
        rounds = _timed_rounds(lab, {"orm": orm_read, "repository": repository_read}, races, random.Random(7))
        cutover.shadow.flush()
        outcomes = lab.stats()
    finally:
        HrpCutover.state(app).close()
    spread = _spread(rounds, random.Random(11))
    figures = {
        "reads_each": len(_pooled(rounds, ("orm", True))),
        "rounds": len(rounds),
        "pace_ms": PACE_S * 1000,
        "loadavg_1m_before": round(load[0], 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "orm_p50_ms_without": _p50_ms(_pooled(rounds, ("orm", False))),
        "orm_p50_ms_shadow": _p50_ms(_pooled(rounds, ("orm", True))),
        "orm_ratio_p50": round(_ratio(rounds, "orm"), 3),
        "repository_p50_ms_without": _p50_ms(_pooled(rounds, ("repository", False))),
        "repository_p50_ms_shadow": _p50_ms(_pooled(rounds, ("repository", True))),
        "repository_ratio_p50": round(_ratio(rounds, "repository"), 3),
        "orm_over_repository": round(_ratio_of_ratios(rounds), 3),
        "orm_over_repository_ci95": spread["ci95"],
        "orm_over_repository_per_round_median": spread["per_round_median"],
        "orm_over_repository_per_round_iqr": spread["per_round_iqr"],
        "no_more_margin": NO_MORE_MARGIN,
        "orm_costs_no_more": spread["ci95"][1] <= 1.0 + NO_MORE_MARGIN,
        "outcomes": outcomes,
    }
    record_bench("shadow_orm", figures)
    assert outcomes.get("match", 0) >= len(rounds) * ROUND_BLOCK * 4 * 0.9 and not outcomes.get("mismatch"), outcomes
