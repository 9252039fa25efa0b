"""The six HRP tables, optimized for PostgreSQL.

BIGINT identity keys, TIMESTAMPTZ, DATE, BOOLEAN, JSONB with GIN indexes,
DOUBLE PRECISION for SQLite REAL (bit-exact), named constraints, and the
indexes behind the app's queries. The trigram index on horses.horse_name is
optional: it is created only where the server can install pg_trgm.

Written out by hand, frozen: it does not import hrp_data.models, whose later
changes belong in later revisions.

Revision ID: 0001
Revises:
"""

from typing import Sequence, Union

import sqlalchemy as sa
import structlog
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

TRIGRAM_INDEX = "ix_horses_horse_name_trgm"

log = structlog.get_logger(__name__)


def _id() -> sa.Column:
    return sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False)


def _stamp(name: str) -> sa.Column:
    return sa.Column(
        name, postgresql.TIMESTAMP(timezone=True), server_default=sa.text("CURRENT_TIMESTAMP")
    )


def _real(name: str) -> sa.Column:
    return sa.Column(name, postgresql.DOUBLE_PRECISION())


def upgrade() -> None:
    op.create_table(
        "users",
        _id(),
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("is_admin", sa.Boolean(), server_default=sa.false()),
        _stamp("created_at"),
        sa.Column("last_login", postgresql.TIMESTAMP(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
        sa.UniqueConstraint("email", name="uq_users_email"),
    )

    op.create_table(
        "races",
        _id(),
        sa.Column("race_name", sa.Text(), nullable=False),
        sa.Column("race_date", sa.Date()),
        sa.Column("track_name", sa.Text()),
        sa.Column("race_type", sa.Text()),
        _real("distance"),
        sa.Column("surface", sa.Text()),
        _real("prize_money"),
        sa.Column("weather_conditions", postgresql.JSONB()),
        sa.Column("status", sa.Text(), server_default="scheduled"),
        _stamp("created_at"),
        _stamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_races"),
    )
    op.create_index("ix_races_race_date_track_name", "races", ["race_date", "track_name"])
    op.create_index("ix_races_track_name_race_date", "races", ["track_name", "race_date"])
    op.create_index("ix_races_status", "races", ["status"])
    op.create_index(
        "ix_races_weather_conditions", "races", ["weather_conditions"], postgresql_using="gin"
    )

    op.create_table(
        "horses",
        _id(),
        sa.Column("horse_name", sa.Text(), nullable=False),
        sa.Column("age", sa.Integer()),
        _real("weight"),
        sa.Column("jockey", sa.Text()),
        sa.Column("trainer", sa.Text()),
        sa.Column("owner", sa.Text()),
        sa.Column("form", sa.Text()),
        _stamp("created_at"),
        _stamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_horses"),
    )
    op.create_index("ix_horses_jockey", "horses", ["jockey"])
    _create_trigram_index()

    op.create_table(
        "race_horses",
        sa.Column("race_id", sa.BigInteger(), nullable=False),
        sa.Column("horse_id", sa.BigInteger(), nullable=False),
        sa.Column("post_position", sa.Integer()),
        _real("odds"),
        sa.Column("finish_position", sa.Integer()),
        sa.PrimaryKeyConstraint("race_id", "horse_id", name="pk_race_horses"),
        sa.ForeignKeyConstraint(
            ["race_id"], ["races.id"], name="fk_race_horses_race_id_races", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["horse_id"], ["horses.id"], name="fk_race_horses_horse_id_horses", ondelete="CASCADE"
        ),
    )
    op.create_index("idx_race_horses_horse", "race_horses", ["horse_id"])

    op.create_table(
        "predictions",
        _id(),
        sa.Column("race_id", sa.BigInteger()),
        sa.Column("horse_id", sa.BigInteger()),
        sa.Column("user_id", sa.BigInteger()),
        _real("prediction_value"),
        _real("confidence"),
        sa.Column("algorithm_version", sa.Text()),
        sa.Column("features", postgresql.JSONB()),
        _stamp("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_predictions"),
        sa.ForeignKeyConstraint(["race_id"], ["races.id"], name="fk_predictions_race_id_races"),
        sa.ForeignKeyConstraint(["horse_id"], ["horses.id"], name="fk_predictions_horse_id_horses"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_predictions_user_id_users"),
    )
    op.create_index("idx_predictions_race", "predictions", ["race_id"])
    op.create_index("idx_predictions_horse", "predictions", ["horse_id"])
    op.create_index("ix_predictions_user_id", "predictions", ["user_id"])
    op.create_index(
        "ix_predictions_race_id_confidence", "predictions", ["race_id", sa.text("confidence DESC")]
    )
    op.create_index("ix_predictions_confidence", "predictions", ["confidence"])
    op.create_index("ix_predictions_features", "predictions", ["features"], postgresql_using="gin")

    op.create_table(
        "api_credentials",
        _id(),
        sa.Column("user_id", sa.BigInteger()),
        sa.Column("service_name", sa.Text(), nullable=False),
        sa.Column("api_key", sa.Text(), nullable=False),
        sa.Column("api_secret", sa.Text()),
        sa.Column("endpoint_url", sa.Text()),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true()),
        _stamp("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_api_credentials"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_api_credentials_user_id_users"),
    )
    op.create_index("ix_api_credentials_user_id", "api_credentials", ["user_id"])


def downgrade() -> None:
    for table in ("api_credentials", "predictions", "race_horses", "horses", "races", "users"):
        op.drop_table(table)


def _create_trigram_index() -> None:
    """GIN trigram index for name search, if pg_trgm can be installed; optional otherwise."""
    if not context.is_offline_mode():
        bind = op.get_bind()
        try:
            with bind.begin_nested():
                bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        except sa.exc.DBAPIError as error:
            reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
            log.warning("trigram_index_skipped", index=TRIGRAM_INDEX, extension="pg_trgm", reason=reason)
            return
    else:
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_index(
        TRIGRAM_INDEX,
        "horses",
        ["horse_name"],
        postgresql_using="gin",
        postgresql_ops={"horse_name": "gin_trgm_ops"},
    )
