"""The layer's runtime dependencies stay small (the embedded PostgreSQL is an extra), and a fresh
clone installs known versions: `make` installs with `-c constraints.txt`, which pins them all."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED_SCHEMA = ROOT.parent / "shared" / "legacy_schema.sql"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_pgserver_is_an_extra_of_the_demo_and_the_tests_not_a_runtime_dependency():
    assert "pgserver" not in {_name(r) for r in PROJECT["dependencies"]}
    extras = PROJECT["optional-dependencies"]
    assert "pgserver" in {_name(r) for r in extras["demo"]} and "pgserver" in {_name(r) for r in extras["test"]}


def test_every_dependency_is_pinned_in_the_constraints_the_makefile_installs_from():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    wanted = {_name(r) for r in PROJECT["dependencies"]}
    wanted |= {_name(r) for extra in PROJECT["optional-dependencies"].values() for r in extra}
    assert wanted - set(pins) == set()
    assert all(pins.values()), "every line pins one version (name==version)"
    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt -e '.[test,demo]'" in makefile


def test_the_packaged_legacy_schema_is_the_shared_one():
    packaged = ROOT / "hrp_data" / "schema" / "legacy_schema.sql"
    if SHARED_SCHEMA.exists():
        assert packaged.read_text() == SHARED_SCHEMA.read_text()
    assert "CREATE TABLE race_horses" in packaged.read_text()


def test_python_dash_m_tools_is_the_cli():
    """`python -m tools` runs the same CLI as the console script (`serve` starts its applier so)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "tools", "apply", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: hrp-cutover apply")
