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
INSUFFICIENT_PRIVILEGE = "42501"


def privilege_refused(error: BaseException) -> bool:
    """PostgreSQL refused for want of a privilege (the role may not): trying again changes nothing
    until the operator grants it or runs the step as the owner."""
    return getattr(getattr(error, "orig", None), "pgcode", None) == INSUFFICIENT_PRIVILEGE


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
