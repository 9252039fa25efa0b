"""Sessions that end on the server: one session version per user, kept in the SQLite file.

A login writes the user's current version into the signed cookie; logging out
adds one to it, so every cookie issued before (a copy kept by anybody, in any
worker process on the file) no longer matches and is not a session. The table
(hrp_cutover_session_version) is the layer's own, beside the phase record; a
user without a row is at version 0.
"""

from __future__ import annotations

import sqlalchemy as sa

from adapters.binds import reading, writing

SESSION_VERSION_TABLE = "hrp_cutover_session_version"


class SessionVersions:
    """Reads and ends users' sessions in the SQLite file every worker shares."""

    def __init__(self, sqlite_engine: sa.Engine):
        self.engine = sqlite_engine
        with writing(sqlite_engine) as connection:
            connection.exec_driver_sql(
                f"CREATE TABLE IF NOT EXISTS {SESSION_VERSION_TABLE}"
                " (user_id INTEGER PRIMARY KEY, version INTEGER NOT NULL)"
            )

    def current(self, user_id: int) -> int:
        with reading(self.engine) as connection:
            version = connection.exec_driver_sql(
                f"SELECT version FROM {SESSION_VERSION_TABLE} WHERE user_id = ?", (user_id,)
            ).scalar()
        return version or 0

    def end_all(self, user_id: int) -> None:
        """End every session of this user issued so far."""
        with writing(self.engine) as connection:
            connection.exec_driver_sql(
                f"INSERT INTO {SESSION_VERSION_TABLE} (user_id, version) VALUES (?, 1)"
                " ON CONFLICT (user_id) DO UPDATE SET version = version + 1",
                (user_id,),
            )
