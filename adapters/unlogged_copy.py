"""COPY ... FROM STDIN on a psycopg2 connection, also in processes that bound every call.

Why COPY: psycopg2 spells parameter values into the statement text on the
client, so any statement PostgreSQL logs (a failing one under the default
log_min_error_statement, or every one under log_min_duration_statement=0)
carries its values. COPY's data rows are never part of a logged statement,
so the write paths use it for rows with secret columns.

psycopg2 refuses copy_expert while a wait callback is installed (app
processes install one: adapters.postgres.bound_every_call). psycopg2 hands
out the connection's libpq handle (`connection.pgconn_ptr`, documented for
calls through ctypes), so in that case the same COPY is run here with
libpq's non-blocking calls, each wait bounded like the callback bounds the
others. It runs on the caller's connection, inside the caller's transaction.
"""

from __future__ import annotations

import ctypes
import functools
import io
import select
from typing import Any

import psycopg2
import psycopg2._psycopg
import psycopg2.extensions

from adapters import postgres

PGRES_COMMAND_OK = 1
PGRES_COPY_IN = 4
PG_DIAG_SQLSTATE = ord("C")
PG_DIAG_MESSAGE_PRIMARY = ord("M")
CHUNK = 1 << 16


class CopyFailed(psycopg2.DatabaseError):
    """PostgreSQL refused the COPY; `pgcode` and `diag.message_primary` say why (never a value)."""

    def __init__(self, code: str | None, message: str):
        super().__init__(f"{code}: {message}" if code else message)
        self.code = code
        self.primary = message

    @property
    def pgcode(self) -> str | None:  # read by hrp_data.errors.describe_error
        return self.code

    @property
    def diag(self) -> Any:
        return _Diag(self.primary)


class _Diag:
    def __init__(self, message_primary: str):
        self.message_primary = message_primary


def copy_in(dbapi_connection: Any, statement: str, payload: bytes) -> None:
    """Run `statement` (a COPY ... FROM STDIN) with `payload` as its data, in the current transaction."""
    if psycopg2.extensions.get_wait_callback() is None:
        with dbapi_connection.cursor() as cursor:
            cursor.copy_expert(statement, io.BytesIO(payload))
        return
    try:
        _LibpqCopy(dbapi_connection).run(statement, payload)
    except psycopg2.OperationalError:
        dbapi_connection.close()  # half-way through a COPY: the connection is of no further use
        raise


@functools.cache
def _libpq() -> ctypes.CDLL:
    """The libpq psycopg2 itself is linked with (its symbols resolve through psycopg2's module)."""
    lib = ctypes.CDLL(psycopg2._psycopg.__file__)
    pointer, text, number = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    signatures = {
        "PQsendQuery": ([pointer, text], number),
        "PQflush": ([pointer], number),
        "PQconsumeInput": ([pointer], number),
        "PQisBusy": ([pointer], number),
        "PQgetResult": ([pointer], pointer),
        "PQresultStatus": ([pointer], number),
        "PQresultErrorField": ([pointer, number], text),
        "PQclear": ([pointer], None),
        "PQputCopyData": ([pointer, text, number], number),
        "PQputCopyEnd": ([pointer, text], number),
        "PQerrorMessage": ([pointer], text),
        "PQsocket": ([pointer], number),
    }
    for name, (arguments, result) in signatures.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = arguments, result
    return lib


class _LibpqCopy:
    def __init__(self, dbapi_connection: Any):
        self.lib = _libpq()
        self.conn = ctypes.c_void_p(dbapi_connection.pgconn_ptr)
        self.socket = self.lib.PQsocket(self.conn)

    def run(self, statement: str, payload: bytes) -> None:
        if not self.lib.PQsendQuery(self.conn, statement.encode("utf-8")):
            self._connection_error()
        self._flush()
        failure = self._results(expect=PGRES_COPY_IN, stop_at_copy=True)
        if failure is not None:
            raise failure
        for start in range(0, len(payload), CHUNK):
            chunk = payload[start : start + CHUNK]
            self._until_sent(lambda chunk=chunk: self.lib.PQputCopyData(self.conn, chunk, len(chunk)))
        self._until_sent(lambda: self.lib.PQputCopyEnd(self.conn, None))
        self._flush()
        failure = self._results(expect=PGRES_COMMAND_OK)
        if failure is not None:
            raise failure

    def _results(self, *, expect: int, stop_at_copy: bool = False) -> CopyFailed | None:
        """Read results until libpq has none left (or COPY IN starts); the first error, if any."""
        failure: CopyFailed | None = None
        while True:
            while self.lib.PQisBusy(self.conn):
                self._wait(read=True)
                if not self.lib.PQconsumeInput(self.conn):
                    self._connection_error()
            result = self.lib.PQgetResult(self.conn)
            if not result:
                return failure or (CopyFailed(None, "COPY did not start") if stop_at_copy else None)
            status = self.lib.PQresultStatus(result)
            if status != expect and failure is None:
                failure = _failure(self.lib, result)
            self.lib.PQclear(result)
            if stop_at_copy and status == PGRES_COPY_IN:
                return failure

    def _until_sent(self, put) -> None:
        while True:
            sent = put()
            if sent == 1:
                return
            if sent < 0:
                self._connection_error()
            self._wait(write=True)

    def _flush(self) -> None:
        while True:
            pending = self.lib.PQflush(self.conn)
            if pending == 0:
                return
            if pending < 0:
                self._connection_error()
            self._wait(read=True, write=True)
            if not self.lib.PQconsumeInput(self.conn):
                self._connection_error()

    def _wait(self, *, read: bool = False, write: bool = False) -> None:
        """Wait until the socket is ready, at most as long as bound_every_call waits for any call."""
        budget = getattr(postgres._deadline, "seconds", postgres.CALL_TIMEOUT_S)
        readers, writers = [self.socket] if read else [], [self.socket] if write else []
        if not any(select.select(readers, writers, [], budget)):
            raise postgres.ClientTimeout(f"PostgreSQL did not answer within {budget:g}s (client-side timeout)")

    def _connection_error(self) -> None:
        message = (self.lib.PQerrorMessage(self.conn) or b"").decode("utf-8", "replace").strip()
        raise psycopg2.OperationalError(message.splitlines()[0] if message else "connection lost during COPY")


def _failure(lib: ctypes.CDLL, result: int) -> CopyFailed:
    code = lib.PQresultErrorField(result, PG_DIAG_SQLSTATE)
    message = lib.PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY)
    return CopyFailed(
        code.decode("ascii", "replace") if code else None,
        message.decode("utf-8", "replace") if message else "COPY failed",
    )
