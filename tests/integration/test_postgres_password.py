"""The PostgreSQL password need not be on the command line (where the process list shows it):
libpq's PGPASSWORD and password file (~/.pgpass, PGPASSFILE) work through psycopg2 for every
command, with a URL that names no password (docs/operations.md#the-postgresql-password)."""

from __future__ import annotations

import os
import subprocess

import psycopg2
from sqlalchemy.engine import make_url

from tests.e2e.conftest import ROOT, hrp_cutover

PASSWORD = "pw with space@and:colon\\"


def _password_role(server) -> str:
    """A role that must give its password (scram-sha-256) on the test's own server; its URL, no password."""
    admin = psycopg2.connect(make_url(server.url).set(drivername="postgresql").render_as_string(hide_password=False))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SET password_encryption = 'scram-sha-256'")
        cursor.execute("CREATE ROLE hrp_pw LOGIN PASSWORD %s", (PASSWORD,))
        cursor.execute("CREATE DATABASE hrp_pw OWNER hrp_pw")
    hba = server.data_dir / "pg_hba.conf"
    hba.write_text("local all hrp_pw scram-sha-256\nhost all hrp_pw all scram-sha-256\n" + hba.read_text())
    with admin.cursor() as cursor:
        cursor.execute("SELECT pg_reload_conf()")
    admin.close()
    return make_url(server.url).set(username="hrp_pw", password=None, database="hrp_pw").render_as_string(
        hide_password=False)


def _schema(url: str, sqlite_path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*hrp_cutover(), "--sqlite", str(sqlite_path), "schema"], cwd=ROOT, text=True,
                          capture_output=True, timeout=300, env=env | {"HRP_POSTGRES_URL": url})


def test_the_password_comes_from_pgpassword_or_a_password_file(own_postgres, legacy_file, tmp_path):
    url = _password_role(own_postgres)
    assert "pw with" not in url
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "HRP_"))} | {"HOME": str(tmp_path)}

    refused = _schema(url, legacy_file, env)
    assert refused.returncode == 2 and "hrp_pw" in refused.stderr + refused.stdout

    from_env = _schema(url, legacy_file, env | {"PGPASSWORD": PASSWORD})
    assert from_env.returncode == 0, from_env.stderr
    assert "schema upgraded" in from_env.stdout

    passfile = tmp_path / "hrp.pgpass"
    passfile.write_text("*:*:*:hrp_pw:" + PASSWORD.replace("\\", "\\\\").replace(":", "\\:") + "\n")
    passfile.chmod(0o600)
    from_file = _schema(url, legacy_file, env | {"PGPASSFILE": str(passfile)})
    assert from_file.returncode == 0, from_file.stderr
    assert "already at head" in from_file.stdout

    (tmp_path / ".pgpass").write_text(passfile.read_text())
    (tmp_path / ".pgpass").chmod(0o600)
    from_home = _schema(url, legacy_file, env)
    assert from_home.returncode == 0, from_home.stderr

    server = make_url(url)
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[hrp]\nhost={server.query.get('host') or server.host}\nport={server.port or 5432}\n"
                        f"dbname=hrp_pw\nuser=hrp_pw\npassword={PASSWORD}\n")
    services.chmod(0o600)
    (tmp_path / ".pgpass").unlink()
    from_service = _schema("postgresql://?service=hrp", legacy_file, env | {"PGSERVICEFILE": str(services)})
    assert from_service.returncode == 0, from_service.stderr

    for done in (refused, from_env, from_file, from_home, from_service):
        assert "pw with space" not in done.stdout + done.stderr
