"""``sync``: keep a QueryCache true to a NodeTool server, from its WebSocket feed and REST API."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, cast

import aiohttp
from reactivex import abc

from ._keys import KeyRegistry, QueryKey, mirrored_by_table, nodetool_registry
from ._model import Resource, ResourceChangeUpdate
from ._nodetool import LIST_KEYS, NodeToolApi, endpoint_for
from ._parents import ParentResolver
from ._pipeline import Pipeline, Refetch, build_pipeline
from ._resync import resync
from ._signals import Invalidation, Resync
from ._token import TokenProvider, TokenSource
from ._types import SourceStats, SyncStats
from .operators import RejectHandler

if TYPE_CHECKING:
    from .sinks import QueryCache
    from .sinks._shared_conn import ShareConfig
    from .streams import ConnectionState, WebSocketSource

__all__ = ["StartingSync", "Sync", "mirrored_keys", "open_for_sync", "sync"]

log = logging.getLogger("querysync.sync")


def mirrored_keys(
    registry: KeyRegistry, resource_type: str, resource_id: str
) -> tuple[QueryKey, ...]:
    """The keys of one resource that mirror mode holds, where a REST endpoint serves them.

    Its specific keys (as an update shows them), then the refetch table's mirrored keys
    (a workflow's versions, a thread's messages: fetched once, then kept by their frames).
    """
    update = ResourceChangeUpdate(
        event="updated", resource_type=resource_type, resource=Resource(id=resource_id)
    )
    _, specific = registry.split(update)
    keys = dict.fromkeys((*specific, *mirrored_by_table(resource_type, resource_id)))
    return tuple(k for k in keys if endpoint_for(k) is not None)


class Sync:
    """A running pipeline that keeps ``cache`` in step with one NodeTool server.

    Built by :func:`sync`. ``mirror`` (default True) keeps every list key fresh and every
    resource that changes while it runs cached at its latest state (removed when
    deleted); with ``mirror=False`` only keys someone watches are refetched, as in
    TanStack Query. Stop it with ``await s.stop()`` or ``async with``.

    Mirror mode fetches the lists once the feed is connected (and again at each
    connection that finds one missing), so that no change can fall between a list's
    answer and the first frame. After a reconnection, and at the start on a persisted
    cache, changes were missed: every entry is marked stale (one write), then the
    resync (:func:`querysync._resync.resync`) reads every list, whole, and fetches only
    what they cannot prove current: resources new to the cache, changed, or of a type
    whose list etags prove nothing (workflows, jobs), and the per-resource lists no
    etag covers (messages, versions); a resource gone from its complete list is removed
    without a GET. docs/refetch.md says what that fetches per type.
    A message frame (which names no thread) reaches only its thread's message list:
    ``parents`` finds the thread (see :class:`querysync._parents.ParentResolver`).
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
        parents: ParentResolver | None = None,
    ) -> None:
        self.source = source
        self.cache = cache
        self.api = api
        self.pipeline = pipeline
        self.mirror = mirror
        self._registry = registry if registry is not None else nodetool_registry()
        self._parents = parents
        self._discovery: asyncio.Task[None] | None = None
        # What the resyncs did, summed: confirmed (fresh without a GET), fetched, removed.
        self.resyncs: Counter[str] = Counter()
        self._lists_now: frozenset[QueryKey] = frozenset()
        self._session = session
        self._owns_cache = owns_cache
        self._subscription: abc.DisposableBase | None = None
        self._states: abc.DisposableBase | None = None
        self._resumed = False
        self._done = asyncio.get_running_loop().create_future()
        self.error: BaseException | None = None
        # sync(share=...): awaited at the end of stop() (the publisher flushes, gives its
        # lease up, closes the cache it opened); ``share`` is that publisher.
        self.on_stop: list[Callable[[], Awaitable[None]]] = []
        self.share: Any = None

    def __repr__(self) -> str:
        from yarl import URL

        # The source's URL has no query (where a token may be); drop any userinfo too.
        feed = URL(self.source.url).with_user(None)
        mode = "mirror" if self.mirror else "watched keys"
        state = "stopped" if self._done.done() else str(self.source.state)
        return f"<Sync {str(feed)!r} -> {self.cache.directory!r} {mode}, {state}>"

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
            # Every entry is stale since _start (one generation write); the resync
            # fetches what the lists cannot prove current, not every entry.
            self._resumed = False
            self._start_discovery()
        # A list whose fetch is already in flight may have been asked for before the
        # connection dropped: the resync must not take its answer for the list of now.
        self._lists_now = frozenset(k for k in LIST_KEYS if not self.cache.fetching(k))
        for key in LIST_KEYS:
            self.cache.prefetch(key)

    def _on_next(self, item: Invalidation | Resync) -> None:
        if self.mirror and isinstance(item, Resync):
            self._start_discovery()
            return
        if not isinstance(item, Invalidation):
            return
        update = item.update
        if self.mirror and update.event != "deleted":
            # Keys the table holds in a mirror but that the change does not refetch (a
            # workflow's versions): fetched once, when missing.
            for key in mirrored_by_table(update.resource_type, update.resource.id):
                if key not in self.cache:
                    try:
                        self.cache.prefetch(key)
                    except Exception:
                        log.exception("mirroring %r failed", key)
        if self._parents is not None:
            try:
                self._parents.on_invalidation(item)
            except Exception:
                # A closed cache costs this frame's parent list only, never the stream.
                log.exception("reaching the parent list of %r failed", item.update)

    def _start_discovery(self) -> None:
        if self._discovery is not None:
            self._discovery.cancel()
        self._discovery = asyncio.get_running_loop().create_task(self._discover())

    async def _discover(self) -> None:
        """The resync: read every list, fetch only what they cannot prove current."""
        try:
            done = await resync(self.cache, self._registry, trusted=lambda: self._lists_now)
            self.resyncs.update(done)
            log.info("resync: %s", dict(done))
        except asyncio.CancelledError:
            raise
        except Exception:
            # A server that answers lists in another shape costs the resync only.
            log.exception("reading the lists after a resync failed")

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

    def stats(self) -> SyncStats:
        """The source's, the pipeline's and the cache's counters, apart (:class:`SyncStats`)."""
        return SyncStats(
            source=cast(SourceStats, dict(self.source.counts)),
            pipeline=self.pipeline.stats(),
            cache=self.cache.stats(),
        )

    def counts(self) -> dict[str, int]:
        """:meth:`stats` in one flat dict: ``source.frames``, ``frames``, ``cache.fetched``...

        The pipeline's names have no prefix. Kept for the live views and older callers.
        """
        stats = self.stats()
        out = {f"source.{n}": v for n, v in cast(Mapping[str, int], stats["source"]).items()}
        out.update({f"api.{n}": v for n, v in self.api.counts.items()})
        if self._parents is not None:
            out.update({f"parents.{n}": v for n, v in self._parents.counts.items()})
        out.update(cast(Mapping[str, int], stats["pipeline"]))
        out.update({f"cache.{n}": v for n, v in cast(Mapping[str, int], stats["cache"]).items()})
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
            if self._parents is not None:
                await self._parents.wait()
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
        if self._parents is not None:
            await self._parents.aclose()
        await self.source.close()
        if self._owns_cache:
            await self.cache.aclose()
        if self._session is not None:
            await self._session.close()
            self._session = None
        hooks, self.on_stop = self.on_stop, []
        for hook in hooks:
            await hook()
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


class StartingSync:
    """What :func:`sync` returns: await it for the :class:`Sync`, or use it with ``async with``.

    ``running = await sync(...)`` leaves the stopping to the caller (``await
    running.stop()``); ``async with sync(...) as running:`` stops it when the block
    ends, however it ends. Either form starts it once: a second await raises.
    """

    __slots__ = ("_running", "_start")

    def __init__(self, start: Coroutine[Any, Any, Sync]) -> None:
        self._start = start
        self._running: Sync | None = None

    def __await__(self) -> Generator[Any, None, Sync]:
        return self._start.__await__()

    async def __aenter__(self) -> Sync:
        self._running = await self._start
        return self._running

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        running, self._running = self._running, None
        if running is not None:
            await running.stop()

    def __repr__(self) -> str:
        state = "not started" if self._running is None else repr(self._running)
        return f"<StartingSync {state}>"


_P = ParamSpec("_P")


def _awaitable_or_context(
    start: Callable[_P, Coroutine[Any, Any, Sync]],
) -> Callable[_P, StartingSync]:
    """``start`` made to return a :class:`StartingSync`; its signature and docstring kept."""

    @functools.wraps(start)
    def starting(*args: _P.args, **kwargs: _P.kwargs) -> StartingSync:
        return StartingSync(start(*args, **kwargs))

    return starting


@_awaitable_or_context
async def sync(
    ws_url: str,
    api_url: str,
    cache: QueryCache | str | os.PathLike[str],
    *,
    token: TokenSource | TokenProvider | None = None,
    window: float | None = 0.25,
    mirror: bool = True,
    registry: KeyRegistry | None = None,
    session: aiohttp.ClientSession | None = None,
    on_reject: RejectHandler | None = None,
    source_options: dict[str, Any] | None = None,
    api_options: dict[str, Any] | None = None,
    on_source: Callable[[WebSocketSource], None] | None = None,
    share: str | ShareConfig | None = None,
    bucket: str | None = None,
    gc_freeze: bool = True,
) -> Sync:
    """A running :class:`Sync` that keeps a query cache in step with a NodeTool server.

    Both ``running = await sync(...)`` and ``async with sync(...) as running:`` work
    (the second stops it at the end of the block); see :class:`StartingSync`.

    ``ws_url`` is the server's ``/ws`` endpoint, ``api_url`` its REST base. ``cache`` is a
    :class:`querysync.sinks.QueryCache` or a directory to open one in (closed by
    ``stop()``). ``window`` is the per-resource throttle in seconds (default 0.25); a
    cache opened here also takes it as its ``fetch_window`` (one fetch per key per window).
    ``registry`` defaults to :func:`querysync.nodetool_registry`. ``session`` is an
    aiohttp session to use for both the WebSocket and REST (not closed by ``stop()``).
    ``source_options`` go to :func:`querysync.streams.websocket` (backoff, timeouts...),
    ``api_options`` to :class:`querysync.NodeToolApi` (``timeout``, ``max_body``,
    ``max_pages``, ``page_size``).
    ``token`` is a string or a :data:`querysync.TokenSource`, shared by the WebSocket
    (asked at every connection attempt) and REST (asked again after a 401): see
    :func:`querysync.streams.websocket` and :class:`querysync.NodeToolApi`.

    ``share`` (a ``nats://HOST:PORT`` URL or a :class:`querysync.sinks.ShareConfig`,
    default None) also publishes every entry into a NATS JetStream bucket (``bucket``,
    default ``"querysync"``) for :class:`querysync.sinks.SharedCache` readers: the call
    then first waits, holding no connection to the server, until this process is the
    bucket's one active publisher (see ``querysync._share``).

    ``gc_freeze`` (default True): once the key index is read, :func:`gc.freeze` moves
    every object alive then (the imported modules, the index) out of the cyclic garbage
    collector's sight. Otherwise each full collection walks them all again, on whichever
    thread starts it: measured, 20 to 56 ms of event-loop stall each on a 2-core machine
    during a restart, of which the modules alone are about 50,000 objects. Nearly all of
    them live as long as the process; a reference cycle among them that becomes garbage
    later is not freed (``gc.unfreeze()`` undoes the freeze). Pass False where that
    matters more than the stalls.
    """
    if share is not None:
        from ._share import shared_sync

        return await shared_sync(
            ws_url, api_url, cache, share=share, bucket=bucket, token=token, window=window,
            mirror=mirror, registry=registry, session=session, on_reject=on_reject,
            source_options=source_options, api_options=api_options, on_source=on_source,
            gc_freeze=gc_freeze,
        )
    from .sinks import QueryCache
    from .streams import websocket

    owns_cache = not isinstance(cache, QueryCache)
    # The cache first: opening it is what fails on a bad directory, and a session made
    # before it would be left open.
    qc = await open_for_sync(cache, window)
    if gc_freeze:
        gc.freeze()
    owns_session = session is None
    http = session
    try:
        if http is None:
            http = aiohttp.ClientSession()
        # One provider for both: a token the WebSocket was given serves REST at once.
        tokens = token if isinstance(token, TokenProvider) else TokenProvider(token or None)
        api = NodeToolApi(api_url, http, token=tokens, **(api_options or {}))
        api.register(qc)
        source = websocket(
            ws_url, token=tokens, session=http, on_reject=on_reject, **(source_options or {})
        )
        if on_source is not None:
            on_source(source)
        refetch: Refetch = "all" if mirror else "active"
        # The live server's message frames name no thread: the resolver finds it (from
        # the cache, else one GET) so that one list is reached, whatever the registry.
        parents = ParentResolver(qc, mirror=mirror)
        pipeline = build_pipeline(
            source,
            qc,
            window=window,
            registry=registry,
            refetch=refetch,
            fetch_missing=mirror,
            on_reject=on_reject,
            # A Resync refetches the watched keys; in mirror mode, the resync the rest.
            resync_refetch="active",
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
            parents=parents,
        )
        running._start()
    except BaseException:
        if owns_cache:
            await qc.aclose()
        if owns_session and http is not None:
            await http.close()
        raise
    return running


async def open_for_sync(
    cache: QueryCache | str | os.PathLike[str], window: float | None
) -> QueryCache:
    """``cache`` itself, or a QueryCache opened in that directory as ``sync()`` needs it.

    A cache opened here fetches each key at most once per throttle window: the throttle
    bounds updates per resource, the fetch window the fetches of shared keys. Opening
    reads no entry, but the key index (seconds at a million entries) is read here too,
    off the loop, so that a process that also serves other connections keeps answering.
    A cache opened here is closed again when reading the index fails.
    """
    from .sinks import QueryCache

    owned = not isinstance(cache, QueryCache)
    qc = (
        cache
        if isinstance(cache, QueryCache)
        else await asyncio.to_thread(QueryCache, cache, fetch_window=window or 0.0)
    )
    try:
        await asyncio.to_thread(qc.load_index)
    except BaseException:
        if owned:
            await qc.aclose()
        raise
    return qc
