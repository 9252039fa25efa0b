"""hrp_data.cutover.assemble and Cutover's constructor: a Cutover assembled from parts handed in, without I/O."""

from __future__ import annotations

import functools
import threading

import pytest
import sqlalchemy as sa

from adapters.catalog import Catalog
from hrp_data.cutover.applier import Applier
from hrp_data.cutover.assemble import applier_route
from hrp_data.cutover.dual_write import Cutover, Engines, MovedTables, PostgresLayer
from hrp_data.cutover.phases import Phase
from hrp_data.settings import Settings, SettingsError
from hrp_data.unit_of_work import UnitOfWork
from tests.unit.fakes import FakeEngine, FakePhaseStore


class FakeApplier:
    def __init__(self):
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True


class FakeShadow:
    def __init__(self):
        self.closed = False
        self.readers = []

    def reader(self, row):
        self.readers.append(row)
        return ("shadowed reader", row.phase)

    def close(self) -> None:
        self.closed = True


class FakeLayer:
    """PostgresLayer's answer, without PostgreSQL."""

    def __init__(self, installed: bool):
        self.installed = installed

    def install(self) -> bool:
        return self.installed


def _empty_catalog() -> Catalog:
    return Catalog(tables={}, not_carried=[], metadata=sa.MetaData())


def _cutover(phase: Phase, *, postgres: bool = True) -> tuple[Cutover, dict]:
    parts = {
        "engines": Engines(FakeEngine("sqlite"), FakeEngine("postgres") if postgres else None),
        "phases": FakePhaseStore(phase),
        "tables": MovedTables(_empty_catalog()),
        "postgres_layer": PostgresLayer(None),
        "schema_watch": object(),
        "applier": FakeApplier(),
        "shadow": FakeShadow(),
    }
    return Cutover(Settings(sqlite_url="sqlite:///unused.db"), **parts), parts


class TestCutoverFromParts:
    def test_the_constructor_keeps_the_parts_and_starts_nothing(self):
        """Building a Cutover opens no connection and starts no thread."""
        threads = threading.active_count()
        cutover, parts = _cutover(Phase.DUAL_WRITE)
        assert threading.active_count() == threads
        assert cutover.sqlite is parts["engines"].sqlite and cutover.postgres is parts["engines"].postgres
        assert cutover.phases is parts["phases"] and cutover.applier is parts["applier"]
        assert cutover.shadow is parts["shadow"] and cutover.schema_watch is parts["schema_watch"]
        assert not parts["applier"].started

    def test_the_route_follows_the_phase_row(self):
        """No secondary in sqlite_only; SQLite to PostgreSQL in dual_write, checked against a fresh read."""
        cutover, parts = _cutover(Phase.SQLITE_ONLY)
        assert cutover.route() is None
        parts["phases"].phase = Phase.DUAL_WRITE
        route = cutover.route()
        assert route.primary is cutover.sqlite and route.secondary is cutover.postgres
        assert route.tables is cutover.captured
        assert route.still_primary() and parts["phases"].fresh_reads == 1
        parts["phases"].phase = Phase.POSTGRES_PRIMARY
        assert not route.still_primary()

    def test_reading_is_shadowed_where_the_phase_says(self):
        cutover, parts = _cutover(Phase.SQLITE_ONLY)
        plain = cutover.reading()
        assert isinstance(plain, UnitOfWork) and plain.engine is cutover.sqlite
        parts["phases"].phase = Phase.SHADOW
        assert cutover.reading() == ("shadowed reader", Phase.SHADOW)

    def test_without_postgres_a_phase_that_needs_it_is_a_settings_error(self):
        cutover, _ = _cutover(Phase.SQLITE_ONLY, postgres=False)
        assert cutover.engine("sqlite") is cutover.sqlite
        with pytest.raises(SettingsError, match="HRP_POSTGRES_URL"):
            cutover.engine("postgres")

    def test_start_starts_the_applier_and_leaving_closes_every_part(self):
        cutover, parts = _cutover(Phase.DUAL_WRITE)
        with cutover.start() as started:
            assert started is cutover and parts["applier"].started
        assert parts["applier"].stopped and parts["shadow"].closed
        assert parts["engines"].sqlite.disposed and parts["engines"].postgres.disposed

    def test_an_adopted_catalog_is_what_the_cutover_and_its_routes_carry(self):
        """The schema watch's `adopt` replaces the catalog and the captured tables the route reads."""
        cutover, parts = _cutover(Phase.DUAL_WRITE)
        before = cutover.captured
        fresh = _empty_catalog()
        parts["tables"].adopt(fresh)
        assert cutover.catalog is fresh and cutover.captured is not before
        assert cutover.route().tables is cutover.captured


class TestApplierRoute:
    def test_the_applier_waits_for_the_layers_tables_on_postgres(self):
        """The applier's route is None until PostgreSQL holds the layer's tables; a real Applier starts no thread."""
        engines = Engines(FakeEngine("sqlite"), FakeEngine("postgres"))
        phases, tables = FakePhaseStore(Phase.DUAL_WRITE), MovedTables(_empty_catalog())
        layer = FakeLayer(installed=False)
        threads = threading.active_count()
        applier = Applier(functools.partial(applier_route, phases, engines, tables, layer))
        assert threading.active_count() == threads
        assert applier.route_for() is None
        layer.installed = True
        route = applier.route_for()
        assert route.primary is engines.sqlite and route.secondary is engines.postgres

    def test_no_secondary_asks_nothing_of_postgres(self):
        engines = Engines(FakeEngine("sqlite"), None)
        phases, tables = FakePhaseStore(Phase.SQLITE_ONLY), MovedTables(_empty_catalog())
        assert applier_route(phases, engines, tables, FakeLayer(installed=False)) is None
