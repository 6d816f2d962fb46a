"""NodeTool's REST API as fetchers: which endpoint serves which query key."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp

from ._exceptions import FetchError, ResourceGone
from ._fetched import Fetched, decode_body
from ._keys import QueryKey

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
    ``Authorization: Bearer``, the only form the REST API accepts. ``timeout`` is the
    total time for one request, in seconds (default 10).
    """

    def __init__(
        self,
        api_url: str,
        session: aiohttp.ClientSession,
        *,
        token: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._session = session
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def register(self, cache: _Registrar) -> None:
        """Register this API as the fetcher of every key shape it can serve."""
        for prefix in FETCH_PREFIXES:
            cache.register_fetcher(prefix, self.fetch)

    async def fetch(self, key: QueryKey) -> Fetched:
        """The JSON body that serves ``key``: its data, decoded once, and its text.

        Raises :class:`ResourceGone` on 404 and :class:`querysync.FetchError` on any other
        failure (status, malformed JSON, network, timeout), with the cause chained.
        """
        path = endpoint_for(key)
        if path is None:
            raise FetchError(f"no NodeTool endpoint serves {key!r}")
        url = self.api_url + path
        try:
            async with self._session.get(
                url, headers=self._headers, timeout=self._timeout
            ) as response:
                body = await response.read()
                status = response.status
        except TimeoutError as exc:
            raise FetchError(f"GET {path}: timed out") from exc
        except aiohttp.ClientError as exc:
            raise FetchError(f"GET {path}: {exc.__class__.__name__}: {exc}") from exc
        if status == 404:
            raise ResourceGone(f"GET {path}: 404 not found")
        if status >= 400:
            raise FetchError(f"GET {path}: HTTP {status}")
        try:
            return decode_body(body)
        except ValueError as exc:
            raise FetchError(f"GET {path}: malformed JSON ({exc})") from exc
