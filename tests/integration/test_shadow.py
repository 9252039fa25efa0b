"""Shadow reads on a real SQLite file and a real PostgreSQL: experiments, lag, failures, store, report."""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
import sqlite3
import threading
import time

import pytest
import sqlalchemy as sa
import structlog
from click.testing import CliRunner
from structlog.testing import capture_logs

from adapters.sqlite import create_sqlite_engine
from hrp_data.cutover import shadow_reads
from hrp_data.cutover.dual_write import Cutover
from hrp_data.cutover.assemble import open_cutover
from hrp_data.flip.move import move
from hrp_data.logs import configure_logging
from hrp_data.cutover.phases import Phase
from hrp_data.flip import readiness
from hrp_data.flip.readiness import checklist
from hrp_data.cutover.replay import replay_outbox
from hrp_data.schema.install import upgrade
from shadow.compare import Difference, ReadType
from shadow.mismatches import COUNTS_TABLE, DETAILS_TABLE, META_TABLE, READS_TABLE, MismatchStore
from shadow.report import build_report, mismatch_summary, render_html, render_json, render_text
from tests.integration.cutover_helpers import settings_for, tune, wait_drained
from tools.cli import cli

PASSWORD = "pbkdf2:sha256:600000$TOPSECRETPASSWORDHASH"
API_KEY = "ak_live_TOPSECRETAPIKEY"
API_SECRET = "as_live_TOPSECRETAPISECRET"
CHANGED_SECRETS = ("pbkdf2:sha256:600000$OTHERSECRETHASH", "ak_live_OTHERSECRETKEY")


def _world(cutover) -> dict:
    """One user with credentials, three horses, two races with three runners and predictions each."""
    with cutover.writing() as uow:
        user = uow.users.add(username="ann", email="ann@example.com", password_hash=PASSWORD)
        credential = uow.credentials.add(user_id=user["id"], service_name="odds", api_key=API_KEY,
                                         api_secret=API_SECRET)
        horses = [uow.horses.add(horse_name=f"H{i}", age=4) for i in range(3)]
        races, predictions = [], {}
        for r, confidences in enumerate(((0.3, 0.5, 0.7), (0.2, 0.4, 0.6))):
            race = uow.races.add(race_name=f"R{r}", race_date=dt.date(2025, 3, 1), distance=1000.5,
                                 weather_conditions={"wind": "N", "temp": 5})
            races.append(race["id"])
            for position, (horse, confidence) in enumerate(zip(horses, confidences), start=1):
                uow.races.set_runner(race["id"], horse["id"], post_position=position, odds=2.5 + position)
                prediction = uow.predictions.add(race_id=race["id"], horse_id=horse["id"], user_id=user["id"],
                                                 confidence=confidence, features={"form": [1, 2], "going": "good"})
                predictions[(race["id"], horse["id"])] = prediction["id"]
        uow.commit()
    return {"user": user["id"], "credential": credential["id"], "horses": [h["id"] for h in horses],
            "races": races, "predictions": predictions}


def _start(legacy_file, postgres_url, *, applier: bool = True) -> tuple[Cutover, dict]:
    upgrade(postgres_url)
    cutover = open_cutover(settings_for(legacy_file, postgres_url))
    if applier:
        cutover.start()
    move(cutover, Phase.DUAL_WRITE)
    world = _world(cutover)
    if applier:
        wait_drained(cutover)
    move(cutover, Phase.SHADOW)
    return cutover, world


@pytest.fixture
def shadowed(legacy_file, postgres_url, monkeypatch):
    """Phase shadow over synced databases, races.updated_at ignored."""
    monkeypatch.setenv("HRP_SHADOW_IGNORE", "races.updated_at")
    cutover, world = _start(legacy_file, postgres_url)
    yield cutover, world
    cutover.close()


def _pg(cutover, *statements: str) -> None:
    with cutover.engine("postgres").begin() as connection:
        connection.exec_driver_sql("SET LOCAL hrp_cutover.maintenance = 'on'")  # a planted difference
        for statement in statements:
            connection.exec_driver_sql(statement)


def _found(report: dict) -> set[tuple]:
    return {(e["read_type"], e["table"], tuple(e["key"]), e["column"], e["kind"]) for e in report["examples"]}


def test_planted_differences_are_reported_exactly(shadowed, legacy_file, monkeypatch):
    cutover, w = shadowed
    # exact outcomes, not the candidate's bound: a starved machine must not turn a mismatch into a timeout
    monkeypatch.setattr(shadow_reads, "CANDIDATE_TIMEOUT_S", 60.0)
    cutover.shadow.lab.candidate_timeout_s = 60.0
    r1, r2 = w["races"]
    h1, h2, h3 = w["horses"]
    p11 = w["predictions"][(r1, h1)]
    with sqlite3.connect(legacy_file) as raw:  # reordered keys in the SQLite text: no difference
        raw.execute("UPDATE races SET weather_conditions = ? WHERE id = ?",
                    ('{"temp":5,"gust":{"y":1,"x":2},"wind":"N"}', r2))
    wait_drained(cutover)
    _pg(
        cutover,
        f"UPDATE predictions SET confidence = 0.35 WHERE id = {p11}",
        f"DELETE FROM race_horses WHERE race_id = {r1} AND horse_id = {h2}",
        f"UPDATE horses SET created_at = created_at + interval '1 hour' WHERE id = {h3}",
        f"""UPDATE races SET weather_conditions = '{{"wind": "N", "gust": {{"x": 2, "y": 1}}, "temp": 5}}',
            updated_at = updated_at + interval '1 day' WHERE id = {r2}""",
    )
    with capture_logs() as logs:
        with cutover.reading() as uow:
            served = [uow.races.get(r1), uow.races.get(r2), uow.races.runners(r1), uow.races.list(),
                      uow.predictions.get(p11), uow.predictions.for_race(r1), uow.horses.get(h1),
                      uow.horses.get(h3), uow.horses.list(), uow.statistics.race_statistics(),
                      uow.statistics.horse_performance(), uow.users.get(w["user"])]
        cutover.shadow.flush()  # the reader's samples are queued when it closes
    assert len(served[0]["runners"]) == 3 and served[4]["confidence"] == 0.3  # the SQLite answers
    assert served[1]["weather_conditions"] == {"temp": 5, "gust": {"y": 1, "x": 2}, "wind": "N"}
    report = build_report(cutover.sqlite)
    assert _found(report) == {
        ("races.get", "race_horses", (r1, h2), None, "missing_row"),
        ("races.runners", "race_horses", (r1, h2), None, "missing_row"),
        ("predictions.get", "predictions", (p11,), "confidence", "value_differs"),
        ("predictions.for_race", "predictions", (p11,), "confidence", "value_differs"),
        ("horses.get", "horses", (h3,), "created_at", "value_differs"),
        ("horses.list", "horses", (h3,), "created_at", "value_differs"),
        ("statistics.race_statistics", "race_statistics", (r1,), "avg_confidence", "value_differs"),
        ("statistics.race_statistics", "race_statistics", (r1,), "min_confidence", "value_differs"),
        ("statistics.horse_performance", "horse_performance", (h1,), "avg_confidence", "value_differs"),
        ("statistics.horse_performance", "horse_performance", (h1,), "max_confidence", "value_differs"),
    }, (report["totals"], cutover.shadow.lab.stats())
    totals = report["totals"]
    assert (totals["compared"], totals["mismatched"], totals["lag"], totals["errors"]) == (12, 8, 0, 0)
    assert report["by_read_type"]["races.get"]["compared"] == 2
    assert report["by_read_type"]["races.get"]["rate"] == 0.5
    assert (report["by_table"]["races"]["mismatched"], report["by_table"]["race_horses"]["mismatched"]) == (1, 1)
    shifted = next(e for e in report["examples"] if e["column"] == "created_at")
    assert dt.datetime.fromisoformat(shifted["secondary"]) - dt.datetime.fromisoformat(shifted["primary"]) == dt.timedelta(hours=1)
    assert report["ignore_rules"] == [{"table": "races", "column": "updated_at", "reason": "HRP_SHADOW_IGNORE"}]
    assert report["differences"]["race_horses"]["example_keys"] == [[r1, h2]]
    assert report["top_columns"][0]["count"] == 2
    assert report["latency_ms"]["candidate"]["p50"] is not None
    events = [e for e in logs if e["event"] == "shadow.mismatch"]
    assert len(events) == 10 and {e["log_level"] for e in events} == {"warning"}
    text, page = render_text(report), render_html(report)
    assert "races.updated_at" in text and "race_horses" in text
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "<script" not in page
    assert json.loads(render_json(report))["schema_version"] == 1


def test_a_read_right_after_a_write_is_lag_not_a_mismatch(legacy_file, postgres_url):
    cutover, w = _start(legacy_file, postgres_url, applier=False)
    try:
        replay_outbox(cutover)
        with cutover.writing() as uow:
            new = uow.horses.add(horse_name="fresh", age=2)
            uow.horses.update(w["horses"][0], age=9)
            uow.commit()
        with cutover.reading() as uow:  # PostgreSQL has neither change yet: the outbox waits
            assert uow.horses.get(new["id"])["horse_name"] == "fresh"
            assert uow.horses.get(w["horses"][0])["age"] == 9
        time.sleep(0.3)
        assert cutover.shadow.lab.stats() == {}  # both still waiting on their outbox entries
        replay_outbox(cutover)
        cutover.shadow.flush()
        summary = mismatch_summary(cutover.sqlite, 60)
        # at least the first candidate ran before the replay (lag); a second one that a single
        # worker reaches only after it finds PostgreSQL up to date (match)
        assert (summary["compared"], summary["mismatches"]) == (2, 0) and summary["lag"] >= 1
        cutover.shadow.lab.recheck_s = 0.3  # an entry that is never applied: unsettled, not a mismatch
        with cutover.writing() as uow:
            uow.horses.update(new["id"], age=3)
            uow.commit()
        with cutover.reading() as uow:
            uow.horses.get(new["id"])
        cutover.shadow.flush()
        assert cutover.shadow.lab.stats()["unsettled"] == 1
        assert mismatch_summary(cutover.sqlite, 60)["mismatches"] == 0
    finally:
        cutover.close()


def test_a_reader_s_candidates_run_after_it_closes(shadowed):
    """cutover.reading() is one serving span: PostgreSQL is asked only once the reader is closed."""
    cutover, w = shadowed
    lab = cutover.shadow.lab
    with cutover.reading() as uow:
        for race in w["races"]:
            uow.races.get(race)
        time.sleep(0.3)
        assert lab.stats() == {}
    cutover.shadow.flush()
    assert lab.stats() == {"match": len(w["races"])}


def test_a_candidate_reads_in_autocommit_without_switching_its_connection(shadowed):
    """The workers' pool is in autocommit from its connect: a repository candidate uses it as it is,
    with no isolation level set at checkout and reset at checkin (nor a BEGIN), and still matches."""
    cutover, w = shadowed
    engine = cutover.shadow.postgres
    switched, statements = [], []
    set_level = engine.dialect.set_isolation_level

    def counting(dbapi_connection, level):
        switched.append(level)
        set_level(dbapi_connection, level)

    def executed(_conn, _cursor, statement, *_args):
        statements.append(statement)

    with cutover.reading() as uow:  # the pool's connection made (and its level set at connect)
        uow.races.get(w["races"][0])
    cutover.shadow.flush()
    engine.dialect.set_isolation_level = counting
    sa.event.listen(engine, "before_cursor_execute", executed)
    try:
        with cutover.reading() as uow:
            for race in w["races"]:
                uow.races.get(race)
        cutover.shadow.flush()
    finally:
        sa.event.remove(engine, "before_cursor_execute", executed)
        engine.dialect.set_isolation_level = set_level
    assert cutover.shadow.lab.stats()["match"] == 1 + len(w["races"])
    assert switched == []
    assert statements and not any(s.lstrip().upper().startswith(("BEGIN", "SET")) for s in statements)


def test_a_candidate_stands_aside_between_its_statements(shadowed):
    """A request that starts while a candidate is under way holds it before its next step on
    PostgreSQL (the candidate engine's statement events): it answers only once the request ended."""
    cutover, w = shadowed
    lab = cutover.shadow.lab
    lab.yield_s = 5.0
    opened, seen = threading.Event(), {}

    def request():
        with lab.serving():
            opened.set()
            time.sleep(0.3)
            seen["ending"] = time.monotonic()

    def first_statement(*_args):
        if "request" not in seen:
            seen["request"] = threading.Thread(target=request)
            seen["request"].start()
            assert opened.wait(5)

    def answered(*_args):
        seen.setdefault("answered", time.monotonic())

    engine = cutover.shadow.postgres
    sa.event.listen(engine, "before_cursor_execute", first_statement)
    sa.event.listen(engine, "after_cursor_execute", answered)
    try:
        with cutover.reading() as uow:
            uow.races.get(w["races"][0])
        cutover.shadow.flush()
        seen["request"].join(5)
    finally:
        sa.event.remove(engine, "before_cursor_execute", first_statement)
        sa.event.remove(engine, "after_cursor_execute", answered)
    assert lab.stats() == {"match": 1}
    assert seen["answered"] >= seen["ending"]


def test_a_dead_postgres_never_reaches_the_caller(legacy_file, own_postgres):
    cutover, w = _start(legacy_file, own_postgres.url)
    try:
        lab = cutover.shadow.lab
        ids = w["races"] * 30

        def timed_reads() -> tuple[list[float], list]:
            times, answers = [], []
            for race_id in ids:
                started = time.perf_counter()
                with cutover.reading() as uow:
                    answers.append(uow.races.get(race_id))
                times.append(time.perf_counter() - started)
                time.sleep(0.002)
            return times, answers

        lab.enabled = False
        _, expected = timed_reads()
        lab.enabled = True
        own_postgres.freeze()  # a hung server: candidates time out on a worker
        frozen, answers = timed_reads()
        assert answers == expected
        time.sleep(2.5)  # the candidates on the workers hit their 2 s client-side deadline
        own_postgres.thaw()
        own_postgres.stop()  # a dead server: candidates fail fast
        lab.wait_idle(30)
        stopped, answers = timed_reads()
        assert answers == expected
        idle = lab.wait_idle(30)
        cutover.shadow.flush(timeout=30)
        stats = lab.stats()
        shown = f"{stats}, idle within 30 s: {idle}, server processes left: {own_postgres.processes_left()}"
        assert stats.get("timeout", 0) >= 1, shown
        assert stats.get("error", 0) >= len(ids) - 5, shown
        assert stats.get("mismatch", 0) == 0
        report = build_report(cutover.sqlite)
        assert report["totals"]["errors"] + report["totals"]["timeouts"] + report["totals"]["dropped"] \
            + report["totals"]["compared"] == 3 * len(ids) - len(ids)
        # no read waited for its candidate: a candidate on the frozen server waits its whole 2 s
        # client deadline, so a read that waited for one would take at least that long
        assert max(frozen + stopped) < 2.0, max(frozen + stopped)
    finally:
        cutover.close()


def test_no_secret_reaches_a_log_line_the_store_or_a_report(shadowed, legacy_file):
    cutover, w = shadowed
    _pg(
        cutover,
        f"UPDATE users SET password_hash = '{CHANGED_SECRETS[0]}' WHERE id = {w['user']}",
        f"UPDATE api_credentials SET api_key = '{CHANGED_SECRETS[1]}' WHERE id = {w['credential']}",
    )
    stream = io.StringIO()
    configure_logging("json", "INFO", stream=stream)
    try:
        with capture_logs() as captured:
            with cutover.reading() as uow:
                assert uow.users.get(w["user"])["password_hash"] == PASSWORD
                assert uow.users.get_by_username("ann")["password_hash"] == PASSWORD
                assert uow.credentials.get(w["credential"])["api_key"] == API_KEY
                uow.credentials.list(user_id=w["user"])
            cutover.shadow.flush()
        with cutover.reading() as uow:  # the same through the configured JSON pipeline
            uow.users.get(w["user"])
            uow.credentials.get(w["credential"])
        cutover.shadow.flush()
        _pg(cutover, f"DELETE FROM api_credentials WHERE id = {w['credential']}")  # a whole missing row
        with cutover.reading() as uow:
            uow.credentials.get(w["credential"])
        cutover.shadow.flush()
    finally:
        structlog.reset_defaults()
    report = build_report(cutover.sqlite)
    assert report["totals"]["mismatched"] == 7
    with sqlite3.connect(legacy_file) as raw:
        stored = json.dumps([raw.execute(f"SELECT * FROM {t}").fetchall()
                             for t in (DETAILS_TABLE, COUNTS_TABLE, READS_TABLE, META_TABLE)])
    published = {
        "captured events": json.dumps(captured, default=str),
        "json log lines": stream.getvalue(),
        "store": stored,
        "text report": render_text(report),
        "json report": render_json(report),
        "html report": render_html(report),
    }
    assert "shadow.mismatch" in published["json log lines"]
    assert "sha256:" in published["store"] and "sha256:" in published["json log lines"]
    for where, text in published.items():
        for secret in (PASSWORD, API_KEY, API_SECRET, *CHANGED_SECRETS):
            assert secret not in text, f"{secret[:12]}... in the {where}"


def _result(at: float, differences: int):
    from shadow.experiment import Observation, Result

    diffs = tuple(Difference("horses", (i,), "age", 1, 2, "value_differs") for i in range(differences))
    return Result(ReadType("horses.list", "horses", True), "mismatch", Observation("control", duration_s=0.001),
                  Observation("candidate", duration_s=0.002), diffs, diffs, 1, {"primary": "sqlite"}, at)


def test_the_store_is_bounded(tmp_path):
    engine = create_sqlite_engine(f"sqlite:///{tmp_path / 'store.db'}")
    store = MismatchStore(engine, max_details=20, flush_s=0).start()
    now = time.time()
    old = now - 3 * 86400
    for i in range(100):
        store.publish(_result(old if i < 10 else now, 3))
        if i in (9, 40, 70):  # the first flush also compacts
            assert store.flush()
    store.close()
    with engine.connect() as connection:
        details = connection.exec_driver_sql(f"SELECT count(*) FROM {DETAILS_TABLE}").scalar()
        counted = connection.exec_driver_sql(f"SELECT sum(count) FROM {COUNTS_TABLE}").scalar()
        minutes_old = connection.exec_driver_sql(
            f"SELECT count(*) FROM {READS_TABLE} WHERE width = 60 AND bucket < ?", (now - 2 * 86400,)).scalar()
        hours_old = connection.exec_driver_sql(
            f"SELECT sum(mismatched) FROM {READS_TABLE} WHERE width = 3600").scalar()
    assert details == 20 and counted == 300
    assert minutes_old == 0 and hours_old == 10  # old minutes folded into an hour row
    report = build_report(engine)
    assert report["totals"]["mismatched"] == 100 and len(report["examples"]) == 20
    assert build_report(engine, 3600)["totals"]["mismatched"] == 90
    engine.dispose()


@pytest.mark.parametrize("failure", ["read_only", "disk_full"])
def test_a_store_that_cannot_be_written_does_not_break_reads(shadowed, failure):
    cutover, w = shadowed
    trainer = "y" * 1900  # differences of about 4 KB each: two need a new page of the file
    with cutover.writing() as uow:
        for horse in w["horses"]:
            uow.horses.update(horse, trainer=trainer)
        uow.commit()
    wait_drained(cutover)
    store = cutover.shadow.store
    store.buffer_limit = 2

    def break_store(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        if failure == "read_only":
            cursor.execute("PRAGMA query_only = ON")
        else:  # the file may not grow by a single page: SQLITE_FULL, as on a full disk
            pages = cursor.execute("PRAGMA page_count").fetchone()[0]
            cursor.execute(f"PRAGMA max_page_count = {pages}")
        cursor.close()

    sa.event.listen(cutover.shadow.store_engine, "connect", break_store)
    cutover.shadow.store_engine.dispose()
    _pg(cutover, "UPDATE horses SET trainer = repeat('x', 1900)")
    with capture_logs() as logs:
        with cutover.reading() as uow:
            answers = [uow.horses.get(h)["trainer"] for h in w["horses"] * 2]
            uow.horses.list()
        cutover.shadow.lab.wait_idle(10)
        assert store.flush() is False
    assert answers == [trainer] * 6
    assert store.store_dropped >= 5
    (warning,) = [e for e in logs if e["event"] == "shadow.store_unavailable"]  # once, not per flush
    assert {"read_only": "readonly database", "disk_full": "database or disk is full"}[failure] in warning["error"]
    sa.event.remove(cutover.shadow.store_engine, "connect", break_store)
    cutover.shadow.store_engine.dispose()
    assert store.flush() is True
    report = build_report(cutover.sqlite)
    assert report["totals"]["store_dropped"] == store.store_dropped
    assert report["totals"]["mismatched"] == 7  # the counters were kept through the outage


def test_postgres_primary_shadows_against_sqlite(shadowed, legacy_file):
    cutover, w = shadowed
    move(cutover, Phase.POSTGRES_PRIMARY)
    with sqlite3.connect(legacy_file) as raw:  # SQLite is the secondary now: a maintenance write
        raw.execute("ATTACH ':memory:' AS hrp_cutover_layer")
        raw.execute("UPDATE horses SET jockey = 'Someone' WHERE id = ?", (w["horses"][0],))
    with cutover.reading() as uow:
        assert uow.horses.get(w["horses"][0])["jockey"] is None
    cutover.shadow.flush()
    (example,) = build_report(cutover.sqlite)["examples"]
    assert (example["column"], example["primary"], example["secondary"]) == ("jockey", None, "Someone")
    assert (example["primary_db"], example["secondary_db"]) == ("postgres", "sqlite")


def test_the_readiness_check_reads_the_mismatch_rate(shadowed, monkeypatch):
    cutover, w = shadowed

    first = next(c for c in checklist(cutover, Phase.POSTGRES_PRIMARY) if c.name == "shadow")
    assert not first.ok and "too few shadow reads" in first.detail
    shadow_check = functools.partial(readiness._shadow_check, cutover)
    tune(cutover, shadow_min_reads=10)
    with cutover.reading() as uow:
        for _ in range(5):
            for horse in w["horses"]:
                uow.horses.get(horse)
    check = shadow_check()
    assert check.ok, check.detail
    assert "0 mismatched of 15 compared" in check.detail
    _pg(cutover, f"UPDATE horses SET age = 12 WHERE id = {w['horses'][0]}")
    with cutover.reading() as uow:
        uow.horses.get(w["horses"][0])
    check = shadow_check()
    assert not check.ok and "1 mismatched of 16" in check.detail
    tune(cutover, shadow_max_rate=0.1)
    assert shadow_check().ok


def test_the_report_command(shadowed, legacy_file, tmp_path):
    cutover, w = shadowed
    _pg(cutover, f"UPDATE horses SET age = 12 WHERE id = {w['horses'][0]}")
    with cutover.reading() as uow:
        uow.horses.get(w["horses"][0])
        uow.horses.get(w["horses"][1])
    cutover.shadow.flush()
    runner = CliRunner()
    base = ["--sqlite", str(legacy_file)]
    result = runner.invoke(cli, base + ["report", "--format", "json", "--since", "15m"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["window"]["since_seconds"] == 900
    assert (payload["totals"]["compared"], payload["totals"]["mismatched"]) == (2, 1)
    page = tmp_path / "shadow.html"
    result = runner.invoke(cli, base + ["report", "--format", "html", "--out", str(page)])
    assert result.exit_code == 0 and "<svg" in page.read_text()
    result = runner.invoke(cli, base + ["report"])
    assert result.exit_code == 0 and "horses.get" in result.output and "ignore rules: races.updated_at" in result.output
    result = runner.invoke(cli, base + ["report", "--since", "soon"])
    assert result.exit_code == 2 and "--since" in result.output


def test_the_quarantine_report(shadowed, legacy_file, postgres_url):
    import importlib

    try:
        backfill = importlib.import_module("hrp_data.backfill.run")
    except ImportError:
        backfill = None
    result = CliRunner().invoke(
        cli, ["--sqlite", str(legacy_file), "--postgres", postgres_url, "report", "--quarantine", "--format", "json"]
    )
    if getattr(backfill, "quarantine_rows", None) is None:
        assert result.exit_code == 1 and "not available" in result.output
    else:
        assert result.exit_code == 0, result.output
        assert isinstance(json.loads(result.stdout)["rows"], list)


def test_shadow_workers_never_wait_for_the_app_s_connections(shadowed):
    """With every connection of the app's PostgreSQL pool taken (a burst of requests), candidates
    still run: the shadow workers read through a pool of their own."""
    cutover, w = shadowed
    pool = cutover.postgres.pool
    held = [cutover.postgres.connect() for _ in range(pool.size() + cutover.settings.postgres_pool)]
    try:
        with cutover.reading() as uow:
            for race in w["races"]:
                uow.races.get(race)
        cutover.shadow.flush()
        assert cutover.shadow.lab.stats() == {"match": len(w["races"])}
    finally:
        for connection in held:
            connection.close()


def test_candidates_recover_after_postgres_restarts(legacy_file, own_postgres):
    """The shadow pool does not ping on checkout: a restart costs at most one candidate error per
    pooled connection, then candidates match again."""
    cutover, w = _start(legacy_file, own_postgres.url)
    try:
        lab = cutover.shadow.lab

        def read_all() -> None:
            for race_id in w["races"]:
                with cutover.reading() as uow:
                    uow.races.get(race_id)
            cutover.shadow.flush(timeout=30)

        read_all()
        assert lab.stats() == {"match": len(w["races"])}
        own_postgres.stop()
        own_postgres.start()
        for _ in range(3):
            read_all()
        stats = lab.stats()
        assert stats.get("error", 0) <= cutover.shadow.postgres.pool.size()
        assert stats["match"] >= len(w["races"]) * 3
        assert stats.get("mismatch", 0) == 0
    finally:
        cutover.close()


def test_reads_racing_a_flip_do_not_count_against_the_rollback(shadowed, legacy_file, monkeypatch):
    """Right after a flip, a process whose phase cache is not yet refreshed still reads the old primary:
    its mismatches are left out of the rollback's shadow check; a mismatch of a read of the new primary
    is not."""
    cutover, w = shadowed
    tune(cutover, shadow_min_reads=0)
    before = cutover.phase_row()
    move(cutover, Phase.POSTGRES_PRIMARY)
    with sqlite3.connect(legacy_file) as raw:  # SQLite differs: what a read racing the flip would see
        raw.execute("ATTACH ':memory:' AS hrp_cutover_layer")
        raw.execute("UPDATE horses SET age = 13 WHERE id = ?", (w["horses"][0],))
        raw.execute("UPDATE horses SET age = 14 WHERE id = ?", (w["horses"][1],))
    after = cutover.phase_row()
    for reader in (cutover, cutover.shadow):  # a process that has not seen the flip
        monkeypatch.setattr(reader, "phase_row", lambda fresh=False: before)
    with cutover.reading() as uow:
        uow.horses.get(w["horses"][0])
    cutover.shadow.flush()
    assert mismatch_summary(cutover.sqlite, 3600)["mismatches"] == 1
    check = readiness._shadow_check(cutover)
    assert check.ok and "0 mismatched of 0 compared" in check.detail, check.detail

    for reader in (cutover, cutover.shadow):  # a read of the new primary counts
        monkeypatch.setattr(reader, "phase_row", lambda fresh=False: after)
    with cutover.reading() as uow:
        uow.horses.get(w["horses"][1])
    cutover.shadow.flush()
    check = readiness._shadow_check(cutover)
    assert not check.ok and "1 mismatched of 1 compared" in check.detail, check.detail


@pytest.mark.parametrize("moves", [(Phase.POSTGRES_PRIMARY,), (Phase.POSTGRES_PRIMARY, Phase.POSTGRES_ONLY)],
                         ids=["flip", "postgres_only"])
def test_a_mismatch_of_a_process_that_missed_a_move_is_dropped_at_the_source(shadowed, legacy_file, monkeypatch, moves):
    """A process keeps the phase before a move for up to its phase cache time: its samples compare
    the old pair (after `postgres_only`, PostgreSQL with a file nothing writes any more). Asked fresh
    when a sample differs, the phase says so: the sample is dropped, not stored as a mismatch."""
    cutover, w = shadowed
    for target in moves[:-1]:
        move(cutover, target)
    before = cutover.phase_row()
    move(cutover, moves[-1])
    after = cutover.phase_row(fresh=True)
    assert (before.reads_from, before.secondary) != (after.reads_from, after.secondary) or not after.shadow_reads
    with sqlite3.connect(legacy_file) as raw:  # what the stale process's samples meet on the other side
        raw.execute("ATTACH ':memory:' AS hrp_cutover_layer")
        raw.execute("UPDATE horses SET age = 13 WHERE id = ?", (w["horses"][0],))
    with cutover.engine("postgres").begin() as connection:
        connection.exec_driver_sql("SET LOCAL hrp_cutover.maintenance = 'on'")
        connection.exec_driver_sql(f"UPDATE horses SET age = 15 WHERE id = {w['horses'][0]}")
    dropped = cutover.shadow.lab.stats().get("dropped", 0)
    for reader in (cutover, cutover.shadow):  # has not seen the move; a fresh read of the phase has
        monkeypatch.setattr(reader, "phase_row", lambda fresh=False: after if fresh else before)
    with cutover.reading() as uow:
        uow.horses.get(w["horses"][0])
    cutover.shadow.flush()
    report = build_report(cutover.sqlite)
    assert report["totals"]["mismatched"] == 0 and report["examples"] == []
    assert cutover.shadow.lab.stats()["dropped"] == dropped + 1
