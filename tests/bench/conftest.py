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


@pytest.fixture(scope="session")
def reads_postgres_server_url(request):
    """The server the complex reads run on. HRP_TEST_POSTGRES_URL's when set; else a PostgreSQL of the
    system's packages with the standard contrib modules (pg_trgm, which production servers ship and
    the embedded pgserver lacks), started for the session; else the suite's own server."""
    from tests.pg_control import SystemPostgres, contrib_bindir

    bindir = None if os.environ.get("HRP_TEST_POSTGRES_URL") else contrib_bindir()
    if bindir is None:
        yield request.getfixturevalue("postgres_server_url")
        return
    server = SystemPostgres(bindir)
    try:
        yield server.url
    finally:
        server.close()
