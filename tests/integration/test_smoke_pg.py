import sqlalchemy as sa

from adapters.postgres import create_postgres_engine


def test_each_test_gets_an_empty_database(postgres_url):
    engine = create_postgres_engine(postgres_url)
    with engine.begin() as connection:
        tables = connection.execute(
            sa.text("select count(*) from information_schema.tables where table_schema='public'")
        ).scalar_one()
        connection.execute(sa.text("create table t (x int)"))
    engine.dispose()
    assert tables == 0
