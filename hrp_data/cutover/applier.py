"""The applier: carries outbox changes from the primary to the secondary, off the request path.

One daemon thread per process wakes when this process commits a write (and
at least every POLL_S for writes made elsewhere: other workers, cron, the
sqlite3 shell), takes the due changes, and applies them with the one apply
path (hrp_data.cutover.apply). While a dedicated applier process runs
(`hrp-cutover apply`, hrp_data.cutover.applier_lease) the app's threads stand
aside and it drains for them; they take over the moment it ends. A failing secondary does not slow requests down: the
change stays in the outbox with its error and is retried with backoff, a
warning is logged, and a circuit breaker (pybreaker) stops hammering a
secondary that keeps failing until its reset timeout passes.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable

import pybreaker
import sqlalchemy as sa
import structlog

from hrp_data.cutover import outbox
from hrp_data.cutover.apply import ApplyResult, PrimaryMoved, apply_keys, fitting_changes
from hrp_data.errors import describe_error
from shadow.redact import redact_table_key

log = structlog.get_logger(__name__)

POLL_S = 0.2
BATCH = 500
FEW = 32
"""A batch of more changes than this, read from SQLite, is cut to BATCH_BYTES of rows (fitting_changes)."""
REPORT_S = 2.0
RECOVER_S = 1.0
WATCH_S = 1.0


@dataclasses.dataclass
class Counters:
    """What this process's applier did, for status and the dashboard."""

    applied: int = 0
    failed: int = 0
    batches: int = 0
    secondary_was_away: bool = False
    lag_s: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=2000))

    def lag_percentiles(self) -> dict[str, float | None]:
        ordered = sorted(self.lag_s)
        if not ordered:
            return {"p50": None, "p99": None}
        pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
        return {"p50": pick(0.50), "p99": pick(0.99)}


@dataclasses.dataclass(frozen=True)
class Route:
    """Where changes come from and go to, for the current phase."""

    primary: sa.Engine
    secondary: sa.Engine
    tables: dict[str, sa.Table]
    """The captured tables (hrp_data.catalog.captured), by the name the outbox records."""
    still_primary: Callable[[], bool] | None = None


def drain_once(
    route: Route,
    breaker: pybreaker.CircuitBreaker,
    counters: Counters,
    *,
    ignore_backoff: bool = False,
    limit: int = BATCH,
) -> tuple[int, int]:
    """Apply one batch of due changes; return (applied, failed) key counts."""
    pending = outbox.due(route.primary, limit=limit, ignore_backoff=ignore_backoff)
    if not pending:
        return 0, 0
    if len(pending) > FEW:  # the rest waits for the next batch
        pending = pending[:fitting_changes(route.primary, route.tables, [item.ref for item in pending])]
    try:
        result = breaker.call(
            apply_keys,
            [item.ref for item in pending],
            tables=route.tables,
            primary=route.primary,
            secondary=route.secondary,
            still_primary=route.still_primary,
        )
    except (pybreaker.CircuitBreakerError, PrimaryMoved):
        return 0, 0
    except sa.exc.SQLAlchemyError as error:
        reason = outbox.UNAVAILABLE + describe_error(error)
        outbox.settle(route.primary, [], {item: reason for item in pending})
        counters.secondary_was_away = True
        counters.failed += len(pending)
        log.warning("outbox.secondary_unavailable", keys=len(pending), error=reason)
        return 0, len(pending)
    except Exception as error:  # a row's error that escaped the apply path: find its key, one by one
        log.warning("outbox.batch_error", keys=len(pending), error=describe_error(error))
        result = _apply_each(route, pending)
    by_ref = {item.ref: item for item in pending}
    done = [by_ref[ref] for ref in result.applied]
    failed = {by_ref[ref]: error for ref, error in result.failed.items()}
    outbox.settle(route.primary, done, failed)
    if done and counters.secondary_was_away:
        outbox.retry_unavailable(route.primary)
        counters.secondary_was_away = False
    counters.applied += len(done)
    counters.failed += len(failed)
    counters.batches += 1
    now = time.time()
    counters.lag_s.extend(now - item.created_at for item in done)
    for item, error in failed.items():
        log.warning(
            "outbox.apply_failed",
            table=item.ref.table,
            key=redact_table_key(route.tables.get(item.ref.table), item.ref.key),
            attempts=item.attempts + 1,
            error=error,
        )
    return len(done), len(failed)


def _apply_each(route: Route, pending: list[outbox.Pending]) -> ApplyResult:
    """Apply the keys one at a time: an error fails only its own key, with its reason."""
    result = ApplyResult()
    for item in pending:
        try:
            one = apply_keys(
                [item.ref], tables=route.tables, primary=route.primary, secondary=route.secondary,
                still_primary=route.still_primary,
            )
        except (PrimaryMoved, sa.exc.SQLAlchemyError):
            break  # the route or the secondary went away: the rest waits for the next round
        except Exception as error:  # this key's own failure
            result.failed[item.ref] = describe_error(error)
            continue
        result.applied += one.applied
        result.failed.update(one.failed)
    return result


class Applier:
    """The per-process background thread that drains the outbox."""

    def __init__(
        self,
        route_for: Callable[[], Route | None],
        *,
        report: Callable[["Applier"], None] | None = None,
        recover: Callable[[], object] | None = None,
        watch: Callable[[], object] | None = None,
        stand_aside: Callable[[], bool] | None = None,
        poll_s: float = POLL_S,
        breaker_reset_s: float = 5.0,
    ):
        """`stand_aside()`: True while another process drains the outbox for this one (the
        dedicated applier, hrp_data.cutover.applier_lease); the thread then only watches, recovers
        and reports. `poll_s`: how often it looks for changes no notify() announced."""
        self.route_for = route_for
        self.stand_aside = stand_aside
        self.poll_s = poll_s
        self.aside = False
        """Whether the last round stood aside for the dedicated applier (status, the dashboard)."""
        self.report = report
        self.recover = recover
        self.watch = watch
        self._last_recover = 0.0
        self._last_watch = 0.0
        self._last_report = 0.0
        self.counters = Counters()
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=3, reset_timeout=breaker_reset_s, exclude=[PrimaryMoved]
        )
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def breaker_state(self) -> str:
        return self.breaker.current_state

    @property
    def running(self) -> bool:
        """Whether this process's background thread drains the outbox (the app's; CLI commands drain by themselves)."""
        return self._thread is not None

    def start(self) -> "Applier":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="hrp-applier", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def notify(self) -> None:
        """A write was committed: wake up now instead of at the next poll (unless the dedicated
        applier carries the changes: then the poll's look at its lease is soon enough)."""
        if not self.aside:
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            try:
                self._maybe_recover()
                self._maybe_watch()
                if not self._standing_aside():
                    self.drain_available()
                self._maybe_report()
            except Exception as error:  # the thread must survive anything; the outbox keeps the change
                log.warning("outbox.applier_error", error=describe_error(error))
                self._stop.wait(self.poll_s)

    def _standing_aside(self) -> bool:
        """Whether the dedicated applier drains for this process now (unknown: this one drains)."""
        aside = False
        if self.stand_aside is not None:
            try:
                aside = bool(self.stand_aside())
            except Exception as error:  # noqa: BLE001 - draining twice is safe, not draining is not
                log.warning("applier.lease_probe_failed", error=describe_error(error))
        if aside != self.aside:
            log.info("applier.standing_aside" if aside else "applier.draining_again")
            self.aside = aside
        return aside

    def _maybe_recover(self) -> None:
        """Every RECOVER_S: finish a move whose mover died (hrp_data.flip.journal), if there is one."""
        if self.recover is None or time.monotonic() - self._last_recover < RECOVER_S:
            return
        self._last_recover = time.monotonic()
        try:
            self.recover()
        except Exception as error:  # a live mover, or PostgreSQL away: try again later
            log.debug("applier.recover_later", error=describe_error(error))

    def _maybe_watch(self) -> None:
        """Every WATCH_S: look for schema changes (hrp_data.cutover.schema_watch); it never raises."""
        if self.watch is None or time.monotonic() - self._last_watch < WATCH_S:
            return
        self._last_watch = time.monotonic()
        self.watch()

    def _maybe_report(self) -> None:
        """Report this process's state every REPORT_S, also while a steady load keeps it draining."""
        if self.report is not None and time.monotonic() - self._last_report >= REPORT_S:
            self._last_report = time.monotonic()
            try:
                self.report(self)
            except Exception as error:  # a full disk under the SQLite file must not stop the draining
                log.warning("applier.report_failed", error=describe_error(error))

    def drain_available(self) -> None:
        """Apply due changes until none are left or the secondary stops taking them."""
        while not self._stop.is_set():
            route = self.route_for()
            if route is None:
                return
            applied, _failed = drain_once(route, self.breaker, self.counters)
            self._maybe_report()
            self._maybe_watch()  # a steady load keeps this loop going: the schema watch must not wait for it
            if applied == 0:
                return
