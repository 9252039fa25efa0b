"""How many examples a property test runs: its full count under the hypothesis profile `thorough`
(`make test`, `make test-integration`, `make test-e2e`, `make test-fuzz`), a fifth of it, at least
10, under `quick`, the default (`make test-unit`, a bare `pytest`). Profiles: tests/conftest.py."""

from __future__ import annotations

from hypothesis import settings

THOROUGH = 100
"""max_examples of the thorough profile (hypothesis's own default)."""


def examples(thorough: int) -> int:
    """`thorough` examples under the thorough profile, proportionally fewer under the loaded one."""
    return max(10, thorough * settings.default.max_examples // THOROUGH)
