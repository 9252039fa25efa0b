"""Database URLs made safe to print: the password never leaves this module in clear.

`redact_url` reads the text as URLs are parsed (SQLAlchemy's and libpq's URL
syntax): after `scheme://` the user name runs to the first ':', and the
password from there to the '@' before the host, which is the *last* '@' of the
text, since an unencoded password may itself hold '@', spaces, '/' or '://'. So
any password is hidden; the price is that with two URLs in one text, everything
from the first password to the last '@' is hidden. libpq's key/value spelling
(`password=... ` or `password='with spaces'`) is hidden too.
"""

from __future__ import annotations

import re

HIDDEN = "***"
_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]{0,31}://")
_USER = re.compile(r"[^:/\s]{0,256}:")
"""Bounded repeats: redaction runs over every log line, so it must stay linear on hostile text."""
_PASSWORD_PARAM = re.compile(r"(?P<head>\bpassword\s{0,8}=\s{0,8})(?P<pw>'(?:[^'\\]|\\.){0,1024}'?|[^\s&'\"]*)",
                             re.IGNORECASE | re.DOTALL)


def redact_url(text: str) -> str:
    """`text` with every password inside a database URL (and every password=... parameter) as ***."""
    text = str(text)
    last_at = text.rfind("@")
    for scheme in _SCHEME.finditer(text, 0, max(last_at, 0)):
        user = _USER.match(text, scheme.end(), last_at)
        if user is not None:  # the password runs to the last '@', so no later URL is left to read
            text = text[: user.end()] + HIDDEN + text[last_at:]
            break
    return _PASSWORD_PARAM.sub(lambda m: m["head"] + HIDDEN, text)
