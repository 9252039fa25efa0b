"""End-to-end fixtures: the HRP app built by its factory on a legacy SQLite file (made by the
sqlite3 shell) and a real PostgreSQL database, brought to a phase with hrp_data.flip.move.move.

A `World` is built once per phase and module (the suite stays fast): the app, its Cutover,
both databases, and three test clients (an admin, a plain user, nobody logged in).
"""

from __future__ import annotations

import time

import contextlib
import dataclasses
import itertools
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from hrp_data.cutover.dual_write import Cutover
from hrp_data.flip.move import move
from hrp_data.cutover.phases import ORDER, Phase
from hrp_data.schema.install import upgrade
from hrp_data.web import create_app, services
from hrp_data.web.extension import HrpCutover
from tests.conftest import create_legacy_file, scratch_database
from tests.integration.cutover_helpers import settings_for

PASSWORD = "correct horse battery"
ROOT = Path(__file__).resolve().parents[2]
_names = itertools.count(1)


def wait_until(predicate, what, timeout: float):
    """The first truthy value of predicate(), polled every 0.2 s; AssertionError naming `what`
    (a text, or a callable giving one) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")


def unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}{uuid.uuid4().hex[:6]}"


def step_to(cutover: Cutover, target: Phase) -> None:
    """Move one allowed step at a time from the current phase to `target` (no preflight)."""
    current = cutover.phase(fresh=True).phase
    step = 1 if ORDER.index(target) > ORDER.index(current) else -1
    for index in range(ORDER.index(current) + step, ORDER.index(target) + step, step):
        move(cutover, ORDER[index])


def hrp_cutover() -> list[str]:
    """The installed `hrp-cutover` command (or the same entry point through this interpreter)."""
    script = Path(sys.executable).with_name("hrp-cutover")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from tools.cli import main; main()"]


def run_cli(sqlite_path: Path, postgres_url: str, *args: str, stdin: str | None = None) -> str:
    """Run one `hrp-cutover` command as an operator would, in its own process; its output."""
    done = subprocess.run(
        [*hrp_cutover(), "--sqlite", str(sqlite_path), "--postgres", postgres_url, *args],
        input=stdin, text=True, capture_output=True, cwd=ROOT, timeout=300,
    )
    assert done.returncode == 0, f"hrp-cutover {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def backfill(sqlite_path: Path, postgres_url: str) -> None:
    """In dual_write or shadow: back the file up, then copy the rows that were there before (the CLI's way)."""
    run_cli(sqlite_path, postgres_url, "backup")
    run_cli(sqlite_path, postgres_url, "backfill")


def login(client: FlaskClient, username: str, password: str = PASSWORD) -> None:
    response = client.post("/api/session", json={"username": username, "password": password})
    assert response.status_code == 200, response.get_json()


@dataclasses.dataclass
class World:
    phase: Phase
    app: Flask
    cutover: Cutover
    sqlite_path: Path
    postgres_url: str
    admin: FlaskClient
    user: FlaskClient
    anon: FlaskClient
    admin_name: str
    user_name: str

    @property
    def both_written(self) -> bool:
        return self.phase in (Phase.DUAL_WRITE, Phase.SHADOW, Phase.POSTGRES_PRIMARY)


@contextlib.contextmanager
def build_world(phase: Phase, directory: Path, server_url: str) -> Iterator[World]:
    sqlite_path = directory / "hrp_database.db"
    create_legacy_file(sqlite_path)
    with scratch_database(server_url, "hrp_e2e") as postgres_url:
        upgrade(postgres_url)
        app = create_app(settings_for(sqlite_path, postgres_url))
        app.config["TESTING"] = True
        state = HrpCutover.state(app)
        try:
            cutover = state.cutover
            step_to(cutover, phase)
            admin_name, user_name = unique("admin"), unique("user")
            services.register_user(
                cutover, username=admin_name, email=f"{admin_name}@example.com", password=PASSWORD, is_admin=True
            )
            admin, user, anon = app.test_client(), app.test_client(), app.test_client()
            registered = anon.post(
                "/api/users", json={"username": user_name, "email": f"{user_name}@example.com", "password": PASSWORD}
            )
            assert registered.status_code == 201, registered.get_json()
            login(admin, admin_name)
            login(user, user_name)
            yield World(phase, app, cutover, sqlite_path, postgres_url, admin, user, anon, admin_name, user_name)
        finally:
            state.close()


PHASES = [phase for phase in ORDER]


@pytest.fixture(scope="module", params=PHASES, ids=[p.value for p in PHASES])
def world(request, tmp_path_factory, postgres_server_url) -> Iterator[World]:
    """The app in one phase (each phase in turn), built once per module."""
    directory = tmp_path_factory.mktemp(f"e2e-{request.param.value}")
    with build_world(request.param, directory, postgres_server_url) as built:
        yield built


@pytest.fixture(scope="module")
def shadow_world(tmp_path_factory, postgres_server_url) -> Iterator[World]:
    """The app in phase shadow, for tests that do not depend on the phase (validation, auth)."""
    directory = tmp_path_factory.mktemp("e2e-shadow-only")
    with build_world(Phase.SHADOW, directory, postgres_server_url) as built:
        yield built
