"""Cutover readiness: the preflight checklist a phase change must pass.

`checklist(cutover, target)` evaluates every check that applies to a move and
returns them all (the CLI's `flip --check` and the dashboard print it);
`guarded_move` refuses the move, naming each failed check, unless all pass or
the operator forces it (which is logged loudly and kept in the audit row).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import structlog

from adapters import log_safety
from adapters import postgres as postgres_adapter
from adapters import sqlite as sqlite_adapter
from adapters.catalog import quote
from hrp_data.flip import journal as move_journal
from hrp_data.cutover import outbox
from hrp_data.backfill.holds import held_indexes
from hrp_data.catalog import file_catalog
from hrp_data.cutover.dual_write import Cutover
from hrp_data.flip.move import MoveResult, move
from hrp_data.cutover.phases import PHASES, POSTGRES, SQLITE, Phase, check_move

log = structlog.get_logger(__name__)

OUTBOX_THRESHOLD = 1000


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


class NotReady(RuntimeError):
    """A move refused by the preflight; the message names every failed check."""

    def __init__(self, failed: list[Check]):
        self.failed = failed
        hint = (
            " (a move goes one step forward or back; --force does not change that)"
            if failed and failed[0].name == "move"
            else " (see `hrp-cutover flip --check`; --force skips the checks)"
        )
        super().__init__("refused: " + "; ".join(f"{c.name}: {c.detail}" for c in failed) + hint)


def _outbox_check(cutover: Cutover) -> Check:
    route = cutover.route()
    if route is None:
        return Check("outbox", True, "no secondary in this phase")
    depth = outbox.depth(route.primary)
    ok = depth.pending <= OUTBOX_THRESHOLD and not depth.refused
    detail = f"{depth.pending} pending ({depth.failing} failing), threshold {OUTBOX_THRESHOLD}"
    if depth.refused:  # they wait until their rows are fixed: the move's drain would stop on them
        detail += (f"; {depth.refused} change(s) refused until their rows are fixed where they were written"
                   " (`hrp-cutover quarantine` lists them with the reason; once fixed, `hrp-cutover replay`"
                   " retries them at once)")
    if depth.last_error and (depth.failing or not ok):  # a change the move's drain may stop on, named now
        detail += f"; last error: {depth.last_error}"
    return Check("outbox", ok, detail)


def _schema_check(cutover: Cutover, to_sqlite: bool = False, primary_from: str | None = None) -> Check:
    """`to_sqlite`: the move lands the app on the file, so a table only PostgreSQL holds (created by
    a migration after the flip) is a difference too. `primary_from`: the move changes the primary
    from that side, so a unique index only that side holds refuses it (the new primary would accept
    rows the old one refused); any other index one side lacks is listed with its statement."""
    from hrp_data.cutover.indexes import live_index_drift, refusing
    from hrp_data.cutover.schema_watch import ColumnDrift, postgres_only_tables, schema_drift, sqlite_names
    from hrp_data.schema.install import SchemaError, drift

    catalog = file_catalog(cutover.sqlite)  # read again: a migration may have changed the file since start
    try:
        differences = drift(cutover.settings.require_postgres(), catalog)
    except SchemaError as error:
        return Check("schema", False, str(error))
    if differences:
        held = held_indexes(cutover.engine(POSTGRES))
        hint = (
            f"; {len(held)} index(es) held back by an unfinished backfill: run `hrp-cutover backfill` to build them"
            if held else ""
        )
        return Check("schema", False, f"{len(differences)} difference(s), first: {differences[0]}{hint}")
    live = schema_drift(cutover.sqlite, cutover.engine(POSTGRES), list(catalog.tables), sqlite_names(catalog))
    if to_sqlite:
        with cutover.engine(POSTGRES).connect() as connection:
            live += [ColumnDrift(name, None, POSTGRES) for name in postgres_only_tables(connection, catalog.tables)]
    if live:
        return Check(
            "schema", False,
            f"the live schemas differ: {', '.join(map(str, live))}; carry the change to the other side"
            " (the same migration there) before moving (see docs/operations.md, deploying during a cutover)",
        )
    indexes = live_index_drift(cutover.sqlite, cutover.engine(POSTGRES), catalog)
    held_up = refusing(indexes, primary_from, SQLITE if to_sqlite else POSTGRES) if primary_from else []
    if held_up:
        return Check(
            "schema", False,
            f"unique index(es) the new primary lacks: {'; '.join(map(str, held_up))}"
            " (it would accept rows the old primary refused; see docs/operations.md, deploying during a cutover)",
        )
    equal = "PostgreSQL schema equals the models, the SQLite file's catalog and the live SQLite schema"
    if indexes:
        return Check("schema", True, f"{equal}; index(es) not carried, listed: {'; '.join(map(str, indexes))}")
    return Check("schema", True, equal)


def _foreign_keys_check(cutover: Cutover) -> Check:
    with cutover.engine(POSTGRES).connect() as connection:
        unvalidated = connection.exec_driver_sql(
            "SELECT conname FROM pg_constraint WHERE contype = 'f' AND NOT convalidated"
            " AND connamespace = 'public'::regnamespace ORDER BY conname"
        ).scalars().all()
    if unvalidated:
        return Check("foreign_keys", False, f"not validated: {', '.join(unvalidated)}")
    return Check("foreign_keys", True, "all foreign keys validated")


def _sequences_check(cutover: Cutover, target: Phase) -> Check:
    """The new primary's next id is past its own largest id.

    Ids the other side holds are not compared here: with live writes they move
    on between this check and the flip. The applier moves each PostgreSQL
    identity past the ids it copies in the same transaction, SQLite's
    sqlite_sequence follows explicit ids by itself, and the move sets both
    inside its hold. This check catches a sequence set back by hand.
    """
    new_primary = PHASES[target].primary
    behind = []
    engine = cutover.engine(new_primary)
    with engine.connect() as connection:
        for entry in cutover.catalog.tables.values():
            table = entry.postgres if new_primary == POSTGRES else entry.sqlite
            if table.autoincrement_column is None or (new_primary != POSTGRES and not entry.autoincrement):
                continue  # SQLite without AUTOINCREMENT takes max(rowid) + 1: never behind
            key = table.autoincrement_column.name
            top = connection.exec_driver_sql(
                f"SELECT coalesce(max({quote(key)}), 0) FROM {quote(table.name)}"
            ).scalar()
            issued = postgres_adapter if new_primary == POSTGRES else sqlite_adapter
            next_id = issued.issued_id(connection, table) + 1
            if next_id <= top:
                behind.append(f"{table.name} next {next_id} <= max {top}")
        connection.rollback()
    if behind:
        return Check("sequences", False, "; ".join(behind))
    return Check("sequences", True, f"next ids on {new_primary} are past its largest ids")


def _verify_check(cutover: Cutover) -> Check:
    from hrp_data.verify.run import last_result

    last = last_result(cutover.sqlite)
    if last is None:
        return Check("verify", False, "no full verify yet: run `hrp-cutover verify`")
    if not last["equal"]:
        return Check("verify", False, "the last full verify found differences: run `hrp-cutover verify --repair`")
    reset = move_journal.evidence_reset(cutover.sqlite)
    if reset is not None and last["finished_at"] < reset[0]:
        return Check("verify", False, f"the last full verify predates {_since(reset)}: run `hrp-cutover verify`")
    max_age = cutover.settings.verify_max_age
    if last["age_s"] > max_age:
        return Check(
            "verify", False,
            f"the last full verify is {last['age_s']:.0f} s old (max {max_age:.0f} s, HRP_VERIFY_MAX_AGE)",
        )
    return Check("verify", True, f"last full verify equal, {last['age_s']:.0f} s ago")


def _statistics_check(cutover: Cutover) -> Check:
    """Loaded tables vacuumed and analyzed on PostgreSQL (the backfill does both), so the app's
    first reads after the flip get good plans and index-only scans. A warning, not a refusal:
    autovacuum gets there by itself, only later."""
    with cutover.engine(POSTGRES).connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT relname, pg_relation_size(relid) > 0,"
            " coalesce(last_vacuum, last_autovacuum) IS NOT NULL,"
            " coalesce(last_analyze, last_autoanalyze) IS NOT NULL"
            " FROM pg_stat_user_tables WHERE relname = ANY(%(names)s)",
            {"names": list(cutover.catalog.tables)},
        ).all()
        connection.rollback()
    missing = [
        f"{name} ({' and '.join(w for w, done in (('vacuum', vacuumed), ('analyze', analyzed)) if not done)})"
        for name, loaded, vacuumed, analyzed in rows
        if loaded and not (vacuumed and analyzed)
    ]
    if missing:
        return Check(
            "statistics", True,
            f"warning: not yet vacuumed/analyzed on PostgreSQL: {', '.join(sorted(missing))};"
            " run `VACUUM (ANALYZE)` on them for fast first reads",
        )
    return Check("statistics", True, "every loaded table vacuumed and analyzed")


def _shadow_check(cutover: Cutover) -> Check:
    """Shadow reads agreed: mismatch rate over HRP_SHADOW_WINDOW within HRP_SHADOW_MAX_RATE."""
    from hrp_data.cutover.shadow_reads import readiness as shadow_readiness

    ok, detail = shadow_readiness(cutover.sqlite, cutover.phases, getattr(cutover, "shadow", None), cutover.settings,
                                  required=cutover.catalog.hrp)
    return Check("shadow", ok, detail)


def _app_queries_check(cutover: Cutover, new_primary: str) -> Check | None:
    """A warning, never a refusal: statements of the app that the move's new primary did not run
    as written (shadow outcome candidate_error) in the shadow window; None when there were none."""
    from shadow.report import candidate_errors, parse_duration

    failing = [c for c in candidate_errors(cutover.sqlite, parse_duration(cutover.settings.shadow_window))
               if c["secondary_db"] in (new_primary, None)]
    if not failing:
        return None
    shown = "; ".join(f"{c['read_type']} ({c['error_class']}, count {c['count']})" for c in failing[:5])
    more = f" and {len(failing) - 5} more" if len(failing) > 5 else ""
    on = failing[0]["secondary_db"] or "the other database"
    return Check(
        "app_queries", True,
        f"warning: {len(failing)} of the app's statements failed on {on} in the last"
        f" {cutover.settings.shadow_window}: {shown}{more}; they will fail there after the move"
        " (candidate errors in `hrp-cutover report`)",
    )


def _backfill_check(cutover: Cutover) -> Check:
    """The backfill copied every legacy row (hrp_cutover_backfill marked complete)."""
    from hrp_data.backfill.run import backfill_status
    from hrp_data.verify.run import last_result

    status = backfill_status(cutover.engine(POSTGRES))
    reset = move_journal.evidence_reset(cutover.sqlite)
    finished = _epoch(status["finished_at"])
    if status["complete"] and reset is not None and (finished is None or finished < reset[0]):
        verified = last_result(cutover.sqlite)  # a full equal verify after the reset proves the copy whole
        if verified is not None and verified["equal"] and verified["finished_at"] >= reset[0]:
            return Check("backfill", True, f"complete; both sides verified equal since {_since(reset)}")
        return Check(
            "backfill", False,
            f"the backfill completed before {_since(reset)}: writes since then may be missing; run"
            " `hrp-cutover verify --repair` (or `hrp-cutover backfill`)",
        )
    if status["complete"]:
        return Check("backfill", True, f"complete since {status['finished_at'] or 'an earlier run'}")
    pending = [name for name, t in status["tables"].items() if t["state"] != "done"]
    detail = f"not complete ({', '.join(pending)} pending)" if pending else status["state"]
    return Check("backfill", False, f"{detail}: run `hrp-cutover backfill`")


def _since(reset: tuple[float, str]) -> str:
    at = dt.datetime.fromtimestamp(reset[0], dt.timezone.utc).isoformat(timespec="seconds")
    return f"{reset[1]} ({at})"


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(iso))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()


def _quarantine_check(cutover: Cutover, accept: bool) -> Check:
    """No legacy row is left in quarantine, unless the operator accepts leaving them behind."""
    from hrp_data.backfill.quarantine import quarantined_counts

    count, waiting = quarantined_counts(cutover.engine(POSTGRES))
    if count == 0:
        return Check("quarantine", True, "no quarantined rows")
    if accept:
        return Check("quarantine", True, f"{count} quarantined row(s) accepted (--accept-quarantine)")
    detail = f"{count} quarantined row(s)"
    if waiting:  # nothing to fix: their parent was a live write the applier had not carried yet
        detail += (f", {waiting} of them only because their parent was on its way while the backfill"
                   " copied them (parent_missing): `hrp-cutover backfill --retry-quarantined` carries them")
    if count > waiting:
        detail += (f"{';' if waiting else ':'} see `hrp-cutover quarantine`, fix the rest in SQLite and"
                   " `hrp-cutover backfill --retry-quarantined`, or accept them")
    return Check("quarantine", False, detail)


def logging_risks(cutover: Cutover) -> list[log_safety.Risk]:
    """PostgreSQL logging settings, as the layer's role sees them, that would log statements with values."""
    with cutover.engine(POSTGRES).connect() as connection:
        settings = log_safety.read_settings(connection)
        role = log_safety.current_role(connection)
        connection.rollback()
    return log_safety.risks(settings, role)


def statement_logging_check(cutover: Cutover, target: Phase) -> Check:
    """PostgreSQL does not log statements with their values (secrets among them).

    The layer's own writes carry no secret in a statement (apply.unlogged_upsert),
    but once PostgreSQL is the primary the app writes to it with ordinary
    statements: a setting that logs every statement (or every write) refuses
    that move; logging failing statements (PostgreSQL's default) is a warning.
    """
    found = logging_risks(cutover)
    if not found:
        return Check("statement_logging", True, "PostgreSQL logs no statement text with values")
    severe = [risk for risk in found if risk.severe]
    detail = "; ".join(str(risk) for risk in found)
    if severe and PHASES[target].primary == POSTGRES:
        return Check("statement_logging", False, detail)
    return Check("statement_logging", True, f"warning: {detail}")


def _privileges_check(cutover: Cutover) -> Check:
    """The app's role may do all it must once PostgreSQL carries writes (rows of every table, the outbox,
    the idempotency keys, sequences, temporary tables), and the mover's role may move (owns the tables)."""
    from hrp_data.schema.roles import missing_privileges, mover_problem

    tables = list(cutover.catalog.tables)
    with cutover.engine(POSTGRES).connect() as connection:
        role = cutover.settings.app_role or log_safety.current_role(connection)
        missing = missing_privileges(connection, role, tables)
        cannot_move = mover_problem(connection, tables)
        connection.rollback()
    problems = []
    if missing:
        shown = "; ".join(missing[:6]) + (f"; and {len(missing) - 6} more" if len(missing) > 6 else "")
        problems.append(
            f"the app's role {role} lacks what it needs: {shown} (run them as the migrator, or"
            f" `hrp-cutover schema` as the migrator with HRP_APP_ROLE={role}, which grants them all)"
        )
    if cannot_move:
        problems.append(f"{cannot_move}: move as the migrator role that owns them (HRP_POSTGRES_DIRECT_URL)")
    if problems:
        return Check("privileges", False, "; ".join(problems))
    return Check("privileges", True, f"the app's role {role} may write every table, the outbox and the sequences")


def checklist(cutover: Cutover, target: Phase, *, accept_quarantine: bool = False) -> list[Check]:
    """Every check that applies to moving from the current phase to `target`."""
    current = cutover.phase(fresh=True).phase
    checks = []
    try:
        check_move(current, target)
        checks.append(Check("move", True, f"{current.value} -> {target.value} is allowed"))
    except ValueError as error:
        return [Check("move", False, str(error))]
    if target is Phase.SQLITE_ONLY:
        return checks
    if cutover.postgres is None:
        return checks + [Check("postgres", False, "HRP_POSTGRES_URL is not set")]
    moves_primary = PHASES[target].primary != PHASES[current].primary
    checks.append(_schema_check(cutover, PHASES[target].primary == SQLITE,
                                PHASES[current].primary if moves_primary else None))
    checks.append(_outbox_check(cutover))
    checks.append(statement_logging_check(cutover, target))
    checks.append(_privileges_check(cutover))
    if PHASES[target].primary != PHASES[current].primary:
        checks.append(_verify_check(cutover))
        checks.append(_foreign_keys_check(cutover))
        checks.append(_sequences_check(cutover, target))
        if PHASES[target].primary == POSTGRES:
            checks.append(_statistics_check(cutover))
        checks.append(_shadow_check(cutover))
        app_queries = _app_queries_check(cutover, PHASES[target].primary)
        if app_queries is not None:
            checks.append(app_queries)
    if PHASES[target].primary == POSTGRES and PHASES[current].primary != POSTGRES:
        checks.append(_backfill_check(cutover))
        checks.append(_quarantine_check(cutover, accept_quarantine))
    return checks


def guarded_move(
    cutover: Cutover, target: Phase, *, force: bool = False, accept_quarantine: bool = False
) -> tuple[MoveResult, list[Check]]:
    """Move to `target` if every check passes (or when forced: then say loudly what was skipped)."""
    checks = checklist(cutover, target, accept_quarantine=accept_quarantine)
    failed = [c for c in checks if not c.ok]
    if failed and failed[0].name == "move":
        raise NotReady(failed)
    skipped = None
    if failed:
        if not force:
            raise NotReady(failed)
        skipped = "; ".join(f"{c.name}: {c.detail}" for c in failed)
        log.warning("phase.forced", target=target.value, skipped=skipped)
    return move(cutover, target, forced=bool(failed), skipped=skipped), checks


def checks_as_dicts(checks: list[Check]) -> list[dict]:
    return [dataclasses.asdict(c) for c in checks]


__all__ = ["Check", "NotReady", "checklist", "guarded_move", "checks_as_dicts"]
