"""A DATETIME the app's models treat as naive comes back naive from PostgreSQL, whatever the
server's TimeZone: the any-schema type table maps DATETIME/TIMESTAMP to `timestamp without time
zone` holding the UTC wall clock (docs/schema.md). Checked through the CLI, both directions, with
the app's own SQLAlchemy model reading PostgreSQL directly as it will after `postgres_only`."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import psycopg2
import psycopg2.extensions
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from tests.conftest import MAINTENANCE
from tests.integration.test_backfill import libpq
from tools.cli import cli

SERVER_ZONE = "America/New_York"  # a session TimeZone far from UTC: nothing may shift by it


class Base(DeclarativeBase):
    pass


class Event(Base):
    """The app's model, as a Flask-SQLAlchemy app declares it: naive DateTime columns."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.Text)
    happened_at: Mapped[dt.datetime] = mapped_column(sa.DateTime)
    created: Mapped[dt.datetime | None] = mapped_column(sa.DateTime, server_default=sa.text("CURRENT_TIMESTAMP"))


def _cli(path: Path, url: str, *args: str) -> str:
    psycopg2.extensions.set_wait_callback(None)
    done = CliRunner().invoke(cli, ["--sqlite", f"sqlite:///{path}", "--postgres", url, *args])
    assert done.exit_code == 0, f"{' '.join(args)}: {done.output}"
    return done.output


def _app_reads(url: str) -> dict[int, tuple[dt.datetime, dt.datetime | None]]:
    """What the app's model reads from a database, with no layer in between."""
    engine = sa.create_engine(url)
    try:
        with Session(engine) as session:
            return {e.id: (e.happened_at, e.created) for e in session.scalars(sa.select(Event))}
    finally:
        engine.dispose()


def test_the_apps_naive_datetimes_stay_naive_and_equal_on_postgresql(tmp_path, postgres_url):
    path = tmp_path / "app.db"
    sqlite_url = f"sqlite:///{path}"
    engine = sa.create_engine(sqlite_url)
    Base.metadata.create_all(engine)
    written = [dt.datetime(2025, 1, 14, 9, 30), dt.datetime(2025, 6, 1, 23, 59, 59, 123456),
               dt.datetime(1999, 12, 31, 0, 0, 0, 1)]
    with Session(engine) as session:
        session.add_all(Event(id=n, name=f"e{n}", happened_at=when) for n, when in enumerate(written, 1))
        session.commit()
    engine.dispose()
    with sqlite3.connect(path) as raw:  # the legacy spelling a plain sqlite3 program writes
        raw.execute("INSERT INTO events (id, name, happened_at) VALUES (4, 'legacy', '2024-02-29 12:00:00')")
    before = _app_reads(sqlite_url)

    with psycopg2.connect(libpq(postgres_url), options=MAINTENANCE) as raw, raw.cursor() as cursor:
        cursor.execute(f"ALTER DATABASE {raw.info.dbname} SET timezone = '{SERVER_ZONE}'")
    _cli(path, postgres_url, "schema")
    _cli(path, postgres_url, "phase", "set", "dual_write")
    _cli(path, postgres_url, "backfill", "--no-backup")
    with psycopg2.connect(libpq(postgres_url)) as raw, raw.cursor() as cursor:
        cursor.execute("SELECT column_name, data_type FROM information_schema.columns"
                       " WHERE table_name = 'events' AND column_name IN ('happened_at', 'created')")
        assert dict(cursor.fetchall()) == {"happened_at": "timestamp without time zone",
                                           "created": "timestamp without time zone"}
        cursor.execute("SHOW timezone")
        assert cursor.fetchone()[0] == SERVER_ZONE

    after = _app_reads(postgres_url)
    assert after == before  # the same naive values, equal as Python objects
    assert all(when.tzinfo is None for pair in after.values() for when in pair if when is not None)
    assert all(when < dt.datetime.utcnow() for when, _ in after.values())  # no TypeError
    assert "EQUAL" in _cli(path, postgres_url, "verify")

    # SQLite -> PostgreSQL through the applier: a row with the database's own now
    with sqlite3.connect(path) as raw:
        raw.execute("INSERT INTO events (id, name, happened_at) VALUES (5, 'live', '2025-03-30 01:30:00')")
    _cli(path, postgres_url, "replay")
    sqlite_created = _app_reads(sqlite_url)[5][1]
    assert _app_reads(postgres_url)[5] == (dt.datetime(2025, 3, 30, 1, 30), sqlite_created)

    # PostgreSQL -> SQLite after the flip: PostgreSQL's default is the UTC wall clock, as SQLite's is
    _cli(path, postgres_url, "phase", "set", "shadow")
    _cli(path, postgres_url, "flip", "--force")
    with psycopg2.connect(libpq(postgres_url)) as raw, raw.cursor() as cursor:
        cursor.execute("INSERT INTO events (id, name, happened_at) VALUES (6, 'on postgres', '2025-11-02 01:30:00')")
    utc_now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    _cli(path, postgres_url, "replay")
    on_sqlite, on_postgres = _app_reads(sqlite_url)[6], _app_reads(postgres_url)[6]
    assert on_sqlite == on_postgres
    assert on_postgres[0] == dt.datetime(2025, 11, 2, 1, 30)
    assert abs(on_postgres[1] - utc_now) < dt.timedelta(minutes=1), (on_postgres[1], utc_now)
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT happened_at FROM events WHERE id = 6").fetchone()[0].startswith("2025-11-02 01:30:00")
    assert "EQUAL" in _cli(path, postgres_url, "verify")
