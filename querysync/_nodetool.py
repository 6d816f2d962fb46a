"""NodeTool's REST API as fetchers: which endpoint serves which query key, and how it pages."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, Protocol
from urllib.parse import quote

import aiohttp
import yarl

from ._exceptions import FetchError, ResourceGone, TokenSourceError
from ._fetched import Fetched, decode_body, encode_fetched
from ._keys import QueryKey
from ._redact import redact
from ._token import TokenProvider, TokenSource

__all__ = [
    "ENDPOINTS",
    "INCOMPLETE_MEMBER",
    "LIST_KEYS",
    "Endpoint",
    "NodeToolApi",
    "endpoint_for",
]

log = logging.getLogger("querysync.nodetool")

Fetch = Callable[[QueryKey], Awaitable[Any]]

INCOMPLETE_MEMBER = "incomplete"
"""Set to True in a list body cut at ``max_pages``; its cursor names the first page not read."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """How one query key shape is served: a row of the endpoint table.

    ``path`` holds ``{id}`` where the key's second element goes (percent-encoded);
    ``query`` holds the fixed query parameters (``{id}`` allowed there too). A list
    names its items member (``items``, None for a bare JSON list or a detail), the
    parameter that asks for the next page (``cursor``), the body member that names it
    (``next``; ``""`` or null ends the pages) and the page-size parameter (``limit``).
    ``owner`` is the detail path of the resource a per-resource list belongs to: an
    empty list is checked against it, since the server answers a gone owner's list
    with 200 and ``[]`` instead of 404.
    """

    path: str
    query: tuple[tuple[str, str], ...] = ()
    items: str | None = None
    cursor: str | None = None
    next: str | None = None
    limit: str | None = None
    owner: str | None = None
    # The resource type of the items, when the feed announces them (discovery reads it).
    item_type: str | None = None
    # What the resync reads (querysync/_resync.py, docs/refetch.md): the key name of one
    # item's detail; what in an item proves a cached detail current without a GET
    # ("etag": the item's etag is the detail's; "data": the item is the whole detail
    # body; None: nothing, the list reads fewer columns than the detail); and whether
    # the list names every resource of its type, so that one missing from it is gone.
    detail: str | None = None
    proof: Literal["etag", "data"] | None = None
    names_all: bool = True

    @property
    def pages(self) -> bool:
        """True when the server splits this list into pages."""
        return self.cursor is not None and self.next is not None


# (name, has an id) -> endpoint; facts from shared/nodetool-protocol.md. The list paths
# end with "/" because the server's routers are mounted that way; without the slash
# they answer with a redirect, which is a wasted round trip on every refetch.
ENDPOINTS: dict[tuple[str, bool], Endpoint] = {
    ("workflows", False): Endpoint(
        "/api/workflows/",
        items="workflows",
        cursor="cursor",
        next="next",
        limit="limit",
        item_type="workflow",
        # The live list query skips the graph: its etags hash fewer columns.
        detail="workflow",
    ),
    ("templates", False): Endpoint("/api/workflows/examples", items="workflows"),
    ("workflow", True): Endpoint("/api/workflows/{id}"),
    ("workflow_versions", True): Endpoint(
        "/api/workflows/{id}/versions",
        items="versions",
        cursor="cursor",
        next="next",
        limit="limit",
        owner="/api/workflows/{id}",
    ),
    ("jobs", False): Endpoint(
        "/api/jobs/",
        items="jobs",
        cursor="start_key",
        next="next_start_key",
        limit="limit",
        item_type="job",
        # As workflows: the list skips params, and its etags differ from the detail's.
        detail="job",
    ),
    ("job", True): Endpoint("/api/jobs/{id}"),
    ("assets", False): Endpoint(
        "/api/assets/",
        items="assets",
        cursor="cursor",
        next="next",
        limit="page_size",
        item_type="asset",
        detail="asset",
        proof="etag",
        # Without filters the live server lists the home folder's children only.
        names_all=False,
    ),
    ("asset", True): Endpoint("/api/assets/{id}"),
    ("threads", False): Endpoint(
        "/api/threads/",
        items="threads",
        cursor="cursor",
        next="next",
        limit="limit",
        item_type="thread",
        detail="thread",
        proof="etag",
    ),
    ("thread", True): Endpoint("/api/threads/{id}"),
    ("messages", True): Endpoint(
        "/api/messages/",
        query=(("thread_id", "{id}"),),
        items="messages",
        cursor="cursor",
        next="next",
        limit="limit",
        owner="/api/threads/{id}",
        item_type="message",
        # Message bodies carry no etag, but a list item is the detail's body, whole.
        detail="message",
        proof="data",
    ),
    ("message", True): Endpoint("/api/messages/{id}"),
    ("collections", False): Endpoint("/api/collections/", items="collections"),
    ("workspaces", False): Endpoint(
        "/api/workspaces/",
        items="workspaces",
        cursor="cursor",
        next="next_cursor",
        limit="limit",
        item_type="workspace",
        detail="workspace",
    ),
    ("workspace", True): Endpoint("/api/workspaces/{id}"),
    ("secrets", False): Endpoint(
        "/api/settings/secrets",
        items="secrets",
        cursor="key",
        next="next_key",
        item_type="secret",
    ),
    ("models", False): Endpoint("/api/models/all"),
}

LIST_KEYS: tuple[QueryKey, ...] = tuple((name,) for name, has_id in ENDPOINTS if not has_id)
"""Every list query the NodeTool client keeps; mirror mode holds all of them fresh."""

FETCH_PREFIXES: tuple[QueryKey, ...] = tuple(sorted({(name,) for name, _ in ENDPOINTS}))

# Ids that are whole dot segments: any URL library or proxy on the way may remove them
# (RFC 3986 5.2.4), and "%2E" is no escape since normalisers decode it first.
_DOT_SEGMENTS = frozenset({".", ".."})


def _route(key: QueryKey) -> tuple[Endpoint, str | None] | None:
    if not key or not isinstance(key[0], str):
        return None
    if len(key) == 1:
        ep = ENDPOINTS.get((key[0], False))
        return None if ep is None else (ep, None)
    if len(key) == 2 and isinstance(key[1], str) and key[1]:
        ep = ENDPOINTS.get((key[0], True))
        return None if ep is None else (ep, key[1])
    return None


def _fill(template: str, rid: str | None) -> str:
    if rid is None:
        return template
    # safe="": "/", "?", "#", "%" and every other reserved character are escaped, so
    # the id stays one path segment (or one query value) whatever it holds.
    return template.replace("{id}", quote(rid, safe=""))


def _query(pairs: Mapping[str, str] | tuple[tuple[str, str], ...]) -> str:
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in items)


def _fixed_query(ep: Endpoint, rid: str | None) -> dict[str, str]:
    # Unquoted: _query quotes every parameter exactly once.
    return {k: (rid or "") if v == "{id}" else v for k, v in ep.query}


def endpoint_for(key: QueryKey) -> str | None:
    """The REST path (with query string, ids percent-encoded) that serves ``key``, or None.

    None when no endpoint serves the key's shape, or when its id cannot be put in a
    path without changing it (``"."`` and ``".."``).
    """
    route = _route(key)
    if route is None:
        return None
    ep, rid = route
    if rid in _DOT_SEGMENTS:
        return None
    path = _fill(ep.path, rid)
    if ep.query:
        path += "?" + _query(_fixed_query(ep, rid))
    return path


class _Registrar(Protocol):
    def register_fetcher(self, prefix: QueryKey, fetch: Fetch) -> None: ...


class NodeToolApi:
    """Fetches query keys from a NodeTool server's REST API over one aiohttp session.

    ``api_url`` is the server's base (``http://127.0.0.1:7777``); ``token`` is sent as
    ``Authorization: Bearer``, the only form the REST API accepts. It is a string or a
    :data:`querysync.TokenSource` (or a provider shared with the WebSocket source): its
    answer is cached, and a 401 asks the source once more and repeats the request once
    with the new token; a second 401 is a :class:`querysync.FetchError` for that fetch
    only. ``timeout`` bounds
    one request, body included, in seconds (default 10). ``max_body`` is the largest
    response body read, in bytes (default 64 MiB). A list is read whole, page after
    page, at most ``max_pages`` pages (default 1,000); ``page_size`` (default None: the
    server's own default) is sent under each endpoint's page-size parameter.

    ``counts`` tallies ``requests``, ``pages`` (pages after the first), ``incomplete``
    (lists cut at ``max_pages``), ``bad_pages`` (loops, wrong shapes, empty pages that
    name a next one), ``too_large`` (bodies over ``max_body``), ``rejected_keys`` (ids
    no path can carry), ``owners_gone`` (empty lists of a resource that is gone),
    ``unauthorized`` (401 answers), ``token_refreshes`` and ``token_errors``.
    """

    def __init__(
        self,
        api_url: str,
        session: aiohttp.ClientSession,
        *,
        token: TokenSource | TokenProvider | None = None,
        timeout: float = 10.0,
        max_body: int = 64 * 1024 * 1024,
        max_pages: int = 1000,
        page_size: int | None = None,
    ) -> None:
        if timeout <= 0 or max_body < 1 or max_pages < 1:
            raise ValueError("timeout, max_body and max_pages must be positive")
        if page_size is not None and page_size < 1:
            raise ValueError("page_size must be at least 1 or None")
        self.api_url = api_url.rstrip("/")
        self._session = session
        self._tokens = token if isinstance(token, TokenProvider) else TokenProvider(token or None)
        self._timeout = timeout
        self.max_body = max_body
        self.max_pages = max_pages
        self.page_size = page_size
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
        base = redact(str(yarl.URL(self.api_url).with_user(None).with_query(None)))
        auth = "without a token" if self._tokens.source is None else "with a token"
        return f"<NodeToolApi {base!r} {auth}>"

    def register(self, cache: _Registrar) -> None:
        """Register this API as the fetcher of every key shape it can serve."""
        for prefix in FETCH_PREFIXES:
            cache.register_fetcher(prefix, self.fetch)

    async def fetch(self, key: QueryKey) -> Fetched:
        """The JSON body that serves ``key``; for a paged list, every page's items in one body.

        A :class:`querysync.Fetched`: the data, decoded once, and its text, as sent for a
        body read in one request, encoded once for a list merged from several pages.

        The body has the first page's shape: its items member holds the items of every
        page in the server's order, and its cursor member says there is no next page.
        A list cut at ``max_pages`` keeps the cursor of the page not read and has
        :data:`INCOMPLETE_MEMBER` set to True (logged and counted).

        Raises :class:`ResourceGone` on 404 (and for an empty list of a resource that
        is gone) and :class:`querysync.FetchError` on any other failure (status,
        malformed JSON or page, a body over ``max_body``, network, timeout), with the
        cause chained.
        """
        route = _route(key)
        if route is None:
            raise FetchError(f"no NodeTool endpoint serves {key!r}")
        ep, rid = route
        if rid in _DOT_SEGMENTS:
            self.counts["rejected_keys"] += 1
            log.warning("rejected %r: a dot-segment id would name another endpoint", key)
            raise FetchError(f"{key!r}: the id {rid!r} cannot be expressed in a URL path")
        path = _fill(ep.path, rid)
        fixed = _fixed_query(ep, rid)
        if not ep.pages:
            fetched = await self._get(path, fixed)
            if ep.items is not None:
                self._items(fetched.data, ep, path, 1)
            return fetched
        body = await self._read_pages(ep, path, fixed)
        if ep.owner is not None and ep.items is not None and not body.data[ep.items]:
            await self._check_owner(key, _fill(ep.owner, rid))
        return body

    async def _read_pages(
        self, ep: Endpoint, path: str, fixed: dict[str, str]
    ) -> Fetched:
        """The whole list: the first page as it came when it is the only one, else merged."""
        assert ep.items is not None
        assert ep.next is not None
        assert ep.cursor is not None
        params = dict(fixed)
        if self.page_size is not None and ep.limit is not None:
            params[ep.limit] = str(self.page_size)
        first = await self._get(path, params)
        body: dict[str, Any] = first.data
        items = list(self._items(body, ep, path, 1))
        cursor = self._next_cursor(body, ep, path, 1, items)
        if cursor is None:
            return first  # one page: stored as the server sent it
        seen: set[str] = set()
        pages = 1
        while cursor is not None:
            if pages >= self.max_pages:
                self.counts["incomplete"] += 1
                log.warning(
                    "GET %s: stopped after max_pages=%d pages (%d items); the entry is "
                    "marked incomplete",
                    path,
                    self.max_pages,
                    len(items),
                )
                body[ep.items] = items
                body[INCOMPLETE_MEMBER] = True
                return encode_fetched(body)
            if cursor in seen:
                self._bad_page(path, pages, f"the cursor {cursor!r} came back (a loop)")
            seen.add(cursor)
            page = (await self._get(path, {**params, ep.cursor: cursor})).data
            pages += 1
            self.counts["pages"] += 1
            page_items = self._items(page, ep, path, pages)
            cursor = self._next_cursor(page, ep, path, pages, page_items)
            items.extend(page_items)
            # The last page's end marker ("" or null) is what the whole list says.
            body[ep.next] = page[ep.next]
        body[ep.items] = items
        return encode_fetched(body)

    def _items(self, page: Any, ep: Endpoint, path: str, number: int) -> list[Any]:
        """The items of one page; a page of another shape is a counted error."""
        if not isinstance(page, dict):
            self._bad_page(path, number, f"expected a JSON object, got {type(page).__name__}")
        items = page.get(ep.items)
        if not isinstance(items, list):
            self._bad_page(path, number, f"no list under {ep.items!r}")
        return items

    def _next_cursor(
        self, page: dict[str, Any], ep: Endpoint, path: str, number: int, items: list[Any]
    ) -> str | None:
        """The cursor of the page after this one, or None on the last page."""
        assert ep.next is not None
        value = page.get(ep.next)
        if value is None or value == "":
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            self._bad_page(path, number, f"{ep.next!r} is {type(value).__name__}, not a cursor")
        if not items:
            self._bad_page(path, number, f"an empty page names a next one ({value!r})")
        # Workflow versions page by version number: the next request sends it as text.
        return str(value)

    def _bad_page(self, path: str, page: int, why: str) -> NoReturn:
        self.counts["bad_pages"] += 1
        log.warning("GET %s: page %d rejected: %s", path, page, why)
        raise FetchError(f"GET {path}: page {page}: {why}")

    async def _check_owner(self, key: QueryKey, owner: str) -> None:
        try:
            await self._get(owner, {})
        except ResourceGone:
            self.counts["owners_gone"] += 1
            raise ResourceGone(f"{key!r}: empty, and GET {owner} answers 404") from None

    async def _get(self, path: str, params: Mapping[str, str]) -> Fetched:
        """One GET: the JSON body, decoded once; the only place a request is made."""
        target = path + ("?" + _query(params) if params else "")
        # encoded=True: the path is already percent-encoded, and yarl must neither
        # encode it again nor remove what looks like a dot segment.
        url = yarl.URL(self.api_url + target, encoded=True)
        self.counts["requests"] += 1
        headers = await self._auth_headers(target)
        status, data = await self._exchange(url, target, headers)
        if status == 401:
            retry = await self._after_401(target, headers)
            if retry is not None:
                status, data = await self._exchange(url, target, retry)
        if status == 404:
            raise ResourceGone(f"GET {target}: 404 not found")
        if status >= 400:
            raise FetchError(f"GET {target}: HTTP {status}")
        try:
            return decode_body(data)
        except ValueError as exc:
            raise FetchError(f"GET {target}: malformed JSON ({exc})") from exc

    async def _exchange(
        self, url: yarl.URL, target: str, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """One request: its status and, below 400, its body (at most ``max_body`` bytes)."""
        try:
            # The whole exchange, body included, under one deadline: aiohttp's own
            # timeouts let a server that trickles a body run on.
            async with asyncio.timeout(self._timeout):
                async with self._session.get(url, headers=headers) as response:
                    status = response.status
                    if status >= 400:
                        return status, b""
                    return status, await self._read_body(response, target)
        except TimeoutError as exc:
            raise FetchError(f"GET {target}: timed out after {self._timeout} s") from exc
        except aiohttp.ClientError as exc:
            # aiohttp's messages may hold the URL, and with it userinfo or a query token.
            detail = redact(f"{exc.__class__.__name__}: {exc}", self._tokens.secrets)
            raise FetchError(f"GET {target}: {detail}") from exc

    async def _read_body(self, response: aiohttp.ClientResponse, target: str) -> bytes:
        limit = self.max_body
        declared = response.content_length
        if declared is not None and declared > limit:
            self._too_large(target)
        data = bytearray()
        async for chunk in response.content.iter_chunked(64 * 1024):
            data += chunk
            if len(data) > limit:
                self._too_large(target)
        return bytes(data)

    def _too_large(self, target: str) -> None:
        self.counts["too_large"] += 1
        log.warning("GET %s: body over max_body=%d bytes; not read further", target, self.max_body)
        raise FetchError(f"GET {target}: body larger than max_body={self.max_body} bytes")
