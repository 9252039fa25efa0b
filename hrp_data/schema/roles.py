"""PostgreSQL roles of least privilege: the database owner, the migrator, the app, a read-only verifier.

- owner: owns the database (a managed platform's admin user, CREATEROLE, not superuser); creates
  the other roles and grants them the database and the schema (`owner_statements`, run by
  `hrp-cutover roles`).
- migrator: runs `schema`, `backfill`, `verify --repair` and the moves; it creates, and so owns,
  every table, index, sequence and trigger of the layer. `table_grants`, run as the migrator by
  `hrp-cutover schema`, grants the app and the verifier what exists and, by default privileges,
  what the migrator creates later.
- app: rows only (SELECT, INSERT, UPDATE, DELETE on the app's tables, the outbox and the
  idempotency keys; the backfill's and the schema's own tables read-only), sequences (identities,
  setval), temporary tables (the applier's staging tables). It never creates or alters anything.
- verifier: SELECT only (`hrp-cutover verify`, `status`, `report`).

`missing_privileges` says, GRANT by GRANT, what a role lacks for what it must do
(the readiness check `privileges`); `mover_problem` why a role cannot move (the dashboard).
Passwords never pass through here in clear: `password_verifier` hashes one with libpq
(PQencryptPasswordConn), as psql's \\password does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import sqlalchemy as sa

from adapters.catalog import quote
from adapters.outbox import OUTBOX
from adapters.postgres import GUARD_COUNTER
from hrp_data.backfill.holds import HELD_INDEXES
from hrp_data.backfill.quarantine import QUARANTINE
from hrp_data.backfill.state import STATE_TABLE
from hrp_data.cutover.idempotency import KEYS_TABLE
from hrp_data.schema.install import VERSION_TABLE

DEFAULT_NAMES = {"migrator": "hrp_migrator", "app": "hrp_app", "verifier": "hrp_verifier"}
ROWS = ("SELECT", "INSERT", "UPDATE", "DELETE")
SEQUENCE_USE = ("USAGE", "SELECT", "UPDATE")
"""nextval (identities, the guard's counter), last_value (bump_identity) and setval (the applier)."""
APP_WRITES = (OUTBOX, KEYS_TABLE)
"""Layer tables the app writes: the capture triggers and the applier (outbox), idempotency keys."""
APP_READS = (VERSION_TABLE, STATE_TABLE, HELD_INDEXES, QUARANTINE)
"""Layer tables the app only reads (status, dashboard, readiness); the migrator's tools write them."""
LAYER_SEQUENCES = (GUARD_COUNTER,)


@dataclasses.dataclass(frozen=True)
class RoleNames:
    migrator: str = DEFAULT_NAMES["migrator"]
    app: str = DEFAULT_NAMES["app"]
    verifier: str = DEFAULT_NAMES["verifier"]

    def logins(self) -> list[str]:
        return [self.migrator, self.app, self.verifier]


def owner_statements(names: RoleNames, database: str) -> list[str]:
    """What the database owner runs once: the roles, and their rights on the database and the schema."""
    db = quote(database)
    migrator, app, verifier = (quote(n) for n in names.logins())
    return [
        f"CREATE ROLE {migrator} LOGIN",
        f"CREATE ROLE {app} LOGIN",
        f"CREATE ROLE {verifier} LOGIN",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        f"GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {migrator}, {app}, {verifier}",
        f"GRANT USAGE, CREATE ON SCHEMA public TO {migrator}",
        f"GRANT USAGE ON SCHEMA public TO {app}, {verifier}",
    ]


OPTIONAL = {
    "pg_trgm": "GRANT CREATE ON DATABASE {db} TO {migrator}",
    "session_replication_role": "GRANT SET ON PARAMETER session_replication_role TO {migrator}",
}
"""What each optional privilege buys is in docs/operations.md (least privilege)."""


def table_grants(migrator: str, app: str | None, verifier: str | None) -> list[str]:
    """What the migrator runs (`hrp-cutover schema` does): grants on every table and sequence it owns
    now, and the same by default on those it creates later."""
    statements = []
    owner = quote(migrator)
    if app is not None:
        grantee = quote(app)
        statements += [
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public"
            f" GRANT {', '.join(ROWS)} ON TABLES TO {grantee}",
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public"
            f" GRANT {', '.join(SEQUENCE_USE)} ON SEQUENCES TO {grantee}",
            f"GRANT {', '.join(ROWS)} ON ALL TABLES IN SCHEMA public TO {grantee}",
            f"GRANT {', '.join(SEQUENCE_USE)} ON ALL SEQUENCES IN SCHEMA public TO {grantee}",
        ]
    if verifier is not None:
        grantee = quote(verifier)
        statements += [
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT SELECT ON TABLES TO {grantee}",
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT SELECT ON SEQUENCES TO {grantee}",
            f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {grantee}",
            f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {grantee}",
        ]
    return statements


def read_only_statements(app: str, present: Iterable[str]) -> list[str]:
    """The app reads the schema's and the backfill's own tables, never writes them."""
    tables = [t for t in APP_READS if t in set(present)]
    if not tables:
        return []
    return [f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {', '.join(map(quote, tables))} FROM {quote(app)}"]


def role_exists(connection: sa.Connection, role: str) -> bool:
    return connection.exec_driver_sql("SELECT 1 FROM pg_roles WHERE rolname = %(r)s", {"r": role}).first() is not None


def grant_tables(connection: sa.Connection, app: str | None, verifier: str | None) -> list[str]:
    """Run `table_grants` as the connection's role (the migrator), in its transaction. A role that does
    not exist is left out (named in the returned notes), so `schema` works before `roles` was run."""
    notes = []
    known = {}
    for kind, role in (("app", app), ("verifier", verifier)):
        if role is None:
            continue
        if role_exists(connection, role):
            known[kind] = role
        else:
            notes.append(f"role {role} does not exist: nothing granted to it (see `hrp-cutover roles`)")
    if not known:
        return notes
    migrator = connection.exec_driver_sql("SELECT current_user").scalar_one()
    for statement in table_grants(migrator, known.get("app"), known.get("verifier")):
        connection.exec_driver_sql(statement)
    if "app" in known:
        present = set(sa.inspect(connection).get_table_names())
        for statement in read_only_statements(known["app"], present):
            connection.exec_driver_sql(statement)
    granted = " and ".join(f"{kind} role {role}" for kind, role in known.items())
    notes.append(f"granted the {granted} every table and sequence of {migrator}, now and later")
    return notes


def missing_privileges(
    connection: sa.Connection, role: str, tables: Sequence[str], *, layer: bool = True
) -> list[str]:
    """Each GRANT `role` lacks to serve the app with PostgreSQL as primary or secondary: rows of
    `tables` and of the layer's tables, their sequences, temporary tables. Empty: nothing lacks."""
    if not role_exists(connection, role):
        return [f"CREATE ROLE {quote(role)} LOGIN (the role does not exist; see `hrp-cutover roles`)"]
    wanted: dict[str, tuple[str, ...]] = {name: ROWS for name in tables}
    if layer:
        wanted.update({name: ROWS for name in APP_WRITES})
        wanted.update({name: ("SELECT",) for name in APP_READS})
    present = set(sa.inspect(connection).get_table_names())
    grantee = quote(role)
    missing = []
    database = connection.exec_driver_sql("SELECT current_database()").scalar_one()
    lacking = [p for p in ("CONNECT", "TEMPORARY") if not _has(connection, "database", role, database, p)]
    if lacking:
        missing.append(f"GRANT {', '.join(lacking)} ON DATABASE {quote(database)} TO {grantee}")
    if not _has(connection, "schema", role, "public", "USAGE"):
        missing.append(f"GRANT USAGE ON SCHEMA public TO {grantee}")
    for name, privileges in wanted.items():
        if name not in present:
            continue  # a missing table is the schema check's business
        lacking = [p for p in privileges if not _has(connection, "table", role, quote(name), p)]
        if lacking:
            missing.append(f"GRANT {', '.join(lacking)} ON {quote(name)} TO {grantee}")
    for sequence in _sequences(connection, [n for n in wanted if n in present]) + _layer_sequences(connection, layer):
        lacking = [p for p in SEQUENCE_USE if not _has(connection, "sequence", role, sequence, p)]
        if lacking:
            missing.append(f"GRANT {', '.join(lacking)} ON SEQUENCE {sequence} TO {grantee}")
    return missing


def _has(connection: sa.Connection, kind: str, role: str, thing: str, privilege: str) -> bool:
    """One privilege at a time: has_*_privilege with a list answers whether *any* is held."""
    return bool(connection.exec_driver_sql(
        f"SELECT has_{kind}_privilege(%(r)s, %(t)s, %(p)s)", {"r": role, "t": thing, "p": privilege}
    ).scalar())


def _sequences(connection: sa.Connection, tables: Sequence[str]) -> list[str]:
    """The sequences owned by columns of `tables` (identities, serials), as regclass text."""
    if not tables:
        return []
    return list(connection.exec_driver_sql(
        "SELECT d.objid::regclass::text FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'"
        " WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass"
        " AND d.refobjid = ANY(%(t)s::regclass[]) AND d.deptype IN ('a', 'i') ORDER BY 1",
        {"t": [quote(t) for t in tables]},
    ).scalars())


def _layer_sequences(connection: sa.Connection, layer: bool) -> list[str]:
    if not layer:
        return []
    return [s for s in LAYER_SEQUENCES
            if connection.exec_driver_sql("SELECT to_regclass(%(s)s)", {"s": s}).scalar() is not None]


def mover_problem(connection: sa.Connection, tables: Sequence[str]) -> str | None:
    """Why the connection's role cannot move the phase (None: it can). A move enables and disables the
    capture and guard triggers (ALTER TABLE), which PostgreSQL allows only to a table's owner."""
    rows = connection.exec_driver_sql(
        "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c"
        " WHERE c.oid = ANY(%(t)s::regclass[]) AND NOT pg_has_role(current_user, c.relowner, 'USAGE')"
        " ORDER BY 1",
        {"t": [quote(t) for t in tables if _exists(connection, t)]},
    ).all()
    if not rows:
        return None
    role = connection.exec_driver_sql("SELECT current_user").scalar_one()
    owner = rows[0][1]
    return (
        f"role {role} does not own {', '.join(r[0] for r in rows[:3])}{' ...' if len(rows) > 3 else ''}"
        f" (owner: {owner}), and a move enables and disables triggers on them"
    )


def _exists(connection: sa.Connection, table: str) -> bool:
    return connection.exec_driver_sql("SELECT to_regclass(%(t)s)", {"t": quote(table)}).scalar() is not None


def password_verifier(dbapi_connection, role: str, password: str) -> str:
    """The SCRAM verifier of `password` for `role`, computed by libpq on the client, so the password
    itself is never sent, logged or shown (the server's log would show only this hash)."""
    from psycopg2.extensions import encrypt_password

    return encrypt_password(password, role, dbapi_connection)


def set_password(connection: sa.Connection, role: str, password: str) -> None:
    verifier = password_verifier(connection.connection.dbapi_connection, role, password)
    connection.exec_driver_sql(f"ALTER ROLE {quote(role)} PASSWORD %(v)s", {"v": verifier})


def create_roles(connection: sa.Connection, names: RoleNames) -> list[str]:
    """Run `owner_statements` as the connection's role (the database owner, CREATEROLE), in its
    transaction; a role that exists already is kept as it is. What was done, one line each."""
    database = connection.exec_driver_sql("SELECT current_database()").scalar_one()
    done = []
    for statement in owner_statements(names, database):
        if statement.startswith("CREATE ROLE "):
            role = names.logins()[[quote(n) for n in names.logins()].index(statement.split()[2])]
            if role_exists(connection, role):
                done.append(f"role {role} exists: kept")
                continue
            done.append(f"role {role} created (LOGIN, no password: set one with --set-passwords or psql's \\password)")
        connection.exec_driver_sql(statement)
    done.append(f"granted CONNECT, TEMPORARY on {database} and USAGE on schema public;"
                f" CREATE on schema public to {names.migrator} only")
    return done
