"""Token checks as the live server makes them: Bearer header, or ``?api_key=`` on /ws only.

With a token lifetime (``token_ttl``) the server also plays an identity provider whose
tokens expire, so that tests and the demo can show a client outliving its tokens.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

__all__ = [
    "EXPIRED",
    "INVALID",
    "MISSING",
    "TOKEN_PATH",
    "Credentials",
    "rest_auth_failure",
    "ws_auth_failure",
]

log = logging.getLogger("querysync.server")

MISSING = "Missing authentication"
INVALID = "Invalid authentication"
EXPIRED = "Token expired"
TOKEN_PATH = "/api/auth/token"
"""POST here with the server's ``token`` as Bearer to get a new expiring token."""


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


def _digest(token: str) -> bytes:
    # Issued tokens are looked up by their hash, so the lookup's timing tells nothing
    # about the token itself.
    return hashlib.sha256(token.encode()).digest()


class Credentials:
    """Which tokens the server accepts: none, one fixed ``token``, or issued ones that expire.

    Without ``ttl`` it is the fixed ``token`` (or no auth at all when None), as before.
    With ``ttl`` (seconds) only tokens from :meth:`issue` are accepted, each for ``ttl``
    seconds after it was issued; an older one is refused with ``"Token expired"``.
    ``token`` is then the long-lived secret that ``POST /api/auth/token`` wants (as
    Bearer) to issue a new one; without it that endpoint refuses everyone. With
    ``token_file`` a fresh token is written there (mode 0600, replaced atomically) when
    the server starts and every ``ttl / 2`` seconds, so a client reading it always finds
    one valid for at least half its life.
    """

    def __init__(
        self,
        token: str | None,
        ttl: float | None = None,
        *,
        token_file: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl is not None and not ttl > 0:
            raise ValueError(f"token_ttl must be positive seconds or None, got {ttl!r}")
        if token_file is not None and ttl is None:
            raise ValueError("token_file needs a token_ttl: it holds the issued tokens")
        self._token = token
        self.ttl = ttl
        self.token_file = Path(token_file) if token_file is not None else None
        self._clock = clock
        self._issued: dict[bytes, float] = {}
        self._rotation: asyncio.Task[None] | None = None

    @property
    def required(self) -> bool:
        """True when requests need a token at all."""
        return self._token is not None or self.ttl is not None

    def issue(self) -> str:
        """A new token, valid for ``ttl`` seconds from now (or the fixed token without ttl)."""
        if self.ttl is None:
            if self._token is None:
                raise RuntimeError("this server takes no token")
            return self._token
        now = self._clock()
        # Tokens expired more than a lifetime ago only ever answer "invalid" now.
        self._issued = {d: t for d, t in self._issued.items() if t > now - self.ttl}
        token = secrets.token_urlsafe(24)
        self._issued[_digest(token)] = now + self.ttl
        return token

    def expires_in(self, token: str | None) -> float | None:
        """Seconds until an issued ``token`` expires; None for a token that never does."""
        if self.ttl is None or token is None:
            return None
        expiry = self._issued.get(_digest(token))
        return None if expiry is None else expiry - self._clock()

    def failure(self, offered: str | None) -> str | None:
        """Why ``offered`` is refused (a reason), or None when it is accepted."""
        if self.ttl is None:
            return None if self._token is None else _check(self._token, offered)
        if offered is None:
            return MISSING
        left = self.expires_in(offered)
        if left is None:
            return INVALID
        return EXPIRED if left <= 0 else None

    def issuer_failure(self, request: web.BaseRequest) -> str | None:
        """Why ``POST /api/auth/token`` refuses ``request``, or None."""
        if self.ttl is None or self._token is None:
            return INVALID
        return _check(self._token, _bearer(request))

    async def handle_issue(self, request: web.Request) -> web.StreamResponse:
        """``POST /api/auth/token``: ``{"token", "token_type", "expires_in"}``."""
        return web.json_response(
            {"token": self.issue(), "token_type": "bearer", "expires_in": self.ttl}
        )

    # -- the token file ----------------------------------------------------------------

    def start_rotation(self) -> None:
        """Write the token file now and every ``ttl / 2`` seconds until :meth:`stop_rotation`."""
        if self.token_file is None or self._rotation is not None:
            return
        self.write_token_file()
        self._rotation = asyncio.get_running_loop().create_task(self._rotate())

    async def stop_rotation(self) -> None:
        rotation, self._rotation = self._rotation, None
        if rotation is not None:
            rotation.cancel()
            await asyncio.wait({rotation})

    async def _rotate(self) -> None:
        assert self.ttl is not None
        while True:
            await asyncio.sleep(self.ttl / 2)
            try:
                self.write_token_file()
            except OSError:
                log.exception("cannot write the token file %s", self.token_file)

    def write_token_file(self) -> str:
        """Issue a token and put it in the token file (0600, atomically); returns it."""
        assert self.token_file is not None
        token = self.issue()
        temporary = self.token_file.with_name(f".{self.token_file.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(token + "\n")
        # A reader sees the old whole token or the new whole token, never half of one.
        os.replace(temporary, self.token_file)
        return token


def _credentials(token: str | Credentials | None) -> Credentials:
    return token if isinstance(token, Credentials) else Credentials(token)


def ws_auth_failure(request: web.BaseRequest, token: str | Credentials | None) -> str | None:
    """Why /ws refuses the request (a close reason), or None when it may connect.

    The header wins over ``?api_key=``; ``?token=`` is not read, as on the live server.
    """
    credentials = _credentials(token)
    if not credentials.required:
        return None
    return credentials.failure(ws_token(request))


def ws_token(request: web.BaseRequest) -> str | None:
    """The token a /ws request offers: the Bearer header, else ``?api_key=``."""
    return _bearer(request) or request.query.get("api_key") or None


def rest_auth_failure(request: web.BaseRequest, token: str | Credentials | None) -> str | None:
    """Why the REST API refuses the request, or None; only the Bearer header counts."""
    credentials = _credentials(token)
    if request.path == TOKEN_PATH and credentials.ttl is not None:
        return credentials.issuer_failure(request)
    if not credentials.required:
        return None
    return credentials.failure(_bearer(request))
