"""Error descriptions that are safe to store and log.

Database errors often echo values (PostgreSQL's DETAIL repeats a duplicate
key's value; a failing statement carries its parameters). `describe_error`
keeps only what identifies the problem: the error class, the SQLSTATE and its
primary message (which names the constraint, never the values), or the
conversion rule's reason.
"""

from __future__ import annotations

import sqlalchemy as sa

from adapters.convert import Rejected
from adapters.urls import redact_url

MAX_LENGTH = 300


def describe_error(error: BaseException) -> str:
    """A one-line, value-free description of `error`."""
    original = getattr(error, "orig", None) or error.__cause__ or error
    if isinstance(original, Rejected):
        return f"rejected: {original.reason}"
    if isinstance(error, sa.exc.StatementError) and isinstance(error.orig, Rejected):
        return f"rejected: {error.orig.reason}"
    diag = getattr(original, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    code = getattr(original, "pgcode", None)
    if primary:
        text = f"{type(original).__name__} {code}: {primary}"
    else:
        text = f"{type(original).__name__}: {str(original).splitlines()[0] if str(original) else ''}"
    return redact_url(text)[:MAX_LENGTH]
