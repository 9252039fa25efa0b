"""Benchmark: read latency with shadow reads at sample 1.0 against the same reads without, same run."""

from __future__ import annotations

import random
import statistics
import time

import pytest

from hrp_data.dual_write import Cutover
from hrp_data.flip import move
from hrp_data.phases import Phase
from hrp_data.schema import upgrade
from tests.integration.cutover_helpers import settings_for, wait_drained

RACES = 300
READS = 3000
BLOCK = 100
PACE_S = float(__import__("os").environ.get("PACE", "0.002"))


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


@pytest.mark.bench
def test_shadow_read_latency_ratio(legacy_file, postgres_url, record_bench):
    upgrade(postgres_url)
    with Cutover(settings_for(legacy_file, postgres_url)) as cutover:
        move(cutover, Phase.DUAL_WRITE)
        races = _world(cutover)
        wait_drained(cutover, timeout=120)
        move(cutover, Phase.SHADOW)
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
