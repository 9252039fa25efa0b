"""Secrets never reach PostgreSQL's server log: a dual-write run with planted secrets, every
statement logged (log_statement = 'all', log_min_duration_statement = 0) and failing statements
logged (log_min_error_statement = 'error'), then a grep of the server's log file."""

from __future__ import annotations

import sqlite3

import psycopg2
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from adapters.log_safety import QUIET_PARAMETERS, read_settings, risks
from tools.demo import log_no_statement_text
from hrp_data.cutover.assemble import open_cutover
from hrp_data.flip.move import move
from hrp_data.cutover.phases import Phase
from hrp_data.flip.readiness import checklist, statement_logging_check
from hrp_data.cutover.replay import replay_outbox
from hrp_data.schema.install import upgrade
from hrp_data.cutover.status import statement_logging
from tests.conftest import scratch_database
from tests.integration.cutover_helpers import assert_equal, settings_for
from tests.integration.test_any_schema_secrets import _cli
from tools.cli import cli

PLANTED = "PLANTEDSECRET"


def _psql(url: str, *statements: str) -> None:
    connection = psycopg2.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))
    connection.autocommit = True
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
    connection.close()


@pytest.fixture
def logging_everything(own_postgres):
    """A database on a server of this test's own, whose sessions log every statement and every error."""
    with scratch_database(own_postgres.url, prefix="hrp_logged") as url:
        name = make_url(url).database
        _psql(
            url,
            f"ALTER DATABASE {name} SET log_statement = 'all'",
            f"ALTER DATABASE {name} SET log_min_duration_statement = 0",
            f"ALTER DATABASE {name} SET log_min_error_statement = 'error'",
        )
        upgrade(url)
        yield url, own_postgres.data_dir / "log"


def _credential(uow, user_id: int, n: int) -> dict:
    return uow.credentials.add(
        user_id=user_id, service_name="svc", api_key=f"{PLANTED}KEY{n}", api_secret=f"{PLANTED}123_{n}"
    )


def test_a_dual_write_run_logs_no_secret(logging_everything, legacy_file):
    url, server_log = logging_everything
    with open_cutover(settings_for(legacy_file, url)).start() as cutover:
        with cutover.writing() as uow:  # before dual_write: this user is only in SQLite
            early = uow.users.add(username="early", email="early@x", password_hash=f"{PLANTED}HASH1")
            uow.commit()
        _psql(url, "INSERT INTO users (id, username, email, password_hash) VALUES (500, 'pg', 'taken@x', 'h')")
        move(cutover, Phase.DUAL_WRITE)
        cutover.applier.stop()
        with cutover.writing() as uow:
            waiting = _credential(uow, early["id"], 1)  # its user is not in PostgreSQL yet
            user = uow.users.add(username="new", email="new@x", password_hash=f"{PLANTED}HASH2")
            changed = _credential(uow, user["id"], 2)
            clash = uow.users.add(username="clash", email="taken@x", password_hash=f"{PLANTED}HASH3")
            uow.commit()
        with cutover.writing() as uow:
            uow.credentials.update(changed["id"], api_secret=f"{PLANTED}456")
            uow.commit()
        with sqlite3.connect(legacy_file) as raw:  # a row PostgreSQL would refuse, next to a secret
            raw.execute(
                "INSERT INTO api_credentials (user_id, service_name, api_key, api_secret, is_active)"
                " VALUES (?, 'svc', ?, ?, 'maybe')",
                (user["id"], f"{PLANTED}KEY3", f"{PLANTED}789"),
            )

        first = replay_outbox(cutover)
        assert first.remaining == 3  # the waiting credential, the clashing user, the refused row
        with sqlite3.connect(legacy_file) as raw:  # the early user changes: its change carries it over
            raw.execute("UPDATE users SET last_login = '2025-01-01 00:00:00' WHERE id = ?", (early["id"],))
            raw.execute("DELETE FROM api_credentials WHERE is_active = 'maybe'")
            raw.execute("UPDATE users SET email = 'clash@x' WHERE id = ?", (clash["id"],))
        _psql(url, "SET hrp_cutover.maintenance = 'on'", "DELETE FROM users WHERE id = 500")
        second = replay_outbox(cutover)
        assert second.remaining == 0, second
        assert waiting["id"]
    assert_equal(legacy_file, url)

    logged = server_log.read_text(errors="replace")
    assert "hrp_cutover_stage_api_credentials" in logged  # every statement was logged ...
    assert "uq_users_email" in logged  # ... and so was the failing one
    assert PLANTED not in logged


def test_waiting_and_refused_rows_carry_their_reason(logging_everything, legacy_file):
    url, _log = logging_everything
    with open_cutover(settings_for(legacy_file, url)).start() as cutover:
        with cutover.writing() as uow:
            early = uow.users.add(username="early", email="early@x", password_hash="h")
            uow.commit()
        move(cutover, Phase.DUAL_WRITE)
        cutover.applier.stop()
        with cutover.writing() as uow:
            _credential(uow, early["id"], 1)
            uow.commit()
        waiting = replay_outbox(cutover)
    assert waiting.remaining == 1
    assert waiting.last_error == f"waiting for its parent users.id={early['id']} in PostgreSQL"


def test_a_server_that_logs_every_statement_refuses_the_flip_with_the_fix(logging_everything, legacy_file):
    url, _log = logging_everything
    with open_cutover(settings_for(legacy_file, url)) as cutover:
        to_postgres = statement_logging_check(cutover, Phase.POSTGRES_PRIMARY)
        to_dual_write = statement_logging_check(cutover, Phase.DUAL_WRITE)
        listed = {check.name for check in checklist(cutover, Phase.DUAL_WRITE)}
        status = statement_logging(cutover)
    assert not to_postgres.ok
    assert "log_statement = all" in to_postgres.detail and "SET log_statement = 'ddl'" in to_postgres.detail
    assert "SET log_min_duration_statement = -1" in to_postgres.detail
    assert to_dual_write.ok and to_dual_write.detail.startswith("warning: ")
    assert "statement_logging" in listed
    assert [line.split(" = ")[0] for line in status] == [
        "log_statement", "log_min_duration_statement", "log_min_error_statement"
    ]


def test_default_settings_warn_about_failing_statements_only(legacy_file, postgres_url):
    upgrade(postgres_url)
    with open_cutover(settings_for(legacy_file, postgres_url)) as cutover:
        check = statement_logging_check(cutover, Phase.POSTGRES_PRIMARY)
        with cutover.engine("postgres").connect() as connection:
            quiet = [connection.exec_driver_sql(f"SHOW {name}").scalar() for name in QUIET_PARAMETERS]
    assert check.ok
    assert check.detail.startswith("warning: log_min_error_statement = error")
    assert "SET log_min_error_statement = 'panic'" in check.detail
    assert quiet == ["0", "0"]  # the layer's own sessions, where the role may (the test role may)


def test_status_prints_the_logging_warning(legacy_file, postgres_url):
    upgrade(postgres_url)
    result = CliRunner().invoke(cli, ["--sqlite", str(legacy_file), "--postgres", postgres_url, "status"])
    assert result.exit_code == 0, result.output
    assert "logging    warning: PostgreSQL log_min_error_statement = error" in result.output


def test_the_demo_server_logs_no_statement_text(own_postgres):
    log_no_statement_text(own_postgres.server.get_uri())
    engine = sa.create_engine(own_postgres.url)
    with engine.connect() as connection:
        found = risks(read_settings(connection), "postgres")
    engine.dispose()
    assert found == []


def test_a_unique_clash_on_a_secret_column_leaves_no_value_in_the_server_log(own_postgres, tmp_path):
    """PostgreSQL logs every error with its DETAIL whatever the statement-logging settings, and a unique
    violation's DETAIL repeats the key (`Key (access_token)=(...) already exists`): the applier's change
    of a row whose secret clashes, and the backfill's copy of one, must leave no secret in the log."""
    path = tmp_path / "tokens.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE tokens (id INTEGER PRIMARY KEY, owner TEXT, access_token TEXT UNIQUE)")
        raw.execute("INSERT INTO tokens VALUES (1, 'ann', ?)", (f"{PLANTED}-COPIED",))
    with scratch_database(own_postgres.url, prefix="hrp_clash") as url:
        for step in (["schema"], ["phase", "set", "dual_write"], ["backup"]):
            _cli(path, url, *step)
        _psql(url, "SET hrp_cutover.maintenance = 'on'",
              f"INSERT INTO tokens VALUES (100, 'pg', '{PLANTED}-COPIED'), (101, 'pg', '{PLANTED}-APPLIED')")
        _cli(path, url, "backfill")  # the copied row clashes: quarantined
        with sqlite3.connect(path) as raw:
            raw.execute("INSERT INTO tokens VALUES (2, 'bob', ?)", (f"{PLANTED}-APPLIED",))
        replayed = _cli(path, url, "replay", ok=False)  # the applied row clashes: it waits in the outbox
        assert "UniqueViolation" in replayed, replayed
    logged = (own_postgres.data_dir / "log").read_text(errors="replace")
    assert "uq_tokens_access_token" in logged  # both clashes were logged ...
    assert PLANTED not in logged  # ... without their values


def test_a_role_that_cannot_quiet_error_details_is_warned(postgres_url):
    """A role that may not set log_error_verbosity (least privilege) leaves DETAIL lines in the log: the
    statement-logging warning names the setting and its fix."""
    found = {risk.setting: risk for risk in risks({"log_error_verbosity": "default"}, "hrp_app")}
    assert not found["log_error_verbosity"].severe
    assert "ALTER ROLE \"hrp_app\" SET log_error_verbosity = 'terse'" in found["log_error_verbosity"].fix
    assert "log_error_verbosity" not in {risk.setting for risk in risks({"log_error_verbosity": "terse"}, "hrp_app")}
    engine = sa.create_engine(postgres_url)
    with engine.connect() as connection:  # the test's role may: the layer's own sessions are terse
        from adapters.log_safety import quiet_parameters
        assert quiet_parameters(connection.connection.dbapi_connection)
        assert connection.exec_driver_sql("SHOW log_error_verbosity").scalar() == "terse"
    engine.dispose()


def test_a_role_granted_some_of_the_quiet_parameters_gets_those(postgres_url):
    """GRANT SET ON PARAMETER is given one parameter at a time: a role granted the parameter
    lengths but not log_error_verbosity keeps its parameters out of the log (it lost both when one
    was missing), and says it could not set them all."""
    from adapters.log_safety import quiet_parameters

    role = "hrp_quiet_probe"
    engine = sa.create_engine(postgres_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
        connection.exec_driver_sql(f"CREATE ROLE {role} NOLOGIN")
        for name in QUIET_PARAMETERS:
            connection.exec_driver_sql(f"GRANT SET ON PARAMETER {name} TO {role}")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(f"SET ROLE {role}")
            connection.commit()
            assert not quiet_parameters(connection.connection.dbapi_connection)
            assert [connection.exec_driver_sql(f"SHOW {name}").scalar() for name in QUIET_PARAMETERS] == ["0", "0"]
            assert connection.exec_driver_sql("SHOW log_error_verbosity").scalar() == "default"
            connection.rollback()
    finally:
        engine.dispose()  # the session that took the role goes
        with engine.begin() as connection:
            for name in QUIET_PARAMETERS:
                connection.exec_driver_sql(f"REVOKE SET ON PARAMETER {name} FROM {role}")
            connection.exec_driver_sql(f"DROP ROLE {role}")
        engine.dispose()
