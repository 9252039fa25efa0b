"""Secrets in another app's file: a column whose name looks secret (`client_secret`, `reset_token`,
shadow.redact.looks_secret) is shown only as a fingerprint by assess, the quarantine and verify,
and its table's changes are applied without a value in any statement PostgreSQL could log, as
the HRP tables' secret columns are."""

from __future__ import annotations

import contextlib
import os
import sqlite3

import psycopg2
import psycopg2.extensions
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from hrp_data.catalog import catalog_of_file
from hrp_data.cutover.apply import has_secrets
from tests.conftest import MAINTENANCE
from tools.cli import cli

QUARANTINED = "CLIENTSECRET-NUL\x00-TAIL"
ON_SQLITE = "LITE-RESET-TOKEN-123"
ON_POSTGRES = "PG-RESET-TOKEN-456"
SECRETS = ("CLIENTSECRET", ON_SQLITE, ON_POSTGRES)


def _cli(path, url: str, *args: str, ok: bool = True) -> str:
    psycopg2.extensions.set_wait_callback(None)  # the CLI's commands bound their own calls
    done = CliRunner().invoke(cli, ["--sqlite", f"sqlite:///{path}", "--postgres", url, *args])
    assert (done.exit_code == 0) == ok, f"{' '.join(args)}: {done.output}"
    return done.output


def test_secret_looking_columns_of_any_file_are_fingerprinted_everywhere(tmp_path, postgres_url):
    path = tmp_path / "accounts.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT, client_secret TEXT, reset_token TEXT)")
        raw.execute("INSERT INTO accounts VALUES (1, 'ann', 'fine', ?)", (ON_SQLITE,))
        raw.execute("INSERT INTO accounts VALUES (2, 'bob', ?, NULL)", (QUARANTINED,))  # a NUL byte: quarantined

    shown = [_cli(path, postgres_url, "assess")]
    for step in (["schema"], ["phase", "set", "dual_write"], ["backup"], ["backfill"], ["replay"]):
        shown.append(_cli(path, postgres_url, *step))
    shown.append(_cli(path, postgres_url, "quarantine"))
    assert "nul_byte_in_text" in shown[0] and "sha256:" in shown[0], shown[0]

    url = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg2.connect(url, options=MAINTENANCE) as connection, connection.cursor() as cursor:
        cursor.execute("UPDATE accounts SET reset_token = %s WHERE id = 1", (ON_POSTGRES,))  # a planted difference
    verified = _cli(path, postgres_url, "verify", ok=False)
    assert "reset_token" in verified and "sha256:" in verified, verified
    shown.append(verified)

    for output in shown:
        for secret in SECRETS:
            assert secret not in output, (secret, output)
    assert has_secrets(catalog_of_file(path).postgres_tables()["accounts"])
    assert not has_secrets(sa.Table("races", sa.MetaData(), sa.Column("id", sa.Integer), sa.Column("going", sa.Text)))


def test_secret_columns_spelled_otherwise_are_fingerprinted_too(tmp_path, postgres_url):
    """`pwd`, `"API Key"`, `private_key`, `totp_seed`, `salt` and `credentials` (a JSON blob holding a
    token) look secret as much as `password` or `api_key` do: their values were shown in clear by
    assess, the quarantine and verify."""
    names = ("pwd", "API Key", "private_key", "totp_seed", "salt", "credentials")
    columns = ", ".join(f'"{name}" TEXT' for name in names)
    path = tmp_path / "spelled.db"
    with sqlite3.connect(path) as raw:
        raw.execute(f"CREATE TABLE logins (id INTEGER PRIMARY KEY, name TEXT, {columns})")
        for row in (1, 2, 3):
            values = [f"SPELLED-{n}-{row}" for n in range(len(names) - 1)] + [f'{{"token": "SPELLED-J-{row}"}}']
            raw.execute("INSERT INTO logins VALUES (?, 'ann', ?, ?, ?, ?, ?, ?)", (row, *values))
        raw.execute("""UPDATE logins SET pwd = 'SPELLED-NUL' || char(0) || 'x' WHERE id = 2""")
        raw.execute("""UPDATE logins SET "API Key" = CAST(X'5350454C4C45442DFF' AS TEXT) WHERE id = 3""")

    shown = [_cli(path, postgres_url, "assess"), _cli(path, postgres_url, "assess", "--json")]
    for step in (["schema"], ["phase", "set", "dual_write"], ["backup"], ["backfill"]):
        _cli(path, postgres_url, *step)
    shown += [_cli(path, postgres_url, "quarantine"), _cli(path, postgres_url, "quarantine", "--format", "json")]
    assert "nul_byte_in_text" in shown[2] and "invalid_utf8_in_text" in shown[2], shown[2]

    url = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    assignments = ", ".join(f'"{name}" = %s' for name in names)
    with psycopg2.connect(url, options=MAINTENANCE) as connection, connection.cursor() as cursor:
        cursor.execute(f"UPDATE logins SET {assignments} WHERE id = 1", [f"SPELLED-PG-{n}" for n in range(len(names))])
    shown += [_cli(path, postgres_url, "verify", ok=False), _cli(path, postgres_url, "verify", "--json", ok=False)]
    assert all(name in shown[-1] for name in names), shown[-1]

    for output in shown:
        assert "SPELLED" not in output, output


def test_a_secret_key_column_is_shown_as_a_fingerprint(tmp_path, postgres_url):
    """A table keyed by its secret (`sessions.token`): the places that name a row for the operator showed
    the token in clear: assess's example keys (values that will not convert, and orphans), the
    quarantine's rows and live changes, verify's differences (and the verify runs kept in the SQLite
    file). They show its fingerprint; the key stored in hrp_cutover_quarantine, the backfill's
    checkpoint and the outbox stays as it is, since the retry, the resume and the applier need it."""
    path = tmp_path / "sessions.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT)")
        raw.execute("INSERT INTO accounts VALUES (1, 'ann')")
        raw.execute("CREATE TABLE sessions (token TEXT PRIMARY KEY, account_id INTEGER REFERENCES accounts (id),"
                    " data TEXT)")
        raw.execute("INSERT INTO sessions VALUES ('KEYTOKEN-ORPHAN', 99, 'x')")  # quarantined: no parent
        raw.execute("INSERT INTO sessions VALUES ('KEYTOKEN-DIFFERS', 1, 'x')")
    shown = [_cli(path, postgres_url, "assess")]
    for step in (["schema"], ["phase", "set", "dual_write"], ["backup"], ["backfill"]):
        _cli(path, postgres_url, *step)
    shown.append(_cli(path, postgres_url, "quarantine"))
    with sqlite3.connect(path) as raw:
        raw.execute("INSERT INTO sessions VALUES ('KEYTOKEN-WAITS', 99, 'x')")  # waits for its parent
    shown.append(_cli(path, postgres_url, "replay", ok=False))
    url = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg2.connect(url, options=MAINTENANCE) as connection, connection.cursor() as cursor:
        cursor.execute("UPDATE sessions SET data = 'y' WHERE account_id = 1")
    shown.append(_cli(path, postgres_url, "verify", "--json", ok=False))
    assert "orphan_foreign_key" in shown[1] and "sha256:" in shown[1], shown[1]
    assert "failing    sessions ['sha256:" in shown[2], shown[2]
    assert "value_differs" in shown[3] and "sha256:" in shown[3], shown[3]
    with sqlite3.connect(path) as raw:
        kept = " ".join(str(row) for row in raw.execute("SELECT * FROM hrp_cutover_verify_runs"))
    leaked = [output for output in shown + [kept] if "KEYTOKEN" in output]
    assert leaked == []


def test_a_token_inside_a_json_document_is_fingerprinted(tmp_path, postgres_url):
    """A column with an innocent name (`payload`, chosen jsonb, which cannot also be chosen "secret")
    whose documents hold a token (`{"auth": {"token": ...}}`): verify's differences and the quarantine
    showed the token in clear; the members whose names look secret are fingerprinted, the rest shown."""
    path = tmp_path / "events.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, payload TEXT)")
        raw.execute("""INSERT INTO events VALUES (1, '{"auth": {"token": "JSONTOKEN-LITE"}, "n": 1}')""")
        raw.execute("""INSERT INTO events VALUES (2, '[{"api_key": "JSONTOKEN-NUL' || char(0) || '"}]')""")
    (tmp_path / "hrp-cutover.toml").write_text('[column-types.events]\npayload = "jsonb"\n')
    with _working_directory(tmp_path):
        for step in (["schema"], ["phase", "set", "dual_write"], ["backup"], ["backfill"]):
            _cli(path, postgres_url, *step)
    shown = [_cli(path, postgres_url, "quarantine"), _cli(path, postgres_url, "quarantine", "--format", "json")]
    assert "nul_byte_in_text" in shown[0], shown[0]
    url = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg2.connect(url, options=MAINTENANCE) as connection, connection.cursor() as cursor:
        cursor.execute("""UPDATE events SET payload = '{"auth": {"token": "JSONTOKEN-PG"}, "n": 2}' WHERE id = 1""")
    shown += [_cli(path, postgres_url, "verify", ok=False), _cli(path, postgres_url, "verify", "--json", ok=False)]
    assert '\\"n\\":2' in shown[-1] and "sha256:" in shown[-1], shown[-1]  # the rest of the document is shown
    for output in shown:
        assert "JSONTOKEN" not in output, output


@contextlib.contextmanager
def _working_directory(path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def test_the_dashboard_shows_no_secret_key_of_the_backfill_checkpoint(tmp_path, postgres_url):
    """The dashboard's backfill progress (/admin/cutover, status.json) showed each table's checkpoint
    (`last_key`): for a table keyed by its token, the last token copied, in clear."""
    from hrp_data.cutover.assemble import open_cutover
    from hrp_data.settings import Settings
    from hrp_data.web.dashboard import backfill_progress

    path = tmp_path / "sessions.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE sessions (token TEXT PRIMARY KEY, data TEXT)")
        raw.execute("INSERT INTO sessions VALUES ('CHECKPOINT-TOKEN', 'x')")
        raw.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        raw.execute("INSERT INTO notes VALUES (7, 'x')")
    for step in (["schema"], ["phase", "set", "dual_write"], ["backup"], ["backfill"]):
        _cli(path, postgres_url, *step)
    settings = Settings.from_env(sqlite_url=f"sqlite:///{path}", postgres_url=postgres_url, secret_key="k" * 40)
    with open_cutover(settings) as cutover:
        rows = {row["table"]: row for row in backfill_progress(cutover)["tables"]}
    assert rows["notes"]["last_key"] == [7]  # an innocent key is shown as it is
    assert rows["sessions"]["last_key"][0].startswith("sha256:"), rows["sessions"]
    assert "CHECKPOINT-TOKEN" not in repr(rows)


def test_replay_and_the_applier_name_a_change_keyed_by_its_token_by_a_fingerprint(tmp_path, postgres_url):
    """A change of a table keyed by its token that waits in the outbox (its parent is not in PostgreSQL):
    replay's `failing` line and the applier's `outbox.apply_failed` log line showed the token in clear."""
    path = tmp_path / "sessions.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT)")
        raw.execute("CREATE TABLE sessions (token TEXT PRIMARY KEY, account_id INTEGER REFERENCES accounts (id))")
    for step in (["schema"], ["phase", "set", "dual_write"]):
        _cli(path, postgres_url, *step)
    with sqlite3.connect(path) as raw:
        raw.execute("INSERT INTO sessions VALUES ('WAITING-TOKEN', 99)")
    psycopg2.extensions.set_wait_callback(None)
    done = CliRunner().invoke(cli, ["--sqlite", f"sqlite:///{path}", "--postgres", postgres_url,
                                     "--log-format", "json", "replay"])
    assert done.exit_code == 1, done.output
    assert "failing    sessions ['sha256:" in done.stdout, done.output  # waiting for its parent, or refused
    assert "outbox.apply_failed" in done.stderr and "sha256:" in done.stderr, done.stderr
    assert "WAITING-TOKEN" not in done.output


def test_a_backfill_stopped_at_a_table_keyed_by_a_token_names_its_checkpoint_by_a_fingerprint(tmp_path, postgres_url):
    """Stopped on request (Ctrl-C), the backfill says where its checkpoint is: the last key copied,
    which for a table keyed by a secret-looking column (an API token) is given as its fingerprint."""
    from hrp_data.backfill.run import BackfillInterrupted, Listener, Options, run_backfill
    from hrp_data.cutover import assemble
    from tests.integration.cutover_helpers import settings_for

    path = tmp_path / "tokens.db"
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("CREATE TABLE api_tokens (api_token TEXT PRIMARY KEY, owner TEXT)")
        connection.executemany("INSERT INTO api_tokens VALUES (?, ?)",
                               [(f"tok-LIVE-{n:04d}-SECRETPART", f"o{n}") for n in range(300)])
        connection.commit()
    _cli(path, postgres_url, "schema")
    _cli(path, postgres_url, "phase", "set", "dual_write")
    psycopg2.extensions.set_wait_callback(None)
    stop = __import__("threading").Event()

    class StopAfterOneBatch(Listener):
        def batch_read(self, table: str, keys: list) -> None:
            stop.set()

    with assemble.open_cutover(settings_for(path, postgres_url), bound_calls=False) as cutover:
        try:
            run_backfill(cutover, Options(batch_size=100, workers=0), listener=StopAfterOneBatch(), stop=stop)
        except BackfillInterrupted as interrupted:
            message = str(interrupted)
        else:
            raise AssertionError("the backfill was not interrupted")
    assert "checkpoint committed (api_tokens up to key ['sha256:" in message, message
    assert "SECRETPART" not in message and "tok-LIVE" not in message, message
