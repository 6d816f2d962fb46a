"""querysync.sync end to end: the embedded server on loopback, REST writes, a cache on disk."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from _support import mirrored_keys, obj, until

from querysync import (
    LIST_KEYS,
    Agreement,
    AuthenticationError,
    CacheError,
    QueryKey,
    Rejected,
    Sync,
    audit,
    sync,
)
from querysync.server import NodeToolServer, ResourceStore, Workload
from querysync.sinks import CacheEvent, QueryCache
from querysync.streams import Backoff

WINDOW = 0.05
# Reconnections in milliseconds rather than the reference client's seconds.
FAST = Backoff(initial=0.02, factor=2.0, max_delay=0.1, jitter=0.0)
Start = Callable[..., Awaitable[Sync]]
WORKFLOW: dict[str, Any] = {"name": "w", "access": "private", "graph": {"nodes": [], "edges": []}}


async def settle(running: Sync, seconds: float = 20.0) -> None:
    async with asyncio.timeout(seconds):
        await running.settle()


def describe(agreement: Agreement) -> str:
    return "; ".join(f"{list(d.key)}: {d.problem}" for d in agreement.disagreements[:10])


def ids_in(body: Any, member: str) -> set[str]:
    return {item["id"] for item in body[member]}


@pytest.fixture
async def cache(tmp_path: Path) -> AsyncIterator[QueryCache]:
    # Short fetch retries: a refetch that meets a stopped server must not wait seconds.
    qc = QueryCache(tmp_path / "cache", retry_delay=0.05, retry_cap=0.2)
    yield qc
    await qc.aclose()


@pytest.fixture
async def start(server: NodeToolServer, cache: QueryCache) -> AsyncIterator[Start]:
    """Start a sync against ``server`` into ``cache``; stopped at teardown."""
    started: list[Sync] = []

    async def go(*, window: float | None = WINDOW, mirror: bool = True, **options: Any) -> Sync:
        running = await sync(
            server.ws_url,
            server.api_url,
            cache,
            window=window,
            mirror=mirror,
            source_options={"backoff": FAST, **options.pop("source_options", {})},
            **options,
        )
        started.append(running)
        async with asyncio.timeout(5):
            await server.wait_for_connections(1)
        return running

    yield go
    for running in started:
        await running.stop()


async def post(
    session: aiohttp.ClientSession, server: NodeToolServer, fields: dict[str, Any]
) -> Any:
    async with session.post(f"{server.api_url}/api/workflows/", json=fields) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def put(
    session: aiohttp.ClientSession, server: NodeToolServer, wid: str, fields: dict[str, Any]
) -> Any:
    async with session.put(f"{server.api_url}/api/workflows/{wid}", json=fields) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as response:
        return response.status, await response.json()


def record_events(cache: QueryCache) -> list[CacheEvent]:
    events: list[CacheEvent] = []
    cache.events().subscribe(events.append)
    return events


# -- a write reaches the cache -------------------------------------------------------------


async def test_a_rest_write_reaches_the_detail_and_the_list_key(
    server: NodeToolServer,
    session: aiohttp.ClientSession,
    cache: QueryCache,
    start: Start,
) -> None:
    running = await start()
    created = await post(session, server, {**WORKFLOW, "name": "first"})
    wid = created["id"]

    def detail_has_it() -> bool:
        entry = cache.get(("workflow", wid))
        return entry is not None and entry.etag == created["etag"]

    await until(detail_has_it)
    await settle(running)

    status, truth = await get(session, f"{server.api_url}/api/workflows/{wid}")
    assert status == 200
    entry = cache.get(("workflow", wid))
    assert entry is not None
    assert not entry.stale
    assert entry.data == truth
    assert obj(entry.data)["name"] == "first"
    listed = cache.get(("workflows",))
    assert listed is not None
    assert not listed.stale
    assert wid in ids_in(listed.data, "workflows")
    agreement = await audit(cache, running.api, expect=mirrored_keys(server.snapshot()))
    assert agreement.ok, describe(agreement)


@pytest.mark.parametrize("paced", [False, True], ids=["back-to-back", "settled-between"])
async def test_create_update_delete_leaves_no_entry(
    server: NodeToolServer,
    session: aiohttp.ClientSession,
    cache: QueryCache,
    start: Start,
    paced: bool,
) -> None:
    running = await start()
    keeper = await post(session, server, {**WORKFLOW, "name": "keeper"})
    created = await post(session, server, {**WORKFLOW, "name": "doomed"})
    wid = created["id"]
    if paced:
        await until(lambda: cache.get(("workflow", wid)) is not None)
        await settle(running)
    updated = await put(session, server, wid, {**WORKFLOW, "name": "renamed"})
    assert updated["etag"] != created["etag"]
    if paced:
        await until(
            lambda: (e := cache.get(("workflow", wid))) is not None and e.etag == updated["etag"]
        )
        await settle(running)
        entry = cache.get(("workflow", wid))
        assert entry is not None
        assert obj(entry.data)["name"] == "renamed"
    async with session.delete(f"{server.api_url}/api/workflows/{wid}") as response:
        assert response.status == 200
    await until(lambda: running.counts()["resource_changes"] >= 6)
    await settle(running)

    assert cache.keys(("workflow", wid)) == []
    assert cache.keys(("workflow_versions", wid)) == []
    listed = cache.get(("workflows",))
    assert listed is not None
    assert not listed.stale
    assert ids_in(listed.data, "workflows") == {keeper["id"]}
    assert cache.get(("workflow", keeper["id"])) is not None
    agreement = await audit(cache, running.api, expect=mirrored_keys(server.snapshot()))
    assert agreement.ok, describe(agreement)


# -- the server goes away mid-stream -------------------------------------------------------


@pytest.mark.parametrize("how", ["stop-and-start", "connections-cut"])
async def test_a_dropped_server_is_reconnected_resynced_and_agreed_with(
    server: NodeToolServer, cache: QueryCache, start: Start, how: str
) -> None:
    running = await start()
    workload = Workload(server, seed=7)
    writing = asyncio.ensure_future(workload.run(seconds=1.5, rate=200, kind="mixed"))
    try:
        await until(lambda: running.source.counts["frames"] >= 40)
        port = server.port
        if how == "stop-and-start":
            await server.stop()
        else:
            assert await server.drop_connections(code=None) == 1
        # Changes nobody hears of: resources the workload never touches again, so only
        # the resync can bring them into the mirror.
        unseen_workflow = server.create("workflow", {**WORKFLOW, "name": "unseen"})
        unseen_thread = server.create("thread", {"title": "unseen"})
        server.create("message", {"thread_id": unseen_thread["id"], "content": "unseen"})
        if how == "stop-and-start":
            missed_from = server.counts["resource_changes"]
            await until(lambda: server.counts["resource_changes"] >= missed_from + 20)
            await server.start(port=port)
        await until(lambda: running.source.counts["resyncs"] >= 1)
        report = await writing
    finally:
        workload.stop()
        await asyncio.wait({writing})
    assert report.changes > 100
    await settle(running)

    counts = running.counts()
    assert counts["source.reconnects"] == 1
    assert counts["source.resyncs"] == 1
    assert counts["cache.resync"] == 1
    assert running.error is None
    assert server.port == port
    assert cache.get(("workflow", unseen_workflow["id"])) is not None
    agreement = await audit(cache, running.api, expect=mirrored_keys(server.snapshot()))
    assert agreement.checked > len(LIST_KEYS)
    assert agreement.ok, describe(agreement)


# -- what must end the stream, and what must not -----------------------------------------


async def test_a_wrong_token_ends_with_an_authentication_error_after_one_attempt(
    tmp_path: Path,
) -> None:
    async with NodeToolServer(token="right", ping_interval=None, stats_interval=None) as server:
        running = await sync(
            server.ws_url,
            server.api_url,
            tmp_path / "cache",
            token="wrong",
            window=WINDOW,
            source_options={"backoff": FAST},
        )
        try:
            async with asyncio.timeout(5):
                await running.wait_closed()
            # A retry loop with this backoff would have come back many times by now.
            await asyncio.sleep(5 * FAST.max_delay)
        finally:
            await running.stop()
        assert isinstance(running.error, AuthenticationError)
        assert "Invalid authentication" in str(running.error)
        assert running.source.counts["attempts"] == 1
        assert server.counts["auth_rejected"] == 1
        assert server.counts["connections"] == 0


async def test_a_frame_over_the_size_limit_is_rejected_and_the_stream_goes_on(
    server: NodeToolServer,
    session: aiohttp.ClientSession,
    cache: QueryCache,
    start: Start,
) -> None:
    rejected: list[Rejected] = []
    limit = 4096
    running = await start(on_reject=rejected.append, source_options={"max_msg_size": limit})
    # A resource_change that would be valid but for its size: size alone must reject it.
    huge = msgpack.packb(
        {
            "type": "resource_change",
            "event": "updated",
            "resource_type": "workflow",
            "resource": {"id": "huge", "etag": "e", "description": "x" * (20 * limit)},
        },
        use_bin_type=True,
    )
    assert server.broadcast_raw(huge) == 1
    await until(lambda: running.source.counts["oversize"] == 1)
    created = await post(session, server, {**WORKFLOW, "name": "after"})
    await until(lambda: cache.get(("workflow", created["id"])) is not None)
    await settle(running)

    assert len(rejected) == 1
    assert str(limit) in rejected[0].reason
    assert running.source.counts["rejected"] == 1
    assert running.source.counts["connections"] == 1
    assert running.source.counts["resyncs"] == 0
    assert cache.get(("workflow", "huge")) is None
    entry = cache.get(("workflow", created["id"]))
    assert entry is not None
    assert entry.etag == created["etag"]
    assert not entry.stale


async def test_a_frame_over_the_memory_guard_costs_the_connection_which_is_resynced(
    server: NodeToolServer,
    session: aiohttp.ClientSession,
    cache: QueryCache,
    start: Start,
) -> None:
    # aiohttp's own limit is max(4 * max_msg_size, 16 MiB): past it the frame is not even
    # read, so the connection goes, and what it might have carried is made good by a resync.
    running = await start(source_options={"max_msg_size": 4096})
    assert server.broadcast_raw(b"\x00" * (17 * 1024 * 1024)) == 1
    await until(lambda: running.source.counts["resyncs"] == 1)
    created = await post(session, server, {**WORKFLOW, "name": "after the drop"})
    await until(lambda: cache.get(("workflow", created["id"])) is not None)
    await settle(running)

    counts = running.counts()
    assert counts["source.oversize_dropped"] == 1
    assert counts["source.connections"] == 2
    assert running.error is None
    agreement = await audit(cache, running.api, expect=mirrored_keys(server.snapshot()))
    assert agreement.ok, describe(agreement)


# -- fetching no more than needed -----------------------------------------------------------


async def test_the_double_frame_of_a_create_costs_one_fetch(
    server: NodeToolServer,
    session: aiohttp.ClientSession,
    cache: QueryCache,
    start: Start,
) -> None:
    # A window much longer than a loopback fetch: the held "created" frame comes out after
    # the fetch caused by "updated" is stored, and must find that entry already fresh.
    running = await start(window=0.3)
    events = record_events(cache)
    created = await post(session, server, {**WORKFLOW, "name": "once"})
    key: QueryKey = ("workflow", created["id"])
    await until(lambda: running.counts()["resource_changes"] == 2)
    await settle(running)

    fetched = [e for e in events if e.kind == "fetched" and e.key == key]
    skipped = [e for e in events if e.kind == "skipped_fresh" and e.key == key]
    assert len(fetched) == 1
    assert [e.update.event for e in skipped if e.update is not None] == ["created"]
    entry = cache.get(key)
    assert entry is not None
    assert entry.etag == created["etag"]
    assert not entry.stale


async def test_a_repeated_frame_for_a_fresh_entry_is_skipped(
    server: NodeToolServer,
    session: aiohttp.ClientSession,
    cache: QueryCache,
    start: Start,
) -> None:
    running = await start(window=None)
    created = await post(session, server, {**WORKFLOW, "name": "again"})
    key: QueryKey = ("workflow", created["id"])
    await until(lambda: (e := cache.get(key)) is not None and not e.stale)
    await settle(running)
    events = record_events(cache)

    frame = {
        "type": "resource_change",
        "event": "created",
        "resource_type": "workflow",
        "resource": {"id": created["id"], "etag": created["etag"]},
    }
    assert server.broadcast(frame) == 1
    await until(lambda: any(e.kind == "skipped_fresh" for e in events))
    await settle(running)

    assert [e.key for e in events if e.kind == "skipped_fresh"] == [key]
    assert not [e for e in events if e.kind == "fetched" and e.key == key]
    # The lists still hear of it: only the entry that holds the etag is known fresh.
    assert any(e.kind == "fetched" and e.key == ("workflows",) for e in events)


async def test_without_mirror_only_watched_keys_are_refetched(
    server: NodeToolServer,
    session: aiohttp.ClientSession,
    cache: QueryCache,
    start: Start,
) -> None:
    running = await start(mirror=False)
    watched = await post(session, server, {**WORKFLOW, "name": "watched"})
    cached = await post(session, server, {**WORKFLOW, "name": "cached"})
    await until(lambda: running.counts()["resource_changes"] == 4)
    await settle(running)
    assert len(cache) == 0  # nobody asked for anything yet

    seen: list[Any] = []
    subscription = cache.watch(("workflow", watched["id"])).subscribe(seen.append)
    try:
        await until(lambda: len(seen) == 1)
        await cache.fetch(("workflow", cached["id"]))
        await cache.fetch(("workflows",))
        events = record_events(cache)

        await put(session, server, watched["id"], {**WORKFLOW, "name": "watched v2"})
        await put(session, server, cached["id"], {**WORKFLOW, "name": "cached v2"})
        later = await post(session, server, {**WORKFLOW, "name": "later"})
        await until(lambda: len(seen) == 2)
        await until(lambda: running.counts()["resource_changes"] == 8)
        await settle(running)
    finally:
        subscription.dispose()

    assert [s["name"] for s in seen] == ["watched", "watched v2"]
    assert {e.key for e in events if e.kind == "fetched"} == {("workflow", watched["id"])}
    entry = cache.get(("workflow", cached["id"]))
    assert entry is not None
    assert entry.stale
    assert obj(entry.data)["name"] == "cached"
    listed = cache.get(("workflows",))
    assert listed is not None
    assert listed.stale
    assert cache.get(("workflow", later["id"])) is None


async def test_a_cache_that_cannot_be_opened_leaves_no_session_open(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CacheError, match="cannot create the cache directory"):
            await sync("ws://127.0.0.1:9/ws", "http://127.0.0.1:9", blocker / "cache")
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaked == []


async def test_settle_returns_while_the_server_keeps_sending_stats(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    # system_stats more often than the quiet time settle() waits for: they change nothing
    # in the cache and must not keep it from settling.
    async with NodeToolServer(ping_interval=None, stats_interval=0.05) as server:
        running = await sync(
            server.ws_url, server.api_url, tmp_path / "cache", window=0.1, mirror=True
        )
        try:
            async with asyncio.timeout(5):
                await server.wait_for_connections(1)
            created = await post(session, server, {**WORKFLOW, "name": "amid stats"})
            await until(lambda: running.counts()["resource_changes"] == 2)
            async with asyncio.timeout(10):
                await running.settle()
            stats = running.counts()["other_messages"]
            entry = running.cache.get(("workflow", created["id"]))
        finally:
            await running.stop()
    assert stats > 0
    assert entry is not None
    assert entry.etag == created["etag"]
    assert not entry.stale


# -- what the cache held before the feed was heard ------------------------------------------


async def test_lists_fetched_before_the_feed_is_heard_do_not_miss_a_change(
    tmp_path: Path,
) -> None:
    # REST answers at once, the WebSocket only later (two servers over one store): a
    # list fetched before the feed connects must not be kept as fresh.
    store = ResourceStore()
    rest = NodeToolServer(store=store, ping_interval=None, stats_interval=None)
    feed = NodeToolServer(store=store, ping_interval=None, stats_interval=None)
    await rest.start()
    await feed.start()
    port = feed.port
    await feed.stop()
    cache = QueryCache(tmp_path / "cache")
    running = await sync(
        feed.ws_url, rest.api_url, cache, window=WINDOW, source_options={"backoff": FAST}
    )
    try:
        await until(lambda: running.source.counts["attempts"] >= 2)
        await cache.wait_idle()
        created = store.create("workflow", {**WORKFLOW, "name": "unheard"})
        await feed.start(port=port)
        async with asyncio.timeout(5):
            await feed.wait_for_connections(1)
        await settle(running)
        agreement = await audit(cache, running.api, expect=LIST_KEYS)
        listed = cache.get(("workflows",))
    finally:
        await running.stop()
        await cache.aclose()
        await feed.stop()
        await rest.stop()
    assert listed is not None
    assert ids_in(listed.data, "workflows") == {created["id"]}
    assert agreement.ok, describe(agreement)


async def test_the_lists_are_fetched_when_the_server_comes_up_late(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server = NodeToolServer(ping_interval=None, stats_interval=None)
    await server.start()
    port = server.port
    await server.stop()
    # No retries: every list fetch made before the server is up fails for good.
    cache = QueryCache(tmp_path / "cache", retries=0)
    running = await sync(
        server.ws_url, server.api_url, cache, window=WINDOW, source_options={"backoff": FAST}
    )
    try:
        await until(lambda: running.source.counts["attempts"] >= 2)
        await running.cache.wait_idle()
        await server.start(port=port)
        async with asyncio.timeout(5):
            await server.wait_for_connections(1)
        created = await post(session, server, {**WORKFLOW, "name": "late"})
        await until(lambda: running.counts()["resource_changes"] == 2)
        await settle(running)
        agreement = await audit(cache, running.api, expect=mirrored_keys(server.snapshot()))
        listed = cache.get(("workflows",))
    finally:
        await running.stop()
        await cache.aclose()
        await server.stop()
    assert listed is not None
    assert ids_in(listed.data, "workflows") == {created["id"]}
    assert agreement.ok, describe(agreement)


@pytest.mark.parametrize("freeze", [True, False])
async def test_sync_freezes_the_startup_heap_out_of_the_collectors_sight(
    start: Start, freeze: bool
) -> None:
    # Full collections walked the imported modules and the index again and again: 20 to
    # 56 ms loop stalls each during a restart. Frozen, they are walked no more; a caller
    # who wants no freeze says so.
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    await start(gc_freeze=freeze)
    frozen = gc.get_freeze_count()
    if freeze:
        # Every module querysync imports (aiohttp, pydantic, reactivex...) is among them.
        assert frozen > 10_000
        assert not any(o is sync for o in gc.get_objects())
    else:
        assert frozen == 0
