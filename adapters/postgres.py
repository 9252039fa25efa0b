"""PostgreSQL: engine factory with client-side bounds, capture triggers, identities.

Every call to PostgreSQL is bounded on the client side. connect_timeout and
TCP keepalives notice a dead or unreachable server; a server-side
statement_timeout is a second line. Neither helps against a server that is
frozen (SIGSTOP): the kernel still acknowledges, nothing ever answers. So app
processes install `bound_every_call()`, a psycopg2 wait callback that waits
with select() and gives up after a deadline (default CALL_TIMEOUT_S, per
thread via `call_timeout()`); psycopg2 then closes the connection and the pool
replaces it. The pool is SQLAlchemy's. COPY does not work under a wait
callback, so bulk loaders (the backfill) run in processes that do not install it.

A pooled connection is pinged at checkout only when its socket says something
happened (`ping_when_readable`), and a read-only unit of work's autocommit is
psycopg2's own switch (`plain_autocommit`): a short read on a warm connection is
one round trip, its statement, instead of four.
"""

from __future__ import annotations

import contextlib
import select
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.extensions
import sqlalchemy as sa

from adapters.catalog import quote, short_name
from adapters.convert import Kind
from adapters.types import kind_of
from adapters.convert import dump_jsonb
from adapters.log_safety import quiet_parameters

CONNECT_TIMEOUT_S = 3
STATEMENT_TIMEOUT_MS = 30_000


def psycopg2_url(url: str) -> str:
    """The URL with the psycopg2 driver named (SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3)."""
    parsed = sa.engine.make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed.render_as_string(hide_password=False)


CALL_TIMEOUT_S = 5.0
_deadline = threading.local()


class ClientTimeout(psycopg2.OperationalError):
    """PostgreSQL did not answer within the client-side deadline."""


def _wait_with_deadline(connection: Any) -> None:
    budget = getattr(_deadline, "seconds", CALL_TIMEOUT_S)
    deadline = time.monotonic() + budget
    while True:
        state = connection.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ClientTimeout(f"PostgreSQL did not answer within {budget:g}s (client-side timeout)")
        fileno = connection.fileno()
        if state == psycopg2.extensions.POLL_READ:
            select.select([fileno], [], [], remaining)
        elif state == psycopg2.extensions.POLL_WRITE:
            select.select([], [fileno], [], remaining)
        else:
            raise psycopg2.OperationalError(f"unexpected poll state {state}")


def bound_every_call(seconds: float = CALL_TIMEOUT_S) -> None:
    """Bound every PostgreSQL call of this process (connect included) to `seconds` by default."""
    global CALL_TIMEOUT_S
    CALL_TIMEOUT_S = seconds
    psycopg2.extensions.set_wait_callback(_wait_with_deadline)


@contextlib.contextmanager
def call_timeout(seconds: float) -> Iterator[None]:
    """Use another deadline for PostgreSQL calls made by this thread inside the block."""
    previous = getattr(_deadline, "seconds", None)
    _deadline.seconds = seconds
    try:
        yield
    finally:
        if previous is None:
            del _deadline.seconds
        else:
            _deadline.seconds = previous


def create_postgres_engine(url: str, *, application_name: str = "hrp-cutover", **kw: Any) -> sa.Engine:
    """An engine on PostgreSQL with bounded connects and keepalives, and JIT off: the app's reads
    are short, and on a server built with LLVM (Debian's, RDS, Cloud SQL) compiling the plans of
    the costlier ones took longer than it saved (docs/operations.md, settings)."""
    connect_args = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 2,
        "application_name": application_name,
        "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c timezone=UTC -c jit=off",
    }
    connect_args.update(kw.pop("connect_args", {}))
    url = psycopg2_url(url)
    ping = kw.pop("pool_pre_ping", True)
    kw.setdefault("pool_timeout", 5)
    kw.setdefault("json_serializer", dump_jsonb)  # JSONB reads every document back as the same value
    engine = sa.create_engine(url, connect_args=connect_args, **kw)
    sa.event.listen(engine, "connect", lambda dbapi_connection, _record: quiet_parameters(dbapi_connection))
    plain_autocommit(engine)
    if ping:
        ping_when_readable(engine)
    return engine


def ping_when_readable(engine: sa.Engine) -> None:
    """SQLAlchemy's pre-ping, for the pooled connections whose socket has something to read, or has
    failed. An idle connection has nothing to read from a live server: a server that ends the session
    (a restart, a failover, pg_terminate_backend, a pooler closing it) sends its FATAL message and
    closes the socket, and TCP keepalives mark a vanished peer's socket as failed; each makes the
    socket readable. So a connection whose socket is quiet is used without a round trip, and any
    other is pinged; a failed ping raises DisconnectionError, and the pool connects again (up to
    three times), as pool_pre_ping does. A message a live server sends unasked (a NOTICE, a changed
    parameter) only costs that ping."""
    poller_flags = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP | select.POLLNVAL

    def checked_out(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        try:
            poller = select.poll()
            poller.register(dbapi_connection.fileno(), poller_flags)
            quiet = not poller.poll(0)
        except (OSError, ValueError, psycopg2.Error):  # no socket (closed): let the ping say so
            quiet = False
        if quiet and not dbapi_connection.closed:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:  # noqa: BLE001 - any failure of the ping: a fresh connection
            raise sa.exc.DisconnectionError(f"ping failed: {error}") from error

    sa.event.listen(engine, "checkout", checked_out)


def plain_autocommit(engine: sa.Engine) -> None:
    """Isolation levels set with psycopg2's own attributes, which send nothing: SQLAlchemy's
    psycopg2 dialect sets them with set_isolation_level(), and once that has named the server's
    default level explicitly (as SQLAlchemy's reset does at every checkin), psycopg2 sends
    `SET default_transaction_isolation` at every switch into autocommit and out of it: two round
    trips around each read-only unit of work. Here AUTOCOMMIT is `autocommit = True`, the
    default level `autocommit = False` with psycopg2's level left at its default (the server's,
    which is the level SQLAlchemy read at connect), and any other level is named for the
    transactions' BEGIN."""
    dialect = engine.dialect
    levels = set(dialect.get_isolation_level_values(None))

    def set_isolation_level(dbapi_connection: Any, level: str) -> None:
        if level not in levels:
            raise sa.exc.ArgumentError(f"invalid isolation level {level!r} for PostgreSQL")
        if dbapi_connection.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            dbapi_connection.rollback()  # as psycopg2's set_isolation_level does
        if level == "AUTOCOMMIT":
            dbapi_connection.isolation_level = None
            dbapi_connection.autocommit = True
            return
        dbapi_connection.autocommit = False
        dbapi_connection.isolation_level = None if level == dialect.default_isolation_level else level

    dialect.set_isolation_level = set_isolation_level



def create_tables(connection: sa.Connection, tables: list[sa.Table]) -> None:
    """CREATE TABLE with its indexes for each of `tables`, then their foreign keys (after every
    table, so foreign keys between them in any order, cycles included, are fine)."""
    for table in tables:
        connection.execute(sa.schema.CreateTable(table))
        for index in table.indexes:
            connection.execute(sa.schema.CreateIndex(index))
    for table in tables:
        for constraint in table.foreign_key_constraints:
            connection.execute(sa.schema.AddConstraint(constraint))


EPOCH_NOW = "extract(epoch from clock_timestamp())::float8"
APPLYING_SETTING = "hrp_cutover.applying"
"""Set to 'on' (SET LOCAL) by the applier, so its own writes are not captured again."""


def _key_part(column: sa.Column, row: str) -> str:
    value = f"{row}.{quote(column.name)}"
    if isinstance(column.type, sa.Integer):
        return f"{value}::text"
    if kind_of(column) is Kind.BLOB or isinstance(column.type, sa.LargeBinary):  # {"blob": hex}, as SQLite's trigger and key_to_json spell it
        return f"json_build_object('blob', encode({value}, 'hex'))::text"
    return f"to_json({value})::text"


def _key_expression(table: sa.Table, row: str) -> str:
    """The outbox spelling of a row's key, as SQLite's trigger spells it (adapters.outbox): integers
    as they are, bytes as {"blob": hex}, anything else as JSON (text quoted)."""
    parts = " || ',' || ".join(_key_part(c, row) for c in table.primary_key.columns)
    return f"'[' || {parts} || ']'"


def capture_function_name(table: sa.Table, outbox: str) -> str:
    return short_name(f"{outbox}_{table.name}")


def capture_function_ddl(table: sa.Table, outbox: str) -> str:
    """The PL/pgSQL function recording every insert, update and delete of `table` in `outbox`."""
    name = table.name.replace("'", "''")
    insert = f'INSERT INTO "{outbox}" (table_name, pk, op, created_at) VALUES'
    new_key, old_key = _key_expression(table, "NEW"), _key_expression(table, "OLD")
    body = f"""
BEGIN
  IF coalesce(current_setting('{APPLYING_SETTING}', true), '') = 'on' THEN
    RETURN NULL;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    {insert} ('{name}', {new_key}, lower(TG_OP), {EPOCH_NOW});
  END IF;
  IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND {old_key} IS DISTINCT FROM {new_key}) THEN
    {insert} ('{name}', {old_key}, 'delete', {EPOCH_NOW});
  END IF;
  RETURN NULL;
END"""
    function = quote(capture_function_name(table, outbox))
    return f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $hrp${body}$hrp$"


def capture_trigger_name(table: sa.Table, outbox: str) -> str:
    return short_name(f"{outbox}_{table.name}")


def capture_trigger_ddl(table: sa.Table, outbox: str) -> str:
    """CREATE TRIGGER for the capture function (created disabled: a move enables it)."""
    return (
        f"CREATE TRIGGER {quote(capture_trigger_name(table, outbox))} AFTER INSERT OR UPDATE OR DELETE"
        f" ON {quote(table.name)} FOR EACH ROW EXECUTE FUNCTION {quote(capture_function_name(table, outbox))}()"
    )


GUARD_TRIGGER = "hrp_cutover_guard"
GUARD_FUNCTION = "hrp_cutover_guard"
GUARD_COUNTER = "hrp_cutover_guard_refused"
"""A sequence: nextval survives the refused statement's rollback, so it counts refusals."""
MAINTENANCE_SETTING = "hrp_cutover.maintenance"
"""`SET hrp_cutover.maintenance = 'on'` lets an operator's maintenance session write a guarded database."""
GUARD_MESSAGE = (
    "hrp-cutover guard: this PostgreSQL database is not the primary now, so this write to {table} would be"
    " lost; write through the app (it writes to the primary), or for maintenance"
    " SET hrp_cutover.maintenance = 'on' first (see docs/operations.md)"
)


def guard_function_ddl() -> list[str]:
    """The refusing function the guard triggers run, and its counter."""
    body = f"""
BEGIN
  IF coalesce(current_setting('{APPLYING_SETTING}', true), '') = 'on'
     OR coalesce(current_setting('{MAINTENANCE_SETTING}', true), '') = 'on' THEN
    RETURN NULL;
  END IF;
  PERFORM nextval('{GUARD_COUNTER}');
  RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
    MESSAGE = replace('{GUARD_MESSAGE.replace("'", "''")}', '{{table}}', TG_TABLE_NAME);
END"""
    return [
        f"CREATE SEQUENCE IF NOT EXISTS {GUARD_COUNTER}",
        f"CREATE OR REPLACE FUNCTION {GUARD_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $hrp${body}$hrp$",
    ]


def guard_trigger_ddl(table: sa.Table) -> str:
    """CREATE TRIGGER refusing writes to `table` from outside the layer (created disabled)."""
    return (
        f'CREATE TRIGGER "{GUARD_TRIGGER}" BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE'
        f" ON {quote(table.name)} FOR EACH STATEMENT EXECUTE FUNCTION {GUARD_FUNCTION}()"
    )


def trigger_states(connection: sa.Connection) -> dict[tuple[str, str], bool]:
    """{(table, trigger): enabled} for every trigger of the layer in the public schema."""
    rows = connection.exec_driver_sql(
        "SELECT c.relname, t.tgname, t.tgenabled <> 'D' FROM pg_trigger t"
        " JOIN pg_class c ON c.oid = t.tgrelid"
        " WHERE NOT t.tgisinternal AND left(t.tgname, 12) = 'hrp_cutover_'"
        " AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
    ).all()
    return {(table, trigger): enabled for table, trigger, enabled in rows}


def set_trigger_enabled(connection: sa.Connection, table: sa.Table, trigger: str, enabled: bool) -> None:
    """ENABLE or DISABLE one trigger (SHARE ROW EXCLUSIVE: readers are not blocked, writers wait)."""
    verb = "ENABLE" if enabled else "DISABLE"
    connection.exec_driver_sql(f"ALTER TABLE {quote(table.name)} {verb} TRIGGER {quote(trigger)}")


def guard_refusals(connection: sa.Connection) -> int | None:
    """How many writes the guard has refused in this database (None: no guard installed)."""
    found = connection.exec_driver_sql("SELECT to_regclass(%(s)s)", {"s": GUARD_COUNTER}).scalar()
    if found is None:
        return None
    last, called = connection.exec_driver_sql(f"SELECT last_value, is_called FROM {GUARD_COUNTER}").one()
    return last if called else 0


def _identity_sequence(connection: sa.Connection, table: sa.Table) -> str | None:
    key = next(iter(table.primary_key.columns)).name
    return connection.exec_driver_sql(
        "SELECT pg_get_serial_sequence(%(t)s, %(c)s)", {"t": quote(table.name), "c": key}
    ).scalar()


def bump_identity(connection: sa.Connection, table: sa.Table, at_least: int = 0) -> None:
    """Set the identity sequence of `table` past its largest id and past `at_least` (an id the
    other database has handed out already: never given again), no-op for tables without one."""
    key = next(iter(table.primary_key.columns)).name
    sequence = _identity_sequence(connection, table)
    if sequence is None:
        return
    connection.exec_driver_sql(
        f"SELECT setval(%(s)s, GREATEST((SELECT max({quote(key)}) FROM {quote(table.name)}),"
        f" (SELECT last_value FROM {sequence}), %(at_least)s, 1))",
        {"s": sequence, "at_least": at_least},
    )


def issued_id(connection: sa.Connection, table: sa.Table) -> int:
    """The largest id the identity of `table` has handed out (0: none, or no identity)."""
    sequence = _identity_sequence(connection, table)
    if sequence is None:
        return 0
    last, called = connection.exec_driver_sql(f"SELECT last_value, is_called FROM {sequence}").one()
    return last if called else last - 1
