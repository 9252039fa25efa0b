"""A stateful property test of the cutover: writes, deletes, applier runs, failed and killed moves.

Invariant: every acknowledged write is in the primary, and once the outbox is drained, in the
secondary too, once; a deleted row, or a write the guard refused on the secondary, is in neither.
Moves fail by an exception or by the moving process being SIGKILLed, at every point. Runs bounded in `make test` and longer in `make soak`.
"""

from __future__ import annotations

import sqlite3
import uuid
import subprocess
import sys
from collections import Counter

import psycopg2
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hrp_data.flip import move as flip, journal as move_journal
from hrp_data.cutover.dual_write import Cutover
from hrp_data.cutover.assemble import open_cutover
from hrp_data.flip.move import move
from hrp_data.cutover.phases import PHASES, SQLITE, Phase
from hrp_data.cutover.replay import replay_outbox
from hrp_data.schema.install import upgrade
from tests.integration.cutover_helpers import settings_for
from tests.integration.test_move_faults import KILLER, Injected, _libpq

MOVABLE = (Phase.DUAL_WRITE, Phase.SHADOW, Phase.POSTGRES_PRIMARY)


def _name_counts(legacy_file, postgres_url, side: str) -> Counter:
    if side == SQLITE:
        with sqlite3.connect(legacy_file) as raw:
            return Counter(r[0] for r in raw.execute("SELECT horse_name FROM horses"))
    with psycopg2.connect(_libpq(postgres_url)) as raw, raw.cursor() as cursor:
        cursor.execute("SELECT horse_name FROM horses")
        return Counter(r[0] for r in cursor.fetchall())


def _names_in(legacy_file, postgres_url, side: str) -> set[str]:
    return set(_name_counts(legacy_file, postgres_url, side))


def machine_for(cutover: Cutover, legacy_file, postgres_url):
    class Cutover_(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            flip.fault_at = None
            cutover.finish_interrupted_move(wait=True)
            replay_outbox(cutover)
            primary = PHASES[cutover.phase(fresh=True).phase].primary
            self.present = _names_in(legacy_file, postgres_url, primary)
            self.deleted: set[str] = set()
            self.mine: list[str] = []  # made by this example, in order: draws stay the same on a replay
            self.counter = 0
            self.run = uuid.uuid4().hex  # id(self) is reused by later examples on the same tables

        def _name(self) -> str:
            self.counter += 1
            name = f"model {self.run} {self.counter}"
            self.mine.append(name)
            return name

        @rule()
        def write_through_the_layer(self):
            name = self._name()
            with cutover.writing() as uow:
                uow.horses.add(horse_name=name)
                uow.commit()
            self.present.add(name)

        @rule()
        def write_outside_the_layer_on_the_primary(self):
            name = self._name()
            if PHASES[cutover.phase(fresh=True).phase].primary == SQLITE:
                with sqlite3.connect(legacy_file) as raw:
                    raw.execute("INSERT INTO horses (horse_name) VALUES (?)", (name,))
            else:
                with psycopg2.connect(_libpq(postgres_url)) as raw, raw.cursor() as cursor:
                    cursor.execute("INSERT INTO horses (horse_name) VALUES (%s)", (name,))
            self.present.add(name)

        @precondition(lambda self: bool(self.mine))
        @rule(data=st.data())
        def delete_one(self, data):
            name = data.draw(st.sampled_from(self.mine))
            self.mine.remove(name)
            with cutover.writing() as uow:
                uow.session.execute(sa.text("DELETE FROM horses WHERE horse_name = :n"), {"n": name})
                uow.commit()
            self.present.discard(name)
            self.deleted.add(name)

        @rule()
        def drain(self):
            replay_outbox(cutover)
            phase = cutover.phase(fresh=True).phase
            for side in {PHASES[phase].primary, PHASES[phase].secondary} - {None}:
                counts = _name_counts(legacy_file, postgres_url, side)
                found = set(counts)
                assert self.present <= found, sorted(self.present - found)[:3]
                assert not (self.deleted & found), sorted(self.deleted & found)[:3]
                doubled = [name for name in self.present if counts[name] > 1]
                assert not doubled, (side, doubled[:3])

        @rule()
        def write_to_the_secondary_behind_the_layer(self):
            """The guard refuses it on whichever side is the secondary; nothing lands anywhere."""
            secondary = PHASES[cutover.phase(fresh=True).phase].secondary
            if secondary is None:
                return
            self.counter += 1
            name = f"refused {self.run} {self.counter}"
            if secondary == SQLITE:
                with pytest.raises(sqlite3.DatabaseError):
                    with sqlite3.connect(legacy_file) as raw:
                        raw.execute("INSERT INTO horses (horse_name) VALUES (?)", (name,))
            else:
                with pytest.raises(psycopg2.Error):
                    with psycopg2.connect(_libpq(postgres_url)) as raw, raw.cursor() as cursor:
                        cursor.execute("INSERT INTO horses (horse_name) VALUES (%s)", (name,))
            self.deleted.add(name)  # in neither database, now or after any drain

        @rule(step=st.sampled_from([1, -1]), point=st.sampled_from(flip.FAULT_POINTS))
        def move_one_step_killed(self, step, point):
            """The moving process is SIGKILLed at `point`; the next move (or the applier) finishes it."""
            current = cutover.phase(fresh=True).phase
            index = MOVABLE.index(current) + step
            if not 0 <= index < len(MOVABLE):
                return
            done = subprocess.run(
                [sys.executable, "-c", KILLER, point, MOVABLE[index].value, f"sqlite:///{legacy_file}", postgres_url],
                capture_output=True, text=True, timeout=120,
            )
            assert done.returncode == -9, done.stderr[-2000:]
            cutover.finish_interrupted_move(wait=True)
            assert move_journal.current(cutover.sqlite) is None

        @rule(step=st.sampled_from([1, -1]), fault=st.sampled_from((None, *flip.FAULT_POINTS)))
        def move_one_step(self, step, fault):
            current = cutover.phase(fresh=True).phase
            index = MOVABLE.index(current) + step
            if not 0 <= index < len(MOVABLE):
                return
            target = MOVABLE[index]

            def inject(at: str) -> None:
                if at == fault:
                    raise Injected(at)

            flip.fault_at = inject
            try:
                move(cutover, target, pre_drain_s=0)
            except Injected:
                pass
            finally:
                flip.fault_at = None
            cutover.finish_interrupted_move(wait=True)
            assert move_journal.current(cutover.sqlite) is None

        @invariant()
        def every_acknowledged_write_is_in_the_primary(self):
            primary = PHASES[cutover.phase(fresh=True).phase].primary
            found = _names_in(legacy_file, postgres_url, primary)
            assert self.present <= found, sorted(self.present - found)[:3]
            assert not (self.deleted & found), sorted(self.deleted & found)[:3]

    return Cutover_


@pytest.fixture
def model_cutover(legacy_file, postgres_url):
    upgrade(postgres_url)
    with open_cutover(settings_for(legacy_file, postgres_url)) as cutover:
        move(cutover, Phase.DUAL_WRITE)
        yield cutover
    flip.fault_at = None


def _run(cutover, legacy_file, postgres_url, examples: int, steps: int) -> None:
    machine = machine_for(cutover, legacy_file, postgres_url)
    machine.TestCase.settings = settings(
        max_examples=examples, stateful_step_count=steps, deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    machine.TestCase().runTest()


def test_the_cutover_model_holds(model_cutover, legacy_file, postgres_url):
    _run(model_cutover, legacy_file, postgres_url, examples=6, steps=12)


@pytest.mark.soak
def test_the_cutover_model_holds_long(model_cutover, legacy_file, postgres_url):
    _run(model_cutover, legacy_file, postgres_url, examples=100, steps=40)
