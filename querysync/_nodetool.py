"""NodeTool's REST API as fetchers: which endpoint serves which query key."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
from yarl import URL

from ._exceptions import FetchError, ResourceGone, TokenSourceError
from ._keys import QueryKey
from ._redact import redact
from ._token import TokenProvider, TokenSource

__all__ = [
    "LISTED_TYPES",
    "LIST_KEYS",
    "NodeToolApi",
    "endpoint_for",
]

log = logging.getLogger("querysync.nodetool")

Fetch = Callable[[QueryKey], Awaitable[Any]]

# Every list query the NodeTool client keeps -> the resource type of its items, or None
# when they are not resources the feed announces. A list's body holds its items under
# the member named like the key's first element: {"workflows": [...], "next": null}.
_LISTS: dict[QueryKey, str | None] = {
    ("workflows",): "workflow",
    ("templates",): None,
    ("jobs",): "job",
    ("assets",): "asset",
    ("threads",): "thread",
    ("collections",): None,
    ("workspaces",): "workspace",
    ("secrets",): "secret",
    ("models",): None,
}

LIST_KEYS: tuple[QueryKey, ...] = tuple(_LISTS)
"""Every list query the NodeTool client keeps; mirror mode holds all of them fresh."""

LISTED_TYPES: dict[QueryKey, str] = {k: t for k, t in _LISTS.items() if t is not None}
"""List key -> the type of the resources it lists, under the member named like the key."""

# One row per query key shape: (name, has an id) -> path template. The list paths end
# with "/" because the server's routers are mounted that way; without the slash they
# answer with a redirect, which is a wasted round trip on every refetch.
_PATHS: dict[tuple[str, bool], str] = {
    ("workflows", False): "/api/workflows/",
    ("templates", False): "/api/workflows/examples",
    ("workflow", True): "/api/workflows/{id}",
    ("workflow_versions", True): "/api/workflows/{id}/versions",
    ("jobs", False): "/api/jobs/",
    ("job", True): "/api/jobs/{id}",
    ("assets", False): "/api/assets/",
    ("asset", True): "/api/assets/{id}",
    ("threads", False): "/api/threads/",
    ("thread", True): "/api/threads/{id}",
    ("messages", True): "/api/messages/?thread_id={id}",
    ("message", True): "/api/messages/{id}",
    ("collections", False): "/api/collections/",
    ("workspaces", False): "/api/workspaces/",
    ("workspace", True): "/api/workspaces/{id}",
    ("secrets", False): "/api/settings/secrets",
    ("models", False): "/api/models/all",
}

FETCH_PREFIXES: tuple[QueryKey, ...] = tuple(sorted({(name,) for name, _ in _PATHS}))


def endpoint_for(key: QueryKey) -> str | None:
    """The REST path (with query string) that serves ``key``, or None if no endpoint does."""
    if not key or not isinstance(key[0], str):
        return None
    if len(key) == 1:
        return _PATHS.get((key[0], False))
    if len(key) == 2 and isinstance(key[1], str) and key[1]:
        template = _PATHS.get((key[0], True))
        if template is not None:
            return template.format(id=quote(key[1], safe=""))
    return None


class _Registrar(Protocol):
    def register_fetcher(self, prefix: QueryKey, fetch: Fetch) -> None: ...


class NodeToolApi:
    """Fetches query keys from a NodeTool server's REST API over one aiohttp session.

    ``api_url`` is the server's base (``http://127.0.0.1:7777``); ``token`` is sent as
    ``Authorization: Bearer``, the only form the REST API accepts. It is a string or a
    :data:`querysync.TokenSource` (or a provider shared with the WebSocket source): its
    answer is cached, and a 401 asks the source once more and repeats the request once
    with the new token; a second 401 is a :class:`querysync.FetchError` for that fetch
    only. ``timeout`` is the total time for one request, in seconds (default 10).
    ``counts``: ``unauthorized`` (401 answers), ``token_refreshes``, ``token_errors``.
    """

    def __init__(
        self,
        api_url: str,
        session: aiohttp.ClientSession,
        *,
        token: TokenSource | TokenProvider | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._session = session
        self._tokens = token if isinstance(token, TokenProvider) else TokenProvider(token or None)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.counts: Counter[str] = Counter()

    # -- credentials: the only part of a request that depends on the token -----------

    async def _auth_headers(self, path: str) -> dict[str, str]:
        """The headers of one request: ``Authorization`` with the current token, if any."""
        try:
            token = await self._tokens.current()
        except TokenSourceError as exc:
            self.counts["token_errors"] += 1
            raise FetchError(f"GET {path}: {exc}") from exc
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _after_401(self, path: str, used: dict[str, str]) -> dict[str, str] | None:
        """Headers with the source's next token after a 401, or None if no retry can help."""
        self.counts["unauthorized"] += 1
        if self._tokens.fixed:
            return None
        rejected = used.get("Authorization", "").removeprefix("Bearer ") or None
        try:
            token = await self._tokens.refresh(rejected)
        except TokenSourceError as exc:
            self.counts["token_errors"] += 1
            raise FetchError(f"GET {path}: HTTP 401, and {exc}") from exc
        self.counts["token_refreshes"] += 1
        return {"Authorization": f"Bearer {token}"} if token else {}

    def __repr__(self) -> str:
        # Never the token; not a password in the URL either.
        base = redact(str(URL(self.api_url).with_user(None).with_query(None)))
        auth = "without a token" if self._tokens.source is None else "with a token"
        return f"<NodeToolApi {base!r} {auth}>"

    def register(self, cache: _Registrar) -> None:
        """Register this API as the fetcher of every key shape it can serve."""
        for prefix in FETCH_PREFIXES:
            cache.register_fetcher(prefix, self.fetch)

    async def fetch(self, key: QueryKey) -> Any:
        """The JSON body that serves ``key``.

        Raises :class:`ResourceGone` on 404 and :class:`querysync.FetchError` on any other
        failure (status, malformed JSON, network, timeout), with the cause chained.
        """
        path = endpoint_for(key)
        if path is None:
            raise FetchError(f"no NodeTool endpoint serves {key!r}")
        url = self.api_url + path
        headers = await self._auth_headers(path)
        status, body = await self._get(url, path, headers)
        if status == 401:
            retry = await self._after_401(path, headers)
            if retry is not None:
                status, body = await self._get(url, path, retry)
        if status == 404:
            raise ResourceGone(f"GET {path}: 404 not found")
        if status >= 400:
            raise FetchError(f"GET {path}: HTTP {status}")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise FetchError(f"GET {path}: malformed JSON ({exc})") from exc

    async def _get(self, url: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        try:
            async with self._session.get(url, headers=headers, timeout=self._timeout) as response:
                return response.status, await response.read()
        except TimeoutError as exc:
            raise FetchError(f"GET {path}: timed out") from exc
        except aiohttp.ClientError as exc:
            # aiohttp's messages may hold the URL, and with it userinfo or a query token.
            detail = redact(f"{exc.__class__.__name__}: {exc}", self._tokens.secrets)
            raise FetchError(f"GET {path}: {detail}") from exc
