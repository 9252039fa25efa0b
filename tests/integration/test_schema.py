"""The PostgreSQL schema: the packaged Alembic migration, on a real PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
import structlog
from alembic import command
from click.testing import CliRunner

from hrp_data.schema import install as schema
from hrp_data.models import TOP_PREDICTIONS_INDEX, TRIGRAM_INDEX, Base
from tools.cli import cli


def query(url: str, sql: str, **params) -> list[tuple]:
    engine = schema.engine_for(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.text(sql), params)]
    finally:
        engine.dispose()


def execute(url: str, sql: str) -> None:
    engine = schema.engine_for(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(sql)
    finally:
        engine.dispose()


def public_tables(url: str) -> set[str]:
    return {row[0] for row in query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def public_indexes(url: str) -> dict[str, str]:
    return dict(query(url, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"))


def has_trgm(url: str) -> bool:
    return bool(query(url, "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'"))


@pytest.fixture
def migrated(postgres_url) -> str:
    schema.upgrade(postgres_url)
    return postgres_url


class TestUpgrade:
    def test_first_run_creates_the_six_tables_at_head(self, postgres_url):
        """A fresh database is upgraded from nothing to 0003, and says so."""
        result = schema.upgrade(postgres_url)

        assert result.changed is True
        assert result.revision == "0003"
        assert result.message == "schema upgraded from <none> to 0003 (6 tables)"
        assert public_tables(postgres_url) == set(Base.metadata.tables) | {"hrp_cutover_alembic_version"}
        assert query(postgres_url, "SELECT version_num FROM hrp_cutover_alembic_version") == [("0003",)]

    def test_second_run_changes_nothing_and_says_so(self, migrated):
        """Upgrading a database already at head is a no-op."""
        result = schema.upgrade(migrated)

        assert result.changed is False
        assert result.revision == "0003"
        assert result.message == "schema already at head 0003: nothing to do"

    def test_a_database_at_0001_gets_the_path_ops_features_index(self, postgres_url):
        """0002 replaces the jsonb_ops GIN index on predictions.features with a jsonb_path_ops one."""
        from alembic import command

        engine = schema.engine_for(postgres_url)
        with schema._ALEMBIC, engine.begin() as connection:
            command.upgrade(schema.alembic_config(connection=connection), "0001")
        engine.dispose()
        definition = "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_predictions_features'"
        assert query(postgres_url, definition)[0][0].endswith("USING gin (features)")

        result = schema.upgrade(postgres_url)

        assert result.message == "schema upgraded from 0001 to 0003 (6 tables)"
        assert query(postgres_url, definition)[0][0].endswith("USING gin (features jsonb_path_ops)")
        assert schema.drift(postgres_url) == []

    def test_a_database_at_0002_gets_the_covering_top_predictions_index(self, postgres_url):
        """0003 replaces (race_id, confidence DESC) with (race_id, confidence DESC, id) INCLUDE (horse_id)."""
        engine = schema.engine_for(postgres_url)
        with schema._ALEMBIC, engine.begin() as connection:
            command.upgrade(schema.alembic_config(connection=connection), "0002")
        engine.dispose()
        definitions = "SELECT indexname, indexdef FROM pg_indexes WHERE indexname LIKE 'ix_predictions_race_id_%'"
        assert [name for name, _ in query(postgres_url, definitions)] == ["ix_predictions_race_id_confidence"]

        result = schema.upgrade(postgres_url)

        assert result.message == "schema upgraded from 0002 to 0003 (6 tables)"
        ((name, definition),) = query(postgres_url, definitions)
        assert name == TOP_PREDICTIONS_INDEX
        assert definition.endswith("(race_id, confidence DESC, id) INCLUDE (horse_id)")
        assert schema.drift(postgres_url) == []

    def test_concurrent_runs_take_turns(self, postgres_url):
        """Two processes upgrading at once: one does the work, the other finds nothing to do."""
        code = "import sys; from hrp_data.schema.install import upgrade; print(upgrade(sys.argv[1]).changed)"
        runs = [
            subprocess.Popen([sys.executable, "-c", code, postgres_url], stdout=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        outputs = sorted(run.communicate(timeout=60)[0].splitlines()[-1] for run in runs)

        assert [run.returncode for run in runs] == [0, 0]
        assert outputs == ["False", "True"]
        assert schema.drift(postgres_url) == []

    def test_threads_take_turns(self, postgres_url):
        """Two threads upgrading at once (alembic's proxies are process-global) do not collide."""
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(schema.upgrade, [postgres_url, postgres_url]))

        assert sorted(result.changed for result in results) == [False, True]

    def test_downgrade_to_base_and_back(self, migrated):
        """The migration is reversible: base drops the six tables, head recreates them."""
        command.downgrade(schema.alembic_config(migrated), "base")
        assert public_tables(migrated) == {"hrp_cutover_alembic_version"}

        result = schema.upgrade(migrated)
        assert result.changed is True
        assert schema.drift(migrated) == []

    @pytest.mark.parametrize("url", ["sqlite:///hrp.db", "postgresql+nodriver://db/hrp", "::"])
    def test_not_a_postgres_url(self, url):
        """Anything but a PostgreSQL URL is a SchemaError before any connection."""
        with pytest.raises(schema.SchemaError, match="bad PostgreSQL URL"):
            schema.upgrade(url)

    def test_unreachable_server_is_one_line_without_the_password(self):
        """A server that does not answer gives a SchemaError: one line, password masked."""
        with pytest.raises(schema.SchemaError) as caught:
            schema.upgrade("postgresql://hrp:s3cret-pw@127.0.0.1:1/hrp")

        message = str(caught.value)
        assert "\n" not in message
        assert "s3cret-pw" not in message
        assert "127.0.0.1" in message


class TestPostgresTypes:
    def columns(self, url: str) -> dict[tuple[str, str], tuple]:
        rows = query(
            url,
            "SELECT table_name, column_name, data_type, is_identity, identity_generation"
            " FROM information_schema.columns WHERE table_schema = 'public'",
        )
        return {(table, column): tuple(rest) for table, column, *rest in rows}

    def test_keys_are_bigint_identity_by_default(self, migrated):
        """Every surrogate key is BIGINT GENERATED BY DEFAULT AS IDENTITY; foreign keys are BIGINT."""
        columns = self.columns(migrated)
        for table in ("users", "races", "horses", "predictions", "api_credentials"):
            assert columns[(table, "id")] == ("bigint", "YES", "BY DEFAULT")
        for table, column in [("race_horses", "race_id"), ("race_horses", "horse_id"),
                              ("predictions", "race_id"), ("predictions", "horse_id"),
                              ("predictions", "user_id"), ("api_credentials", "user_id")]:
            assert columns[(table, column)][0] == "bigint"

    def test_columns_have_the_optimized_types(self, migrated):
        """TIMESTAMPTZ, DATE, BOOLEAN, JSONB and DOUBLE PRECISION where SQLite had text and REAL."""
        columns = self.columns(migrated)
        expected = {
            ("users", "created_at"): "timestamp with time zone",
            ("users", "last_login"): "timestamp with time zone",
            ("races", "updated_at"): "timestamp with time zone",
            ("races", "race_date"): "date",
            ("users", "is_admin"): "boolean",
            ("api_credentials", "is_active"): "boolean",
            ("races", "weather_conditions"): "jsonb",
            ("predictions", "features"): "jsonb",
            ("races", "distance"): "double precision",
            ("races", "prize_money"): "double precision",
            ("horses", "weight"): "double precision",
            ("race_horses", "odds"): "double precision",
            ("predictions", "prediction_value"): "double precision",
            ("predictions", "confidence"): "double precision",
        }
        assert {key: columns[key][0] for key in expected} == expected
        assert [key for key, (data_type, *_) in columns.items() if data_type == "real"] == []

    def test_server_defaults(self, migrated):
        """The legacy defaults survive as PostgreSQL defaults."""
        defaults = dict(
            ((table, column), default)
            for table, column, default in query(
                migrated,
                "SELECT table_name, column_name, column_default FROM information_schema.columns"
                " WHERE table_schema = 'public' AND column_default IS NOT NULL",
            )
        )
        assert defaults[("users", "is_admin")] == "false"
        assert defaults[("api_credentials", "is_active")] == "true"
        assert defaults[("races", "status")] == "'scheduled'::text"
        assert defaults[("predictions", "created_at")] == "CURRENT_TIMESTAMP"

    def test_constraints_carry_the_naming_convention(self, migrated):
        """Primary, unique and foreign keys have the names the models' metadata gives them."""
        names = {row[0] for row in query(
            migrated, "SELECT conname FROM pg_constraint WHERE connamespace = 'public'::regnamespace"
        )}
        assert {
            "pk_users", "uq_users_username", "uq_users_email", "pk_race_horses",
            "fk_race_horses_race_id_races", "fk_race_horses_horse_id_horses",
            "fk_predictions_race_id_races", "fk_predictions_horse_id_horses",
            "fk_predictions_user_id_users", "fk_api_credentials_user_id_users",
        } <= names
        cascade = "SELECT confdeltype FROM pg_constraint WHERE conname = 'fk_race_horses_race_id_races'"
        assert query(migrated, cascade) == [("c",)]

    def test_indexes_for_the_app_queries(self, migrated):
        """GIN on the JSONB columns, (race_id, confidence DESC) for top picks, and the rest."""
        indexes = public_indexes(migrated)

        assert "USING gin (weather_conditions)" in indexes["ix_races_weather_conditions"]
        assert "USING gin (features jsonb_path_ops)" in indexes["ix_predictions_features"]
        assert indexes[TOP_PREDICTIONS_INDEX].endswith(
            "ON public.predictions USING btree (race_id, confidence DESC, id) INCLUDE (horse_id)"
        )
        for name in ("ix_races_race_date_track_name", "ix_races_track_name_race_date", "ix_races_status",
                     "ix_horses_jockey", "idx_race_horses_horse", "idx_predictions_race",
                     "idx_predictions_horse", "ix_predictions_user_id", "ix_predictions_confidence",
                     "ix_api_credentials_user_id"):
            assert name in indexes

    def test_trigram_index_is_optional(self, postgres_url):
        """With pg_trgm the GIN trigram index exists; without it the upgrade warns and goes on."""
        with structlog.testing.capture_logs() as logs:
            schema.upgrade(postgres_url)
        indexes = public_indexes(postgres_url)

        if has_trgm(postgres_url):
            assert "gin (horse_name gin_trgm_ops)" in indexes[TRIGRAM_INDEX]
            assert not [log for log in logs if log["event"] == "trigram_index_skipped"]
        else:
            assert TRIGRAM_INDEX not in indexes
            (warning,) = [log for log in logs if log["event"] == "trigram_index_skipped"]
            assert warning["log_level"] == "warning"
            assert warning["extension"] == "pg_trgm"


class TestDrift:
    def test_none_after_upgrade(self, migrated):
        """Autogenerate finds no difference between the models and a migrated database."""
        assert schema.drift(migrated) == []

    def test_alembic_check_agrees(self, migrated):
        """`alembic check` through the packaged env.py finds no pending operation either."""
        command.check(schema.alembic_config(migrated))

    def test_everything_missing_on_an_empty_database(self, postgres_url):
        """Before the upgrade every model table is reported missing."""
        tables = {line for line in schema.drift(postgres_url) if line.startswith("table ")}

        assert tables == {
            f"table {name}: in the models, missing from the database" for name in Base.metadata.tables
        }

    @pytest.mark.parametrize(
        ("ddl", "expected"),
        [
            ("DROP INDEX ix_races_status",
             "index ix_races_status on races (status): in the models, missing from the database"),
            ("ALTER TABLE races ADD COLUMN going TEXT",
             "column races.going (TEXT): in the database, not in the models"),
            ("ALTER TABLE races ALTER COLUMN distance TYPE real",
             "column races.distance: type is REAL in the database, DOUBLE PRECISION in the models"),
            ("ALTER TABLE users ALTER COLUMN is_admin SET DEFAULT true",
             "column users.is_admin: default is true in the database, false in the models"),
            ("ALTER TABLE predictions DROP CONSTRAINT fk_predictions_user_id_users",
             "foreign key fk_predictions_user_id_users on predictions: in the models, missing from the database"),
            ("ALTER TABLE users DROP CONSTRAINT uq_users_email",
             "constraint uq_users_email on users: in the models, missing from the database"),
            ("CREATE INDEX ix_horses_trainer ON horses (trainer)",
             "index ix_horses_trainer on horses (trainer): in the database, not in the models"),
        ],
        ids=["dropped-index", "added-column", "float4", "default", "dropped-fk", "dropped-unique", "extra-index"],
    )
    def test_names_a_hand_made_change(self, migrated, ddl, expected):
        """A change made by hand is reported, and named."""
        execute(migrated, ddl)

        assert schema.drift(migrated) == [expected]

    def test_desc_index_turned_ascending(self, migrated):
        """Rebuilding (race_id, confidence DESC, id) ascending is a difference."""
        execute(migrated, f"DROP INDEX {TOP_PREDICTIONS_INDEX};"
                          f" CREATE INDEX {TOP_PREDICTIONS_INDEX} ON predictions (race_id, confidence, id) INCLUDE (horse_id)")

        assert sorted(schema.drift(migrated)) == [
            f"index {TOP_PREDICTIONS_INDEX} on predictions (race_id, confidence DESC, id):"
            " in the models, missing from the database",
            f"index {TOP_PREDICTIONS_INDEX} on predictions (race_id, confidence, id):"
            " in the database, not in the models",
        ]

    def test_ignores_tables_the_models_do_not_define(self, migrated):
        """Later hrp_cutover_* tables and the version table are not drift."""
        execute(migrated, "CREATE TABLE hrp_cutover_outbox (id BIGINT PRIMARY KEY, payload JSONB)")

        assert schema.drift(migrated) == []

    def test_trigram_index_is_compared_where_pg_trgm_is_installed(self, migrated):
        """Where the extension is installed, a missing trigram index is drift like any other;
        where it is not (the embedded test server), the index is absent and not counted."""
        if not has_trgm(migrated):
            assert schema.drift(migrated) == []
            return
        execute(migrated, f"DROP INDEX {TRIGRAM_INDEX}")

        assert schema.drift(migrated) == [
            f"index {TRIGRAM_INDEX} on horses (horse_name): in the models, missing from the database"
        ]


class TestCli:
    def run(self, *args: str):
        return CliRunner().invoke(cli, list(args))

    def test_schema_command_twice(self, postgres_url):
        """`hrp-cutover schema --postgres URL` upgrades, then says there is nothing to do."""
        first = self.run("schema", "--postgres", postgres_url)
        second = self.run("schema", "--postgres", postgres_url)

        assert first.exit_code == 0, first.output
        assert first.stdout == "schema upgraded from <none> to 0003 (6 tables)\n"
        assert second.exit_code == 0, second.output
        assert second.stdout == "schema already at head 0003: nothing to do\n"

    def test_schema_command_twice_with_the_group_option(self, postgres_url):
        """`hrp-cutover --postgres URL schema` upgrades, then says there is nothing to do."""
        first = self.run("--postgres", postgres_url, "schema")
        second = self.run("--postgres", postgres_url, "schema")

        assert first.exit_code == 0, first.output
        assert first.stdout == "schema upgraded from <none> to 0003 (6 tables)\n"
        assert second.exit_code == 0, second.output
        assert second.stdout == "schema already at head 0003: nothing to do\n"

    def test_unreachable_server_is_exit_code_2_and_one_line(self):
        """A server that does not answer: exit 2, one line, password masked."""
        result = self.run("schema", "--postgres", "postgresql://hrp:s3cret-pw@127.0.0.1:1/hrp")

        assert result.exit_code == 2
        assert result.stderr.startswith(
            "Error: cannot upgrade the schema at postgresql://hrp:***@127.0.0.1:1/hrp"
        )
        assert result.stderr.count("\n") == 1
        assert "s3cret-pw" not in result.stderr
