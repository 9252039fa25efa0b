"""tests/unit has no database: a test here that asks for a database fixture fails before it runs."""

from __future__ import annotations

import pytest

DATABASE_FIXTURES = ("postgres_server_url", "postgres_url", "own_postgres", "legacy_file", "pgbouncer")
"""The fixtures of tests/conftest.py that start a PostgreSQL or create a SQLite file."""


def pytest_runtest_setup(item: pytest.Item) -> None:
    wanted = [name for name in DATABASE_FIXTURES if name in getattr(item, "fixturenames", ())]
    if wanted:
        pytest.fail(
            f"tests/unit needs no database, but this test asks for {', '.join(wanted)}: move it to "
            "tests/integration, or hand the code a fake (tests/unit/fakes.py)",
            pytrace=False,
        )
