"""``sync``: keep a QueryCache true to a NodeTool server, from its WebSocket feed and REST API."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp
from reactivex import abc

from ._keys import KeyRegistry, QueryKey, nodetool_registry
from ._model import Resource, ResourceChangeUpdate
from ._nodetool import LIST_KEYS, LISTED_TYPES, NodeToolApi, endpoint_for
from ._pipeline import Pipeline, Refetch, build_pipeline
from ._signals import Invalidation, Resync
from .operators import RejectHandler

if TYPE_CHECKING:
    from .sinks import QueryCache
    from .streams import ConnectionState, WebSocketSource

__all__ = ["Sync", "mirrored_keys", "sync"]

log = logging.getLogger("querysync.sync")


def mirrored_keys(
    registry: KeyRegistry, resource_type: str, resource_id: str
) -> tuple[QueryKey, ...]:
    """The keys of one resource that mirror mode holds: its specific keys a REST endpoint serves."""
    update = ResourceChangeUpdate(
        event="updated", resource_type=resource_type, resource=Resource(id=resource_id)
    )
    _, specific = registry.split(update)
    return tuple(k for k in specific if endpoint_for(k) is not None)


class Sync:
    """A running pipeline that keeps ``cache`` in step with one NodeTool server.

    Built by :func:`sync`. ``mirror`` (default True) keeps every list key fresh and every
    resource that changes while it runs cached at its latest state (removed when
    deleted); with ``mirror=False`` only keys someone watches are refetched, as in
    TanStack Query. Stop it with ``await s.stop()`` or ``async with``.

    Mirror mode fetches the lists once the feed is connected (and again at each
    connection that finds one missing), so that no change can fall between a list's
    answer and the first frame. After a resync (a reconnection) it also reads the
    refetched lists and fetches every listed resource it holds no entry for: changes
    sent while the connection was down are lost, and a resource created then is named
    nowhere else. Only the first page of each list is read.
    """

    def __init__(
        self,
        *,
        source: WebSocketSource,
        cache: QueryCache,
        api: NodeToolApi,
        pipeline: Pipeline,
        session: aiohttp.ClientSession | None,
        owns_cache: bool,
        mirror: bool,
        registry: KeyRegistry | None = None,
    ) -> None:
        self.source = source
        self.cache = cache
        self.api = api
        self.pipeline = pipeline
        self.mirror = mirror
        self._registry = registry if registry is not None else nodetool_registry()
        self._discovery: asyncio.Task[None] | None = None
        self._session = session
        self._owns_cache = owns_cache
        self._subscription: abc.DisposableBase | None = None
        self._states: abc.DisposableBase | None = None
        self._resumed = False
        self._done = asyncio.get_running_loop().create_future()
        self.error: BaseException | None = None

    def _start(self) -> None:
        # Entries persisted by an earlier run missed every change made while nobody was
        # listening: they are as suspect as after a reconnect, and get the same treatment.
        self._resumed = len(self.cache) > 0
        if self._resumed:
            self.cache.invalidate_all(refetch="none" if self.mirror else "active")
        self._subscription = self.pipeline.observable.subscribe(
            on_next=self._on_next, on_error=self._on_error, on_completed=self._on_completed
        )
        if self.mirror:
            self._states = self.source.states.subscribe(self._on_state)

    def _on_state(self, state: ConnectionState) -> None:
        # Mirror fetches wait for a connection: one made before it could miss a change
        # sent in between and keep the old answer as fresh, and one made while the
        # server is down gives up after its retries and would never be made again.
        from .streams import ConnectionState

        if state is not ConnectionState.CONNECTED:
            return
        if self._resumed:
            self._resumed = False
            self.cache.invalidate_all(refetch="all")
            self._start_discovery()
        for key in LIST_KEYS:
            self.cache.prefetch(key)

    def _on_next(self, item: Invalidation | Resync) -> None:
        if self.mirror and isinstance(item, Resync):
            self._start_discovery()

    def _start_discovery(self) -> None:
        if self._discovery is not None:
            self._discovery.cancel()
        self._discovery = asyncio.get_running_loop().create_task(self._discover())

    async def _discover(self) -> None:
        """Fetch the keys of every listed resource the cache has no entry for."""
        try:
            threads = await self._discover_in(list(LISTED_TYPES.items()))
            await self._discover_in([(("messages", t), "message") for t in threads])
        except asyncio.CancelledError:
            raise
        except Exception:
            # A server that answers lists in another shape costs the discovery only.
            log.exception("reading the lists after a resync failed")

    async def _discover_in(self, lists: list[tuple[QueryKey, str]]) -> list[str]:
        """Prefetch the missing keys of the items of ``lists``; the ids of the threads seen.

        ``lists`` pairs a list key with its items' type; a body holds them under the
        member named like the key's first element (``{"messages": [...]}``).
        """
        entries = await asyncio.gather(*(self.cache.fetch(key) for key, _ in lists))
        threads: list[str] = []
        for (key, resource_type), entry in zip(lists, entries, strict=True):
            body = entry.data if entry is not None else None
            items = body.get(key[0]) if isinstance(body, dict) else None
            for item in items if isinstance(items, list) else ():
                rid = item.get("id") if isinstance(item, dict) else None
                if not isinstance(rid, str) or not rid:
                    continue
                if resource_type == "thread":
                    threads.append(rid)
                for key in mirrored_keys(self._registry, resource_type, rid):
                    if key not in self.cache:
                        self.cache.prefetch(key)
        return threads

    def _on_error(self, error: Exception) -> None:
        log.error("sync stopped: %s", error)
        self.error = error
        if not self._done.done():
            self._done.set_result(None)

    def _on_completed(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    async def wait_closed(self) -> None:
        """Return when the feed has ended for good (an authentication error, a final close)."""
        await asyncio.shield(self._done)

    def counts(self) -> dict[str, int]:
        """Source, pipeline and cache counters in one flat dict."""
        out: dict[str, int] = {}
        for name, value in self.source.counts.items():
            out[f"source.{name}"] = value
        out.update(self.pipeline.counts())
        for name, value in self.cache.stats().items():
            out[f"cache.{name}"] = value
        return out

    # A timeout argument (issue 12.10) that returns False rather than raising.
    async def settle(
        self,
        *,
        quiet: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> bool:
        """Wait until no resource change or resync came for ``quiet`` seconds and the cache is idle.

        ``quiet`` defaults to twice the throttle window (at least 0.2 s), long enough for
        every held trailing update to come out of the throttle. Other messages (the
        server's pings and per-second ``system_stats``) do not count: they never touch
        the cache. True once settled; False when ``timeout`` (seconds, default None: no
        limit) passed first, as when changes never stop or a full disk holds the cache's
        writes back (``cache.disk_full``).
        """
        window = self.pipeline.window or 0.0
        quiet = quiet if quiet is not None else max(2 * window, 0.2)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    before = self._changes_seen()
                    await asyncio.sleep(quiet)
                    await self._idle()
                    # Under load a window's timer can fire later than ``quiet``: held
                    # updates are changes still to come, however quiet the feed has been.
                    if self._changes_seen() == before and self.pipeline.held() == 0:
                        return True
        except TimeoutError:
            return False

    def _changes_seen(self) -> int:
        return self.pipeline.counts()["resource_changes"] + self.source.counts["resyncs"]

    async def _idle(self) -> None:
        # The discovery after a resync starts fetches only once the lists are in: the
        # cache can be idle in between while the discovery still has work to start.
        while True:
            discovery = self._discovery
            if discovery is not None and not discovery.done():
                await asyncio.wait({discovery})
            await self.cache.wait_idle()
            if self._discovery is discovery:
                return

    async def stop(self) -> None:
        """Unsubscribe, close the connection, finish fetches and flush the cache to disk."""
        if self._subscription is not None:
            self._subscription.dispose()
            self._subscription = None
        if self._states is not None:
            self._states.dispose()
            self._states = None
        if self._discovery is not None:
            self._discovery.cancel()
            await asyncio.wait({self._discovery})
            self._discovery = None
        await self.source.close()
        if self._owns_cache:
            await self.cache.aclose()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if not self._done.done():
            self._done.set_result(None)

    async def __aenter__(self) -> Sync:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def sync(
    ws_url: str,
    api_url: str,
    cache: QueryCache | str | os.PathLike[str],
    *,
    token: str | None = None,
    window: float | None = 0.25,
    mirror: bool = True,
    registry: KeyRegistry | None = None,
    session: aiohttp.ClientSession | None = None,
    on_reject: RejectHandler | None = None,
    source_options: dict[str, Any] | None = None,
    on_source: Callable[[WebSocketSource], None] | None = None,
) -> Sync:
    """A running :class:`Sync` that keeps a query cache in step with a NodeTool server.

    ``ws_url`` is the server's ``/ws`` endpoint, ``api_url`` its REST base. ``cache`` is a
    :class:`querysync.sinks.QueryCache` or a directory to open one in (closed by
    ``stop()``). ``window`` is the per-resource throttle in seconds (default 0.25).
    ``registry`` defaults to :func:`querysync.nodetool_registry`. ``session`` is an
    aiohttp session to use for both the WebSocket and REST (not closed by ``stop()``).
    ``source_options`` go to :func:`querysync.streams.websocket` (backoff, timeouts...).
    """
    from .sinks import QueryCache
    from .streams import websocket

    owns_cache = not isinstance(cache, QueryCache)
    # The cache first: opening it is what fails on a bad directory, and a session made
    # before it would be left open.
    # Opening reads no entry, but the key index (read once, seconds at a million
    # entries) is read here too: off the loop, so that a process that also serves
    # other connections keeps answering meanwhile.
    qc = cache if isinstance(cache, QueryCache) else await asyncio.to_thread(QueryCache, cache)
    try:
        await asyncio.to_thread(qc.load_index)
    except BaseException:
        if owns_cache:
            await qc.aclose()
        raise
    owns_session = session is None
    http = session
    try:
        if http is None:
            http = aiohttp.ClientSession()
        api = NodeToolApi(api_url, http, token=token)
        api.register(qc)
        source = websocket(
            ws_url, token=token, session=http, on_reject=on_reject, **(source_options or {})
        )
        if on_source is not None:
            on_source(source)
        refetch: Refetch = "all" if mirror else "active"
        pipeline = build_pipeline(
            source,
            qc,
            window=window,
            registry=registry,
            refetch=refetch,
            fetch_missing=mirror,
            on_reject=on_reject,
        )
        running = Sync(
            source=source,
            cache=qc,
            api=api,
            pipeline=pipeline,
            session=http if owns_session else None,
            owns_cache=owns_cache,
            mirror=mirror,
            registry=registry,
        )
        running._start()
    except BaseException:
        if owns_cache:
            await qc.aclose()
        if owns_session and http is not None:
            await http.close()
        raise
    return running
