"""SQLAlchemy types that SQLite stores otherwise than PostgreSQL would: `Uuid` (CHAR(32) hex),
`Interval` (a DATETIME, 1970-01-01 plus the interval) and `Time` (text 'HH:MM:SS.ffffff'). The file keeps them that way, the
any-schema mapping moves them as text and timestamp, and the app's session must go on binding
and reading them as on SQLite, in its shadow reads and after the flip (adapters.app_types)."""

from __future__ import annotations

import datetime as dt
import sqlite3
import uuid

import psycopg2
import psycopg2.extensions
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from hrp_data.web import HrpCutover
from tools.cli import cli


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Job(db.Model):
    __tablename__ = "jobs"
    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(sa.String(50))
    took: Mapped[dt.timedelta | None] = mapped_column(sa.Interval)
    starts: Mapped[dt.time | None] = mapped_column(sa.Time)


def _cli(path, url: str, *args: str) -> None:
    psycopg2.extensions.set_wait_callback(None)  # the CLI's commands bound their own calls
    done = CliRunner().invoke(cli, ["--sqlite", f"sqlite:///{path}", "--postgres", url, *args])
    assert done.exit_code == 0, f"{' '.join(args)}: {done.output}"


def _app(path, postgres_url: str, *, integrated: bool) -> Flask:
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{path}", HRP_POSTGRES_URL=postgres_url,
                      SECRET_KEY="k" * 40)
    db.init_app(app)
    if integrated:
        HrpCutover().init_app(app, db=db)
    return app


@pytest.fixture
def jobs(tmp_path, postgres_url):
    """Jobs written by the app on SQLite, moved to the shadow phase with the CLI, the app integrated."""
    path = tmp_path / "jobs.db"
    with _app(path, postgres_url, integrated=False).app_context():
        db.create_all()
        ids = []
        for i in range(12):
            job = Job(name=f"job {i}", took=dt.timedelta(minutes=i, microseconds=7 * i), starts=dt.time(i, 30, 0, i))
            db.session.add(job)
            db.session.flush()
            ids.append(job.id)
        db.session.commit()
        db.session.remove()
    for step in (["schema"], ["phase", "set", "dual_write"], ["backup"], ["backfill"], ["phase", "set", "shadow"]):
        _cli(path, postgres_url, *step)
    app = _app(path, postgres_url, integrated=True)
    yield app, path, ids
    HrpCutover.state(app).close()


def test_shadow_reads_of_uuid_and_interval_models_agree(jobs):
    app, _path, ids = jobs
    with app.app_context():
        for i, job_id in enumerate(ids):
            job = db.session.get(Job, job_id)
            assert (job.name, job.took, job.starts) == (
                f"job {i}", dt.timedelta(minutes=i, microseconds=7 * i), dt.time(i, 30, 0, i))
            db.session.remove()  # a unit of work per request: its samples are queued as it ends
        assert len(db.session.scalars(sa.select(Job).where(Job.took > dt.timedelta(minutes=5))).all()) == 7
        db.session.remove()
    cutover = HrpCutover.state(app).cutover
    cutover.shadow.flush(timeout=30)
    stats = cutover.shadow.lab.stats()
    assert stats.get("match", 0) >= len(ids) and set(stats) == {"match"}, stats


def test_after_the_flip_the_app_binds_and_reads_them_as_on_sqlite(jobs, postgres_url):
    app, path, ids = jobs
    _cli(path, postgres_url, "verify")
    _cli(path, postgres_url, "flip")
    with app.app_context():
        job = db.session.get(Job, ids[3])
        assert job is not None and job.took == dt.timedelta(minutes=3, microseconds=21)
        assert isinstance(job.id, uuid.UUID) and job.starts == dt.time(3, 30, 0, 3)
        assert len(db.session.scalars(sa.select(Job).where(Job.starts < dt.time(6))).all()) == 6
        fresh = Job(name="after the flip", took=dt.timedelta(hours=2, seconds=1), starts=dt.time(23, 59, 59))
        db.session.add(fresh)
        db.session.commit()
        new_id = fresh.id
        db.session.remove()
        found = db.session.scalars(sa.select(Job).where(Job.took >= dt.timedelta(hours=2))).one()
        assert (found.id, found.name) == (new_id, "after the flip")
        db.session.remove()
    _cli(path, postgres_url, "replay")
    with sqlite3.connect(path) as raw:  # carried back to the file as SQLite's types keep them
        stored = raw.execute("SELECT id, took, starts FROM jobs WHERE name = 'after the flip'").fetchone()
    assert stored[0] == new_id.hex and stored[2] == "23:59:59.000000"
    assert dt.datetime.fromisoformat(stored[1]) == dt.datetime(1970, 1, 1, 2, 0, 1)
