"""Shadow-read experiments in the manner of github/scientist: control, candidate, compare, publish.

`Laboratory.run(read, control, candidate)` calls the control (the read on the
primary) on the caller's thread and returns its value or raises its
exception, exactly as if no experiment existed. When the read is sampled,
the candidate (the same read on the secondary) runs afterwards on a worker
of a bounded thread pool fed by a bounded queue, so a slow or dead secondary
adds no latency to the caller: when the queue is full the sample is dropped
and counted, never waited for. The candidate's value, exception and time are
recorded and never raised.

Python threads share one interpreter lock, so a worker busy in Python (the
candidate's driver and ORM work, the comparison, publishing) while a request
runs would slow that request: every time the request's thread gives the lock
up for a database call, it has to wait to get it back. So a caller that
serves a request wraps it in `serving()` (the app's shadowed unit of work
does): while any request of the process is being served the workers stand
aside, and the request's samples are queued only when it ends, so no worker
even wakes up during it. A worker stands aside before a sample, between its
steps (candidate, comparison, each look of a re-check) and, through
`checkpoint()`, around each statement of its candidate (hrp_data calls it from
the candidate engine's statement events): a request that arrives while a
sample is under way waits for the interpreter lock at most until the
worker's next database call, not for the whole sample. It also waits
`after_request_s` once the last request has ended: the span ends when the
response is closed, before the server has sent it. A worker stands aside for
at most `yield_s` in all per sample (the looks of its re-check included);
under constant load it then runs anyway, and a full queue drops samples
instead of slowing requests down.

Unlike Scientist, the two sides do not run in random order: the candidate
always runs after the control, because the secondary receives the primary's
writes through the outbox a moment later. A difference is therefore not a
mismatch yet. Its rows are re-checked once no outbox change is pending for
them (the `pending` callable, handed in by the caller; while they are, the
sample is set aside and looked at again every `poll_s`, and the worker goes
on with other samples): both reads run again (control, pending check,
candidate, control: the check after the control's re-read is the one that
counts; a control that moved meanwhile means the primary is still changing,
so the round is repeated) and only differences that survive on the same rows
are mismatches. One that agrees on re-check is
counted as `lag`; one still pending when the bounded wait ends is
`unsettled` (not a mismatch, not a match).

Outcomes: match, mismatch, lag, unsettled, error (the candidate raised),
timeout (the candidate took longer than `candidate_timeout_s`, whatever it
then returned or raised, or raised a timeout), candidate_error (the candidate
raised because the secondary does not run the statement as written, as the
`unsupported` callable judges: an app's SQLite-only SQL; neither an error of
the secondary nor a mismatch; or, the other way round, the control raised so
and the candidate ran: its difference then holds the error as the primary's). Failures inside the
experiment itself (sampling, compare, publish, pending) go to one hook,
`raised(operation, error)`, which logs a warning and carries on.

Sampling: one rate for every read (settings.shadow_sample, HRP_SHADOW_SAMPLE)
and a rate per read type (`set_sample("races.get", 0.1)`); a read type with
`sample_names` is sampled at the rate of the first of its names that has one. Kill switch:
`laboratory.enabled = False` (hrp_data sets it from HRP_SHADOW_ENABLED, an
operator may at run time); it stops new samples at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import heapq
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import structlog

from shadow.compare import (
    CANDIDATE_ERROR,
    ERROR,
    TIMEOUT,
    Difference,
    ReadType,
    outcome_difference,
    restrict,
)

log = structlog.get_logger(__name__)

MATCH, MISMATCH, LAG, UNSETTLED = "match", "mismatch", "lag", "unsettled"
COMPARED = (MATCH, MISMATCH, LAG)
"""Outcomes that reached a verdict: the denominator of the mismatch rate."""

WORKERS = 1
"""One worker by default: two workers running candidates at once slowed the next requests more
(p50 x1.19 against x1.09-1.12 over HTTP in the shadow bench); more only where candidates queue up."""
QUEUE_SIZE = 1000
CANDIDATE_TIMEOUT_S = 2.0
RECHECK_S = 5.0
POLL_S = 0.05
RAISED_LOG_EVERY_S = 10.0
SETTLE_S = 0.2
"""How long a read that waits for its tables as a whole (the `settled` callable) waits at most:
under constant writes they are rarely all settled, and a worker waiting on them is a worker
not comparing anything else."""
YIELD_S = 0.05
"""A worker stands aside up to this long per sample while requests of this process are served."""
AFTER_REQUEST_S = 0.001
"""A worker stands aside this long after the process's last request ended: the span ends when the
app's response is closed, and the server still has to send it (waitress's I/O thread needs the
interpreter lock for that)."""

_LOST = object()
"""A step's answer when the sample could not be finished (counted under `raised`): nothing to publish."""

Ref = tuple[str, tuple[Any, ...]]
Compare = Callable[[ReadType, Any, Any], list[Difference]]


@dataclasses.dataclass(frozen=True)
class Observation:
    """What one side did: its value or exception, and how long it took."""

    name: str
    value: Any = None
    error: BaseException | None = None
    duration_s: float = 0.0

    @property
    def raised(self) -> bool:
        return self.error is not None


@dataclasses.dataclass(frozen=True)
class Result:
    """The verdict on one sampled read; `differences` are the ones that count (already redacted)."""

    read: ReadType
    outcome: str
    control: Observation
    candidate: Observation
    differences: tuple[Difference, ...] = ()
    first_differences: tuple[Difference, ...] = ()
    rechecks: int = 0
    context: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    at: float = dataclasses.field(default_factory=time.time)

    @property
    def compared(self) -> bool:
        return self.outcome in COMPARED


class Publisher:
    """Where results go (shadow.mismatches.MismatchStore is the real one)."""

    def publish(self, result: Result) -> None:  # pragma: no cover - interface
        pass

    def dropped(self, read: ReadType, count: int = 1) -> None:  # pragma: no cover - interface
        pass


@dataclasses.dataclass
class _Job:
    read: ReadType | None
    """None until `describe` has made it (on the worker)."""
    control: Observation
    candidate: Callable[[], Any]
    recheck_control: Callable[[], Any] | None
    context: Mapping[str, Any]
    finish: Callable[[Any], Any] | None = None
    """Turns what was kept of the control's value into the value compared (on the worker, once)."""
    describe: Callable[[], ReadType] | None = None
    """Makes the read type of a job submitted without one (on the worker, once, before `finish`)."""
    stood: float = 0.0
    """How long workers have stood aside for this sample so far, over all its steps (at most `yield_s`)."""


@dataclasses.dataclass
class _Recheck:
    """A sample whose differences wait for their rows to settle. It is set aside between looks
    (every `poll_s`) so that the worker compares other samples meanwhile: under constant writes
    many rows stay pending for seconds, and one worker waiting on each in turn would leave every
    later sample queued behind them."""

    job: _Job
    candidate: Observation
    first: list[Difference]
    refs: set[Ref]
    deadline: float
    latest: list[Difference]
    rounds: int = 0


_CONTAINERS = (dict, list)


def snapshot(value: Any) -> Any:
    """A copy of a read's value the caller cannot change afterwards (dicts and lists copied).

    Cheaper than copy.deepcopy: the values inside are immutable scalars (str, numbers,
    datetimes) except JSON documents and nested rows, and only those are walked.
    """
    if type(value) is dict:
        return {k: snapshot(v) if type(v) in _CONTAINERS else v for k, v in value.items()}
    if type(value) is list:
        return [snapshot(v) if type(v) in _CONTAINERS else v for v in value]
    if isinstance(value, dict):  # subclasses
        return {k: snapshot(v) for k, v in value.items()}
    if isinstance(value, list):
        return [snapshot(v) for v in value]
    return value


def describe(error: BaseException) -> str:
    """Default description of an exception: its class and first line, short."""
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}"[:200]


def is_timeout(error: BaseException) -> bool:
    """A client-side or statement timeout, anywhere in the exception's chain."""
    seen = 0
    current: BaseException | None = error
    while current is not None and seen < 5:
        if isinstance(current, TimeoutError) or "timeout" in type(current).__name__.lower():
            return True
        if "statement timeout" in str(current) or "did not answer within" in str(current):
            return True
        current = getattr(current, "orig", None) or current.__cause__
        seen += 1
    return False


class Laboratory:
    """Runs experiments for every read type of a process; owns the worker pool and queue.

    Args:
        compare: (read, control value, candidate value) -> differences.
        publisher: receives every Result and every dropped sample.
        pending: given (table, key) refs, those that still have a change on the way to the
            secondary; None means nothing is ever pending.
        sample: the default share of reads to shadow (0.0 to 1.0).
        describe_error: turns an exception into a value-free line (hrp_data hands its own).
        settled: (read) -> False while a change is still on its way to any table the read
            reads, for reads whose rows a key does not tell apart (a LIMIT window, an aggregate):
            their differences wait for it as a keyed row's wait for its key; None: always settled.
        unsupported: (read, candidate's exception) -> a value-free line when the secondary does
            not run the read's statement as written (outcome candidate_error), else None.
        current: (a sample's context) -> False once a move has changed the databases the sample
            compared (its process still followed the phase before the move, which it keeps for
            up to its phase cache time): a sample that would be a mismatch is then dropped
            (counted as dropped, logged as shadow.raced_move), since it compared a move in
            flight, not the data; asked only then. None: never.
    """

    def __init__(
        self,
        compare: Compare,
        publisher: Publisher,
        *,
        pending: Callable[[set[Ref]], set[Ref]] | None = None,
        sample: float = 1.0,
        workers: int = WORKERS,
        queue_size: int = QUEUE_SIZE,
        candidate_timeout_s: float = CANDIDATE_TIMEOUT_S,
        recheck_s: float = RECHECK_S,
        poll_s: float = POLL_S,
        describe_error: Callable[[BaseException], str] = describe,
        yield_s: float = YIELD_S,
        after_request_s: float = AFTER_REQUEST_S,
        unsupported: Callable[[ReadType, BaseException], str | None] | None = None,
        settled: Callable[[ReadType], bool] | None = None,
        current: Callable[[Mapping[str, Any]], bool] | None = None,
    ):
        self.compare = compare
        self.publisher = publisher
        self.pending = pending
        self.default_sample = float(sample)
        self.samples: dict[str, float] = {}
        self.candidate_timeout_s = candidate_timeout_s
        self.recheck_s = recheck_s
        self.poll_s = poll_s
        self.describe_error = describe_error
        self.unsupported = unsupported
        self.settled = settled
        self.current = current
        self.counts: Counter[str] = Counter()
        self._enabled = True
        self.queue_size = queue_size
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._queued = 0
        self._unfinished = 0
        self._parked: list[tuple[float, int, _Recheck]] = []
        """Re-checks set aside until their next look (a heap by time), shared by the workers."""
        self._parked_seq = 0
        self._stop = threading.Event()
        self._closed = False
        """Set with `_stop` by close(): read on every read, as an attribute."""
        self._lock = threading.Lock()
        self._last_raised = 0.0
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self._local = threading.local()
        self.yield_s = yield_s
        self.after_request_s = after_request_s
        self._idle_since = 0.0
        self.worker_count = workers
        self._workers: list[threading.Thread] = []
        """Daemon threads, not a ThreadPoolExecutor's: the interpreter joins an executor's threads at
        exit before any atexit hook runs, and these loop until close(), so a process that shadowed a
        read (an app's worker under gunicorn, a script) would never exit (close() is its atexit hook).
        Started with the first sample (no thread in the constructor)."""

    def _start_workers(self) -> None:
        with self._lock:
            if self._workers or self._stop.is_set():
                return
            self._workers = [
                threading.Thread(target=self._work, name=f"hrp-shadow_{n}", daemon=True)
                for n in range(self.worker_count)
            ]
            for worker in self._workers:
                worker.start()

    # -- switches ------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """False when switched off (the caller hands HRP_SHADOW_ENABLED here, or an operator at run time)."""
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._enabled = bool(value)

    def set_sample(self, read_name: str, rate: float | None) -> None:
        """The share of `read_name` reads to shadow (None: back to the default)."""
        if rate is None:
            self.samples.pop(read_name, None)
            return
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"sample rate for {read_name} must be between 0.0 and 1.0, not {rate!r}")
        self.samples[read_name] = float(rate)

    def sample_rate(self, read_name: str) -> float:
        return self.samples.get(read_name, self.default_sample)

    def _rate_of(self, read: ReadType | None) -> float:
        """The rate of `read` while read types have rates of their own (`samples`; should_run asks)."""
        if read is None:  # not described yet: the default
            return self.default_sample
        names = getattr(read, "sample_names", None)
        if names is None:
            return self.sample_rate(read.name)
        return next((self.samples[name] for name in names if name in self.samples), self.default_sample)

    def should_run(self, read: ReadType | None) -> bool:
        """Whether this read is sampled (decide once, then hand the answer to `run(sampled=...)`).
        None: a read not described yet, sampled at the default rate (only while no read type has
        a rate of its own: `samples` is empty). On every read: attributes, not calls, where it can."""
        try:
            if not self._enabled or self._closed:
                return False
            rate = self._rate_of(read) if self.samples else self.default_sample
            return rate >= 1.0 or (rate > 0.0 and random.random() < rate)
        except Exception as error:  # noqa: BLE001 - an experiment never fails a read
            self.raised("enabled", error)
            return False

    # -- the request path ----------------------------------------------------------------

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Serve a request: the workers stand aside until it ends, and its samples are queued then.

        Reads run with `run()` inside the block keep their candidates (with what `keep` kept of
        the control's value) until the block ends, at most `queue_size` of them (more are
        dropped and counted). Blocks may nest; the outermost one queues.
        """
        outermost = getattr(self._local, "held", None) is None
        held: list = []
        if outermost:
            self._local.held = held
        self._begin()
        try:
            yield
        finally:
            self._end()
            if outermost:
                # a span left open may be closed by the collector on another thread: touch
                # only this span's own list there, never that thread's current one
                if getattr(self._local, "held", None) is held:
                    self._local.held = None
                for job in held:
                    self._enqueue(job)

    def _begin(self) -> None:
        with self._lock:
            self._in_flight += 1

    def _end(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle_since = time.monotonic()
                self._idle.notify_all()

    def run(
        self,
        read: ReadType | None,
        control: Callable[[], Any],
        candidate: Callable[[], Any],
        *,
        recheck_control: Callable[[], Any] | None = None,
        context: Mapping[str, Any] | None = None,
        sampled: bool | None = None,
        keep: Callable[[Any], Any] = snapshot,
        finish: Callable[[Any], Any] | None = None,
        describe: Callable[[], ReadType] | None = None,
    ) -> Any:
        """The control's value (or exception); the candidate is scheduled when sampled.

        Args:
            read: what kind of read this is (names the experiment, its table and ordering).
            control: the read on the primary, called here, on the caller's thread.
            candidate: the same read on the secondary, called later on a worker.
            recheck_control: the read on the primary again, callable from a worker (the
                control may be bound to the caller's session); needed for the lag re-check.
            context: published with the result (e.g. which database is primary).
            sampled: the caller's `should_run(read)` (None: decided here).
            keep: what the sample keeps of the control's value, called on the caller's thread:
                a copy the caller cannot change afterwards, as cheap as it can be (the request
                waits for it); `snapshot` by default.
            finish: turns what `keep` kept into the value compared, called on the worker before
                the first comparison (work the request need not wait for); None: compared as kept.
            describe: with `read` None, makes the read type on the worker (once, before `finish`;
                a describe that raises loses the sample, counted `raised.describe`), so the caller
                need not: `read` is only needed on its thread to pick a rate of its own (`samples`).
        """
        if not (self.should_run(read) if sampled is None else sampled):
            return control()
        held = getattr(self._local, "held", None)
        if held is None:  # inside serving() the request is already counted
            self._begin()
        started = time.perf_counter()
        try:
            value = control()
        except Exception as error:
            self._submit(held, _Job(read, Observation("control", None, error, time.perf_counter() - started),
                                    candidate, recheck_control, context or {}, describe=describe))
            raise
        finally:
            if held is None:
                self._end()
        duration_s = time.perf_counter() - started
        try:
            job = _Job(read, Observation("control", keep(value), None, duration_s), candidate, recheck_control,
                       context or {}, finish, describe)
        except Exception as error:  # noqa: BLE001 - an experiment never fails a read
            self.raised("submit", error)
            return value
        self._submit(held, job)
        return value

    def _submit(self, held: list[_Job] | None, job: _Job) -> None:
        try:
            if held is None:
                self._enqueue(job)
            elif len(held) < self.queue_size:
                held.append(job)
            else:
                self._drop(job)
        except Exception as error:  # noqa: BLE001
            self.raised("submit", error)

    def _enqueue(self, job: _Job) -> None:
        """Queue a sample for the workers, or drop it (counted) when `queue_size` are waiting."""
        if self._stop.is_set():  # held by a request that outlived close()
            self._drop(job)
            return
        with self._lock:
            full = self._queued >= self.queue_size
            if not full:
                self._queued += 1
                self._unfinished += 1
        if full:
            self._drop(job)
        else:
            if not self._workers:
                self._start_workers()
            self._queue.put(job)

    def _drop(self, job: _Job) -> None:
        self._count("dropped")
        if self._described(job):
            self._safely("dropped", self.publisher.dropped, job.read)

    def _described(self, job: _Job) -> bool:
        """Make the read type of a job submitted without one; False when its describe raised (counted)."""
        if job.read is None:
            describe, job.describe = job.describe, None
            try:
                job.read = describe()
            except Exception as error:  # noqa: BLE001 - the sample is lost, counted
                self.raised("describe", error)
                return False
        return True

    # -- the workers ---------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            parked = self._take_due()
            if parked is not None:
                self._finish(parked.job, functools.partial(self._look_again, parked))
                continue
            try:
                job = self._queue.get(timeout=self._until_next_look())
            except queue.Empty:
                continue
            if job is None:  # close() wakes each worker with one
                return
            with self._lock:
                self._queued -= 1
            if self._stop.is_set():
                self._drop(job)
                self._done()
                continue
            self._finish(job, functools.partial(self._observe, job))

    def _finish(self, job: _Job, step: Callable[[], Result | None]) -> None:
        """Run one step of a sample; publish its result, unless it was set aside to look again."""
        try:
            self._sample(job)
            result = step()
            if result is None:  # set aside to look again: not done yet
                return
            if result is _LOST:
                self._done()
                return
            if result.outcome == MISMATCH and self._raced(result):
                self._count("dropped")
                self._safely("dropped", self.publisher.dropped, job.read)
            else:
                self._count(result.outcome)
                self._safely("publish", self.publisher.publish, result)
        except Exception as error:  # noqa: BLE001 - a worker survives anything
            self.raised("observe", error)
        finally:
            self._local.until = None
            job.stood += self._local.waited
        self._done()

    def _done(self) -> None:
        with self._lock:
            self._unfinished -= 1

    def _park(self, recheck: _Recheck) -> None:
        with self._lock:
            self._parked_seq += 1
            heapq.heappush(self._parked, (time.monotonic() + self.poll_s, self._parked_seq, recheck))

    def _take_due(self) -> _Recheck | None:
        with self._lock:
            if self._parked and self._parked[0][0] <= time.monotonic():
                return heapq.heappop(self._parked)[2]
        return None

    def _until_next_look(self) -> float:
        with self._lock:
            if not self._parked:
                return 1.0
            return min(1.0, max(0.0, self._parked[0][0] - time.monotonic()))

    def _try(self, name: str, function: Callable[[], Any]) -> Observation:
        """One side on a worker; its duration leaves out the time it stood aside at checkpoints."""
        waited = getattr(self._local, "waited", 0.0)
        started = time.perf_counter()
        try:
            value = function()
        except Exception as error:  # noqa: BLE001 - recorded, never raised
            return Observation(name, None, error, self._took(started, waited))
        return Observation(name, value, None, self._took(started, waited))

    def _took(self, started: float, waited: float) -> float:
        return max(0.0, time.perf_counter() - started - (getattr(self._local, "waited", 0.0) - waited))

    def _busy(self, now: float) -> float:
        """How long to wait before the process counts as idle: 0.0 when it is, else a bound on it
        (the rest of `after_request_s`, or the budget while a request is served)."""
        if self._in_flight > 0:
            return self.yield_s
        return max(0.0, self._idle_since + self.after_request_s - now)

    def _stand_aside(self) -> None:
        """Wait while requests of this process are being served (and `after_request_s` after the
        last one ended), at most until this worker's sample has stood aside `yield_s` in all; the
        time waited is kept apart from the sides'."""
        until = getattr(self._local, "until", None)
        started = time.monotonic()
        if until is None or not self._busy(started):
            return
        with self._idle:
            while not self._stop.is_set():
                now = time.monotonic()
                busy = self._busy(now)
                if not busy or now >= until:
                    break
                self._idle.wait(min(busy, until - now))
        self._local.waited += time.monotonic() - started

    def checkpoint(self) -> None:
        """On a worker, in the middle of a sample (before and after each of its database calls):
        stand aside while a request is served, within the sample's `yield_s`. Elsewhere (a
        request's thread) nothing."""
        try:
            self._stand_aside()
        except Exception as error:  # noqa: BLE001 - an experiment never fails a read
            self.raised("checkpoint", error)

    def _sample(self, job: _Job) -> None:
        """A worker starts on a sample (or a look at a parked one): what is left of its budget of
        standing aside (`yield_s` for the sample as a whole, all its looks included)."""
        self._local.until = time.monotonic() + max(0.0, self.yield_s - job.stood)
        self._local.waited = 0.0

    def _observe(self, job: _Job) -> Result | object:
        if not self._described(job):
            return _LOST
        if job.finish is not None:
            finish, job.finish = job.finish, None
            if not job.control.raised:
                try:
                    job.control = dataclasses.replace(job.control, value=finish(job.control.value))
                except Exception as error:  # noqa: BLE001 - the sample is lost, counted
                    self.raised("finish", error)
                    return _LOST
        read, control = job.read, job.control
        self._stand_aside()
        candidate = self._try("candidate", job.candidate)
        self._stand_aside()
        verdict = functools.partial(Result, read, control=control, candidate=candidate, context=job.context)
        timed_out = candidate.duration_s > self.candidate_timeout_s or (
            candidate.raised and is_timeout(candidate.error)
        )
        if timed_out:
            shown = f"took {candidate.duration_s:.3f} s (limit {self.candidate_timeout_s:g} s)"
            if candidate.raised:
                shown += f"; {self.describe_error(candidate.error)}"
            return verdict(TIMEOUT, differences=(outcome_difference(read.table, TIMEOUT, None, shown),))
        if candidate.raised and not control.raised:
            unsupported = self._unsupported(read, candidate.error)
            if unsupported is not None:
                return verdict(
                    CANDIDATE_ERROR, differences=(outcome_difference(read.table, CANDIDATE_ERROR, None, unsupported),)
                )
            shown = self.describe_error(candidate.error)
            return verdict(ERROR, differences=(outcome_difference(read.table, ERROR, None, shown),))
        if control.raised:
            if candidate.raised and type(candidate.error) is type(control.error):
                return verdict(MATCH)
            refused = None if candidate.raised else self._unsupported(read, control.error)
            if refused is not None:
                # the primary does not run the statement as written and the secondary does (an app's
                # SQLite-only SQL once PostgreSQL is the primary): the app got the error, no data
                # differs; a mismatch here would refuse the rollback that puts the statement right
                return verdict(
                    CANDIDATE_ERROR, differences=(outcome_difference(read.table, CANDIDATE_ERROR, refused, None),)
                )
            shown = self.describe_error(candidate.error) if candidate.raised else "returned a value"
            difference = outcome_difference(read.table, ERROR, self.describe_error(control.error), shown)
            return verdict(MISMATCH, differences=(difference,))
        differences = self.compare(read, control.value, candidate.value)
        if not differences:
            return verdict(MATCH)
        deadline = time.monotonic() + self.recheck_s
        if self._unsettled(read):
            deadline = min(deadline, time.monotonic() + SETTLE_S)
        refs = {d.ref for d in differences}
        return self._look_again(_Recheck(job, candidate, differences, refs, deadline, differences))

    def _unsettled(self, read: ReadType) -> bool:
        if self.settled is None:
            return False
        try:
            return not self.settled(read)
        except Exception as error:  # noqa: BLE001 - unknown means "may still be on its way"
            self.raised("settled", error)
            return True

    def _raced(self, result: Result) -> bool:
        if self.current is None:
            return False
        try:
            raced = not self.current(result.context)
        except Exception as error:  # noqa: BLE001 - unknown: judge the sample as it is
            self.raised("current", error)
            return False
        if raced:
            log.info("shadow.raced_move", read_type=result.read.name, **result.context)
        return raced

    def _unsupported(self, read: ReadType, error: BaseException) -> str | None:
        if self.unsupported is None:
            return None
        try:
            return self.unsupported(read, error)
        except Exception as failure:  # noqa: BLE001
            self.raised("unsupported", failure)
            return None

    # -- the lag rule --------------------------------------------------------------------

    def _pending(self, refs: set[Ref]) -> set[Ref]:
        keyed = {ref for ref in refs if ref[1] != ()}
        if self.pending is None or not keyed:
            return set()
        try:
            return set(self.pending(keyed))
        except Exception as error:  # noqa: BLE001 - unknown means "may still be on its way"
            self.raised("pending", error)
            return keyed

    def _look_again(self, recheck: _Recheck) -> Result | None:
        """The lag rule: once nothing is pending for the differing rows, run both reads again for
        them: primary, pending check, secondary, primary. The verdict, or None when the rows are
        still on their way (or the primary moved meanwhile) and the deadline has not passed: set
        aside, to look again in `poll_s` while the worker goes on with other samples.

        The pending check that counts comes after the primary's re-read: every change to the
        rows that the re-read saw is then either still pending (wait) or applied, so the
        secondary, read next, holds it; if the primary has not moved by its second re-read, a
        difference that survives is a mismatch. (A check before the re-read misses a write
        committed in between; one after the secondary's read misses a write applied in between.)"""
        job = recheck.job
        self._stand_aside()
        if self._waiting(recheck):
            return self._not_yet(recheck)
        recheck.rounds += 1
        rerun = job.recheck_control
        try:
            before = job.control.value if rerun is None else rerun()
            if rerun is not None and self._waiting(recheck):
                return self._not_yet(recheck)
            candidate = job.candidate()
            after = before if rerun is None else rerun()
        except Exception as error:  # noqa: BLE001 - a side failed during the re-check
            self.raised("recheck", error)
            return self._verdict(recheck, UNSETTLED)
        self._stand_aside()
        moved = restrict(self.compare(job.read, before, after), recheck.refs)
        if not moved:
            recheck.latest = restrict(self.compare(job.read, after, candidate), recheck.refs)
            return self._verdict(recheck, MISMATCH if recheck.latest else LAG)
        return self._not_yet(recheck)

    def _waiting(self, recheck: _Recheck) -> bool:
        """Whether a change is still on its way to the differing rows (or to a table the read reads whole)."""
        return bool(self._pending(recheck.refs)) or self._unsettled(recheck.job.read)

    def _not_yet(self, recheck: _Recheck) -> Result | None:
        """Set aside to look again in `poll_s`, or unsettled once the deadline has passed (or on close)."""
        if time.monotonic() >= recheck.deadline or self._stop.is_set():
            return self._verdict(recheck, UNSETTLED)
        self._park(recheck)
        return None

    @staticmethod
    def _verdict(recheck: _Recheck, outcome: str) -> Result:
        job = recheck.job
        surviving = [] if outcome == LAG else recheck.latest
        return Result(
            job.read, outcome, control=job.control, candidate=recheck.candidate, context=job.context,
            differences=tuple(surviving), first_differences=tuple(recheck.first), rechecks=recheck.rounds,
        )

    # -- bookkeeping ---------------------------------------------------------------------

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def _safely(self, operation: str, function: Callable, *args: Any) -> None:
        try:
            function(*args)
        except Exception as error:  # noqa: BLE001
            self.raised(operation, error)

    def raised(self, operation: str, error: BaseException) -> None:
        """A failure inside the experiment machinery: counted and logged, never raised."""
        self._count(f"raised.{operation}")
        now = time.monotonic()
        if now - self._last_raised >= RAISED_LOG_EVERY_S:
            self._last_raised = now
            log.warning("shadow.raised", operation=operation, error=self.describe_error(error))

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every queued sample has been observed and published (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._unfinished == 0:
                return True
            time.sleep(0.01)
        return self._unfinished == 0

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking samples, let the workers finish what they hold, count the rest as dropped."""
        self._closed = True
        self._stop.set()
        with self._idle:
            self._idle.notify_all()
        with self._lock:
            workers = list(self._workers)
        for _ in workers:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for worker in workers:
            if worker is not threading.current_thread():
                worker.join(max(0.0, deadline - time.monotonic()))
        left: list[_Job] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                with self._lock:
                    self._queued -= 1
                    self._unfinished -= 1
                left.append(item)
        for job in left:
            self._drop(job)
        with self._lock:
            parked, self._parked = [entry[2] for entry in self._parked], []
        for recheck in parked:  # still waiting for their rows: unsettled, as at their deadline
            self._finish(recheck.job, functools.partial(self._verdict, recheck, UNSETTLED))
