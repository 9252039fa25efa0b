"""Rows of big blobs and texts, a few at a time: the backfill's pages, assess's sample, the applier's
batches and verify's buckets are bounded by bytes as well as rows, so memory does not grow with the
rows' size (a 1.2 GB file of 100 kB uploads took 7 GB in the backfill at 10,000 rows a page, 3.5 GB in
assess, 2.7 GB in verify for 1 MB photos). Real PostgreSQL, SQLite files written by the plain sqlite3
module, the budgets made small."""

from __future__ import annotations

import json
import random

import psycopg2.extensions
import pybreaker
import pytest

from adapters.postgres import create_postgres_engine
from adapters.sqlite import create_sqlite_engine
from hrp_data.catalog import captured, file_catalog
from hrp_data.cutover import apply, outbox
from hrp_data.cutover.applier import Counters, Route, drain_once
from hrp_data.verify import run as verify_run
from hrp_data.backfill import legacy_rows
from hrp_data.backfill.run import Listener, Options, run_backfill
from hrp_data.cutover import assemble
from tests.integration.cutover_helpers import settings_for
from tests.integration.test_any_schema import _plain_sqlite
from tests.integration.test_northwind_findings import _ok

PAGE_BYTES = 20_000


class Pages(Listener):
    def __init__(self):
        self.keys: list[list[int]] = []

    def batch_read(self, table: str, keys: list) -> None:
        if table == "uploads":
            self.keys.append([key[0] for key in keys])


@pytest.mark.parametrize("workers", [0, 2], ids=["in_process", "worker_processes"])
def test_a_page_holds_at_most_page_bytes_of_rows_and_at_least_one_row(tmp_path, postgres_url, monkeypatch, workers):
    path = tmp_path / "uploads.db"
    rng = random.Random(workers)
    sizes = {n: rng.choice([0, 10, 900, 4_000, 7_000, 25_000]) for n in range(1, 241)}  # 25 kB: a page of its own
    _plain_sqlite(path, "CREATE TABLE uploads (id INTEGER PRIMARY KEY, name TEXT, body BLOB, size INTEGER);"
                        + "".join(f"INSERT INTO uploads VALUES ({n}, 'f{n}.png', randomblob({s}), {s});"
                                  if s else f"INSERT INTO uploads VALUES ({n}, NULL, NULL, 0);"
                                  for n, s in sizes.items()))
    _ok(path, postgres_url, "schema")
    _ok(path, postgres_url, "phase", "set", "dual_write")
    monkeypatch.setattr(legacy_rows, "PAGE_BYTES", PAGE_BYTES)
    psycopg2.extensions.set_wait_callback(None)  # the CLI's commands bound every call; COPY cannot run so
    pages = Pages()
    with assemble.open_cutover(settings_for(path, postgres_url), bound_calls=False) as cutover:
        result = run_backfill(cutover, Options(batch_size=100, workers=workers), listener=pages)
    assert result.complete and result.tables["uploads"].copied == len(sizes)
    assert [key for page in pages.keys for key in page] == sorted(sizes)  # every row once, in key order
    stored = {n: (len(f"f{n}.png") + s if s else 0) for n, s in sizes.items()}
    for page in pages.keys:
        assert len(page) == 1 or sum(stored[n] for n in page) <= PAGE_BYTES, page
        assert len(page) <= 100
    assert len(pages.keys) >= sum(stored.values()) / PAGE_BYTES
    assert "EQUAL" in _ok(path, postgres_url, "verify")


def test_assess_samples_wide_rows_by_what_a_page_holds(tmp_path, postgres_url, monkeypatch):
    """assess's time estimate reads a sample of each table (`--sample-rows`): of a table of wide rows,
    only as many rows as a backfill page holds (a 1.2 GB file of 100 kB blobs took 3.5 GB for its 5,000
    sampled rows); a table of narrow rows keeps its whole sample."""
    path = tmp_path / "uploads.db"
    _plain_sqlite(path, "CREATE TABLE uploads (id INTEGER PRIMARY KEY, body BLOB);"
                        "CREATE TABLE tags (id INTEGER PRIMARY KEY, tag TEXT);"
                        + "".join(f"INSERT INTO uploads VALUES ({n}, randomblob(2000));"
                                  f"INSERT INTO tags VALUES ({n}, 't{n}');" for n in range(1, 301)))
    monkeypatch.setattr(legacy_rows, "PAGE_BYTES", PAGE_BYTES)
    estimate = json.loads(_ok(path, postgres_url, "assess", "--json", "--sample-rows", "200"))["estimate"]["tables"]
    assert 0 < estimate["uploads"]["sample_rows"] <= PAGE_BYTES // 2000, estimate  # spread over 4 places
    assert estimate["tags"]["sample_rows"] == 200, estimate
    assert estimate["uploads"]["seconds"] > 0


def test_the_applier_carries_a_backlog_of_wide_rows_a_few_at_a_time(tmp_path, postgres_url, monkeypatch):
    """60 changes to rows of 3 kB blobs wait in the outbox (a backlog): one batch of the applier takes
    as many as BATCH_BYTES holds, not all 60 (BATCH: 500), and the batches carry every change; changes
    to narrow rows keep going 500 at a time."""
    path = tmp_path / "uploads.db"
    _plain_sqlite(path, "CREATE TABLE uploads (id INTEGER PRIMARY KEY, body BLOB);"
                        "CREATE TABLE tags (id INTEGER PRIMARY KEY, tag TEXT);")
    for step in (("schema",), ("phase", "set", "dual_write"), ("backfill", "--no-backup")):
        _ok(path, postgres_url, *step)
    _plain_sqlite(path, "".join(f"INSERT INTO uploads VALUES ({n}, randomblob(3000));" for n in range(1, 61))
                  + "".join(f"INSERT INTO tags VALUES ({n}, 't{n}');" for n in range(1, 61)))
    monkeypatch.setattr(apply, "BATCH_BYTES", PAGE_BYTES)
    primary, secondary = create_sqlite_engine(f"sqlite:///{path}"), create_postgres_engine(postgres_url)
    route = Route(primary, secondary, captured(file_catalog(primary)))
    breaker, counters = pybreaker.CircuitBreaker(fail_max=1000), Counters()
    batches = []
    while (done := drain_once(route, breaker, counters)) != (0, 0):
        assert done[1] == 0
        batches.append(done[0])
    assert sum(batches) == 120 and outbox.depth(primary).pending == 0
    assert len(batches) > 60 * 3000 // PAGE_BYTES and batches[-1] > 60, batches
    assert max(batches[:-1]) <= PAGE_BYTES // 3000, batches  # the last: the uploads left and the 60 tags
    assert "EQUAL" in _ok(path, postgres_url, "verify")


def test_verify_cuts_a_table_of_wide_rows_into_smaller_buckets_and_finds_one_changed_blob(
        tmp_path, postgres_url, monkeypatch):
    """A bucket's text is built whole on each side (PostgreSQL's string_agg is bounded at 1 GB): a
    table of 3 kB blobs gets as many buckets as hold about BUCKET_BYTES of hex each, a table of narrow
    rows keeps BUCKET_ROWS a bucket, and a blob changed by one byte in PostgreSQL is found."""
    path = tmp_path / "photos.db"
    _plain_sqlite(path, "CREATE TABLE photos (id INTEGER PRIMARY KEY, image BLOB);"
                        "CREATE TABLE tags (id INTEGER PRIMARY KEY, tag TEXT);"
                        + "".join(f"INSERT INTO photos VALUES ({n}, randomblob(3000));"
                                  f"INSERT INTO tags VALUES ({n}, 't{n}');" for n in range(1, 201)))
    for step in (("schema",), ("phase", "set", "dual_write"), ("backfill", "--no-backup")):
        _ok(path, postgres_url, *step)
    with create_postgres_engine(postgres_url).begin() as connection:
        connection.exec_driver_sql("SET LOCAL hrp_cutover.maintenance = 'on'")  # a planted difference
        connection.exec_driver_sql("UPDATE photos SET image = overlay(image placing '\\x00'::bytea from 100) WHERE id = 77")
    monkeypatch.setattr(verify_run, "BUCKET_BYTES", PAGE_BYTES)
    buckets = {}

    def hashing(table: str, stage: str, _done: int, total: int) -> None:
        if stage == "hashing":  # rows hashed on both sides: two shares a bucket
            buckets[table] = total // 2

    with assemble.open_cutover(settings_for(path, postgres_url)) as cutover:
        result = verify_run.verify(cutover, record=False, progress=hashing)
    assert buckets["photos"] >= 200 * 2 * 3000 // PAGE_BYTES, buckets
    assert buckets["tags"] == 1, buckets
    assert {(e["table"], e["kind"], tuple(e["key"])) for e in result.examples} == {("photos", "value_differs", (77,))}


def test_repair_carries_rows_of_big_blobs_a_few_at_a_time(tmp_path, postgres_url, monkeypatch):
    """40 rows of 3 kB blobs missing in PostgreSQL: repair applies them in chunks of at most
    BATCH_BYTES of rows (not 500 keys at once), and verify is equal afterwards."""
    path = tmp_path / "photos.db"
    _plain_sqlite(path, "CREATE TABLE photos (id INTEGER PRIMARY KEY, image BLOB);"
                        + "".join(f"INSERT INTO photos VALUES ({n}, randomblob(3000));" for n in range(1, 101)))
    for step in (("schema",), ("phase", "set", "dual_write"), ("backfill", "--no-backup")):
        _ok(path, postgres_url, *step)
    with create_postgres_engine(postgres_url).begin() as connection:
        connection.exec_driver_sql("SET LOCAL hrp_cutover.maintenance = 'on'")  # planted differences
        connection.exec_driver_sql("DELETE FROM photos WHERE id > 60")
    monkeypatch.setattr(apply, "BATCH_BYTES", PAGE_BYTES)
    chunks = []
    real = verify_run.apply_keys
    monkeypatch.setattr(verify_run, "apply_keys", lambda keys, **kw: chunks.append(len(keys)) or real(keys, **kw))
    with assemble.open_cutover(settings_for(path, postgres_url)) as cutover:
        first, second = verify_run.verify_and_repair(cutover, record=False)
    assert not first.equal and second is not None and second.equal
    assert sum(chunks) == 40 and max(chunks) <= PAGE_BYTES // 3000, chunks
