"""shadow.report from in-memory store rows (report_from_rows), its renderings, durations, and the
latency histograms of shadow.mismatches."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from shadow.mismatches import COUNT_COLUMNS, bin_upper_ms, histogram_quantile, latency_bin
from shadow.report import EXAMPLES, parse_duration, render_html, render_text, report_from_rows

NOW = 1_749_999_600.0  # a whole hour: 2025-06-15 15:00 UTC


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="seconds")


def read_row(minutes_ago: int, read_type: str, table: str, control=None, candidate=None, **counts) -> tuple:
    """A per-minute read counter row as build_report selects it."""
    bucket = NOW - 60 * minutes_ago
    values = [counts.get(column, 0) for column in COUNT_COLUMNS]
    return (bucket, 60, read_type, table, *values, json.dumps(control or {}), json.dumps(candidate or {}))


def detail_row(at: float, table: str, key: list, column: str | None = "age", kind: str = "value_differs") -> tuple:
    return (at, f"{table}.get", table, json.dumps(key), column, kind, json.dumps(1), json.dumps(2),
            "sqlite", "postgres", 0)


def report(reads=(), counts=(), details=(), failing=(), meta=None, since_seconds=None) -> dict:
    return report_from_rows(list(reads), list(counts), list(details), list(failing), meta or {}, now=NOW,
                            since_seconds=since_seconds)


READS = [
    read_row(3, "races.get", "races", matched=8, mismatched=1, lag=1, control={"3": 9, "10": 1}),
    read_row(2, "races.get", "races", matched=10),
    read_row(1, "horses.list", "horses", matched=5, errors=2, dropped=3, timeouts=1),
]


class TestCounts:
    def test_lag_is_compared_and_errors_timeouts_drops_are_not(self):
        totals = report(READS)["totals"]
        assert totals["compared"] == 25 and totals["matched"] == 23
        assert totals["mismatched"] == 1 and totals["rate"] == 0.04
        assert (totals["lag"], totals["errors"], totals["timeouts"], totals["dropped"]) == (1, 2, 1, 3)

    def test_per_read_type_and_per_table(self):
        built = report(READS)
        assert list(built["by_read_type"]) == ["horses.list", "races.get"]
        races = built["by_read_type"]["races.get"]
        assert (races["table"], races["compared"], races["rate"]) == ("races", 20, 0.05)
        assert built["by_table"]["horses"]["compared"] == 5 and built["by_table"]["horses"]["rate"] == 0.0

    def test_latency_quantiles_are_the_upper_bounds_of_their_bins(self):
        latency = report(READS)["latency_ms"]
        assert latency["control"] == {"p50": round(bin_upper_ms(3), 3), "p95": round(bin_upper_ms(10), 3)}
        assert latency["candidate"] == {"p50": None, "p95": None}

    def test_nothing_compared_has_no_rate(self):
        built = report()
        assert built["totals"]["compared"] == 0 and built["totals"]["rate"] is None
        assert built["timeline"] == [] and built["by_read_type"] == {}
        only_errors = report([read_row(1, "races.get", "races", errors=4)])
        assert only_errors["totals"]["rate"] is None and only_errors["totals"]["errors"] == 4

    def test_the_window_and_meta(self):
        built = report(READS, meta={"ignore_rules": json.dumps([{"table": "races", "column": "updated_at"}]),
                                    "store_dropped": "7"}, since_seconds=3600)
        assert built["window"] == {"since_seconds": 3600, "from": "2025-06-15T14:00:00+00:00",
                                   "to": "2025-06-15T15:00:00+00:00"}
        assert built["ignore_rules"] == [{"table": "races", "column": "updated_at"}]
        assert built["totals"]["store_dropped"] == 7

    def test_the_timeline_sums_each_step(self):
        timeline = report(READS, since_seconds=3600)["timeline"]
        assert [p["width_s"] for p in timeline] == [60, 60, 60]
        assert [(p["compared"], p["mismatched"]) for p in timeline] == [(10, 1), (10, 0), (5, 0)]
        wide = report(READS, since_seconds=7 * 86400)["timeline"]  # a week: 4-hour steps, no more than 120
        assert len(wide) == 1 and wide[0]["width_s"] == 4 * 3600 and wide[0]["compared"] == 25


class TestDifferences:
    COUNTS = [
        ("races", "track_name", "value_differs", 3, NOW - 500, NOW - 100),
        ("races", "", "missing", 1, NOW - 900, NOW - 800),
        ("races", "", "error", 2, NOW - 50, NOW - 40),
        ("horses", "age", "value_differs", 5, NOW - 300, NOW - 200),
    ]

    def test_per_table_kinds_and_the_first_and_last_seen(self):
        races = report(counts=self.COUNTS)["differences"]["races"]
        assert races["count"] == 6 and races["kinds"] == {"value_differs": 3, "missing": 1, "error": 2}
        assert (races["first_seen"], races["last_seen"]) == (iso(NOW - 900), iso(NOW - 40))
        assert [c["column"] for c in races["columns"]] == ["track_name", None, None]

    def test_top_columns_by_count_without_errors_and_timeouts(self):
        top = report(counts=self.COUNTS)["top_columns"]
        assert [(c["table"], c["column"], c["kind"], c["count"]) for c in top] == [
            ("horses", "age", "value_differs", 5),
            ("races", "track_name", "value_differs", 3),
            ("races", None, "missing", 1),
        ]

    def test_examples_are_the_newest_details_and_keys_are_kept_once_per_table(self):
        details = [detail_row(NOW - i, "horses", [i % 7]) for i in range(EXAMPLES + 5)]
        built = report(counts=self.COUNTS, details=details)
        assert len(built["examples"]) == EXAMPLES and built["examples"][0]["key"] == [0]
        assert built["examples"][0]["primary"] == 1 and built["examples"][0]["secondary"] == 2
        assert built["differences"]["horses"]["example_keys"] == [[0], [1], [2], [3], [4]]
        assert built["differences"]["races"]["example_keys"] == []


class TestRendering:
    def test_text_shows_the_rate_and_each_read_type(self):
        text = render_text(report(READS, counts=TestDifferences.COUNTS))
        assert "compared 25  mismatched 1  rate 4.000%" in text
        assert any(line.startswith("races.get") and " 20 " in line for line in text.splitlines())
        assert "  horses.age value_differs: 5" in text

    def test_html_escapes_what_the_store_holds(self):
        hostile = "<script>alert(1)</script>"
        built = report([read_row(1, hostile, hostile, matched=1)], counts=[(hostile, hostile, "value_differs", 1,
                                                                            NOW - 10, NOW - 5)],
                       details=[detail_row(NOW - 5, hostile, [hostile], column=hostile)])
        page = render_html(built)
        assert "<script>" not in page and "&lt;script&gt;" in page
        assert page.startswith("<!DOCTYPE html>") and "no compared reads" not in page


class TestDurations:
    @pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("15m", 900), ("2h", 7200), ("7d", 604800),
                                                  ("1w", 604800), (" 1.5H ", 5400), ("45", 45), (90, 90)])
    def test_units(self, text, seconds):
        assert parse_duration(text) == seconds

    @pytest.mark.parametrize("text", ["0", "-5m", "soon", "5y", float("inf"), 0])
    def test_what_is_not_a_positive_duration_is_refused(self, text):
        with pytest.raises(ValueError):
            parse_duration(text)


class TestLatencyHistogram:
    @pytest.mark.parametrize("seconds", [0.00002, 0.0007, 0.013, 0.25, 4.0])
    def test_a_duration_falls_in_the_first_bin_that_holds_it(self, seconds):
        index = latency_bin(seconds)
        assert bin_upper_ms(index) >= seconds * 1000 * (1 - 1e-9) > bin_upper_ms(index - 1)

    def test_tiny_durations_go_to_bin_zero(self):
        assert latency_bin(0.0) == 0 and latency_bin(0.000005) == 0

    def test_quantiles(self):
        histogram = {"1": 50, "5": 45, "9": 5}
        assert histogram_quantile({}, 0.5) is None
        assert histogram_quantile(histogram, 0.5) == round(bin_upper_ms(1), 3)
        assert histogram_quantile(histogram, 0.95) == round(bin_upper_ms(5), 3)
        assert histogram_quantile(histogram, 0.99) == round(bin_upper_ms(9), 3)
