"""The cutover dashboard's data: one service gathering what the page shows, and the move.

Each part is read on its own and a part that fails shows its (value-free)
error instead of taking the page down: PostgreSQL can be down while the
dashboard still shows the phase, the outbox and the workers. Parts built by
other modules are used when they are there: hrp_data.backfill.run
(backfill_status), hrp_data.verify.run (last_result) and shadow.report
(build_report).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import time
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa

from adapters.pooler import Probe, probe
from hrp_data.cutover.dual_write import Cutover
from hrp_data.cutover.assemble import open_cutover
from hrp_data.errors import describe_error
from hrp_data.flip.move import MoveResult
from hrp_data.cutover.phase_store import acting_for
from hrp_data.cutover.phases import ORDER, Phase
from hrp_data.flip.readiness import Check, checklist, guarded_move
from hrp_data.cutover.phases import POSTGRES
from hrp_data.cutover.status import cutover_status, guard_refusals
from hrp_data.settings import SettingsError
from hrp_data.web.serialize import plain
from shadow.redact import redact_table_key

SHADOW_WINDOW_S = 24 * 3600
CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 640, 170, 36


def _safely(part: Callable[[], Any]) -> Any:
    try:
        return part()
    except Exception as error:  # noqa: BLE001 - one part failing must not hide the others
        return {"error": describe_error(error)}


def neighbours(phase: Phase) -> tuple[Phase | None, Phase | None]:
    """The phase one step back and one step forward (None at either end)."""
    index = ORDER.index(phase)
    previous = ORDER[index - 1] if index > 0 else None
    following = ORDER[index + 1] if index + 1 < len(ORDER) else None
    return previous, following


def _status(cutover: Cutover) -> dict[str, Any]:
    status = cutover_status(cutover)
    now = time.time()
    for worker in status["workers"]:
        worker["age_s"] = round(now - worker.pop("updated_at"), 1)
    return plain(status)


def guard_shown(cutover: Cutover, status: dict[str, Any]) -> dict[str, Any] | None:
    """Which database refuses writes from outside the layer now and how many it refused (None:
    no guard). The count is read from PostgreSQL only when it is the guarded one, as its own
    part, so that a PostgreSQL that does not answer leaves the phase and the outbox shown."""
    if "error" in status or not status["guard"]["on"]:
        return None
    guard = dict(status["guard"])
    if guard["on"] == POSTGRES:
        guard["refused"] = guard_refusals(cutover) or 0
    return guard


def _checks(cutover: Cutover, target: Phase | None) -> list[dict[str, Any]]:
    if target is None:
        return []
    return [_check(c) for c in checklist(cutover, target)]


def _check(check: Check) -> dict[str, Any]:
    return {"name": check.name, "ok": check.ok, "detail": check.detail}


def backfill_progress(cutover: Cutover) -> dict[str, Any]:
    """Per-table backfill progress from hrp_data.backfill.run, or 'not started'."""
    try:
        from hrp_data.backfill.run import backfill_status
    except ImportError:
        return {"state": "not started", "tables": [], "columns": []}
    if cutover.postgres is None:
        return {"state": "not started", "tables": [], "columns": []}
    raw = backfill_status(cutover.postgres)
    rows = [_key_redacted(cutover, row) for row in _table_rows(raw.get("tables", raw) if isinstance(raw, dict) else raw)]
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k != "table" and k not in columns]
    state = raw.get("state") if isinstance(raw, dict) and raw.get("state") else ("running" if rows else "not started")
    summary = raw if isinstance(raw, dict) else {}
    return {"state": str(state), "tables": rows, "columns": columns,
            "finished_at": summary.get("finished_at"), "running": bool(summary.get("running")),
            "rows_total": summary.get("rows_total"), "rows_left": summary.get("rows_left"),
            "eta_s": summary.get("eta_s")}


def _key_redacted(cutover: Cutover, row: dict[str, Any]) -> dict[str, Any]:
    """A backfill row whose checkpoint (`last_key`) names a key column that is secret (a table keyed by
    its token) shows that value only as a fingerprint."""
    key = row.get("last_key")
    entry = cutover.catalog.tables.get(row.get("table")) if isinstance(key, list) else None
    if entry is None:
        return row
    return row | {"last_key": redact_table_key(entry.postgres, key)}


def _table_rows(raw: Any) -> list[dict[str, Any]]:
    if not raw:
        return []
    if isinstance(raw, dict):
        return [
            {"table": str(name), **(plain(info) if isinstance(info, dict) else {"progress": plain(info)})}
            for name, info in raw.items()
        ]
    rows = []
    for item in raw:
        if isinstance(item, dict):
            rows.append(plain(item))
        else:
            rows.append({"table": str(getattr(item, "table", item)), "progress": plain(getattr(item, "__dict__", str(item)))})
    return rows


def last_verify(cutover: Cutover) -> dict[str, Any] | None:
    """The last full verify: equal or not, how old, and the counts per table (no row values)."""
    from hrp_data.verify.run import last_result

    last = last_result(cutover.sqlite)
    if last is None:
        return None
    tables = last["result"].get("tables", {})
    return {
        "equal": last["equal"],
        "age_s": last["age_s"],
        "finished_at": plain(dt.datetime.fromtimestamp(last["finished_at"], dt.timezone.utc)),
        "primary": last["result"].get("primary"),
        "tables": [
            {"table": name, **{k: counts.get(k) for k in ("rows_primary", "rows_secondary", "missing", "extra", "different", "quarantined")}}
            for name, counts in tables.items()
        ],
    }


def verify_progress(cutover: Cutover) -> dict[str, Any] | None:
    """The newest verify's progress while it runs (or how it ended), None when none recorded any."""
    from hrp_data.verify.progress import latest

    progress = latest(cutover.sqlite)
    if progress is None:
        return None
    return {k: plain(progress[k]) for k in ("state", "running", "full", "tables_done", "tables_total",
                                           "rows_done", "rows_total", "current_table", "equal", "ratio")}


def shadow_rates(cutover: Cutover, since_seconds: float = SHADOW_WINDOW_S) -> dict[str, Any] | None:
    """Mismatch rate per table and a chart of the rate over time (None: no shadow data)."""
    try:
        from shadow.report import build_report
    except ImportError:
        return None
    report = build_report(cutover.sqlite, since_seconds)
    tables = [
        {"table": name, "compared": block.get("compared", 0), "mismatched": block.get("mismatched", 0),
         "rate": block.get("rate")}
        for name, block in report.get("by_table", {}).items()
    ]
    if not tables and not report.get("timeline"):
        return None
    return {
        "window_s": since_seconds,
        "totals": {k: report["totals"].get(k) for k in ("compared", "mismatched", "rate")},
        "tables": tables,
        "chart": rate_chart(report.get("timeline", [])),
    }


def rate_chart(timeline: list[dict[str, Any]]) -> dict[str, Any]:
    """Geometry of the mismatch-rate line chart (the template draws it as inline SVG)."""
    width, height, pad = CHART_WIDTH, CHART_HEIGHT, CHART_PAD
    inner_w, inner_h = width - pad - 10, height - pad - 10
    rated = [(i, p) for i, p in enumerate(timeline) if p.get("rate") is not None]
    top = max([p["rate"] for _, p in rated] + [0.001])
    span = max(1, len(timeline) - 1)
    dots = [
        {
            "x": round(pad + inner_w * i / span, 1),
            "y": round(10 + inner_h - inner_h * p["rate"] / top, 1),
            "title": f"{p.get('start')}: {p['rate'] * 100:.3f}% of {p.get('compared', 0)} reads",
        }
        for i, p in rated
    ]
    return {
        "width": width,
        "height": height,
        "pad": pad,
        "inner_w": inner_w,
        "inner_h": inner_h,
        "top_label": f"{top * 100:.2f}%",
        "points": " ".join(f"{d['x']},{d['y']}" for d in dots),
        "dots": dots,
        "first": timeline[0].get("start") if timeline else None,
        "last": timeline[-1].get("start") if timeline else None,
    }


def overview(cutover: Cutover) -> dict[str, Any]:
    """Everything the dashboard shows, as plain JSON-ready values."""
    out: dict[str, Any] = {"generated_at": plain(dt.datetime.now(dt.timezone.utc))}
    out["status"] = _safely(lambda: _status(cutover))
    out["guard"] = _safely(lambda: guard_shown(cutover, out["status"]))
    phase = cutover.phase(fresh=True).phase
    previous, following = neighbours(phase)
    out["moves"] = {
        "previous": previous.value if previous else None,
        "next": following.value if following else None,
    }
    out["checks"] = _safely(lambda: _checks(cutover, following))
    out["backfill"] = _safely(lambda: backfill_progress(cutover))
    out["verify"] = _safely(lambda: last_verify(cutover))
    out["verify_progress"] = _safely(lambda: verify_progress(cutover))
    out["shadow"] = _safely(lambda: shadow_rates(cutover))
    return out


def move(cutover: Cutover, target: Phase, *, by: dict[str, Any], accept_quarantine: bool = False) -> MoveResult:
    """The same preflight as the CLI: readiness checks, then the move (raises NotReady).

    The phase audit and the move journal record the dashboard user `by` (their username and id).

    A move needs PostgreSQL directly (docs/pooling.md): with HRP_POSTGRES_DIRECT_URL it runs
    on a Cutover of that URL; without it, an app URL that reaches a transaction pooler is
    refused (SettingsError) before anything changes.
    """
    options = {"accept_quarantine": True} if accept_quarantine else {}
    with _mover(cutover) as mover, acting_for(f"dashboard user {by['username']!r} (id {by['id']})"):
        _may_move(mover)
        result, _checks_run = guarded_move(mover, target, **options)
    return result


@contextlib.contextmanager
def _mover(cutover: Cutover) -> Iterator[Cutover]:
    settings = cutover.settings
    if settings.postgres_direct_url is not None and settings.postgres_direct_url != settings.postgres_url:
        with open_cutover(settings.operator()) as direct:
            yield direct
        return
    if settings.postgres_url is not None:
        try:
            found = _probe(settings.postgres_url)
        except sa.exc.SQLAlchemyError:
            found = None  # nothing answers: the move says so itself
        if found is not None and found.pooled:
            raise SettingsError(
                f"the app reaches PostgreSQL through a transaction pooler ({found.evidence}): a move needs it"
                " directly; set HRP_POSTGRES_DIRECT_URL for the app, or move with the CLI"
                " (`hrp-cutover flip`/`rollback` with HRP_POSTGRES_DIRECT_URL); nothing was changed"
            )
    yield cutover


def _may_move(mover: Cutover) -> None:
    """Refuse, before anything changes, a move by a role that does not own the tables: a move enables
    and disables triggers, which only their owner (the migrator) may (docs/operations.md, least privilege)."""
    from hrp_data.schema.roles import mover_problem

    if mover.postgres is None:
        return
    try:
        with mover.postgres.connect() as connection:
            problem = mover_problem(connection, list(mover.catalog.tables))
            connection.rollback()
    except sa.exc.SQLAlchemyError:
        return  # nothing answers: the move says so itself
    if problem is not None:
        raise SettingsError(
            f"the dashboard cannot move the phase: {problem}; move with the CLI as the migrator role"
            " (`hrp-cutover flip`/`rollback`/`phase set` with HRP_POSTGRES_DIRECT_URL naming the migrator),"
            " or give the app HRP_POSTGRES_DIRECT_URL as the migrator; nothing was changed"
        )


@functools.lru_cache(maxsize=8)
def _probe(url: str) -> Probe:
    return probe(url)
