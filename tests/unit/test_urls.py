"""Passwords in database URLs and libpq parameters never survive redaction, whatever they hold."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.urls import redact_url
from tests.examples import examples

USERS = st.text(st.characters(blacklist_characters=":/@", blacklist_categories=("Cs", "Zs", "Cc")), max_size=20)


@given(user=USERS, password=st.text(min_size=1))
@settings(max_examples=examples(500))
def test_any_password_in_a_url_is_hidden(user, password):
    url = f"postgresql://{user}:{password}@db.example:5432/hrp?sslmode=require"
    shown = f"postgresql://{user}:***@db.example:5432/hrp?sslmode=require"
    assert redact_url(url) == shown
    assert redact_url(f"cannot upgrade the schema at {url}: connection refused") == (
        f"cannot upgrade the schema at {shown}: connection refused")


@given(password=st.text(min_size=1, max_size=1000))
@settings(max_examples=examples(300))
def test_any_quoted_libpq_password_is_hidden(password):
    quoted = password.replace("\\", "\\\\").replace("'", "\\'")
    assert redact_url(f"host=db user=hrp password='{quoted}' dbname=hrp") == "host=db user=hrp password=*** dbname=hrp"


@pytest.mark.parametrize(
    "text, shown",
    [
        ("postgresql://hrp_app:WrongPW PLANT99@db:5432/hrp", "postgresql://hrp_app:***@db:5432/hrp"),
        ("postgresql://hrp_app:p@ss@w0rd@db/hrp", "postgresql://hrp_app:***@db/hrp"),
        ("postgresql+psycopg2://u:a/b://c@db/hrp", "postgresql+psycopg2://u:***@db/hrp"),
        ("postgresql://hrp@db:5432/hrp", "postgresql://hrp@db:5432/hrp"),
        ("sqlite:///data/hrp_database.db", "sqlite:///data/hrp_database.db"),
        ("dbname=hrp password=s3cret host=db", "dbname=hrp password=*** host=db"),
        ("postgresql://db/hrp?password=s3cret&sslmode=require", "postgresql://db/hrp?password=***&sslmode=require"),
    ],
)
def test_examples(text, shown):
    assert redact_url(text) == shown


def test_hostile_text_stays_fast():
    import time

    started = time.perf_counter()
    redact_url("a://" * 50_000 + "@" + "x:" * 50_000 + "password='" + "\\" * 50_000)
    assert time.perf_counter() - started < 2
