"""The layer's own PostgreSQL objects, installed up front by the migrator (`hrp-cutover schema`).

The outbox and the idempotency keys, the backfill's checkpoints, held indexes and quarantine,
and the guard's function and counter. Installed here, by the role that owns the schema, so the
app's role never needs CREATE: when it finds one missing it says so in one line
(hrp_data.cutover.dual_write) instead of failing on every write.
"""

from __future__ import annotations

import sqlalchemy as sa

from adapters.postgres import guard_function_ddl
from hrp_data.backfill import holds, quarantine, state
from hrp_data.cutover import outbox


def install_layer(engine: sa.Engine) -> None:
    """Create every table, sequence and function of the layer that is missing (idempotent)."""
    outbox.install_tables(engine)
    with engine.begin() as connection:
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(state.INSTALL_LOCK)))
        for ddl in (state.DDL, holds.DDL, quarantine.DDL, *guard_function_ddl()):
            connection.exec_driver_sql(ddl)


def prepare(url: str, *, app_role: str | None, verifier_role: str | None) -> list[str]:
    """After the schema: the layer's objects, then the grants to the app and the verifier (as the
    URL's role, which owns them). One note per grant made or role missing; SchemaError (one line) on failure."""
    from hrp_data.schema.install import SchemaError, _one_line, engine_for
    from hrp_data.schema.roles import grant_tables

    engine = engine_for(url)
    try:
        install_layer(engine)
        with engine.begin() as connection:
            notes = grant_tables(connection, app_role, verifier_role)
    except sa.exc.SQLAlchemyError as error:
        raise SchemaError(_one_line(f"cannot install the layer's tables at {url}", error)) from None
    finally:
        engine.dispose()
    return notes
