"""Database URLs made safe to print: the password never leaves this module in clear."""

from __future__ import annotations

import re

_PASSWORD_IN_URL = re.compile(r"(?P<head>(?:[a-zA-Z][a-zA-Z0-9+.-]*)?://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<at>@)")
_PASSWORD_PARAM = re.compile(r"(?P<head>\bpassword=)(?P<pw>[^\s&'\"]*)", re.IGNORECASE)


def redact_url(text: str) -> str:
    """Replace every password inside database URLs (and password=... parameters) with ***."""
    text = _PASSWORD_IN_URL.sub(lambda m: f"{m['head']}***{m['at']}", str(text))
    return _PASSWORD_PARAM.sub(lambda m: f"{m['head']}***", text)
