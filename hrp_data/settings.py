"""Settings: one frozen object read from the environment (and CLI flags), validated at start.

A bad value raises `SettingsError` whose message is one line naming the
variable, what was wrong and what is allowed; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from adapters.urls import HIDDEN, redact_url
from shadow import experiment
from shadow.compare import IgnoreRule
from shadow.report import parse_duration
from hrp_data.backfill.legacy_file import LegacyFileError, require_contract

BACKGROUND_CONNECTIONS = 1
"""PostgreSQL connections an app process needs besides its request threads while they use PostgreSQL: the
applier's. (The shadow-read workers read PostgreSQL only while SQLite is primary, when requests do not.)"""

PHASE_NAMES = ("sqlite_only", "dual_write", "shadow", "postgres_primary", "postgres_only")
LOG_FORMATS = ("json", "console")
ENVIRONMENTS = ("production", "development")
SECRET_KEY_MIN_LENGTH = 32
MAKE_A_KEY = "python3 -c 'import secrets; print(secrets.token_hex(32))'"
SESSION_LIFETIME_MAX_S = 30 * 86400.0
COLUMN_TYPES_FILE = "hrp-cutover.toml"
COLUMN_TYPES = ("jsonb", "text", "bytea", "secret")
"""What the column-types file may choose (adapters.catalog.CHOSEN_TYPES and SECRET say what each means)."""
TRUE_WORDS, FALSE_WORDS = ("1", "true", "on", "yes"), ("0", "false", "off", "no")


class SettingsError(ValueError):
    """A setting with a bad value; the message names the variable and the allowed values."""


@dataclasses.dataclass(frozen=True)
class Settings:
    sqlite_url: str = "sqlite:///data/hrp_database.db"
    postgres_url: str | None = None
    postgres_direct_url: str | None = None
    app_role: str | None = None
    """The PostgreSQL role the app connects as (readiness `privileges`, `schema`'s grants); unset: the
    user of HRP_POSTGRES_URL where HRP_POSTGRES_DIRECT_URL names another (`app_role_name`)."""
    verifier_role: str | None = None
    """A read-only role `schema` grants SELECT on every table (docs/operations.md, least privilege)."""
    phase: str = "sqlite_only"
    log_format: str = "console"
    log_level: str = "INFO"
    shadow_sample: float = 1.0
    secret_key: str | None = None
    env: str = "production"
    session_lifetime: float = 12 * 3600.0
    session_cookie_secure: bool = False
    postgres_pool: int = 10
    postgres_pool_timeout: float = 5.0
    sqlite_lock_wait_s: float = 30.0
    metrics_token: str | None = None
    verify_max_age: float = 3600.0
    """Seconds a full verify counts as evidence for a move (readiness)."""
    backup_max_age: Any = "24h"
    """How recent a backup must be for `backfill` to start; seconds after validated()."""
    shadow_enabled: Any = True
    """HRP_SHADOW_ENABLED=0 switches every shadow read off (the kill switch)."""
    shadow_samples: str = ""
    """Per-read rates, 'races.get=0.1,statistics.race_statistics=0' (names checked by ShadowReads)."""
    shadow_ignore: str = ""
    """Columns left out of comparison, 'table.column[,...]' (parsed by shadow.compare.IgnoreRule)."""
    shadow_workers: int = experiment.WORKERS
    shadow_queue: int = experiment.QUEUE_SIZE
    shadow_max_details: int = 1000
    shadow_window: str = "1h"
    """How far back the shadow readiness check looks."""
    shadow_max_rate: float = 0.0
    shadow_min_reads: int = 100
    login_failures: int = 5
    login_failures_per_address: int = 20
    registrations_per_address: int = 20
    throttle_window_s: float = 900.0
    password_hash_slots: int = 1
    column_types_file: str | None = None
    """The column types the operator chooses (docs/schema.md, column types): this TOML file, else
    ./hrp-cutover.toml, else [tool.hrp-cutover] of ./pyproject.toml (`column_types()`)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Read HRP_* variables from `env` (default os.environ); non-None overrides win."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            variable = f"HRP_{field.name.upper()}"
            if variable in env and env[variable] != "":
                values[field.name] = env[variable]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values).validated()

    def validated(self) -> "Settings":
        _check_url("HRP_SQLITE_URL", self.sqlite_url, "sqlite")
        if self.postgres_url is not None:
            _check_url("HRP_POSTGRES_URL", self.postgres_url, "postgresql")
        if self.postgres_direct_url is not None:
            _check_url("HRP_POSTGRES_DIRECT_URL", self.postgres_direct_url, "postgresql")
        for variable, role in (("HRP_APP_ROLE", self.app_role), ("HRP_VERIFIER_ROLE", self.verifier_role)):
            if role is not None and not _ROLE_NAME.fullmatch(role):
                raise SettingsError(
                    f"{variable}={role!r} is not a PostgreSQL role name; use letters, digits, _ and $ (at most 63)"
                )
        _check_choice("HRP_PHASE", self.phase, PHASE_NAMES)
        _check_choice("HRP_LOG_FORMAT", self.log_format, LOG_FORMATS)
        _check_choice("HRP_ENV", self.env, ENVIRONMENTS)
        if self.secret_key is not None:
            _check_key_length("HRP_SECRET_KEY", self.secret_key)
        _check_choice(
            "HRP_LOG_LEVEL", str(self.log_level).upper(), ("DEBUG", "INFO", "WARNING", "ERROR")
        )
        try:
            sample = float(self.shadow_sample)
        except (TypeError, ValueError):
            sample = -1.0
        if not 0.0 <= sample <= 1.0:
            raise SettingsError(
                f"HRP_SHADOW_SAMPLE={self.shadow_sample!r} is not a number between 0.0 and 1.0"
            )
        pool = _number("HRP_POSTGRES_POOL", self.postgres_pool, int, 1, 500, "a whole number from 1 to 500")
        pool_timeout = _number(
            "HRP_POSTGRES_POOL_TIMEOUT", self.postgres_pool_timeout, float, 0.1, 60.0, "seconds from 0.1 to 60"
        )
        lock_wait = _number(
            "HRP_SQLITE_LOCK_WAIT_S", self.sqlite_lock_wait_s, float, 0.1, 3600.0, "seconds from 0.1 to 3600"
        )
        limits = {
            name: _number(f"HRP_{name.upper()}", getattr(self, name), int, 0, 100_000, "a whole number from 0 (no limit) to 100000")
            for name in ("login_failures", "login_failures_per_address", "registrations_per_address")
        }
        window = _number("HRP_THROTTLE_WINDOW_S", self.throttle_window_s, float, 1.0, 86400.0, "seconds from 1 to 86400")
        slots = _number("HRP_PASSWORD_HASH_SLOTS", self.password_hash_slots, int, 1, 64, "a whole number from 1 to 64")
        return dataclasses.replace(
            self, shadow_sample=sample, log_level=str(self.log_level).upper(), postgres_pool=pool,
            postgres_pool_timeout=pool_timeout, sqlite_lock_wait_s=lock_wait, throttle_window_s=window,
            password_hash_slots=slots, **limits, **self._later_fields(),
            session_lifetime=_session_lifetime(self.session_lifetime),
            session_cookie_secure=_flag("HRP_SESSION_COOKIE_SECURE", self.session_cookie_secure),
        )

    @property
    def development(self) -> bool:
        return self.env == "development"

    def session_key(self, app_key: str | bytes | None = None) -> str | bytes | None:
        """The key that signs the session cookie: HRP_SECRET_KEY, else the app's own SECRET_KEY.

        None only in development, where the app then keeps a key in the SQLite file. In
        production that file key would let anyone who can read the file or a backup sign an
        admin's session, so a missing or short key stops the app at start (SettingsError).
        """
        key = self.secret_key or app_key
        if key:
            if not self.secret_key:
                _check_key_length("the app's SECRET_KEY", key)
            return key
        if self.development:
            return None
        raise SettingsError(
            "HRP_SECRET_KEY is not set: in production the session cookie needs a key of its own"
            f" ({SECRET_KEY_MIN_LENGTH}+ characters, e.g. from `{MAKE_A_KEY}`);"
            " only HRP_ENV=development signs with a key kept in the SQLite file"
        )

    def _later_fields(self) -> dict[str, Any]:
        """The verify, backup and shadow settings, checked and typed."""
        try:
            IgnoreRule.parse(self.shadow_ignore)
        except ValueError as error:
            raise SettingsError(f"HRP_SHADOW_IGNORE: {error}") from None
        self.sample_rates()
        for variable, value in (("HRP_SHADOW_WINDOW", self.shadow_window), ("HRP_BACKUP_MAX_AGE", self.backup_max_age)):
            try:
                parse_duration(value)
            except ValueError:
                raise SettingsError(f"{variable}={value!r} is not a duration; use e.g. 3600, 90m, 24h, 2d") from None
        return {
            "shadow_enabled": _flag("HRP_SHADOW_ENABLED", self.shadow_enabled),
            "backup_max_age": parse_duration(self.backup_max_age),
            "verify_max_age": _number("HRP_VERIFY_MAX_AGE", self.verify_max_age, float, 0.0, 10**9, "seconds (a number >= 0)"),
            "shadow_workers": _number("HRP_SHADOW_WORKERS", self.shadow_workers, int, 1, 64, "a whole number from 1 to 64"),
            "shadow_queue": _number("HRP_SHADOW_QUEUE", self.shadow_queue, int, 1, 10**7, "a whole number from 1"),
            "shadow_max_details": _number(
                "HRP_SHADOW_MAX_DETAILS", self.shadow_max_details, int, 0, 10**9, "a whole number from 0"
            ),
            "shadow_max_rate": _number(
                "HRP_SHADOW_MAX_RATE", self.shadow_max_rate, float, 0.0, 1.0, "a number between 0.0 and 1.0"
            ),
            "shadow_min_reads": _number(
                "HRP_SHADOW_MIN_READS", self.shadow_min_reads, int, 0, 10**9, "a whole number from 0"
            ),
        }

    def column_types(self) -> dict[tuple[str, str], str] | None:
        """{(table, column): type} from the column-types file; None when there is none (the types the
        schema step stored in the SQLite file then hold). The file's `column-types` table names each
        table of the SQLite file as a key, and under it each column with "jsonb", "text", "bytea" or "secret":

            [column-types.events]        # in pyproject.toml: [tool.hrp-cutover.column-types.events]
            payload = "jsonb"
        """
        if self.column_types_file is not None:
            path, section = Path(self.column_types_file), ()
            if not path.is_file():
                raise SettingsError(f"HRP_COLUMN_TYPES_FILE={self.column_types_file!r}: no such file")
        elif Path(COLUMN_TYPES_FILE).is_file():
            path, section = Path(COLUMN_TYPES_FILE), ()
        elif Path("pyproject.toml").is_file():
            path, section = Path("pyproject.toml"), ("tool", "hrp-cutover")
        else:
            return None
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            raise SettingsError(f"{path}: not a readable TOML file ({error}); fix it or remove it") from None
        for part in section:
            document = document.get(part, {}) if isinstance(document, dict) else {}
        where = ".".join((*section, "column-types"))
        tables = document.get("column-types") if isinstance(document, dict) else None
        if tables is None:
            return None
        if not isinstance(tables, dict):
            raise SettingsError(f"{path}: [{where}] must be a table of tables, e.g. [{where}.events] payload = \"jsonb\"")
        chosen: dict[tuple[str, str], str] = {}
        for table, columns in tables.items():
            if not isinstance(columns, dict):
                raise SettingsError(f"{path}: [{where}] {table!r} must be a table of column = type, e.g. payload = \"jsonb\"")
            for column, type_name in columns.items():
                if type_name not in COLUMN_TYPES:
                    raise SettingsError(
                        f"{path}: [{where}.{table}] {column} = {type_name!r} is not a type this file can choose;"
                        f" use one of {', '.join(repr(t) for t in COLUMN_TYPES)}"
                    )
                chosen[(table, column)] = type_name
        return chosen

    def sample_rates(self) -> dict[str, float]:
        """HRP_SHADOW_SAMPLES as {read name: rate}."""
        out = {}
        for item in filter(None, (p.strip() for p in self.shadow_samples.split(","))):
            name, _, rate = item.partition("=")
            try:
                value = float(rate)
            except ValueError:
                value = -1.0
            if not name.strip() or not 0.0 <= value <= 1.0:
                raise SettingsError(f"HRP_SHADOW_SAMPLES item {item!r} is not READ=RATE with RATE in 0.0..1.0")
            out[name.strip()] = value
        return out

    def ignore_rules(self) -> list[IgnoreRule]:
        return IgnoreRule.parse(self.shadow_ignore)

    def operator(self) -> "Settings":
        """These settings for the operator's long commands and moves: PostgreSQL reached directly.

        The app's HRP_POSTGRES_URL may go through a transaction pooler (PgBouncer);
        a backfill, a verify or a move needs a session of its own, so it uses
        HRP_POSTGRES_DIRECT_URL, or HRP_POSTGRES_URL where that is not set (docs/pooling.md).
        """
        if self.postgres_direct_url is None:
            return self
        return dataclasses.replace(self, postgres_url=self.postgres_direct_url, app_role=self.app_role_name())

    def app_role_name(self) -> str | None:
        """The app's PostgreSQL role: HRP_APP_ROLE, else the user of HRP_POSTGRES_URL when
        HRP_POSTGRES_DIRECT_URL names another user (None: the app connects as the operator does)."""
        if self.app_role is not None:
            return self.app_role
        if self.postgres_url is None or self.postgres_direct_url is None:
            return None
        app, direct = _url_user(self.postgres_url), _url_user(self.postgres_direct_url)
        return app if app is not None and direct is not None and app != direct else None

    @property
    def operator_variable(self) -> str:
        """The variable that names the operator's PostgreSQL URL in these settings."""
        return "HRP_POSTGRES_DIRECT_URL" if self.postgres_direct_url is not None else "HRP_POSTGRES_URL"

    def request_threads(self, asked: int) -> int:
        """Request threads per app process that never need more PostgreSQL connections than it may open.

        A process opens at most HRP_POSTGRES_POOL connections plus as many again as
        overflow; BACKGROUND_CONNECTIONS of them are kept for the applier. More
        request threads than that would make requests wait for a connection after
        they started (and fail after HRP_POSTGRES_POOL_TIMEOUT); fewer make extra
        requests wait in the server's queue before they start, which costs them
        nothing but time.
        """
        if self.postgres_url is None:
            return asked
        return max(1, min(asked, 2 * self.postgres_pool - BACKGROUND_CONNECTIONS))

    def require_sqlite_file(self) -> str:
        """The path of the legacy file, which must exist: a typo must not start a cutover from an empty file."""
        database = make_url(self.sqlite_url).database
        if not database or database == ":memory:" or database.startswith("file::memory:"):
            raise SettingsError(
                f"HRP_SQLITE_URL={self.sqlite_url!r} names no file; give the legacy database,"
                " e.g. sqlite:///data/hrp_database.db"
            )
        shown = redact_url(database)
        if not os.path.isfile(database):
            raise SettingsError(
                f"HRP_SQLITE_URL points to {shown!r}, which does not exist;"
                " give the legacy database file (e.g. --sqlite data/hrp_database.db)"
            )
        with open(database, "rb") as handle:
            if handle.read(16) != b"SQLite format 3\x00":
                raise SettingsError(f"HRP_SQLITE_URL points to {shown!r}, which is not a SQLite database")
        try:
            require_contract(database, f"HRP_SQLITE_URL's file {shown!r}")
        except LegacyFileError as error:
            raise SettingsError(str(error)) from None
        return database

    def require_postgres(self) -> str:
        if not self.postgres_url:
            raise SettingsError(
                "HRP_POSTGRES_URL is not set: give --postgres URL or set HRP_POSTGRES_URL"
                " (e.g. postgresql://user@host:5432/hrp)"
            )
        return self.postgres_url


_ROLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")


def _url_user(url: str) -> str | None:
    try:
        return make_url(url).username or None
    except ArgumentError:
        return None


def _number(variable: str, value: Any, kind: type, low: float, high: float, allowed: str) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not low <= number <= high or (kind is int and str(value).strip() != str(number)):
        raise SettingsError(f"{variable}={value!r} is not {allowed}")
    return number


def _check_key_length(name: str, key: str | bytes) -> None:
    """A signing key shorter than SECRET_KEY_MIN_LENGTH is refused (its value is never shown)."""
    if len(key) < SECRET_KEY_MIN_LENGTH:
        raise SettingsError(
            f"{name} is too short: use at least {SECRET_KEY_MIN_LENGTH} random characters"
            f" (e.g. from `{MAKE_A_KEY}`)"
        )


def _session_lifetime(value: Any) -> float:
    try:
        seconds = parse_duration(value)
    except (TypeError, ValueError):
        seconds = 0.0
    if not 1.0 <= seconds <= SESSION_LIFETIME_MAX_S:
        raise SettingsError(
            f"HRP_SESSION_LIFETIME={value!r} is not a duration from 1s to 30d (e.g. 12h, 30m, 3600)"
        )
    return seconds


def _flag(variable: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word not in TRUE_WORDS + FALSE_WORDS:
        raise SettingsError(
            f"{variable}={value!r} is not allowed; use one of: {', '.join(TRUE_WORDS + FALSE_WORDS)}"
        )
    return word in TRUE_WORDS


def _check_choice(variable: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SettingsError(f"{variable}={value!r} is not allowed; use one of: {', '.join(allowed)}")


def _unparsed_url(value: str) -> str:
    """A value that is not a URL, safe to show: a URL that lost its scheme (`hrp:pw@db/hrp`,
    `postgresql:/hrp:pw@db/hrp`) still holds its password before the last '@', which redact_url (that
    reads `scheme://user:password@`) cannot find, so everything before that '@' is hidden."""
    shown = redact_url(value)
    if "://" not in shown and "@" in shown:
        shown = HIDDEN + shown[shown.rfind("@"):]
    return shown


def _check_url(variable: str, value: str, backend: str) -> None:
    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        raise SettingsError(
            f"{variable}={_unparsed_url(value)!r} is not a database URL;"
            f" expected {backend}://..."
        ) from None
    if url.get_backend_name() != backend:
        raise SettingsError(
            f"{variable}={redact_url(value)!r} is not a {backend} URL; expected {backend}://..."
        )
