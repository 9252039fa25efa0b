"""The cutover's numbers in the Prometheus text format (/metrics and `hrp-cutover metrics`).

Every value is read from the stores at scrape time (the phase record, the
outboxes, the workers' heartbeats, the shadow-read counts and the verifies'
progress and results in the SQLite file; the backfill's checkpoints in
PostgreSQL), never kept in process
memory: each process of a pre-forking server answers the same numbers, so
no multi-process directory is needed, and a one-shot command prints what a
server would. A part that cannot be read (PostgreSQL down) leaves its series
out and sets hrp_cutover_scrape_failed{part}; hrp_cutover_postgres_up says
whether PostgreSQL answered. docs/metrics.md lists the series and the alert
rules.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from hrp_data.cutover import heartbeat
from hrp_data.cutover import outbox
from hrp_data.backfill.state import backfill_status
from hrp_data.cutover.dual_write import Cutover
from hrp_data.cutover.phases import ORDER, POSTGRES, SQLITE
from hrp_data.cutover.status import guard_refusals
from hrp_data.verify import progress as verify_progress
from hrp_data.verify.run import last_result
from shadow.report import build_report

PREFIX = "hrp_cutover"
DIRECTIONS = {SQLITE: "sqlite_to_postgres", POSTGRES: "postgres_to_sqlite"}
"""The outbox of each database carries that database's writes to the other one."""


class CutoverCollector:
    """A prometheus_client collector over one process's Cutover."""

    def __init__(self, cutover: Cutover):
        self.cutover = cutover

    def collect(self) -> Iterator[Metric]:
        failed = GaugeMetricFamily(f"{PREFIX}_scrape_failed", "1 for a part this scrape could not read.",
                                   labels=["part"])
        parts: list[tuple[str, Callable[[], list[Metric]]]] = [
            ("phase", self._phase), ("outbox", self._outbox), ("applier", self._applier),
            ("shadow", self._shadow), ("moves", self._moves), ("backfill", self._backfill),
            ("verify", self._verify), ("guard", self._guard), ("guard_refused", self._guard_refused),
        ]
        for name, part in parts:
            try:
                metrics = part()
            except Exception:  # noqa: BLE001 - one part failing must not hide the others
                failed.add_metric([name], 1.0)
                continue
            failed.add_metric([name], 0.0)
            yield from metrics
        yield failed

    def _phase(self) -> list[Metric]:
        record = self.cutover.phase(fresh=True)
        phase = GaugeMetricFamily(f"{PREFIX}_phase", "1 for the current phase, 0 for the others.", labels=["phase"])
        for name in ORDER:
            phase.add_metric([name.value], 1.0 if name is record.phase else 0.0)
        version = GaugeMetricFamily(f"{PREFIX}_phase_version", "Version of the phase record (+1 per move).",
                                    value=record.version)
        return [phase, version]

    def _outbox(self) -> list[Metric]:
        pending = GaugeMetricFamily(f"{PREFIX}_outbox_pending", "Changes waiting to reach the other database.",
                                    labels=["direction"])
        failing = GaugeMetricFamily(f"{PREFIX}_outbox_failing", "Waiting changes that failed at least once.",
                                    labels=["direction"])
        oldest = GaugeMetricFamily(f"{PREFIX}_outbox_oldest_age_seconds",
                                   "Age of the oldest waiting change (0 when none waits).", labels=["direction"])
        up = GaugeMetricFamily(f"{PREFIX}_postgres_up", "1 if PostgreSQL answered this scrape.")
        engines = [(SQLITE, self.cutover.sqlite)]
        if self.cutover.postgres is not None:
            engines.append((POSTGRES, self.cutover.postgres))
        for name, engine in engines:
            try:
                depth = outbox.depth(engine)
            except sa.exc.SQLAlchemyError:
                if name == POSTGRES:
                    up.add_metric([], 0.0)
                    continue
                raise
            if name == POSTGRES:
                up.add_metric([], 1.0)
            direction = DIRECTIONS[name]
            pending.add_metric([direction], depth.pending)
            failing.add_metric([direction], depth.failing)
            oldest.add_metric([direction], depth.oldest_age_s or 0.0)
        return [pending, failing, oldest] + ([up] if self.cutover.postgres is not None else [])

    def _applier(self) -> list[Metric]:
        state = GaugeMetricFamily(f"{PREFIX}_applier_breaker_open",
                                  "1 while the worker's circuit breaker is open (it does not apply).",
                                  labels=["worker", "state"])
        applied = CounterMetricFamily(f"{PREFIX}_applier_applied", "Changes the worker applied since it started.",
                                      labels=["worker"])
        failed = CounterMetricFamily(f"{PREFIX}_applier_failed", "Changes that failed to apply since it started.",
                                     labels=["worker"])
        lag = GaugeMetricFamily(f"{PREFIX}_applier_lag_p99_seconds",
                                "99th percentile of commit-to-apply time of recent changes.", labels=["worker"])
        for worker in heartbeat.workers(self.cutover.sqlite):
            name = str(worker["worker"])
            state.add_metric([name, str(worker["breaker"])], 1.0 if worker["breaker"] == "open" else 0.0)
            applied.add_metric([name], worker["applied"] or 0)
            failed.add_metric([name], worker["failed"] or 0)
            if worker["lag_p99_s"] is not None:
                lag.add_metric([name], worker["lag_p99_s"])
        return [state, applied, failed, lag]

    def _shadow(self) -> list[Metric]:
        labels = ["table", "read_type"]
        families = {
            "compared": CounterMetricFamily(f"{PREFIX}_shadow_compared", "Shadow reads compared.", labels=labels),
            "mismatched": CounterMetricFamily(f"{PREFIX}_shadow_mismatched",
                                              "Shadow reads whose candidate differed (after rechecks).", labels=labels),
            "errors": CounterMetricFamily(f"{PREFIX}_shadow_candidate_errors",
                                          "Shadow reads whose candidate raised.", labels=labels),
            "timeouts": CounterMetricFamily(f"{PREFIX}_shadow_candidate_timeouts",
                                            "Shadow reads whose candidate did not answer in time.", labels=labels),
        }
        report = build_report(self.cutover.sqlite)
        for read_type, counts in report["by_read_type"].items():
            for key, family in families.items():
                family.add_metric([counts["table"], read_type], counts[key])
        return list(families.values())

    def _moves(self) -> list[Metric]:
        hold = GaugeMetricFamily(f"{PREFIX}_last_move_hold_seconds",
                                 "How long the last move held writes.", labels=["from_phase", "to_phase"])
        at = GaugeMetricFamily(f"{PREFIX}_last_move_timestamp_seconds", "When the last move committed.",
                               labels=["from_phase", "to_phase"])
        history = [change for change in self.cutover.phases.history(1) if change["from_phase"]]
        if history:  # the record's first row is no move
            last = history[0]
            labels = [str(last["from_phase"]), str(last["to_phase"])]
            hold.add_metric(labels, (last["hold_ms"] or 0.0) / 1000.0)
            when = dt.datetime.fromisoformat(str(last["at"]))
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.timezone.utc)
            at.add_metric(labels, when.timestamp())
        return [hold, at]

    def _guard(self) -> list[Metric]:
        on = GaugeMetricFamily(f"{PREFIX}_guard_on", "1 for the database that refuses writes from outside the layer.",
                               labels=["database"])
        guarded = self.cutover.phase_row(fresh=True).guarded
        for name in (SQLITE, POSTGRES):
            on.add_metric([name], 1.0 if guarded == name else 0.0)
        return [on]

    def _guard_refused(self) -> list[Metric]:
        """PostgreSQL's count of refused writes (its own part: it needs PostgreSQL). SQLite's refusals
        have no series: a trigger's counter write is undone with the write it refuses (status.SQLITE_UNCOUNTED)."""
        refusals = guard_refusals(self.cutover)
        if refusals is None:
            return []
        refused = CounterMetricFamily(f"{PREFIX}_guard_refused", "Writes PostgreSQL's guard refused.",
                                      labels=["database"])
        refused.add_metric([POSTGRES], refusals)
        return [refused]

    def _backfill(self) -> list[Metric]:
        if self.cutover.postgres is None:
            return []
        status = backfill_status(self.cutover.postgres)
        complete = GaugeMetricFamily(f"{PREFIX}_backfill_complete", "1 once every table is copied.",
                                     value=1.0 if status["complete"] else 0.0)
        read = CounterMetricFamily(f"{PREFIX}_backfill_rows_read", "Legacy rows the backfill read.", labels=["table"])
        copied = CounterMetricFamily(f"{PREFIX}_backfill_rows_copied", "Rows the backfill copied.", labels=["table"])
        quarantined = GaugeMetricFamily(f"{PREFIX}_backfill_rows_quarantined", "Rows in quarantine now.",
                                        labels=["table"])
        running = GaugeMetricFamily(f"{PREFIX}_backfill_running", "1 while a backfill runs (holds its run lock).",
                                    value=1.0 if status["running"] else 0.0)
        expected = GaugeMetricFamily(f"{PREFIX}_backfill_rows_expected",
                                     "Rows the backfill expects to read in all (read so far + left at its last count).",
                                     labels=["table"])
        left = GaugeMetricFamily(f"{PREFIX}_backfill_rows_left", "Rows the backfill has still to read.",
                                 labels=["table"])
        for table, row in status["tables"].items():
            read.add_metric([table], row["read"])
            copied.add_metric([table], row["copied"])
            quarantined.add_metric([table], row["quarantined"])
            if row["total"] is not None:
                expected.add_metric([table], row["total"])
                left.add_metric([table], row["left"])
        families = [complete, running, read, copied, quarantined, expected, left]
        if status["eta_s"] is not None:  # absent while unknown: no run, or no rate measured yet
            families.append(GaugeMetricFamily(
                f"{PREFIX}_backfill_eta_seconds",
                "Seconds of row copying left at the rates measured so far (0 once complete).",
                value=status["eta_s"]))
        return families

    def _verify(self) -> list[Metric]:
        """The newest verify's progress (running or not) and the last full verify's verdict."""
        running = GaugeMetricFamily(f"{PREFIX}_verify_running", "1 while a verify runs.")
        families: list[Metric] = [running]
        progress = verify_progress.latest(self.cutover.sqlite)
        running.add_metric([], 1.0 if progress is not None and progress["running"] else 0.0)
        if progress is not None:
            families += [
                GaugeMetricFamily(f"{PREFIX}_verify_progress_ratio",
                                  "Share of the running (or last) verify done, 0 to 1 (rows compared over rows).",
                                  value=progress["ratio"]),
                GaugeMetricFamily(f"{PREFIX}_verify_tables_checked", "Tables the running (or last) verify compared.",
                                  value=progress["tables_done"]),
                GaugeMetricFamily(f"{PREFIX}_verify_tables", "Tables the running (or last) verify compares.",
                                  value=progress["tables_total"]),
                GaugeMetricFamily(f"{PREFIX}_verify_started_timestamp_seconds",
                                  "When the running (or last) verify started.", value=progress["started_at"]),
            ]
        last = last_result(self.cutover.sqlite)
        if last is not None:
            families += [
                GaugeMetricFamily(f"{PREFIX}_verify_last_equal",
                                  "1 if the last full verify found both databases equal, else 0.",
                                  value=1.0 if last["equal"] else 0.0),
                GaugeMetricFamily(f"{PREFIX}_verify_last_finished_timestamp_seconds",
                                  "When the last full verify finished.", value=last["finished_at"]),
            ]
        return families


def registry_for(cutover: Cutover) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CutoverCollector(cutover))
    return registry


def exposition(cutover: Cutover) -> bytes:
    """The metrics, once, in the Prometheus text format."""
    return generate_latest(registry_for(cutover))
