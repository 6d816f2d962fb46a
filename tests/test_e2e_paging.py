"""Whole lists from a server that pages like the live one: every page, messages, deleted threads.

The embedded server pages as nodetool-protocol.md says the live one does (threads 10 a
page, workflows and messages 100). The sizes here need several pages of each.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _support import obj

from querysync._audit import audit
from querysync._nodetool import LIST_KEYS
from querysync._sync import Sync, sync
from querysync.server import NodeToolServer
from querysync.sinks import CacheEvent, QueryCache
from querysync.streams import Backoff

FAST = Backoff(initial=0.01, factor=2.0, max_delay=0.05, jitter=0.0)
WORKFLOW = {"name": "w", "access": "private", "graph": {"nodes": [], "edges": []}}
THREADS, WORKFLOWS, MESSAGES = 25, 250, 120


@dataclass
class Mirror:
    server: NodeToolServer
    running: Sync
    cache: QueryCache
    thread: str
    fetches: Counter[tuple[object, ...]]


@pytest.fixture
async def mirror(tmp_path: Path) -> AsyncIterator[Mirror]:
    server = NodeToolServer(ping_interval=None, stats_interval=None)
    await server.start()
    threads = [server.create("thread", {"title": f"t{i}"})["id"] for i in range(THREADS)]
    for i in range(WORKFLOWS):
        server.create("workflow", {**WORKFLOW, "name": f"w{i}"})
    busy = threads[0]
    for i in range(MESSAGES):
        server.create("message", {"thread_id": busy, "content": f"m{i}"})
    cache = QueryCache(tmp_path / "cache", retries=2, retry_delay=0.01)
    fetches: Counter[tuple[object, ...]] = Counter()

    def count(event: CacheEvent) -> None:
        if event.kind == "fetch_started":
            fetches[event.key] += 1

    events = cache.events().subscribe(count)
    running = await sync(
        server.ws_url, server.api_url, cache, window=0.02, source_options={"backoff": FAST}
    )
    try:
        async with asyncio.timeout(20):
            await server.wait_for_connections(1)
            await running.settle(quiet=0.05)
        yield Mirror(server, running, cache, busy, fetches)
    finally:
        events.dispose()
        async with asyncio.timeout(20):
            await running.stop()
            await cache.aclose()
            await server.stop()


def ids(cache: QueryCache, key: tuple[str, ...], member: str) -> list[str]:
    entry = cache.get(key)
    assert entry is not None, key
    assert not entry.stale, key
    return [item["id"] for item in obj(entry.data)[member]]


def server_ids(server: NodeToolServer, rtype: str, **where: str) -> list[str]:
    # Creation order, which is the embedded server's list order.
    return [
        rid
        for rid, r in server.snapshot()[rtype].items()
        if all(r.get(k) == v for k, v in where.items())
    ]


async def test_every_list_entry_holds_every_item_after_a_new_message(mirror: Mirror) -> None:
    server, cache = mirror.server, mirror.cache
    assert ids(cache, ("threads",), "threads") == server_ids(server, "thread")
    assert len(ids(cache, ("threads",), "threads")) == THREADS
    assert ids(cache, ("workflows",), "workflows") == server_ids(server, "workflow")
    assert len(ids(cache, ("workflows",), "workflows")) == WORKFLOWS
    # The last page says there is none after it; no page was lost on the way.
    entry = cache.get(("workflows",))
    assert entry is not None
    assert obj(entry.data)["next"] in ("", None)
    assert "incomplete" not in obj(entry.data)

    server.create("message", {"thread_id": mirror.thread, "content": "new"})
    async with asyncio.timeout(20):
        await mirror.running.settle(quiet=0.05)
    listed = ids(cache, ("messages", mirror.thread), "messages")
    assert len(listed) == MESSAGES + 1
    assert listed == server_ids(server, "message", thread_id=mirror.thread)
    # Item for item: every entry equals what the server serves now, all pages read.
    async with asyncio.timeout(30):
        agreement = await audit(cache, mirror.running.api, expect=LIST_KEYS)
    assert agreement.ok, agreement.disagreements[:5]


async def test_a_message_change_fetches_exactly_its_threads_list_once(mirror: Mirror) -> None:
    server, cache = mirror.server, mirror.cache
    other = server_ids(server, "thread")[1]
    server.create("message", {"thread_id": other, "content": "elsewhere"})
    async with asyncio.timeout(20):
        await mirror.running.settle(quiet=0.05)
    mirror.fetches.clear()
    before = Counter(server.counts)

    message = server.create("message", {"thread_id": mirror.thread, "content": "one more"})
    async with asyncio.timeout(20):
        await mirror.running.settle(quiet=0.05)

    lists = {k: n for k, n in mirror.fetches.items() if k[0] == "messages"}
    assert lists == {("messages", mirror.thread): 1}
    gets = Counter(server.counts)
    gets.subtract(before)
    # 121 messages are two pages of 100: one fetch of the list is two GETs of it.
    assert gets["GET /api/messages/"] == 2
    # The message's own detail: fetched for the mirror, and that fetch told its thread.
    # (Each of the create's two frames may refetch it: a message body has no etag.)
    assert 1 <= gets["GET /api/messages/{id}"] <= 2
    print("message create:", {k: v for k, v in gets.items() if k.startswith("GET ") and v})
    entry = cache.get(("message", message["id"]))
    assert entry is not None
    assert obj(entry.data)["thread_id"] == mirror.thread
    # Change it: now the cache knows its thread, and no detail GET is needed to find it.
    mirror.fetches.clear()
    server.update("message", message["id"], {"content": "edited"})
    async with asyncio.timeout(20):
        await mirror.running.settle(quiet=0.05)
    lists = {k: n for k, n in mirror.fetches.items() if k[0] == "messages"}
    assert lists == {("messages", mirror.thread): 1}
    print("message update: fetches", dict(mirror.fetches))
    listed = cache.get(("messages", mirror.thread))
    assert listed is not None
    assert "edited" in [m["content"] for m in obj(listed.data)["messages"]]


async def test_deleting_a_thread_removes_its_message_list(mirror: Mirror) -> None:
    server, cache = mirror.server, mirror.cache
    server.create("message", {"thread_id": mirror.thread, "content": "bring the list in"})
    async with asyncio.timeout(20):
        await mirror.running.settle(quiet=0.05)
    assert ("messages", mirror.thread) in cache
    mirror.fetches.clear()
    before = Counter(server.counts)

    server.delete("thread", mirror.thread)
    async with asyncio.timeout(20):
        await mirror.running.settle(quiet=0.05)

    assert ("messages", mirror.thread) not in cache
    assert ("thread", mirror.thread) not in cache
    assert mirror.thread not in ids(cache, ("threads",), "threads")
    # The thread's messages went with it (one deleted frame each): none is left cached.
    alive = set(server_ids(server, "message"))
    assert [k for k in cache.keys(("message",)) if k[1] not in alive] == []
    gets = Counter(server.counts)
    gets.subtract(before)
    print(
        "thread delete:",
        {k: v for k, v in gets.items() if k.startswith("GET ") and v},
        {k: n for k, n in mirror.fetches.items() if k[0] == "messages"},
    )


async def test_a_thread_created_on_page_3_while_down_is_found_by_the_resync(
    mirror: Mirror,
) -> None:
    server, cache = mirror.server, mirror.cache
    async with asyncio.timeout(10):
        await server.stop(code=None)
    # The 26th thread: page 3 of the threads list (10 a page), announced to nobody.
    thread = server.create("thread", {"title": "while down"})
    server.create("message", {"thread_id": thread["id"], "content": "also while down"})
    assert server_ids(server, "thread").index(thread["id"]) == 2 * 10 + 5
    async with asyncio.timeout(10):
        await server.start()
        await server.wait_for_connections(1)
    async with asyncio.timeout(20):
        await mirror.running.settle(quiet=0.1)

    assert thread["id"] in ids(cache, ("threads",), "threads")
    detail = cache.get(("thread", thread["id"]))
    assert detail is not None
    assert obj(detail.data)["title"] == "while down"
    messages = cache.get(("messages", thread["id"]))
    assert messages is not None
    assert [m["content"] for m in obj(messages.data)["messages"]] == ["also while down"]


async def test_sync_passes_its_api_options_to_the_rest_client(tmp_path: Path) -> None:
    # sync() used to build NodeToolApi with its defaults only: max_pages and page_size
    # were out of a mirror's reach.
    server = NodeToolServer(ping_interval=None, stats_interval=None)
    await server.start()
    for i in range(THREADS):
        server.create("thread", {"title": f"t{i}"})
    cache = QueryCache(tmp_path / "cache", retries=0)
    running = await sync(
        server.ws_url, server.api_url, cache, window=0.02, source_options={"backoff": FAST},
        api_options={"page_size": 4, "max_pages": 2},
    )
    try:
        async with asyncio.timeout(20):
            await server.wait_for_connections(1)
            await running.settle(quiet=0.05)
        entry = cache.get(("threads",))
        assert entry is not None
        body = obj(entry.data)
        # Two pages of four, then cut: the entry says so instead of passing for whole.
        assert len(body["threads"]) == 8
        assert body["incomplete"] is True
    finally:
        async with asyncio.timeout(20):
            await running.stop()
            await cache.aclose()
            await server.stop()
