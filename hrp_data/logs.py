"""structlog set-up: configured once per process by the entry point.

JSON lines in production, a readable console in development, and one
redaction processor so that secret columns (password_hash, api_key,
api_secret, passwords) and passwords inside database URLs never reach a log
line, at whatever depth of the event they sit.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from adapters.urls import redact_url
from shadow.redact import SECRET_KEYS, fingerprint


def _redact(value: Any, key: str | None = None) -> Any:
    if key is not None and key.lower() in SECRET_KEYS:
        return fingerprint(value)
    if isinstance(value, dict):
        return {k: _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redact(v) for v in value)
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, BaseException):
        return redact_url(str(value))
    return value


def redact_secrets(logger: Any, method_name: str, event_dict: dict) -> dict:
    """structlog processor: fingerprint secret fields, mask passwords in URLs and messages."""
    return {key: _redact(value, key) for key, value in event_dict.items()}


def _processors(log_format: str) -> list:
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]
    if log_format == "json":
        return shared + [structlog.processors.JSONRenderer(default=str)]
    return shared + [structlog.dev.ConsoleRenderer(colors=False)]


class _PoolCleanupFilter(logging.Filter):
    """SQLAlchemy's pool reports a failed rollback of a connection the server already closed
    ("Exception during reset or similar") with a traceback; the error that closed it is reported
    by the command itself in one line, so this record is kept to its first line, without the
    traceback (and without the statement text a traceback may quote)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_POOL_HANDLER = logging.StreamHandler()
_POOL_HANDLER.addFilter(_PoolCleanupFilter())
_POOL_HANDLER.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))


class _StandardError:
    """sys.stderr as it is at each write: whoever replaced it since (a test's capture, CliRunner, a
    redirect) gets the line, and a stream closed since is never written to."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


STDERR = _StandardError()


def configure_logging(log_format: str = "console", level: str = "INFO", stream=None) -> None:
    """Configure structlog for this process (called by the CLI group and the WSGI entry); without
    `stream`, every line goes to the sys.stderr of the moment it is written."""
    stream = STDERR if stream is None else stream
    pool_logger = logging.getLogger("sqlalchemy.pool")  # its child loggers' records reach this handler
    if getattr(_POOL_HANDLER.stream, "closed", False):
        _POOL_HANDLER.stream = None  # a stream closed under it: nothing to flush
    _POOL_HANDLER.setStream(stream)
    if _POOL_HANDLER not in pool_logger.handlers:
        pool_logger.addHandler(_POOL_HANDLER)
    pool_logger.propagate = False
    structlog.configure(
        processors=_processors(log_format),
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        # one write per line (PrintLogger writes the newline apart): processes sharing a pipe never
        # interleave inside a line
        logger_factory=structlog.WriteLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
