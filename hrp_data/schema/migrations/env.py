"""Alembic environment for the HRP PostgreSQL schema.

Run by `hrp_data.schema.install` (which hands over a connection inside its own
transaction through `config.attributes["connection"]`) or by any Alembic
command given `hrp_data.schema.install.alembic_config(url)`. Migrations run in one
transaction under an advisory lock, so concurrent upgrades take turns; the
version table is hrp_cutover_alembic_version, and autogenerate compares types
and server defaults and skips what `hrp_data.schema.install.include_object_for` skips.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from hrp_data.models import Base
from hrp_data.schema.install import LOCK_KEY, VERSION_TABLE, engine_for, comparison_options

config = context.config


def run_offline() -> None:
    """Emit the SQL script (alembic upgrade --sql) without a database."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        on_version_apply=config.attributes.get("on_version_apply", ()),
        **comparison_options(connection),
    )
    with context.begin_transaction():
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
elif config.attributes.get("connection") is not None:
    run_online(config.attributes["connection"])
else:
    engine = engine_for(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as connection:
            run_online(connection)
            connection.commit()
    finally:
        engine.dispose()
