"""`hrp-cutover metrics`: the Prometheus text format, parsed by prometheus_client's own parser,
moving as the cutover moves (docs/metrics.md)."""

from __future__ import annotations

import time

import psycopg2.extensions
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from hrp_data.backfill.run import Listener, Options, run_backfill
from hrp_data.cutover.dual_write import Cutover
from hrp_data.cutover.assemble import open_cutover
from hrp_data.cutover.metrics import exposition
from hrp_data.flip.move import move
from hrp_data.cutover.phases import Phase
from hrp_data.cutover.replay import replay_outbox
from hrp_data.schema.install import upgrade
from hrp_data.verify.run import verify
from tools.seed import seed_database
from tests.integration.cutover_helpers import settings_for
from tools.cli import cli


def scrape(path, url) -> dict[tuple[str, tuple], float]:
    """Run `hrp-cutover metrics` once; every sample as {(name, sorted labels): value}."""
    psycopg2.extensions.set_wait_callback(None)
    result = CliRunner().invoke(cli, ["--sqlite", str(path), "--postgres", url, "metrics"])
    assert result.exit_code == 0, result.output
    return parse(result.stdout)


def parse(text: str) -> dict[tuple[str, tuple], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def pending(samples, direction: str = "sqlite_to_postgres") -> float:
    return samples[("hrp_cutover_outbox_pending", (("direction", direction),))]


def _add_users(cutover: Cutover, prefix: str, count: int) -> None:
    for index in range(count):
        with cutover.writing() as uow:
            uow.users.add(username=f"{prefix}{index}", email=f"{prefix}{index}@x", password_hash="h")
            uow.commit()


def test_the_outbox_depth_rises_while_postgres_is_down_and_drains_after(legacy_file, own_postgres):
    url = own_postgres.url
    upgrade(url)
    with open_cutover(settings_for(legacy_file, url)) as cutover:
        move(cutover, Phase.DUAL_WRITE)
        before = scrape(legacy_file, url)
        assert before[("hrp_cutover_phase", (("phase", "dual_write"),))] == 1
        assert before[("hrp_cutover_phase", (("phase", "sqlite_only"),))] == 0
        assert before[("hrp_cutover_phase_version", ())] == cutover.phase(fresh=True).version
        assert before[("hrp_cutover_postgres_up", ())] == 1
        assert pending(before) == 0
        assert (("hrp_cutover_last_move_hold_seconds", (("from_phase", "sqlite_only"), ("to_phase", "dual_write")))
                in before)

        own_postgres.stop()
        _add_users(cutover, "while_down", 7)
        down = scrape(legacy_file, url)
        assert pending(down) == 7
        assert down[("hrp_cutover_outbox_oldest_age_seconds", (("direction", "sqlite_to_postgres"),))] > 0
        assert down[("hrp_cutover_postgres_up", ())] == 0
        assert down[("hrp_cutover_scrape_failed", (("part", "backfill"),))] == 1
        assert down[("hrp_cutover_scrape_failed", (("part", "guard_refused"),))] == 1
        assert down[("hrp_cutover_guard_on", (("database", "postgres"),))] == 1  # read from the SQLite file
        _add_users(cutover, "still_down", 3)
        assert pending(scrape(legacy_file, url)) == 10

        own_postgres.start()
        assert replay_outbox(cutover).remaining == 0
        after = scrape(legacy_file, url)
        assert pending(after) == 0 and pending(after, "postgres_to_sqlite") == 0
        assert after[("hrp_cutover_postgres_up", ())] == 1
        assert after[("hrp_cutover_scrape_failed", (("part", "backfill"),))] == 0


def test_backfill_counts_per_table(tmp_path, postgres_url):
    path = tmp_path / "hrp_database.db"
    counts = seed_database(path, races=10, seed=3)
    upgrade(postgres_url)
    with open_cutover(settings_for(path, postgres_url), bound_calls=False) as cutover:
        move(cutover, Phase.DUAL_WRITE)
        assert ("hrp_cutover_backfill_complete", ()) in scrape(path, postgres_url)
        psycopg2.extensions.set_wait_callback(None)
        assert run_backfill(cutover, Options(batch_size=500)).complete
    samples = scrape(path, postgres_url)
    assert samples[("hrp_cutover_backfill_complete", ())] == 1
    for table in ("users", "races", "horses"):
        assert samples[("hrp_cutover_backfill_rows_copied_total", (("table", table),))] == counts[table]
        assert samples[("hrp_cutover_backfill_rows_quarantined", (("table", table),))] == 0


class ScrapeMidway(Listener):
    """Scrapes the metrics (this process's exposition, as /metrics answers) while `table` is copied."""

    def __init__(self, cutover: Cutover, table: str, after_batches: int = 3):
        self.cutover, self.table, self.after_batches = cutover, table, after_batches
        self.batches = 0
        self.samples: dict | None = None

    def batch_read(self, table, keys):
        if table != self.table:
            return
        self.batches += 1
        if self.batches == self.after_batches:
            self.samples = parse(exposition(self.cutover).decode())


def test_backfill_eta_and_rows_left_while_it_runs_and_after(tmp_path, postgres_url):
    path = tmp_path / "hrp_database.db"
    counts = seed_database(path, races=10, seed=5)
    biggest = max(counts, key=counts.get)
    upgrade(postgres_url)
    with open_cutover(settings_for(path, postgres_url), bound_calls=False) as cutover:
        move(cutover, Phase.DUAL_WRITE)
        before = scrape(path, postgres_url)
        assert before[("hrp_cutover_backfill_running", ())] == 0
        assert ("hrp_cutover_backfill_eta_seconds", ()) not in before  # no backfill: no estimate
        psycopg2.extensions.set_wait_callback(None)
        batch = 20
        assert counts[biggest] > 5 * batch
        listener = ScrapeMidway(cutover, biggest)
        assert run_backfill(cutover, Options(batch_size=batch, workers=0), listener=listener).complete
    during = listener.samples
    assert during is not None
    assert during[("hrp_cutover_backfill_running", ())] == 1
    assert during[("hrp_cutover_backfill_complete", ())] == 0
    labels = (("table", biggest),)
    assert during[("hrp_cutover_backfill_rows_expected", labels)] == counts[biggest]
    left = during[("hrp_cutover_backfill_rows_left", labels)]
    assert 0 < left < counts[biggest]
    assert left == counts[biggest] - during[("hrp_cutover_backfill_rows_read_total", labels)]
    assert during[("hrp_cutover_backfill_eta_seconds", ())] > 0
    for table in counts:  # every table of the run was counted when it started, begun or not
        assert during[("hrp_cutover_backfill_rows_expected", (("table", table),))] == counts[table]

    after = scrape(path, postgres_url)
    assert after[("hrp_cutover_backfill_running", ())] == 0
    assert after[("hrp_cutover_backfill_eta_seconds", ())] == 0
    for table in counts:
        assert after[("hrp_cutover_backfill_rows_left", (("table", table),))] == 0
        assert after[("hrp_cutover_backfill_rows_expected", (("table", table),))] == counts[table]


def _verify_samples(path, url) -> dict:
    samples = scrape(path, url)
    return {name: value for (name, labels), value in samples.items() if name.startswith("hrp_cutover_verify_")}


def test_verify_progress_and_the_last_verdict(tmp_path, postgres_url):
    path = tmp_path / "hrp_database.db"
    seed_database(path, races=10, seed=6)
    upgrade(postgres_url)
    with open_cutover(settings_for(path, postgres_url), bound_calls=False) as cutover:
        move(cutover, Phase.DUAL_WRITE)
        psycopg2.extensions.set_wait_callback(None)
        assert run_backfill(cutover, Options(batch_size=500)).complete
    assert _verify_samples(path, postgres_url) == {"hrp_cutover_verify_running": 0}  # no verify yet

    cutover = open_cutover(settings_for(path, postgres_url)).start()
    try:
        tables = list(cutover.catalog.postgres_tables())
        seen: list[str] = []
        midway: dict = {}

        def scrape_in_the_second_table(table, stage, done, total):
            if table not in seen:
                seen.append(table)
            if len(seen) == 2 and not midway:
                midway.update(parse(exposition(cutover).decode()))

        started = time.time()
        assert verify(cutover, progress=scrape_in_the_second_table).equal
        assert midway[("hrp_cutover_verify_running", ())] == 1
        assert 0 < midway[("hrp_cutover_verify_progress_ratio", ())] < 1
        assert midway[("hrp_cutover_verify_tables_checked", ())] == 1
        assert midway[("hrp_cutover_verify_tables", ())] == len(tables)
        assert ("hrp_cutover_verify_last_equal", ()) not in midway  # no full verify finished yet

        equal = _verify_samples(path, postgres_url)
        assert equal["hrp_cutover_verify_running"] == 0
        assert equal["hrp_cutover_verify_progress_ratio"] == 1.0
        assert equal["hrp_cutover_verify_tables_checked"] == equal["hrp_cutover_verify_tables"] == len(tables)
        assert equal["hrp_cutover_verify_last_equal"] == 1
        assert started <= equal["hrp_cutover_verify_started_timestamp_seconds"]
        assert equal["hrp_cutover_verify_started_timestamp_seconds"] <= equal[
            "hrp_cutover_verify_last_finished_timestamp_seconds"] <= time.time()

        with cutover.engine("postgres").begin() as connection:
            connection.exec_driver_sql("SET LOCAL hrp_cutover.maintenance = 'on'")  # a planted difference
            connection.exec_driver_sql("UPDATE horses SET age = 99 WHERE id = 2")
        assert not verify(cutover).equal
        differs = _verify_samples(path, postgres_url)
        assert differs["hrp_cutover_verify_last_equal"] == 0
        assert differs["hrp_cutover_verify_progress_ratio"] == 1.0
        assert differs["hrp_cutover_verify_last_finished_timestamp_seconds"] >= equal[
            "hrp_cutover_verify_last_finished_timestamp_seconds"]

        assert verify(cutover, ["users"]).equal  # a verify of some tables: progress, no full verdict
        partial = _verify_samples(path, postgres_url)
        assert partial["hrp_cutover_verify_tables"] == 1
        assert partial["hrp_cutover_verify_last_equal"] == 0
    finally:
        cutover.close()
