"""The six HRP tables as SQLAlchemy 2.0 typed declarative models.

One set of models serves both databases: created on SQLite they are exactly
the legacy schema (../shared/legacy_schema.sql); created on PostgreSQL (by the
Alembic migration in hrp_data/schema/migrations) they are the optimized schema:
BIGINT identity keys, TIMESTAMPTZ, DATE, BOOLEAN, JSONB with GIN indexes,
DOUBLE PRECISION for REAL, and indexes for the app's queries. Indexes that
exist only on PostgreSQL are marked with `ddl_if(dialect="postgresql")`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from adapters.types import Day, ExactReal, Flag, JsonDocument, Key, Timestamp

NOW = sa.text("CURRENT_TIMESTAMP")

TRIGRAM_INDEX = "ix_horses_horse_name_trgm"
"""Needs the pg_trgm extension; created by the migration when the server has it."""

TOP_PREDICTIONS_INDEX = "ix_predictions_race_id_confidence_id"
"""A race's predictions best first, ties by id, with horse_id: the statistics' top picks per race
(and "best picks of a race") read from the index alone, already in order (revision 0003)."""


class Base(DeclarativeBase):
    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


def _id() -> Any:
    return mapped_column(Key, sa.Identity(), primary_key=True)


def _pg_index(name: str, *columns: Any, **kw: Any) -> sa.Index:
    return sa.Index(name, *columns, **kw).ddl_if(dialect="postgresql")


class User(Base):
    __tablename__ = "users"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = _id()
    username: Mapped[str] = mapped_column(sa.Text, unique=True)
    email: Mapped[str] = mapped_column(sa.Text, unique=True)
    password_hash: Mapped[str] = mapped_column(sa.Text)
    is_admin: Mapped[bool | None] = mapped_column(Flag, server_default=sa.false())
    created_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, server_default=NOW)
    last_login: Mapped[dt.datetime | None] = mapped_column(Timestamp)


class Race(Base):
    __tablename__ = "races"
    __table_args__ = (
        _pg_index("ix_races_race_date_track_name", "race_date", "track_name"),
        _pg_index("ix_races_track_name_race_date", "track_name", "race_date"),
        _pg_index("ix_races_status", "status"),
        _pg_index(
            "ix_races_weather_conditions", "weather_conditions", postgresql_using="gin"
        ),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = _id()
    race_name: Mapped[str] = mapped_column(sa.Text)
    race_date: Mapped[dt.date | None] = mapped_column(Day)
    track_name: Mapped[str | None] = mapped_column(sa.Text)
    race_type: Mapped[str | None] = mapped_column(sa.Text)
    distance: Mapped[float | None] = mapped_column(ExactReal)
    surface: Mapped[str | None] = mapped_column(sa.Text)
    prize_money: Mapped[float | None] = mapped_column(ExactReal)
    weather_conditions: Mapped[Any | None] = mapped_column(JsonDocument)
    status: Mapped[str | None] = mapped_column(sa.Text, server_default="scheduled")
    created_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, server_default=NOW)
    updated_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, server_default=NOW)


class Horse(Base):
    __tablename__ = "horses"
    __table_args__ = (
        _pg_index(
            TRIGRAM_INDEX,
            "horse_name",
            postgresql_using="gin",
            postgresql_ops={"horse_name": "gin_trgm_ops"},
            info={"requires_extension": "pg_trgm"},
        ),
        _pg_index("ix_horses_jockey", "jockey"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = _id()
    horse_name: Mapped[str] = mapped_column(sa.Text)
    age: Mapped[int | None] = mapped_column(sa.Integer)
    weight: Mapped[float | None] = mapped_column(ExactReal)
    jockey: Mapped[str | None] = mapped_column(sa.Text)
    trainer: Mapped[str | None] = mapped_column(sa.Text)
    owner: Mapped[str | None] = mapped_column(sa.Text)
    form: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, server_default=NOW)
    updated_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, server_default=NOW)


class RaceHorse(Base):
    __tablename__ = "race_horses"
    __table_args__ = (sa.Index("idx_race_horses_horse", "horse_id"),)

    race_id: Mapped[int] = mapped_column(
        Key, sa.ForeignKey("races.id", ondelete="CASCADE"), primary_key=True
    )
    horse_id: Mapped[int] = mapped_column(
        Key, sa.ForeignKey("horses.id", ondelete="CASCADE"), primary_key=True
    )
    post_position: Mapped[int | None] = mapped_column(sa.Integer)
    odds: Mapped[float | None] = mapped_column(ExactReal)
    finish_position: Mapped[int | None] = mapped_column(sa.Integer)


class Prediction(Base):
    __tablename__ = "predictions"
    __table_args__ = (
        sa.Index("idx_predictions_race", "race_id"),
        sa.Index("idx_predictions_horse", "horse_id"),
        _pg_index("ix_predictions_user_id", "user_id"),
        _pg_index(
            TOP_PREDICTIONS_INDEX, "race_id", sa.text("confidence DESC"), "id", postgresql_include=["horse_id"]
        ),
        _pg_index("ix_predictions_confidence", "confidence"),
        _pg_index(
            "ix_predictions_features", "features", postgresql_using="gin",
            postgresql_ops={"features": "jsonb_path_ops"},
        ),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = _id()
    race_id: Mapped[int | None] = mapped_column(Key, sa.ForeignKey("races.id"))
    horse_id: Mapped[int | None] = mapped_column(Key, sa.ForeignKey("horses.id"))
    user_id: Mapped[int | None] = mapped_column(Key, sa.ForeignKey("users.id"))
    prediction_value: Mapped[float | None] = mapped_column(ExactReal)
    confidence: Mapped[float | None] = mapped_column(ExactReal)
    algorithm_version: Mapped[str | None] = mapped_column(sa.Text)
    features: Mapped[Any | None] = mapped_column(JsonDocument)
    created_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, server_default=NOW)


class ApiCredential(Base):
    __tablename__ = "api_credentials"
    __table_args__ = (
        _pg_index("ix_api_credentials_user_id", "user_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = _id()
    user_id: Mapped[int | None] = mapped_column(Key, sa.ForeignKey("users.id"))
    service_name: Mapped[str] = mapped_column(sa.Text)
    api_key: Mapped[str] = mapped_column(sa.Text)
    api_secret: Mapped[str | None] = mapped_column(sa.Text)
    endpoint_url: Mapped[str | None] = mapped_column(sa.Text)
    is_active: Mapped[bool | None] = mapped_column(Flag, server_default=sa.true())
    created_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, server_default=NOW)


TABLES: tuple[sa.Table, ...] = tuple(
    Base.metadata.tables[name]
    for name in ("users", "races", "horses", "race_horses", "predictions", "api_credentials")
)
"""The legacy tables, parents before children (the copy and apply order)."""

SECRET_COLUMNS = frozenset({"password_hash", "api_key", "api_secret"})
