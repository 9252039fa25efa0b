"""Bad input on the command line: a clear one-line error, exit code 2, no traceback, nothing changed."""

from __future__ import annotations

import hashlib
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools.cli import cli

HOSTILE_TEXT = st.one_of(
    st.text(max_size=50),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=20).map(lambda s: s + "\x00"),
    st.just("x" * 100_000),
    st.sampled_from(["-1", "0", "postgres", "POSTGRES_PRIMARY", "../../etc/passwd", "'; DROP TABLE races; --"]),
)
BAD_URLS = st.one_of(
    HOSTILE_TEXT,
    st.sampled_from([
        "postgresql://", "postgresql://u:secretpw@", "mysql://u:secretpw@h/db", "postgresql://u:secretpw@h:99999/db",
        "sqlite:///", "http://example.com", "postgresql+nodriver://u:secretpw@h/db",
    ]),
)

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _positive_int(text: str) -> bool:
    try:
        return int(text) >= 1
    except ValueError:
        return False


def _fingerprint(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


def _assert_clean_refusal(result, *, codes=(2,), given: str = "") -> None:
    assert result.exit_code in codes, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines
    if "://" in given and ":secretpw@" in given:
        assert "secretpw" not in result.output, "a DSN password was printed"


@FUZZ
@given(phase=HOSTILE_TEXT)
def test_unknown_phases_are_refused(tmp_path_factory, phase):
    database = tmp_path_factory.mktemp("fuzz") / "hrp.db"
    result = CliRunner().invoke(cli, ["--sqlite", str(database), "phase", "set", "--", phase])  # '--help' is a target too
    _assert_clean_refusal(result)
    assert _fingerprint(database) == "absent"


@FUZZ
@given(url=BAD_URLS)
def test_malformed_postgres_urls_are_refused(url):
    result = CliRunner().invoke(cli, ["--postgres", url, "schema"])
    _assert_clean_refusal(result, given=url)


@FUZZ
@given(url=BAD_URLS)
def test_malformed_sqlite_urls_are_refused(url):
    runner = CliRunner()
    with runner.isolated_filesystem():
        result = runner.invoke(cli, ["--sqlite", url, "status"])
        created = [p for p in Path(".").iterdir()]
    _assert_clean_refusal(result, given=url)
    assert created == [], "a bad --sqlite must not create a database"


@FUZZ
@given(races=st.one_of(st.integers(max_value=0), HOSTILE_TEXT.filter(lambda t: not _positive_int(t))))
def test_bad_seed_arguments_are_refused(tmp_path_factory, races):
    target = tmp_path_factory.mktemp("seed") / "x.db"
    result = CliRunner().invoke(cli, ["seed", "--sqlite", str(target), "--races", str(races)])
    _assert_clean_refusal(result)
    assert not target.exists()


@FUZZ
@given(tables=HOSTILE_TEXT.filter(lambda t: t.strip(", ") != ""))
def test_unknown_tables_are_refused(tmp_path_factory, tables):
    database = tmp_path_factory.mktemp("verify") / "hrp.db"
    result = CliRunner().invoke(cli, ["--sqlite", str(database), "--postgres", "postgresql://u@127.0.0.1:1/x", "verify", "--tables", tables])
    _assert_clean_refusal(result)
    assert _fingerprint(database) == "absent"
