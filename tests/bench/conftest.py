"""Benchmarks (`make bench`): each writes its figures to artifacts/bench/<name>.json;
`hrp-cutover bench` turns them into BENCHMARKS.md."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "bench"


@pytest.fixture
def record_bench():
    """Call with (name, figures dict); the figures land in artifacts/bench/<name>.json."""

    def record(name: str, figures: dict) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / f"{name}.json").write_text(json.dumps(figures, indent=2, default=str))
        print(f"\n{name}: {json.dumps(figures, default=str)}")

    return record


@pytest.fixture(scope="session")
def bench_races() -> int:
    return int(os.environ.get("HRP_BENCH_RACES", "100000"))
