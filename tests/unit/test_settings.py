"""Settings are read from the environment and refused with one clear line when bad."""

import re

import pytest

from hrp_data.settings import Settings, SettingsError


def test_defaults_and_environment():
    settings = Settings.from_env(
        {"HRP_PHASE": "dual_write", "HRP_POSTGRES_URL": "postgresql://u:pw@db/hrp", "HRP_SHADOW_SAMPLE": "0.25"}
    )
    assert settings.phase == "dual_write"
    assert settings.shadow_sample == 0.25
    assert settings.sqlite_url.startswith("sqlite:")


def test_every_hrp_setting_is_read_into_the_one_object():
    """The verify, backup and shadow settings too, typed: nothing else reads HRP_* variables."""
    settings = Settings.from_env({
        "HRP_VERIFY_MAX_AGE": "60", "HRP_BACKUP_MAX_AGE": "90m", "HRP_SHADOW_ENABLED": "off",
        "HRP_SHADOW_SAMPLES": "races.get=0.1, horses.get=0", "HRP_SHADOW_IGNORE": "races.updated_at",
        "HRP_SHADOW_WORKERS": "3", "HRP_SHADOW_QUEUE": "50", "HRP_SHADOW_MAX_DETAILS": "7",
        "HRP_SHADOW_WINDOW": "2h", "HRP_SHADOW_MAX_RATE": "0.01", "HRP_SHADOW_MIN_READS": "5",
    })
    assert (settings.verify_max_age, settings.backup_max_age, settings.shadow_enabled) == (60.0, 5400.0, False)
    assert settings.sample_rates() == {"races.get": 0.1, "horses.get": 0.0}
    assert [(r.table, r.column) for r in settings.ignore_rules()] == [("races", "updated_at")]
    assert (settings.shadow_workers, settings.shadow_queue, settings.shadow_max_details) == (3, 50, 7)
    assert (settings.shadow_window, settings.shadow_max_rate, settings.shadow_min_reads) == ("2h", 0.01, 5)
    assert Settings.from_env({}).shadow_enabled is True


def test_the_pool_settings():
    assert (Settings().validated().postgres_pool, Settings().validated().postgres_pool_timeout) == (10, 5.0)
    settings = Settings.from_env({"HRP_POSTGRES_POOL": "4", "HRP_POSTGRES_POOL_TIMEOUT": "1.5"})
    assert (settings.postgres_pool, settings.postgres_pool_timeout) == (4, 1.5)


def test_the_sqlite_lock_wait():
    assert Settings.from_env({}).sqlite_lock_wait_s == 30.0
    assert Settings.from_env({"HRP_SQLITE_LOCK_WAIT_S": "2.5"}).sqlite_lock_wait_s == 2.5


def test_the_throttle_settings():
    settings = Settings.from_env({})
    assert (settings.login_failures, settings.login_failures_per_address, settings.registrations_per_address,
            settings.throttle_window_s, settings.password_hash_slots) == (5, 20, 20, 900.0, 1)
    settings = Settings.from_env({"HRP_LOGIN_FAILURES": "0", "HRP_THROTTLE_WINDOW_S": "60", "HRP_PASSWORD_HASH_SLOTS": "4"})
    assert (settings.login_failures, settings.throttle_window_s, settings.password_hash_slots) == (0, 60.0, 4)


def test_flags_override_the_environment():
    settings = Settings.from_env({"HRP_PHASE": "dual_write"}, phase="shadow")
    assert settings.phase == "shadow"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"HRP_PHASE": "postgres"}, "HRP_PHASE='postgres' is not allowed; use one of: sqlite_only, dual_write"),
        ({"HRP_SHADOW_SAMPLE": "2"}, "HRP_SHADOW_SAMPLE='2' is not a number between 0.0 and 1.0"),
        ({"HRP_SHADOW_SAMPLE": "often"}, "HRP_SHADOW_SAMPLE='often'"),
        ({"HRP_POSTGRES_URL": "mysql://u:pw@h/db"}, "HRP_POSTGRES_URL='mysql://u:***@h/db' is not a postgresql URL"),
        ({"HRP_POSTGRES_URL": "::not a url::"}, "HRP_POSTGRES_URL='::not a url::' is not a database URL"),
        # a URL without its scheme (or with one slash) still holds a password, before its last '@'
        ({"HRP_POSTGRES_URL": "hrp:pw@db:5432/hrp"}, "HRP_POSTGRES_URL='***@db:5432/hrp' is not a database URL"),
        ({"HRP_POSTGRES_URL": "postgresql:/hrp:pw@db/hrp"}, "HRP_POSTGRES_URL='***@db/hrp' is not a database URL"),
        ({"HRP_POSTGRES_DIRECT_URL": "//hrp:pw@db/hrp"}, "HRP_POSTGRES_DIRECT_URL='***@db/hrp' is not a database URL"),
        ({"HRP_SQLITE_URL": "postgresql://h/db"}, "HRP_SQLITE_URL='postgresql://h/db' is not a sqlite URL"),
        ({"HRP_LOG_FORMAT": "xml"}, "HRP_LOG_FORMAT='xml' is not allowed; use one of: json, console"),
        ({"HRP_POSTGRES_POOL": "0"}, "HRP_POSTGRES_POOL='0' is not a whole number from 1 to 500"),
        ({"HRP_POSTGRES_POOL": "2.5"}, "HRP_POSTGRES_POOL='2.5' is not a whole number from 1 to 500"),
        ({"HRP_POSTGRES_POOL_TIMEOUT": "nan"}, "HRP_POSTGRES_POOL_TIMEOUT='nan' is not seconds from 0.1 to 60"),
        ({"HRP_POSTGRES_POOL_TIMEOUT": "0"}, "HRP_POSTGRES_POOL_TIMEOUT='0' is not seconds from 0.1 to 60"),
        ({"HRP_SQLITE_LOCK_WAIT_S": "-1"}, "HRP_SQLITE_LOCK_WAIT_S='-1' is not seconds from 0.1 to 3600"),
        ({"HRP_BACKUP_MAX_AGE": "tomorrow"}, "HRP_BACKUP_MAX_AGE='tomorrow' is not a duration"),
        ({"HRP_SHADOW_WINDOW": "0"}, "HRP_SHADOW_WINDOW='0' is not a duration"),
        ({"HRP_SHADOW_MAX_RATE": "2"}, "HRP_SHADOW_MAX_RATE='2' is not a number between 0.0 and 1.0"),
        ({"HRP_SHADOW_MIN_READS": "some"}, "HRP_SHADOW_MIN_READS='some' is not a whole number from 0"),
        ({"HRP_SHADOW_WORKERS": "0"}, "HRP_SHADOW_WORKERS='0' is not a whole number from 1 to 64"),
        ({"HRP_SHADOW_ENABLED": "maybe"}, "HRP_SHADOW_ENABLED='maybe' is not allowed; use one of: 1, true"),
        ({"HRP_SHADOW_SAMPLES": "races.get=3"}, "HRP_SHADOW_SAMPLES item 'races.get=3' is not READ=RATE"),
        ({"HRP_SHADOW_IGNORE": "nodot"}, "HRP_SHADOW_IGNORE:"),
        ({"HRP_VERIFY_MAX_AGE": "old"}, "HRP_VERIFY_MAX_AGE='old' is not seconds"),
        ({"HRP_LOGIN_FAILURES": "-1"}, "HRP_LOGIN_FAILURES='-1' is not a whole number from 0 (no limit) to 100000"),
        ({"HRP_REGISTRATIONS_PER_ADDRESS": "many"}, "HRP_REGISTRATIONS_PER_ADDRESS='many' is not a whole number"),
        ({"HRP_THROTTLE_WINDOW_S": "0"}, "HRP_THROTTLE_WINDOW_S='0' is not seconds from 1 to 86400"),
        ({"HRP_PASSWORD_HASH_SLOTS": "0"}, "HRP_PASSWORD_HASH_SLOTS='0' is not a whole number from 1 to 64"),
    ],
)
def test_bad_values_name_the_variable_and_the_allowed_values(env, message):
    with pytest.raises(SettingsError) as error:
        Settings.from_env(env)
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert "pw" not in str(error.value)


def test_missing_postgres_says_what_to_do():
    with pytest.raises(SettingsError, match="HRP_POSTGRES_URL is not set: give --postgres URL"):
        Settings.from_env({}).require_postgres()


@pytest.mark.parametrize(
    "pool, asked, threads",
    [("10", 8, 8), ("3", 8, 5), ("2", 8, 3), ("1", 8, 1), ("4", 4, 4), ("4", 8, 7)],
)
def test_request_threads_fit_the_postgres_pool(pool, asked, threads):
    settings = Settings.from_env({"HRP_POSTGRES_URL": "postgresql://u@h/db", "HRP_POSTGRES_POOL": pool})
    assert settings.request_threads(asked) == threads  # pool + as many overflow, 1 for the applier


def test_without_postgres_the_threads_are_as_asked():
    assert Settings.from_env({}).request_threads(8) == 8


def test_the_operator_url_is_the_direct_one_and_falls_back_to_the_apps():
    pooled = {"HRP_POSTGRES_URL": "postgresql://u@pooler:6432/db"}
    both = pooled | {"HRP_POSTGRES_DIRECT_URL": "postgresql://u@server:5432/db"}
    assert Settings.from_env(pooled).operator().postgres_url == "postgresql://u@pooler:6432/db"
    assert Settings.from_env(pooled).operator_variable == "HRP_POSTGRES_URL"
    operator = Settings.from_env(both).operator()
    assert operator.postgres_url == "postgresql://u@server:5432/db"
    assert operator.operator_variable == "HRP_POSTGRES_DIRECT_URL"
    assert Settings.from_env(both).postgres_url == "postgresql://u@pooler:6432/db"  # the app's stays pooled


def test_a_bad_direct_url_names_its_variable():
    with pytest.raises(SettingsError, match="HRP_POSTGRES_DIRECT_URL='mysql://u@h/db' is not a postgresql URL"):
        Settings.from_env({"HRP_POSTGRES_DIRECT_URL": "mysql://u@h/db"})


def test_a_short_key_is_refused_naming_the_variable_and_never_shown():
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"HRP_SECRET_KEY": "a"})
    assert str(refused.value).startswith("HRP_SECRET_KEY is too short: use at least 32 random characters")
    assert "'a'" not in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(SettingsError, match="the app's SECRET_KEY is too short"):
        Settings().validated().session_key("short app key")


@pytest.mark.parametrize("env, lifetime", [({}, 43200.0), ({"HRP_SESSION_LIFETIME": "30m"}, 1800.0),
                                           ({"HRP_SESSION_LIFETIME": "90"}, 90.0)])
def test_the_session_lifetime_setting(env, lifetime):
    assert Settings.from_env(env).session_lifetime == lifetime


@pytest.mark.parametrize("env, message", [
    ({"HRP_SESSION_LIFETIME": "forever"}, "HRP_SESSION_LIFETIME='forever' is not a duration from 1s to 30d"),
    ({"HRP_SESSION_LIFETIME": "31d"}, "HRP_SESSION_LIFETIME='31d' is not a duration from 1s to 30d"),
    ({"HRP_SESSION_COOKIE_SECURE": "maybe"}, "HRP_SESSION_COOKIE_SECURE='maybe' is not allowed"),
    ({"HRP_ENV": "staging"}, "HRP_ENV='staging' is not allowed; use one of: production, development"),
])
def test_bad_session_settings_name_the_variable(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_the_session_key_comes_from_the_environment_or_the_app_and_only_development_goes_without():
    key = "k" * 32
    assert Settings.from_env({"HRP_SECRET_KEY": key}).session_key("an app key of its own, long enough") == key
    assert Settings.from_env({}).session_key("an app key of its own, long enough").startswith("an app key")
    assert Settings.from_env({"HRP_ENV": "development"}).session_key() is None
    with pytest.raises(SettingsError, match="HRP_SECRET_KEY is not set"):
        Settings.from_env({}).session_key()


@pytest.mark.parametrize("word, secure", [("1", True), ("on", True), ("Yes", True), ("0", False), ("false", False)])
def test_the_secure_cookie_setting(word, secure):
    assert Settings.from_env({"HRP_SESSION_COOKIE_SECURE": word}).session_cookie_secure is secure


def test_column_types_are_read_from_hrp_cutover_toml_else_pyproject(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Settings().column_types() is None
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "app"\n')
    assert Settings().column_types() is None
    (tmp_path / "pyproject.toml").write_text('[tool.hrp-cutover.column-types."My Table"]\n"a col" = "jsonb"\n')
    assert Settings().column_types() == {("My Table", "a col"): "jsonb"}
    (tmp_path / "hrp-cutover.toml").write_text('[column-types.events]\npayload = "text"\n')
    assert Settings().column_types() == {("events", "payload"): "text"}
    elsewhere = tmp_path / "types.toml"
    elsewhere.write_text('[column-types]\n')
    assert Settings(column_types_file=str(elsewhere)).column_types() == {}


@pytest.mark.parametrize(("body", "says"), [
    ('[column-types]\nevents = "jsonb"\n', "must be a table of column = type"),
    ('column-types = 3\n', "must be a table of tables"),
    ('[column-types.events]\npayload = "uuid"\n', "'uuid' is not a type"),
    ('[column-types.events\n', "not a readable TOML file"),
])
def test_a_bad_column_types_file_is_one_line(tmp_path, body, says):
    path = tmp_path / "hrp-cutover.toml"
    path.write_text(body)
    with pytest.raises(SettingsError, match=re.escape(says)) as raised:
        Settings(column_types_file=str(path)).column_types()
    assert "\n" not in str(raised.value)
    with pytest.raises(SettingsError, match="no such file"):
        Settings(column_types_file=str(tmp_path / "missing.toml")).column_types()
