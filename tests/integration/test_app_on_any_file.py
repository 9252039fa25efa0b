"""Another app's file (no HRP tables) with that app's own Flask-SQLAlchemy session integrated:
its reads are shadow reads like the HRP app's, so the flip's shadow check counts them. Without
any compared read it is not applicable; once the app's reads are compared, a mismatch refuses
the flip as it does for the HRP app."""

from __future__ import annotations

import sqlite3

import psycopg2
import psycopg2.extensions
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from hrp_data.cutover.assemble import open_cutover
from hrp_data.cutover.phases import Phase
from hrp_data.flip.readiness import checklist
from hrp_data.web import HrpCutover
from tests.conftest import MAINTENANCE
from tests.integration.cutover_helpers import settings_for
from tools.cli import cli


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Book(db.Model):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(200))
    meta: Mapped[dict | None] = mapped_column(sa.JSON)


def _cli(path, url: str, *args: str) -> str:
    psycopg2.extensions.set_wait_callback(None)  # the CLI's commands bound their own calls
    done = CliRunner().invoke(cli, ["--sqlite", f"sqlite:///{path}", "--postgres", url, *args])
    assert done.exit_code == 0, f"{' '.join(args)}: {done.output}"
    return done.output


@pytest.fixture
def library(tmp_path, postgres_url):
    """A library app's file, moved to the shadow phase with the CLI, and the app integrated."""
    path = tmp_path / "library.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE books (id INTEGER NOT NULL PRIMARY KEY, title VARCHAR(200) NOT NULL, meta JSON)")
        raw.executemany("INSERT INTO books (title, meta) VALUES (?, ?)",
                        [(f"book {i}", f'{{"pages": {100 + i}}}') for i in range(30)])
    for step in (["schema"], ["phase", "set", "dual_write"], ["backup"], ["backfill"], ["phase", "set", "shadow"]):
        _cli(path, postgres_url, *step)
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{path}", HRP_POSTGRES_URL=postgres_url,
                      SECRET_KEY="k" * 40)
    db.init_app(app)
    HrpCutover().init_app(app, db=db)

    @app.get("/books/<int:book_id>")
    def show(book_id):
        book = db.get_or_404(Book, book_id)
        return {"title": book.title, "meta": book.meta}

    @app.get("/books/picks")
    def picks():
        chosen = db.session.scalars(sa.select(Book).order_by(sa.func.random()).limit(3)).all()
        return {"titles": [book.title for book in chosen]}

    yield app, path
    HrpCutover.state(app).close()


def _shadow_check(path, postgres_url):
    with open_cutover(settings_for(path, postgres_url)) as operator:
        return {check.name: check for check in checklist(operator, Phase.POSTGRES_PRIMARY)}["shadow"]


def test_without_compared_reads_the_shadow_check_is_not_applicable(library, postgres_url):
    _app, path = library
    check = _shadow_check(path, postgres_url)
    assert check.ok and check.detail.startswith("not applicable"), check.detail


def test_the_apps_compared_reads_decide_the_shadow_check_and_a_mismatch_refuses_the_flip(library, postgres_url):
    app, path = library
    url = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg2.connect(url, options=MAINTENANCE) as connection, connection.cursor() as cursor:
        cursor.execute("UPDATE books SET title = 'changed by hand' WHERE id = 7")  # a planted difference
    client = app.test_client()
    for book_id in range(1, 31):
        response = client.get(f"/books/{book_id}")
        assert response.status_code == 200 and response.get_json()["meta"] == {"pages": 99 + book_id}
        response.close()  # its shadow samples are queued when its response closes
    HrpCutover.state(app).cutover.shadow.flush(timeout=30)

    check = _shadow_check(path, postgres_url)
    assert not check.ok, check.detail
    assert "not applicable" not in check.detail
    assert "mismatched of" in check.detail


def test_a_json_model_over_a_text_column_compares_documents_on_both_sides(library, postgres_url):
    """The model's JSON column is text in the file's catalog: SQLite's session gives the app the
    document, PostgreSQL's candidate reads its text; compared as documents, they agree."""
    app, path = library
    client = app.test_client()
    for book_id in range(1, 31):
        client.get(f"/books/{book_id}").close()
    cutover = HrpCutover.state(app).cutover
    cutover.shadow.flush(timeout=30)
    stats = cutover.shadow.lab.stats()
    assert stats.get("match", 0) >= 30 and not stats.get("mismatch"), stats


def test_a_read_in_random_order_is_compared_by_its_shape_so_it_never_refuses_a_flip(library, postgres_url):
    """Three books in random order: SQLite and PostgreSQL pick different ones every time, so the
    two answers are compared by their number of rows (both ran, three each), not by their values."""
    app, path = library
    client = app.test_client()
    for _ in range(20):
        response = client.get("/books/picks")
        assert response.status_code == 200 and len(response.get_json()["titles"]) == 3
        response.close()
    client.get("/books/3").close()
    cutover = HrpCutover.state(app).cutover
    cutover.shadow.flush(timeout=30)
    assert cutover.shadow.lab.stats() == {"match": 21}
