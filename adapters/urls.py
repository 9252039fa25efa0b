"""Database URLs made safe to print: the password never leaves this module in clear."""

from __future__ import annotations

import re

_PASSWORD_IN_URL = re.compile(r"(?P<head>(?:[a-zA-Z][a-zA-Z0-9+.-]{0,31})?://[^:/@\s]{0,256}:)(?P<pw>[^@\s]{0,1024})(?P<at>@)")
"""Bounded repeats: the pattern runs over every log line, so it must stay linear on hostile text."""
_PASSWORD_PARAM = re.compile(r"(?P<head>\bpassword=)(?P<pw>[^\s&'\"]*)", re.IGNORECASE)


def redact_url(text: str) -> str:
    """Replace every password inside database URLs (and password=... parameters) with ***."""
    text = _PASSWORD_IN_URL.sub(lambda m: f"{m['head']}***{m['at']}", str(text))
    return _PASSWORD_PARAM.sub(lambda m: f"{m['head']}***", text)
