"""redact: credentials out of any text before it reaches a log line, an error or a repr."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["REDACTED", "redact"]

REDACTED = "***"

# scheme://user:password@host -> scheme://***@host. The user name goes too: some
# servers take the token as the user name (https://TOKEN@host).
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/?#@\s'\"<>]*@")
# ?api_key=... &token=... in a URL, or api_key=... in any text; the name is kept so
# that a reader still sees which credential was there.
_NAMED = re.compile(
    r"(?P<name>(?:api[_-]?key|access[_-]?token|refresh[_-]?token|token|password|passwd|"
    r"secret|client[_-]?secret|auth)[\"']?\s*[=:]\s*[\"']?)(?P<value>[^\s&\"',;}\]]+)",
    re.IGNORECASE,
)
# Authorization: Bearer abc / Basic abc, in headers as logged or as a repr'd dict.
_SCHEME = re.compile(r"(?P<name>\b(?:Bearer|Basic)\s+)(?P<value>[^\s\"',;}\]]+)", re.I)


def redact(text: object, secrets: Iterable[str] = ()) -> str:
    """``str(text)`` with every credential replaced by ``***``.

    Covers URL userinfo (``ws://user:pw@host`` -> ``ws://***@host``), named values
    (``api_key=``, ``token=``, ``password=``, ``secret=``... in query strings, headers
    and free text), ``Bearer``/``Basic`` credentials, and every string in ``secrets``
    (the tokens the caller holds), wherever they appear.
    """
    out = str(text)
    for secret in secrets:
        # A very short "secret" would blank out ordinary words; real tokens are long.
        if secret and len(secret) >= 4:
            out = out.replace(secret, REDACTED)
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", out)
    out = _NAMED.sub(lambda m: f"{m['name']}{REDACTED}", out)
    return _SCHEME.sub(lambda m: f"{m['name']}{REDACTED}", out)
