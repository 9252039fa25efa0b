"""Which of PostgreSQL's logging settings would write statements, with their values, to its log.

psycopg2 spells every parameter value into the statement text on the client,
so a logged statement is a logged value. Three settings log statements:
log_statement ('mod' or 'all': every write as it starts),
log_min_duration_statement (>= 0: every statement at least that slow; 0 is
every statement) and log_min_error_statement (at 'error' or below, the
default: every failing statement). log_parameter_max_length[_on_error] bound
the logged values of server-side parameters (not used by psycopg2, set to 0
for the layer's own sessions where the role may: `quiet_parameters`).
Whatever those say, every error is logged with its DETAIL and CONTEXT lines
unless log_error_verbosity is 'terse', and they repeat values: a unique
violation's `Key (access_token)=(...) already exists`, a not-null
violation's `Failing row contains (...)`, a COPY's line. The layer's own
sessions set it to 'terse' where the role may (`quiet_parameters`), and a
role that may not is warned of it (`risks`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa

from adapters.catalog import quote

SETTINGS = (
    "log_statement",
    "log_min_duration_statement",
    "log_min_error_statement",
    "log_parameter_max_length",
    "log_parameter_max_length_on_error",
    "log_error_verbosity",
)
_SEVERITIES = ("debug5", "debug4", "debug3", "debug2", "debug1", "info", "notice", "warning", "error", "log",
               "fatal", "panic")
QUIET_PARAMETERS = ("log_parameter_max_length", "log_parameter_max_length_on_error")
QUIET = {**dict.fromkeys(QUIET_PARAMETERS, "0"), "log_error_verbosity": "terse"}
"""What the layer's own sessions set where the role may (`quiet_parameters`): no parameter value, and no
DETAIL or CONTEXT line (which repeat key values and whole rows), in the server's log."""


@dataclasses.dataclass(frozen=True)
class Risk:
    setting: str
    value: str
    severe: bool
    """Every statement (or every write) is logged, not only failing ones."""
    fix: str

    def __str__(self) -> str:
        return f"{self.setting} = {self.value}: {self.fix}"


def read_settings(connection: sa.Connection) -> dict[str, str]:
    """The current value of each logging setting, as this role's sessions see them."""
    rows = connection.exec_driver_sql(
        "SELECT name, setting FROM pg_settings WHERE name = ANY(%(names)s)", {"names": list(SETTINGS)}
    ).all()
    return {name: setting for name, setting in rows}


def risks(settings: dict[str, str], role: str) -> list[Risk]:
    """Each setting that would log statements with their values, with the statement that fixes it."""
    quoted = quote(role)
    found = []
    if settings.get("log_statement") in ("mod", "all"):
        found.append(Risk(
            "log_statement", settings["log_statement"], True,
            f"every write is logged with its values; run ALTER ROLE {quoted} SET log_statement = 'ddl'"
            " (or ALTER SYSTEM SET log_statement = 'ddl'; SELECT pg_reload_conf())",
        ))
    duration = settings.get("log_min_duration_statement")
    if duration is not None and int(duration) >= 0:
        found.append(Risk(
            "log_min_duration_statement", duration, True,
            f"statements slower than {duration} ms are logged with their values; run ALTER ROLE {quoted}"
            " SET log_min_duration_statement = -1 (log_duration = on still logs the timings, without text)",
        ))
    error_level = settings.get("log_min_error_statement", "error")
    if error_level in _SEVERITIES and _SEVERITIES.index(error_level) <= _SEVERITIES.index("error"):
        found.append(Risk(
            "log_min_error_statement", error_level, False,
            f"a failing statement is logged with its values; run ALTER ROLE {quoted}"
            " SET log_min_error_statement = 'panic' (the error itself is still logged, without the statement)",
        ))
    verbosity = settings.get("log_error_verbosity")
    if verbosity is not None and verbosity != "terse":
        found.append(Risk(
            "log_error_verbosity", verbosity, False,
            "a failing statement's DETAIL is logged with the values it repeats (Key (access_token)=(...)"
            f" already exists); as a superuser run ALTER ROLE {quoted} SET log_error_verbosity = 'terse'"
            f" (or GRANT SET ON PARAMETER log_error_verbosity TO {quoted})",
        ))
    return found


def current_role(connection: sa.Connection) -> str:
    return connection.exec_driver_sql("SELECT current_user").scalar_one()


def quiet_parameters(dbapi_connection: Any) -> bool:
    """Set log_parameter_max_length[_on_error] = 0 and log_error_verbosity = terse (QUIET) for this
    session, each one the role may set; True if it may set them all.

    They are superuser settings (or granted with GRANT SET ON PARAMETER, one by one); the
    privilege is asked first, so a role without it causes no error in the log, and a role granted
    some of them gets those."""
    with dbapi_connection.cursor() as cursor:
        if dbapi_connection.server_version >= 150000:
            cursor.execute(
                "SELECT name FROM unnest(%s::text[]) AS name WHERE has_parameter_privilege(name, 'SET')",
                (list(QUIET),),
            )
            allowed = [row[0] for row in cursor.fetchall()]
        else:
            cursor.execute("SELECT current_setting('is_superuser') = 'on'")
            allowed = list(QUIET) if cursor.fetchone()[0] else []
        if allowed:
            cursor.execute("; ".join(f"SET {name} = {QUIET[name]}" for name in allowed))
    dbapi_connection.commit()
    return len(allowed) == len(QUIET)
