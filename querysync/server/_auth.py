"""Token checks as the live server makes them: Bearer header, or ``?api_key=`` on /ws only."""

from __future__ import annotations

import hmac

from aiohttp import web

__all__ = ["INVALID", "MISSING", "rest_auth_failure", "ws_auth_failure"]

MISSING = "Missing authentication"
INVALID = "Invalid authentication"


def _bearer(request: web.BaseRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def _check(token: str, offered: str | None) -> str | None:
    if offered is None:
        return MISSING
    # compare_digest: the time a wrong token takes must not tell how much of it was right.
    if not hmac.compare_digest(token.encode(), offered.encode()):
        return INVALID
    return None


def ws_auth_failure(request: web.BaseRequest, token: str | None) -> str | None:
    """Why /ws refuses the request (a close reason), or None when it may connect.

    The header wins over ``?api_key=``; ``?token=`` is not read, as on the live server.
    """
    if token is None:
        return None
    return _check(token, _bearer(request) or request.query.get("api_key") or None)


def rest_auth_failure(request: web.BaseRequest, token: str | None) -> str | None:
    """Why the REST API refuses the request, or None; only the Bearer header counts."""
    if token is None:
        return None
    return _check(token, _bearer(request))
