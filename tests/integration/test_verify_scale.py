"""The verify as a batch job: bounds sized for its statements (not the request path's), and the fast
paths (worker processes, the compiled renderer, ranged statements) still find every real difference."""

from __future__ import annotations

import math
import signal
import threading
import time

import psutil
import psycopg2
import psycopg2.extensions
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from adapters import postgres as pg_adapter
from hrp_data.verify import run as verify_module
from hrp_data.verify import ranges as verify_ranges
from hrp_data.backfill.run import Options, run_backfill
from hrp_data.cutover.assemble import open_cutover
from hrp_data.flip.move import move
from hrp_data.cutover.phases import Phase
from hrp_data.schema.install import upgrade
from tools.seed import seed_database
from hrp_data.verify.run import long_statements, verify
from tests.integration.cutover_helpers import settings_for
from tools.cli import cli


def backfilled(tmp_path, url: str, races: int):
    """A seeded legacy file, backfilled into PostgreSQL at `url`; returns the file's path."""
    path = tmp_path / "hrp.db"
    seed_database(path, races=races, seed=5)
    upgrade(url)
    with open_cutover(settings_for(path, url), bound_calls=False) as cutover:
        move(cutover, Phase.DUAL_WRITE)
        assert run_backfill(cutover, Options()).complete
    psycopg2.extensions.set_wait_callback(None)
    return path


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def pair(tmp_path, postgres_url):
    return backfilled(tmp_path, postgres_url, races=60), postgres_url


@pytest.fixture
def request_bound_of(monkeypatch):
    """Install the request path's client bound (adapters.postgres.bound_every_call) at `seconds`."""

    def install(seconds: float) -> None:
        monkeypatch.setattr(pg_adapter, "CALL_TIMEOUT_S", seconds)
        psycopg2.extensions.set_wait_callback(pg_adapter._wait_with_deadline)

    return install


def hold_table_lock(url: str, table: str, seconds: float) -> threading.Thread:
    """Another session holds ACCESS EXCLUSIVE on `table` for `seconds`: every statement on it waits."""
    connection = psycopg2.connect(_libpq(url))
    with connection.cursor() as cursor:
        cursor.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')

    def release() -> None:
        time.sleep(seconds)
        connection.rollback()
        connection.close()

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    return thread


def signal_server(server, signal_number: int) -> None:
    """Signal the server's processes; one that exits meanwhile (a backend whose client left) is fine."""
    for process in server._processes():
        try:
            process.send_signal(signal_number)
        except psutil.NoSuchProcess:
            pass


class TestBounds:
    def test_the_verify_session_has_its_own_statement_timeout(self, pair):
        """Its statements run with the verify's bound, other sessions keep the app's 30 s."""
        _, url = pair
        engine = pg_adapter.create_postgres_engine(url)
        try:
            seconds = "SELECT current_setting('statement_timeout')::interval"
            with long_statements(engine) as connection:
                inside = connection.exec_driver_sql(seconds).scalar().total_seconds()
            with engine.connect() as connection:
                outside = connection.exec_driver_sql(seconds).scalar().total_seconds()
        finally:
            engine.dispose()
        assert (inside, outside) == (verify_module.STATEMENT_BOUND_S, 30.0)

    def test_a_statement_slower_than_the_request_bound_still_finishes(self, pair, request_bound_of):
        """With the request path bounded at 1 s, a verify whose statements wait 2.5 s on a lock ends equal."""
        path, url = pair
        with open_cutover(settings_for(path, url)) as cutover:
            request_bound_of(1.0)
            with pytest.raises(sa.exc.OperationalError, match="ClientTimeout"):  # the request path gives up
                holder = hold_table_lock(url, "predictions", 2.5)
                with cutover.engine("postgres").connect() as connection:
                    connection.exec_driver_sql("SELECT count(*) FROM predictions").scalar()
            holder.join()
            holder = hold_table_lock(url, "predictions", 2.5)
            started = time.monotonic()
            result = verify(cutover, ["predictions"], record=False)
            waited = time.monotonic() - started
            holder.join()
        assert result.equal, result.as_json()
        assert waited >= 2.0

    def test_a_hung_server_ends_the_verify_with_one_line(self, tmp_path, own_postgres, monkeypatch):
        """A frozen server (SIGSTOP) never answers: the verify's own client deadline ends it."""
        path = backfilled(tmp_path, own_postgres.url, races=10)
        monkeypatch.setattr(verify_module, "STATEMENT_BOUND_S", 1.0)
        monkeypatch.setattr(verify_module, "CLIENT_MARGIN_S", 1.0)
        signal_server(own_postgres, signal.SIGSTOP)
        started = time.monotonic()
        try:
            outcome = CliRunner().invoke(cli, ["--sqlite", str(path), "--postgres", own_postgres.url, "verify"])
        finally:
            signal_server(own_postgres, signal.SIGCONT)
        assert outcome.exit_code == 1
        message = outcome.output.strip().splitlines()
        assert message == [message[-1]] and message[0].startswith("Error: database unavailable: ClientTimeout")
        assert "password" not in outcome.output and time.monotonic() - started < 20

    def test_a_slow_statement_is_cancelled_by_the_verify_bound(self, pair, monkeypatch):
        """statement_timeout is the verify's: a lock held past it cancels the statement, in one line."""
        path, url = pair
        monkeypatch.setattr(verify_module, "STATEMENT_BOUND_S", 0.5)
        holder = hold_table_lock(url, "predictions", 3.0)
        outcome = CliRunner().invoke(cli, ["--sqlite", str(path), "--postgres", url, "verify",
                                           "--tables", "predictions"])
        holder.join()
        assert outcome.exit_code == 1
        assert "database unavailable: QueryCanceled" in outcome.output and "statement timeout" in outcome.output


class TestStatementSizing:
    def test_statements_follow_the_measured_rate(self, pair, monkeypatch):
        """With a tiny target, the verify cuts its PostgreSQL side into many small statements."""
        path, url = pair
        sizes = []
        real = verify_module._postgres_range

        def recording(connection, table, buckets, first, last):
            sizes.append(last - first + 1)
            return real(connection, table, buckets, first, last)

        monkeypatch.setattr(verify_module, "_postgres_range", recording)
        monkeypatch.setattr(verify_module, "BUCKET_ROWS", 10)
        monkeypatch.setattr(verify_module, "STATEMENT_TARGET_S", 1e-4)
        with open_cutover(settings_for(path, url)) as cutover:
            assert verify(cutover, ["predictions"], record=False).equal
        assert sizes[0] == verify_module.FIRST_STATEMENT_BUCKETS and min(sizes) < sizes[0] and len(sizes) > 3


class TestDifferencesThroughTheFastPaths:
    def test_one_changed_value_a_missing_and_an_extra_row_among_many(self, tmp_path, postgres_url, monkeypatch):
        """Worker processes hash SQLite; a one-ulp change, a key reorder-free JSON change, a missing and an
        extra row among thousands are each found, and nothing else."""
        monkeypatch.setattr(verify_ranges, "POOL_MIN_ROWS", 500)
        path = backfilled(tmp_path, postgres_url, races=400)
        with open_cutover(settings_for(path, postgres_url)) as cutover:
            assert verify(cutover, record=False).equal
            with cutover.engine("postgres").begin() as connection:
                connection.exec_driver_sql("SET LOCAL hrp_cutover.maintenance = 'on'")  # planted differences
                confidence = connection.exec_driver_sql("SELECT confidence FROM predictions WHERE id = 1234").scalar()
                connection.execute(sa.text("UPDATE predictions SET confidence = :c WHERE id = 1234"),
                                   {"c": math.nextafter(confidence, math.inf)})
                connection.exec_driver_sql(
                    "UPDATE predictions SET features = jsonb_set(features, '{odds}', '1.25') WHERE id = 2345")
                connection.exec_driver_sql("DELETE FROM predictions WHERE id = 3456")
                connection.exec_driver_sql("SET session_replication_role = replica")  # no foreign-key check
                connection.exec_driver_sql(
                    "INSERT INTO race_horses (race_id, horse_id, post_position) VALUES (77, 999999, 1)")
            result = verify(cutover, record=False)
        found = {(e["table"], e["kind"], tuple(e["key"]), e.get("column")) for e in result.examples}
        assert found == {
            ("predictions", "value_differs", (1234,), "confidence"),
            ("predictions", "value_differs", (2345,), "features"),
            ("predictions", "missing_row", (3456,), None),
            ("race_horses", "extra_row", (77, 999999), None),
        }
        assert result.tables["predictions"].rows_primary > 3000
