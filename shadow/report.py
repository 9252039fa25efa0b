"""Shadow-read reports from the mismatch store: text, JSON (stable, versioned) and one HTML page.

`build_report(engine, since_seconds)` reads the store tables in the SQLite
file (shadow.mismatches) and returns the JSON document that
`hrp-cutover report --format json` prints; the dashboard and the readiness
check read it, so its shape only grows (new keys), never changes
(`schema_version` says which). `mismatch_summary` is the small part the flip
readiness check needs. Everything shown is already redacted by the time it is
stored.

Windows: read counters are kept per minute (per hour after two days), so a
window is exact to the minute; difference counters (top columns, first/last
seen) are kept per hour, so a window shorter than an hour counts the whole
hours it overlaps.
"""

from __future__ import annotations

import collections
import datetime as dt
import html
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from shadow.mismatches import (
    CANDIDATE_ERRORS_TABLE,
    COUNT_COLUMNS,
    COUNTS_TABLE,
    DETAILS_TABLE,
    HOUR,
    META_TABLE,
    READS_TABLE,
    _merge_histogram,
    histogram_quantile,
)

SCHEMA_VERSION = 1
EXAMPLES = 20
EXAMPLE_KEYS = 5
TOP_COLUMNS = 10
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", re.IGNORECASE)
_STEPS = (60, 300, 900, 3600, 4 * 3600, 86400, 7 * 86400)
OUTCOME_KINDS = ("error", "timeout")
_HIST = 4 + len(COUNT_COLUMNS)
"""Where a read counter row's histograms start (after bucket, width, read type, table, counts)."""


def parse_duration(text: str | float | int) -> float:
    """'15m', '2h', '7d', '30s', '1w' or a number of seconds, as seconds."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        match = _DURATION.fullmatch(str(text))
        if not match:
            raise ValueError(f"{text!r} is not a duration; use e.g. 30s, 15m, 2h, 7d")
        seconds = float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]
    if seconds <= 0 or not math.isfinite(seconds):
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="seconds")


def _rate(mismatched: int, compared: int) -> float | None:
    return None if compared == 0 else round(mismatched / compared, 6)


def _has_store(connection: sa.Connection) -> bool:
    return sa.inspect(connection).has_table(READS_TABLE)


def _counts_block(counts: Mapping[str, int]) -> dict[str, Any]:
    compared = counts.get("matched", 0) + counts.get("mismatched", 0) + counts.get("lag", 0)
    return {
        "compared": compared,
        "matched": counts.get("matched", 0),
        "mismatched": counts.get("mismatched", 0),
        "rate": _rate(counts.get("mismatched", 0), compared),
        "lag": counts.get("lag", 0),
        "unsettled": counts.get("unsettled", 0),
        "errors": counts.get("errors", 0),
        "timeouts": counts.get("timeouts", 0),
        "dropped": counts.get("dropped", 0),
        "candidate_errors": counts.get("candidate_errors", 0),
    }


def _latency(control: Mapping, candidate: Mapping) -> dict[str, dict[str, float | None]]:
    return {
        side: {"p50": histogram_quantile(hist, 0.50), "p95": histogram_quantile(hist, 0.95)}
        for side, hist in (("control", control), ("candidate", candidate))
    }


def _read_rows(connection: sa.Connection, start: float | None) -> list[sa.Row]:
    where, params = "", ()
    if start is not None:
        where, params = " WHERE bucket + width > ?", (start,)
    present = {row[1] for row in connection.exec_driver_sql(f"PRAGMA table_info({READS_TABLE})")}
    counts = ", ".join(c if c in present else f"0 AS {c}" for c in COUNT_COLUMNS)  # a store of an earlier version
    return connection.exec_driver_sql(
        f"SELECT bucket, width, read_type, table_name, {counts}, control_ms, candidate_ms"
        f" FROM {READS_TABLE}{where} ORDER BY bucket",
        params,
    ).all()


def _candidate_error_rows(connection: sa.Connection, start: float | None) -> list[dict[str, Any]]:
    if not sa.inspect(connection).has_table(CANDIDATE_ERRORS_TABLE):
        return []
    where, params = "", ()
    if start is not None:
        where, params = " WHERE last_at >= ?", (start,)
    rows = connection.exec_driver_sql(
        f"SELECT read_type, error, table_name, statement, count, first_at, last_at, primary_db, secondary_db"
        f" FROM {CANDIDATE_ERRORS_TABLE}{where} ORDER BY count DESC, read_type",
        params,
    ).all()
    return [
        {"read_type": row[0], "error_class": row[1].partition(":")[0].split(" ")[0], "error": row[1],
         "table": row[2], "fingerprint": row[0].rpartition("#")[2] if "#" in row[0] else None,
         "statement": row[3], "count": row[4], "first_seen": _iso(row[5]), "last_seen": _iso(row[6]),
         "primary_db": row[7], "secondary_db": row[8]}
        for row in rows
    ]


def candidate_errors(sqlite_engine: sa.Engine, since_seconds: float | None = None) -> list[dict[str, Any]]:
    """The statements the secondary did not run as written (outcome candidate_error), most frequent first."""
    start = None if since_seconds is None else time.time() - since_seconds
    with sqlite_engine.connect() as connection:
        rows = _candidate_error_rows(connection, start) if _has_store(connection) else []
        connection.rollback()
    return rows


def mismatch_summary(
    sqlite_engine: sa.Engine,
    since_seconds: float,
    *,
    raced: Callable[[float, str | None], bool] | None = None,
) -> dict[str, Any]:
    """Compared reads, mismatched reads and their rate over the last `since_seconds` (for readiness).

    `raced(at, primary_db)` says whether a mismatched read made at `at` with `primary_db` as its
    control raced a phase change (its process still read the old primary): such reads compare
    two databases in the middle of a move, not the data, and are left out of both counts
    (`raced` in the result). They are found from the mismatch details, which name each read's
    control; a read whose details were not kept stays counted.
    """
    start = time.time() - since_seconds
    totals: collections.Counter = collections.Counter()
    left_out = 0
    with sqlite_engine.connect() as connection:
        if _has_store(connection):
            for row in _read_rows(connection, start):
                totals.update(dict(zip(COUNT_COLUMNS, row[4:_HIST])))
            if raced is not None:
                reads = connection.exec_driver_sql(
                    f"SELECT DISTINCT at, read_type, primary_db FROM {DETAILS_TABLE} WHERE at >= ?", (start,)
                ).all()
                left_out = min(totals["mismatched"], sum(1 for at, _, primary in reads if raced(at, primary)))
        connection.rollback()
    totals["mismatched"] -= left_out
    block = _counts_block(totals)
    return {"since_seconds": since_seconds, "mismatches": block["mismatched"], "raced": left_out, **block}


def build_report(
    sqlite_engine: sa.Engine, since_seconds: float | None = None, *, now: float | None = None
) -> dict[str, Any]:
    """The whole report as the stable JSON document (docs/reference.md lists its keys)."""
    now = time.time() if now is None else now
    start = None if since_seconds is None else now - since_seconds
    with sqlite_engine.connect() as connection:
        if not _has_store(connection):
            connection.rollback()
            return _empty(now, since_seconds, start)
        reads = _read_rows(connection, start)
        counts = _difference_rows(connection, start)
        details = _detail_rows(connection, start)
        failing = _candidate_error_rows(connection, start)
        meta = dict(connection.exec_driver_sql(f"SELECT name, value FROM {META_TABLE}").all())
        connection.rollback()
    return report_from_rows(reads, counts, details, failing, meta, now=now, since_seconds=since_seconds)


def report_from_rows(
    reads: Sequence[Sequence[Any]],
    counts: Sequence[Sequence[Any]],
    details: Sequence[Sequence[Any]],
    failing: list[dict[str, Any]],
    meta: Mapping[str, str],
    *,
    now: float,
    since_seconds: float | None = None,
) -> dict[str, Any]:
    """The report from the store's rows as build_report selects them: read counters (oldest first),
    difference counters, details (newest first), candidate errors and the meta values."""
    start = None if since_seconds is None else now - since_seconds
    report = _empty(now, since_seconds, start)
    _fill_reads(report, reads)
    _fill_differences(report, counts, details)
    report["examples"] = [_example(row) for row in details[:EXAMPLES]]
    report["candidate_errors"] = failing
    report["timeline"] = _timeline(reads, start, now)
    report["ignore_rules"] = json.loads(meta.get("ignore_rules", "[]"))
    report["totals"]["store_dropped"] = int(json.loads(meta.get("store_dropped", "0")))
    return report


def _empty(now: float, since_seconds: float | None, start: float | None) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": _iso(now),
        "window": {"since_seconds": since_seconds, "from": _iso(start), "to": _iso(now)},
        "totals": {**_counts_block({}), "store_dropped": 0},
        "latency_ms": _latency({}, {}),
        "by_read_type": {},
        "by_table": {},
        "differences": {},
        "top_columns": [],
        "examples": [],
        "candidate_errors": [],
        "timeline": [],
        "ignore_rules": [],
    }


def _fill_reads(report: dict, reads: list[sa.Row]) -> None:
    totals: collections.Counter = collections.Counter()
    by_type: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    by_table: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    tables: dict[str, str] = {}
    hist: dict[str, dict[str, dict]] = collections.defaultdict(lambda: {"control": {}, "candidate": {}})
    for row in reads:
        counts = dict(zip(COUNT_COLUMNS, row[4:_HIST]))
        totals.update(counts)
        by_type[row[2]].update(counts)
        by_table[row[3]].update(counts)
        tables[row[2]] = row[3]
        for key in (row[2], "*"):
            _merge_histogram(hist[key]["control"], json.loads(row[_HIST]))
            _merge_histogram(hist[key]["candidate"], json.loads(row[_HIST + 1]))
    report["totals"].update(_counts_block(totals))
    report["latency_ms"] = _latency(hist["*"]["control"], hist["*"]["candidate"])
    report["by_read_type"] = {
        name: {"table": tables[name], **_counts_block(counts),
               "latency_ms": _latency(hist[name]["control"], hist[name]["candidate"])}
        for name, counts in sorted(by_type.items())
    }
    report["by_table"] = {name: _counts_block(counts) for name, counts in sorted(by_table.items())}


def _difference_rows(connection: sa.Connection, start: float | None) -> list[sa.Row]:
    where, params = "", ()
    if start is not None:
        where, params = " WHERE hour + ? > ? AND last_at >= ?", (HOUR, start, start)
    return connection.exec_driver_sql(
        f"SELECT table_name, column_name, kind, sum(count), min(first_at), max(last_at)"
        f" FROM {COUNTS_TABLE}{where} GROUP BY table_name, column_name, kind",
        params,
    ).all()


def _detail_rows(connection: sa.Connection, start: float | None) -> list[sa.Row]:
    where, params = "", ()
    if start is not None:
        where, params = " WHERE at >= ?", (start,)
    return connection.exec_driver_sql(
        f"SELECT at, read_type, table_name, pk, column_name, kind, primary_value, secondary_value,"
        f" primary_db, secondary_db, rechecks FROM {DETAILS_TABLE}{where} ORDER BY id DESC",
        params,
    ).all()


def _example(row: sa.Row) -> dict[str, Any]:
    return {
        "at": _iso(row[0]),
        "read_type": row[1],
        "table": row[2],
        "key": json.loads(row[3]),
        "column": row[4],
        "kind": row[5],
        "primary": json.loads(row[6]) if row[6] is not None else None,
        "secondary": json.loads(row[7]) if row[7] is not None else None,
        "primary_db": row[8],
        "secondary_db": row[9],
        "rechecks": row[10],
    }


def _fill_differences(report: dict, counts: list[sa.Row], details: list[sa.Row]) -> None:
    tables: dict[str, dict[str, Any]] = {}
    columns = []
    for table, column, kind, count, first_at, last_at in counts:
        entry = tables.setdefault(
            table, {"count": 0, "kinds": {}, "first_seen": first_at, "last_seen": last_at,
                    "columns": [], "example_keys": []},
        )
        entry["count"] += count
        entry["kinds"][kind] = entry["kinds"].get(kind, 0) + count
        entry["first_seen"] = min(entry["first_seen"], first_at)
        entry["last_seen"] = max(entry["last_seen"], last_at)
        item = {"table": table, "column": column or None, "kind": kind, "count": count,
                "first_seen": _iso(first_at), "last_seen": _iso(last_at)}
        entry["columns"].append({k: v for k, v in item.items() if k != "table"})
        if kind not in OUTCOME_KINDS:
            columns.append(item)
    for row in details:
        entry = tables.get(row[2])
        key = json.loads(row[3])
        if entry is not None and key not in entry["example_keys"] and len(entry["example_keys"]) < EXAMPLE_KEYS:
            entry["example_keys"].append(key)
    for entry in tables.values():
        entry["first_seen"], entry["last_seen"] = _iso(entry["first_seen"]), _iso(entry["last_seen"])
        entry["columns"].sort(key=lambda c: (-c["count"], c["column"] or "", c["kind"]))
    report["differences"] = dict(sorted(tables.items()))
    columns.sort(key=lambda c: (-c["count"], c["table"], c["column"] or "", c["kind"]))
    report["top_columns"] = columns[:TOP_COLUMNS]


def _timeline(reads: list[sa.Row], start: float | None, now: float) -> list[dict[str, Any]]:
    if not reads:
        return []
    first = start if start is not None else reads[0][0]
    span = max(60.0, now - first)
    step = next((s for s in _STEPS if span / s <= 120), _STEPS[-1])
    buckets: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for row in reads:
        counts = dict(zip(COUNT_COLUMNS, row[4:_HIST]))
        buckets[int(row[0] // step) * step].update(counts)
    out = []
    for bucket in sorted(buckets):
        block = _counts_block(buckets[bucket])
        out.append({"start": _iso(bucket), "width_s": step, "compared": block["compared"],
                    "mismatched": block["mismatched"], "rate": block["rate"]})
    return out


# -- rendering -----------------------------------------------------------------------------


def render_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=False, default=str)


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.3f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render_text(report: Mapping[str, Any]) -> str:
    t = report["totals"]
    window = report["window"]
    lines = [
        f"shadow reads {'since ' + window['from'] if window['from'] else '(all time)'} to {window['to']}",
        f"compared {t['compared']}  mismatched {t['mismatched']}  rate {_pct(t['rate'])}"
        f"  lag {t['lag']}  unsettled {t['unsettled']}  errors {t['errors']}  timeouts {t['timeouts']}"
        f"  dropped {t['dropped']}  store dropped {t['store_dropped']}  candidate errors {t['candidate_errors']}",
        "latency ms  control p50 {} p95 {}  candidate p50 {} p95 {}".format(
            _ms(report["latency_ms"]["control"]["p50"]), _ms(report["latency_ms"]["control"]["p95"]),
            _ms(report["latency_ms"]["candidate"]["p50"]), _ms(report["latency_ms"]["candidate"]["p95"]),
        ),
        "",
        f"{'read type':<30}{'compared':>10}{'mismatch':>10}{'rate':>10}{'lag':>6}{'errors':>8}"
        f"{'timeouts':>9}{'dropped':>9}{'ctl p50':>9}{'cand p50':>9}",
    ]
    for name, r in report["by_read_type"].items():
        lines.append(
            f"{name:<30}{r['compared']:>10}{r['mismatched']:>10}{_pct(r['rate']):>10}{r['lag']:>6}"
            f"{r['errors']:>8}{r['timeouts']:>9}{r['dropped']:>9}"
            f"{_ms(r['latency_ms']['control']['p50']):>9}{_ms(r['latency_ms']['candidate']['p50']):>9}"
        )
    lines += ["", f"{'table':<30}{'compared':>10}{'mismatch':>10}{'rate':>10}{'errors':>8}{'timeouts':>9}"]
    for name, r in report["by_table"].items():
        lines.append(
            f"{name:<30}{r['compared']:>10}{r['mismatched']:>10}{_pct(r['rate']):>10}"
            f"{r['errors']:>8}{r['timeouts']:>9}"
        )
    lines += ["", "differences (table: count, first seen .. last seen, example keys)"]
    for name, d in report["differences"].items():
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(d["kinds"].items()))
        lines.append(f"  {name}: {d['count']} ({kinds}), {d['first_seen']} .. {d['last_seen']},"
                     f" keys {json.dumps(d['example_keys'])}")
    lines += ["", "top differing columns"]
    for c in report["top_columns"]:
        lines.append(f"  {c['table']}.{c['column'] or '-'} {c['kind']}: {c['count']}")
    lines += ["", "examples (newest first)"]
    for e in report["examples"][:10]:
        lines.append(
            f"  {e['at']} {e['read_type']} {e['table']} {json.dumps(e['key'])} {e['column'] or '-'}"
            f" {e['kind']}: primary {json.dumps(e['primary'])} secondary {json.dumps(e['secondary'])}"
        )
    lines += ["", "candidate errors (statements the secondary does not run as written; not mismatches)"]
    for c in report["candidate_errors"]:
        lines.append(f"  {c['read_type']} on {c['secondary_db'] or '-'}, count {c['count']}, last {c['last_seen']}: {c['error']}")
        if c["statement"]:
            lines.append(f"    {c['statement']}")
    rules = report["ignore_rules"]
    lines += ["", "ignore rules: " + (", ".join(f"{r['table']}.{r['column']}" for r in rules) or "none")]
    return "\n".join(lines) + "\n"


def _svg(timeline: list[Mapping[str, Any]], width: int = 640, height: int = 160) -> str:
    pad = 30
    points = [(i, p["rate"]) for i, p in enumerate(timeline) if p["rate"] is not None]
    top = max([rate for _, rate in points] + [0.001])
    frame = (f'<rect x="{pad}" y="10" width="{width - pad - 10}" height="{height - pad - 10}"'
             ' fill="none" stroke="#ccc"/>')
    labels = (f'<text x="2" y="20" font-size="10">{top * 100:.2f}%</text>'
              f'<text x="2" y="{height - pad}" font-size="10">0%</text>')
    if not points:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">{frame}{labels}'
                f'<text x="{width // 2 - 40}" y="{height // 2}" font-size="12">no compared reads</text></svg>')
    span = max(1, len(timeline) - 1)
    coords = " ".join(
        f"{pad + (width - pad - 10) * i / span:.1f},{(height - pad) - (height - pad - 10) * rate / top:.1f}"
        for i, rate in points
    )
    dots = "".join(
        f'<circle cx="{pad + (width - pad - 10) * i / span:.1f}"'
        f' cy="{(height - pad) - (height - pad - 10) * rate / top:.1f}" r="2" fill="#c0392b"/>'
        for i, rate in points
    )
    first, last = html.escape(timeline[0]["start"]), html.escape(timeline[-1]["start"])
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img"'
        f' aria-label="mismatch rate over time">{frame}{labels}'
        f'<polyline fill="none" stroke="#c0392b" stroke-width="1.5" points="{coords}"/>{dots}'
        f'<text x="{pad}" y="{height - 8}" font-size="10">{first}</text>'
        f'<text x="{width - 150}" y="{height - 8}" font-size="10">{last}</text></svg>'
    )


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: Mapping[str, Any]) -> str:
    """One self-contained page (inline CSS and SVG, no scripts, nothing fetched)."""
    t = report["totals"]
    lat = report["latency_ms"]
    window = report["window"]
    read_rows = [
        [name, r["compared"], r["mismatched"], _pct(r["rate"]), r["lag"], r["unsettled"], r["errors"],
         r["timeouts"], r["dropped"], _ms(r["latency_ms"]["control"]["p50"]),
         _ms(r["latency_ms"]["control"]["p95"]), _ms(r["latency_ms"]["candidate"]["p50"]),
         _ms(r["latency_ms"]["candidate"]["p95"])]
        for name, r in report["by_read_type"].items()
    ]
    table_rows = [
        [name, r["compared"], r["mismatched"], _pct(r["rate"]), r["errors"], r["timeouts"], r["dropped"]]
        for name, r in report["by_table"].items()
    ]
    diff_rows = [
        [name, d["count"], ", ".join(f"{k} {n}" for k, n in sorted(d["kinds"].items())),
         d["first_seen"], d["last_seen"], json.dumps(d["example_keys"])]
        for name, d in report["differences"].items()
    ]
    column_rows = [[c["table"], c["column"] or "-", c["kind"], c["count"], c["first_seen"], c["last_seen"]]
                   for c in report["top_columns"]]
    example_rows = [
        [e["at"], e["read_type"], e["table"], json.dumps(e["key"]), e["column"] or "-", e["kind"],
         json.dumps(e["primary"]), json.dumps(e["secondary"])]
        for e in report["examples"]
    ]
    failing_rows = [
        [c["read_type"], c["error_class"], c["count"], c["secondary_db"] or "-", c["error"], c["statement"] or "-",
         c["first_seen"], c["last_seen"]]
        for c in report.get("candidate_errors", [])
    ]
    rules = ", ".join(f"{r['table']}.{r['column']}" for r in report["ignore_rules"]) or "none"
    title = "hrp-cutover shadow reads"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse;margin:.5em 0 1.5em}}
th,td{{border:1px solid #ddd;padding:.25em .6em;font-size:.9em;text-align:left}} th{{background:#f4f4f4}}
.big{{font-size:1.4em;font-weight:600}} .bad{{color:#c0392b}} code{{background:#f4f4f4}}
</style></head><body>
<h1>{title}</h1>
<p>{html.escape(window['from'] or 'all time')} to {html.escape(window['to'])}; generated {html.escape(report['generated_at'])}</p>
<p class="big{' bad' if t['mismatched'] else ''}">{t['mismatched']} mismatched of {t['compared']} compared reads
(rate {_pct(t['rate'])})</p>
<p>lag {t['lag']} · unsettled {t['unsettled']} · candidate errors {t['errors']} · timeouts {t['timeouts']}
· dropped samples {t['dropped']} · store dropped {t['store_dropped']}
· candidate errors {t['candidate_errors']}</p>
<p>latency ms: control p50 {_ms(lat['control']['p50'])} p95 {_ms(lat['control']['p95'])};
candidate p50 {_ms(lat['candidate']['p50'])} p95 {_ms(lat['candidate']['p95'])}</p>
<h2>Mismatch rate over time</h2>
{_svg(report['timeline'])}
<h2>By read type</h2>
{_table(['read type', 'compared', 'mismatched', 'rate', 'lag', 'unsettled', 'errors', 'timeouts', 'dropped',
         'control p50', 'control p95', 'candidate p50', 'candidate p95'], read_rows)}
<h2>By table</h2>
{_table(['table', 'compared', 'mismatched', 'rate', 'errors', 'timeouts', 'dropped'], table_rows)}
<h2>Differences</h2>
{_table(['table', 'count', 'kinds', 'first seen', 'last seen', 'example keys'], diff_rows)}
<h2>Top differing columns</h2>
{_table(['table', 'column', 'kind', 'count', 'first seen', 'last seen'], column_rows)}
<h2>Examples (newest first)</h2>
{_table(['at', 'read type', 'table', 'key', 'column', 'kind', 'primary', 'secondary'], example_rows)}
<h2>Candidate errors (statements the secondary does not run as written; not mismatches)</h2>
{_table(['read type', 'error class', 'count', 'on', 'error', 'statement', 'first seen', 'last seen'], failing_rows)}
<p>Ignore rules in force: <code>{html.escape(rules)}</code></p>
</body></html>
"""


RENDERERS = {"text": render_text, "json": render_json, "html": render_html}
