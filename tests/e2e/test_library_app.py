"""A second existing Flask-SQLAlchemy app (tests/e2e/library_app: its own tables, not the HRP ones)
through the whole cutover with the CLI: its values and types are the same before and after the
flip, its own queries are compared reads (an avg() over a decimal column included: SQLite computes
it in binary floating point, PostgreSQL in exact numeric), and every write lands on both sides."""

from __future__ import annotations

import random
import sqlite3
import time

import psycopg2
import pytest

from tests.conftest import libpq
from tests.e2e.conftest import run_cli


@pytest.fixture
def library(tmp_path, postgres_url, monkeypatch):
    from hrp_data.web import HrpCutover
    from tests.e2e.library_app.app import create_app

    path = tmp_path / "library.db"
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}", "HRP_POSTGRES_URL": postgres_url,
                      "SECRET_KEY": "k" * 40})
    monkeypatch.setenv("HRP_SHADOW_MIN_READS", "20")  # the flip's check, in the CLI's processes
    try:
        yield path, app.test_client()
    finally:
        HrpCutover.state(app).close()


def _add(client, rng: random.Random, i: int) -> int:
    response = client.post("/books", json={
        "title": f"Book {i}", "author": f"Author {i % 7}", "price": f"{rng.randint(100, 9999) / 100:.2f}",
        "rating": rng.random() * 5, "meta": {"pages": i * 10, "x": [1, 2.5]}, "tags": [f"t{i % 3}", f"t{i % 5}"],
    })
    assert response.status_code == 201, response.data
    return response.get_json()["id"]


def _settled(path, url, *args) -> str:
    run_cli(path, url, "replay")
    return run_cli(path, url, *args)


def test_library_app_through_the_cutover(library, postgres_url):
    path, client = library
    rng = random.Random(5)
    ids = [_add(client, rng, i) for i in range(30)]
    before = {i: client.get(f"/books/{i}").get_json() for i in ids}
    assert {before[ids[0]]["price_type"], str(before[ids[0]]["available_type"])} == {"Decimal", "bool"}

    for step in (["assess"], ["schema"], ["phase", "set", "dual_write"], ["backup"], ["backfill"]):
        run_cli(path, postgres_url, *step)
    for i in ids[:5]:
        assert client.post(f"/books/{i}/loan", json={"who": "ann"}).status_code == 200
    assert client.delete(f"/books/{ids[6]}").status_code == 204
    ids.remove(ids[6])
    ids.append(_add(client, rng, 100))

    run_cli(path, postgres_url, "phase", "set", "shadow")
    time.sleep(1.2)  # the app notices the phase within a second
    for _ in range(2):
        for i in ids:
            assert client.get(f"/books/{i}").status_code == 200
        client.get("/books?page=2")
        assert client.get("/stats").status_code == 200
    time.sleep(2.5)  # the samples are compared after the responses and stored every second
    report = run_cli(path, postgres_url, "report")
    assert "candidate errors" in report
    assert "EQUAL" in _settled(path, postgres_url, "verify")
    run_cli(path, postgres_url, "flip")  # refused on any shadow mismatch (the avg() over a decimal too)
    time.sleep(1.2)

    after = {i: client.get(f"/books/{i}").get_json() for i in before if i in ids}
    for i, body in after.items():  # what the app's code gets from PostgreSQL: the same values and types
        unchanged = {k: v for k, v in before[i].items() if k != "available" and k != "available_type"}
        assert {k: body[k] for k in unchanged} == unchanged
        assert body["added_naive"] is True and body["price_type"] == "Decimal" and body["available_type"] == "bool"
    for i in ids[:5]:
        assert client.post(f"/books/{i}/return", json={}).status_code == 200
    ids.append(_add(client, rng, 200))
    assert "EQUAL" in _settled(path, postgres_url, "verify")

    run_cli(path, postgres_url, "rollback")
    time.sleep(1.2)
    ids.append(_add(client, rng, 300))
    assert "EQUAL" in _settled(path, postgres_url, "verify")
    run_cli(path, postgres_url, "flip")
    time.sleep(1.2)
    ids.append(_add(client, rng, 400))
    assert "EQUAL" in _settled(path, postgres_url, "verify")
    run_cli(path, postgres_url, "phase", "set", "postgres_only")
    time.sleep(1.2)
    ids.append(_add(client, rng, 500))

    with psycopg2.connect(libpq(postgres_url)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT id FROM book ORDER BY id")
        assert [row[0] for row in cursor.fetchall()] == sorted(ids)
        cursor.execute("SELECT count(*) FROM loan WHERE returned")
        assert cursor.fetchone()[0] == 5
    with sqlite3.connect(path) as raw:  # written until postgres_only; the last book only on PostgreSQL
        assert sorted(row[0] for row in raw.execute("SELECT id FROM book")) == sorted(ids)[:-1]
