"""shadow.experiment.Laboratory on its own, no database: what the caller gets, the queue, the switch,
samples waiting for their rows, close(), and the span of a request (serving())."""

from __future__ import annotations

import threading
import time

import pytest

from shadow.compare import Difference, ReadType
from shadow.experiment import Laboratory, Publisher


class _Collect(Publisher):
    def __init__(self):
        self.results, self.drops = [], 0

    def publish(self, result):
        self.results.append(result)

    def dropped(self, read, count=1):
        self.drops += count


READ = ReadType("things.get", "things")


def _lab(publisher, **kw) -> Laboratory:
    compare = lambda read, a, b: [] if a == b else ["different"]  # noqa: E731
    return Laboratory(compare, publisher, **kw)


class TestExperiment:
    def test_the_caller_gets_the_control_value_or_exception(self):
        """The control's value or exception; the candidate's exception is only recorded."""
        published = _Collect()
        lab = _lab(published)
        boom = LookupError("control failed")

        def failing_control():
            raise boom

        def failing_candidate():
            raise RuntimeError("candidate failed")

        try:
            assert lab.run(READ, lambda: {"a": 1}, failing_candidate) == {"a": 1}
            with pytest.raises(LookupError) as raised:
                lab.run(READ, failing_control, lambda: {"a": 1})
            assert raised.value is boom
            assert lab.wait_idle(5)
            assert [r.outcome for r in published.results] == ["error", "mismatch"]
            assert "candidate failed" in published.results[0].differences[0].secondary
        finally:
            lab.close()

    def test_a_full_queue_drops_samples_and_never_blocks(self):
        """A stuck candidate fills the queue; later reads are served at once and counted as dropped."""
        published = _Collect()
        release = threading.Event()
        lab = _lab(published, workers=1, queue_size=2)
        try:
            started = time.perf_counter()
            for _ in range(50):
                assert lab.run(READ, lambda: 1, lambda: release.wait(10) and 1) == 1
            assert time.perf_counter() - started < 0.5
            assert lab.stats()["dropped"] >= 47 and published.drops >= 47
            release.set()
            assert lab.wait_idle(5)
        finally:
            lab.close()

    def test_the_kill_switch_and_the_sample_rate(self, monkeypatch):
        """The switch (HRP_SHADOW_ENABLED, or an operator at run time) and a 0.0 rate each stop the candidate."""
        calls = []
        lab = _lab(_Collect())
        try:
            lab.enabled = False
            lab.run(READ, lambda: 1, lambda: calls.append(1))
            lab.enabled = True
            lab.set_sample(READ.name, 0.0)
            lab.run(READ, lambda: 1, lambda: calls.append(1))
            lab.set_sample(READ.name, None)
            lab.run(READ, lambda: 1, lambda: calls.append(1) or 1)
            assert lab.wait_idle(5) and calls == [1]
        finally:
            lab.close()

    def test_a_mismatch_found_after_a_move_is_dropped_not_published(self):
        """`current` is asked only for a would-be mismatch: False (a move changed the pair the sample
        compared) drops it, counted as dropped; True, or an error asking, publishes it as found."""
        asked, answers = [], iter([False, True])

        def current(context):
            asked.append(dict(context))
            answer = next(answers, None)
            if answer is None:
                raise RuntimeError("phase store unreadable")
            return answer

        published = _Collect()
        compare = lambda read, a, b: [] if a == b else [Difference("things", (1,), "v", a, b, "value_differs")]  # noqa: E731
        lab = Laboratory(compare, published, workers=1, current=current)
        pair = {"primary": "postgres", "secondary": "sqlite"}
        try:
            lab.run(READ, lambda: 1, lambda: 1, context=pair)
            assert lab.wait_idle(5) and [r.outcome for r in published.results] == ["match"] and asked == []
            for _ in range(3):
                lab.run(READ, lambda: 1, lambda: 2, context=pair)
                assert lab.wait_idle(5)
            assert [r.outcome for r in published.results] == ["match", "mismatch", "mismatch"]
            assert published.drops == 1 and lab.stats()["dropped"] == 1 and asked == [pair] * 3
        finally:
            lab.close()

    def test_a_read_type_with_sample_names_takes_the_rate_of_its_first_named_one(self):
        """An app's statement is sampled by its read type, fingerprint, entity or kind (HRP_SHADOW_SAMPLES);
        with no rate set per read type, at the default rate."""
        import dataclasses

        @dataclasses.dataclass(frozen=True)
        class Named(ReadType):
            @property
            def sample_names(self):
                return (self.name, "orm:Race", "orm")

        read = Named("orm:Race#abc123", "races")
        lab = _lab(_Collect(), sample=0.0)
        try:
            assert lab._rate_of(read) == 0.0
            lab.set_sample("orm", 1.0)
            assert lab._rate_of(read) == 1.0 and lab.should_run(read)
            lab.set_sample("orm:Race", 0.0)
            assert lab._rate_of(read) == 0.0
            assert lab._rate_of(READ) == 0.0  # no sample_names: its name, else the default
        finally:
            lab.close()

    def test_the_caller_changing_its_result_changes_nothing(self):
        """The control's value is compared as it was returned, not as the caller left it."""
        published = _Collect()
        lab = _lab(published)
        gate = threading.Event()
        try:
            value = lab.run(READ, lambda: {"runners": [{"odds": 2.5}]},
                            lambda: gate.wait(5) and {"runners": [{"odds": 2.5}]})
            value["runners"][0]["odds"] = 99.0
            gate.set()
            assert lab.wait_idle(5)
            assert published.results[0].outcome == "match"
        finally:
            lab.close()

    def test_keep_runs_on_the_callers_thread_and_finish_on_the_worker_once(self):
        """`keep` takes what the sample keeps before the read returns (the caller may change its value
        afterwards); `finish` makes it the compared value on a worker, once, before the comparison."""
        published = _Collect()
        compared = []
        lab = Laboratory(lambda read, a, b: compared.append((a, b)) or ([] if a == b else ["different"]), published)
        caller = threading.current_thread()
        threads = {}

        def keep(value):
            threads["keep"] = threading.current_thread()
            return list(value)

        def finish(kept):
            threads.setdefault("finish", []).append(threading.current_thread())
            return {"rows": kept}

        try:
            value = lab.run(READ, lambda: [1, 2], lambda: {"rows": [1, 2]}, keep=keep, finish=finish)
            value.append(3)  # after the read: not what was compared
            assert lab.wait_idle(5)
            assert threads["keep"] is caller
            assert len(threads["finish"]) == 1 and threads["finish"][0] is not caller
            assert compared == [({"rows": [1, 2]}, {"rows": [1, 2]})]
            assert published.results[0].outcome == "match"
        finally:
            lab.close()

    @pytest.mark.parametrize("hook", ["finish", "describe"])
    def test_a_finish_or_describe_that_raises_loses_the_sample_not_the_read(self, hook):
        published = _Collect()
        lab = _lab(published)

        def raising(*_):
            raise ValueError("cannot")

        try:
            assert lab.run(READ if hook == "finish" else None, lambda: 1, lambda: 1, **{hook: raising}) == 1
            assert lab.wait_idle(5)
            assert published.results == [] and lab.stats()[f"raised.{hook}"] == 1
        finally:
            lab.close()

    def test_a_read_described_later_is_described_on_the_worker_once(self):
        """A read submitted without its read type (`describe=`) has it made on a worker, once, before
        `finish`: its result and a drop name the read type `describe` made."""
        published = _Collect()
        lab = _lab(published, queue_size=1)
        caller = threading.current_thread()
        described = []

        def describe():
            described.append(threading.current_thread())
            return READ

        try:
            assert lab.should_run(None)
            with lab.serving():
                assert lab.run(None, lambda: 1, lambda: 1, describe=describe) == 1
                assert lab.run(None, lambda: 2, lambda: 2, describe=describe) == 2  # beyond queue_size: dropped
                assert len(described) == 1 and described[0] is caller and published.drops == 1
            assert lab.wait_idle(5)
            assert len(described) == 2 and described[1] is not caller
            assert [(r.read, r.outcome) for r in published.results] == [(READ, "match")]
        finally:
            lab.close()

    def test_a_sample_waiting_for_its_rows_does_not_hold_up_the_next(self):
        """A difference whose row stays pending waits for it (up to recheck_s) set aside: a later
        sample is compared and published meanwhile, and the first one still ends as lag once its
        row is applied."""
        published = _Collect()
        applied = threading.Event()
        row = ("things", (1,))
        compare = lambda read, a, b: [] if a == b else [Difference("things", (1,), "v", a, b, "value_differs")]  # noqa: E731
        lab = Laboratory(compare, published, workers=1, recheck_s=60,
                         pending=lambda refs: set() if applied.is_set() else refs & {row})
        try:
            secondary = {"v": 1}
            lab.run(READ, lambda: {"v": 2}, lambda: dict(secondary))  # differs until "applied"
            lab.run(READ, lambda: {"v": 3}, lambda: {"v": 3})
            deadline = time.monotonic() + 10
            while not published.results and time.monotonic() < deadline:
                time.sleep(0.01)
            assert [r.outcome for r in published.results] == ["match"]
            assert not applied.is_set() and not lab.wait_idle(0)
            secondary["v"] = 2
            applied.set()
            assert lab.wait_idle(10)
            assert [r.outcome for r in published.results] == ["match", "lag"]
            assert published.results[1].rechecks == 1
        finally:
            lab.close()

    def test_a_change_committed_as_the_recheck_starts_is_waited_for_not_a_mismatch(self):
        """The re-check's order is primary, pending check, secondary, primary. A write to the row
        that commits just before the primary is read again (after the first look at the outbox)
        and reaches the secondary just after the secondary was read is still on its way when the
        secondary is read: lag, not a mismatch (a pending check before the primary's re-read
        would miss it, and one after the secondary's read finds it applied already)."""
        published = _Collect()
        row = ("things", (1,))
        lock = threading.Lock()
        state = {"primary": 2, "secondary": 1, "outbox": {row}}
        reruns: list = []

        def apply() -> None:  # the applier: the secondary takes the primary's value, the outbox row goes
            with lock:
                state["secondary"], state["outbox"] = state["primary"], set()

        def rerun() -> dict:  # the primary read again; at its first re-read a write commits with its outbox row
            with lock:
                reruns.append(1)
                if len(reruns) == 1:
                    state["primary"], state["outbox"] = 3, {row}
                return {"v": state["primary"]}

        def candidate() -> dict:  # the secondary; once re-checking, the applier carries the change right after
            with lock:
                seen = {"v": state["secondary"]}
            if reruns:
                apply()
            return seen

        def pending(refs):
            with lock:
                return refs & state["outbox"]

        compare = lambda read, a, b: [] if a == b else [Difference("things", (1,), "v", a, b, "value_differs")]  # noqa: E731
        lab = Laboratory(compare, published, workers=1, recheck_s=30, poll_s=0.01, pending=pending)
        try:
            lab.run(READ, lambda: {"v": 2}, candidate, recheck_control=rerun)
            deadline = time.monotonic() + 20
            while not published.results and time.monotonic() < deadline:
                if lab._parked:  # set aside for a pending row: the applier carries it
                    apply()
                time.sleep(0.005)
            assert lab.wait_idle(10)
            assert [r.outcome for r in published.results] == ["lag"], published.results
        finally:
            lab.close()

    def test_close_ends_a_waiting_sample_as_unsettled(self):
        published = _Collect()
        compare = lambda read, a, b: [] if a == b else [Difference("things", (1,), "v", a, b, "value_differs")]  # noqa: E731
        lab = Laboratory(compare, published, workers=1, recheck_s=60, pending=lambda refs: refs)
        lab.run(READ, lambda: {"v": 2}, lambda: {"v": 1})
        deadline = time.monotonic() + 10
        while not lab._parked and time.monotonic() < deadline:
            time.sleep(0.01)
        lab.close()
        assert [r.outcome for r in published.results] == ["unsettled"] and lab.wait_idle(0)


class TestServing:
    """Laboratory.serving(): the span of a request, during which the workers stand aside."""

    def test_a_request_s_samples_run_only_after_it_ends(self):
        """No candidate runs while the request is open; all of them run after, control errors too."""
        published = _Collect()
        lab = _lab(published)
        ran = []
        boom = LookupError("control failed")

        def failing_control():
            raise boom

        try:
            with lab.serving():
                assert lab.run(READ, lambda: {"a": 1}, lambda: ran.append("one") or {"a": 1}) == {"a": 1}
                with pytest.raises(LookupError) as raised:
                    lab.run(READ, failing_control, lambda: ran.append("two") or {"a": 1})
                assert raised.value is boom
                with lab.serving():  # nested: the outermost block queues
                    lab.run(READ, lambda: 2, lambda: ran.append("three") or 2)
                time.sleep(0.2)
                assert ran == [] and lab.stats() == {} and lab.wait_idle(0)
            assert lab.wait_idle(5)
            assert sorted(ran) == ["one", "three", "two"]
            assert sorted(r.outcome for r in published.results) == ["match", "match", "mismatch"]
        finally:
            lab.close()

    def test_workers_stand_aside_while_any_request_is_served(self):
        """A queued sample waits for another thread's open request, but at most yield_s."""
        lab = _lab(_Collect(), yield_s=5.0)
        started = []
        opened, release = threading.Event(), threading.Event()

        def request():
            with lab.serving():
                opened.set()
                release.wait(5)

        try:
            other = threading.Thread(target=request)
            other.start()
            assert opened.wait(5)
            lab.run(READ, lambda: 1, lambda: started.append(time.monotonic()) or 1)  # outside serving
            time.sleep(0.3)
            assert started == []
            ended = time.monotonic()
            release.set()
            other.join(5)
            assert lab.wait_idle(5) and started[0] >= ended
            lab.yield_s = 0.1  # under constant load a sample runs anyway after yield_s
            opened.clear()
            release.clear()
            other = threading.Thread(target=request)
            other.start()
            assert opened.wait(5)
            queued = time.monotonic()
            lab.run(READ, lambda: 1, lambda: started.append(time.monotonic()) or 1)
            assert lab.wait_idle(5) and 0.05 <= started[1] - queued < 2.0
            release.set()
            other.join(5)
        finally:
            lab.close()

    def test_a_request_holds_at_most_queue_size_samples(self):
        """Samples beyond queue_size are dropped and counted at once, the rest run after the request."""
        published = _Collect()
        lab = _lab(published, queue_size=2)
        try:
            with lab.serving():
                for _ in range(5):
                    assert lab.run(READ, lambda: 1, lambda: 1) == 1
                assert lab.stats() == {"dropped": 3} and published.drops == 3
            assert lab.wait_idle(5)
            assert [r.outcome for r in published.results] == ["match", "match"]
        finally:
            lab.close()

    def test_a_span_closed_on_another_thread_queues_its_own_samples_only(self):
        """A span left open (an abandoned response) may be closed by the collector on another
        thread: it queues its own samples there and leaves that thread's open span alone."""
        published = _Collect()
        lab = _lab(published)
        ran = []
        try:
            left_open = lab.serving()
            spans = {}

            def request():
                left_open.__enter__()
                lab.run(READ, lambda: 1, lambda: ran.append("abandoned") or 1)

            other = threading.Thread(target=request)
            other.start()
            other.join(5)
            with lab.serving():
                lab.run(READ, lambda: 2, lambda: ran.append("current") or 2)
                left_open.__exit__(None, None, None)  # closed here, on this thread
                spans["held"] = list(lab._local.held)
                assert lab.wait_idle(5) and ran == ["abandoned"]
            assert len(spans["held"]) == 1
            assert lab.wait_idle(5) and sorted(ran) == ["abandoned", "current"]
        finally:
            lab.close()

    def test_samples_held_past_close_are_dropped_and_counted(self):
        """A request that outlives close() loses its samples to the drop counter, not silently."""
        published = _Collect()
        lab = _lab(published)
        with lab.serving():
            lab.run(READ, lambda: 1, lambda: 1)
            lab.close()
        assert published.results == [] and published.drops == 1 and lab.stats()["dropped"] == 1

    def test_a_worker_stands_aside_at_its_checkpoints_mid_sample(self):
        """A request that starts while a candidate is under way holds the worker at the candidate's
        next checkpoint (a database call) until it ends; the candidate's time leaves the wait out."""
        published = _Collect()
        lab = _lab(published, yield_s=5.0)
        inside, go_on, opened, release = threading.Event(), threading.Event(), threading.Event(), threading.Event()
        resumed = []

        def candidate():
            inside.set()
            go_on.wait(5)
            lab.checkpoint()  # e.g. before its next statement
            resumed.append(time.monotonic())
            return 1

        def request():
            with lab.serving():
                opened.set()
                release.wait(5)

        try:
            lab.run(READ, lambda: 1, candidate)
            assert inside.wait(5)
            other = threading.Thread(target=request)
            other.start()
            assert opened.wait(5)
            go_on.set()
            time.sleep(0.3)
            assert resumed == []
            ended = time.monotonic()
            release.set()
            other.join(5)
            assert lab.wait_idle(5) and resumed[0] >= ended
            assert [r.outcome for r in published.results] == ["match"]
            assert published.results[0].candidate.duration_s < 0.25
        finally:
            lab.close()

    def test_a_checkpoint_off_a_worker_does_nothing(self):
        """checkpoint() on a request's own thread (or any thread not in a sample) never waits."""
        lab = _lab(_Collect(), yield_s=5.0)
        try:
            with lab.serving():
                started = time.monotonic()
                lab.checkpoint()
                assert time.monotonic() - started < 0.1
        finally:
            lab.close()

    def test_checkpoints_of_a_sample_share_one_yield_budget(self):
        """Under constant load a sample stands aside yield_s in all, not yield_s per checkpoint."""
        published = _Collect()
        lab = _lab(published, yield_s=0.1)
        opened, release = threading.Event(), threading.Event()

        def candidate():
            for _ in range(10):
                lab.checkpoint()
            return 1

        def request():
            with lab.serving():
                opened.set()
                release.wait(10)

        try:
            other = threading.Thread(target=request)
            other.start()
            assert opened.wait(5)
            queued = time.monotonic()
            lab.run(READ, lambda: 1, candidate)
            assert lab.wait_idle(5)
            assert time.monotonic() - queued < 0.6
            assert [r.outcome for r in published.results] == ["match"]
            release.set()
            other.join(5)
        finally:
            lab.close()

    def test_a_request_s_samples_start_after_request_s_after_it_ended(self):
        """The span ends when the response is closed, before the server sent it: the worker waits a moment more."""
        lab = _lab(_Collect(), yield_s=5.0, after_request_s=0.2)
        started = []
        try:
            with lab.serving():
                lab.run(READ, lambda: 1, lambda: started.append(time.monotonic()) or 1)
            ended = time.monotonic()
            assert lab.wait_idle(5) and started[0] - ended >= 0.15
        finally:
            lab.close()

    def test_the_looks_of_a_re_check_share_the_sample_s_yield_budget(self):
        """Under constant load a parked sample is looked at every poll_s: its looks stand aside within
        the sample's one yield_s, not yield_s each (which would leave later samples queued for long)."""
        published = _Collect()
        applied = threading.Event()
        row = ("things", (1,))
        compare = lambda read, a, b: [] if a == b else [Difference("things", (1,), "v", a, b, "value_differs")]  # noqa: E731
        lab = Laboratory(compare, published, workers=1, recheck_s=60, poll_s=0.01, yield_s=0.2,
                         pending=lambda refs: set() if applied.is_set() else refs & {row})
        opened, release = threading.Event(), threading.Event()

        def request():
            with lab.serving():
                opened.set()
                release.wait(30)

        other = threading.Thread(target=request)
        try:
            other.start()
            assert opened.wait(5)
            for _ in range(5):  # wait for their row, looked at again and again
                lab.run(READ, lambda: {"v": 2}, lambda: {"v": 1})
            time.sleep(1.5)  # their yield budgets are spent; a look standing aside yield_s each would starve the queue
            queued = time.monotonic()
            lab.run(READ, lambda: {"v": 3}, lambda: {"v": 3})
            deadline = time.monotonic() + 10
            while not published.results and time.monotonic() < deadline:
                time.sleep(0.01)
            assert [r.outcome for r in published.results] == ["match"]
            assert time.monotonic() - queued < 1.5
        finally:
            applied.set()
            release.set()
            other.join(5)
            lab.close()


EXITS = """
import atexit
from shadow.compare import ReadType
from shadow.experiment import Laboratory, Publisher

class Quiet(Publisher):
    def publish(self, result): pass
    def dropped(self, read, count=1): pass

lab = Laboratory(lambda read, a, b: [], Quiet())
atexit.register(lab.close)  # as hrp_data.web's extension registers its Cutover's close
assert lab.run(ReadType("things.get", "things"), lambda: 1, lambda: 1) == 1
assert lab.wait_idle(5)
"""


def test_a_process_that_shadowed_a_read_exits():
    """The interpreter joins a ThreadPoolExecutor's threads at exit before any atexit hook: workers
    that loop until close() (an atexit hook) kept every app process that had shadowed a read from
    exiting (a gunicorn worker's graceful stop ended in its SIGKILL at the graceful timeout)."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-c", EXITS], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        _, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail("the process did not exit within 20 s of its last statement")
    assert process.returncode == 0, err
    assert time.monotonic() - started < 20
