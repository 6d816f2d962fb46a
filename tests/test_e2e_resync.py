"""The resync fetches what may have changed, not everything: GETs counted on the server.

After a reconnect, and at the start of ``sync`` on a persisted cache, every entry is stale
and the lists are read whole. A thread's list etag is its detail's: an unchanged thread
costs no GET. A workflow's list etag hashes fewer columns than its detail (as on the live
server): it proves nothing, and every workflow's detail is fetched again. Each test makes
its resources after ``sync`` has started, so that the frames bring every key into the
cache, then changes a few while nobody listens.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from _support import obj

from querysync._audit import audit
from querysync._nodetool import LIST_KEYS
from querysync._sync import Sync, sync
from querysync.server import NodeToolServer
from querysync.sinks import QueryCache
from querysync.streams import Backoff

FAST = Backoff(initial=0.01, factor=2.0, max_delay=0.05, jitter=0.0)
WORKFLOW: dict[str, Any] = {"name": "w", "access": "private", "graph": {"nodes": [], "edges": []}}
THREADS = 25  # three pages of ten


def gets(server: NodeToolServer, since: Counter[str]) -> Counter[str]:
    now = Counter({k: v for k, v in server.counts.items() if k.startswith("GET ")})
    now.subtract(since)
    return +now


def snapshot(server: NodeToolServer) -> Counter[str]:
    return Counter({k: v for k, v in server.counts.items() if k.startswith("GET ")})


async def start(server: NodeToolServer, directory: Path) -> Sync:
    running = await sync(
        server.ws_url,
        server.api_url,
        directory,
        window=0.02,
        source_options={"backoff": FAST},
    )
    async with asyncio.timeout(20):
        await server.wait_for_connections(1)
        await running.settle(quiet=0.05)
    return running


async def threads_with_a_message(server: NodeToolServer, running: Sync, n: int) -> list[str]:
    """``n`` threads of one message each, created while ``running`` listens, then settled."""
    threads = [server.create("thread", {"title": f"t{i}"})["id"] for i in range(n)]
    for t in threads:
        # A message each: an empty list is checked against its thread (one more GET).
        server.create("message", {"thread_id": t, "content": f"in {t}"})
    async with asyncio.timeout(20):
        await running.settle(quiet=0.05)
    for t in threads:
        assert ("thread", t) in running.cache
        assert ("messages", t) in running.cache
    return threads


async def test_a_reconnect_fetches_exactly_the_new_changed_and_gone_threads(
    tmp_path: Path,
) -> None:
    async with NodeToolServer(ping_interval=None, stats_interval=None) as server:
        running = await start(server, tmp_path / "cache")
        try:
            threads = await threads_with_a_message(server, running, THREADS)
            async with asyncio.timeout(10):
                await server.stop(code=None)
            changed = threads[3:5]
            for t in changed:
                server.update("thread", t, {"title": "renamed while down"})
            gone = threads[7]
            server.delete("thread", gone)
            born = server.create("thread", {"title": "born while down"})["id"]
            server.create("message", {"thread_id": born, "content": "first"})
            before = snapshot(server)
            async with asyncio.timeout(10):
                await server.start()
                await server.wait_for_connections(1)
            async with asyncio.timeout(20):
                await running.settle(quiet=0.1)
            spent = gets(server, before)
            cache = running.cache

            assert running.source.counts["resyncs"] == 1
            # Three pages of the list; the details of the two changed threads and the new
            # one, and no other: 22 unchanged details were proven by their list etags.
            assert spent["GET /api/threads/"] == 3
            assert spent["GET /api/threads/{id}"] == len(changed) + 1
            # No etag covers a thread's messages (the live server's thread etag does not
            # move when a message is added): each listed thread's list is read, once.
            assert spent["GET /api/messages/"] == THREADS
            # A message list item is the message's detail, whole: none refetched.
            assert spent["GET /api/messages/{id}"] == 1  # the new thread's message
            assert running.resyncs["confirmed"] >= THREADS - len(changed) - 1
            # The thread deleted while down is gone from the cache, with its messages.
            assert ("thread", gone) not in cache
            assert ("messages", gone) not in cache
            assert obj(cache.get(("thread", changed[0])).data)["title"] == "renamed while down"  # type: ignore[union-attr]
            assert ("thread", born) in cache
            async with asyncio.timeout(30):
                agreement = await audit(cache, running.api, expect=LIST_KEYS)
            assert agreement.ok, agreement.disagreements[:5]
        finally:
            await running.stop()


async def test_a_thread_deleted_while_down_is_removed_without_a_get(tmp_path: Path) -> None:
    async with NodeToolServer(ping_interval=None, stats_interval=None) as server:
        running = await start(server, tmp_path / "cache")
        try:
            threads = await threads_with_a_message(server, running, 3)
            async with asyncio.timeout(10):
                await server.stop(code=None)
            server.delete("thread", threads[1])
            before = snapshot(server)
            async with asyncio.timeout(10):
                await server.start()
                await server.wait_for_connections(1)
            async with asyncio.timeout(20):
                await running.settle(quiet=0.1)
            spent = gets(server, before)
            # Not one detail GET: the other two are proven, the deleted one is simply
            # absent from the complete list (a GET would only have found a 404).
            assert spent["GET /api/threads/{id}"] == 0
            assert ("thread", threads[1]) not in running.cache
            assert ("messages", threads[1]) not in running.cache
            assert running.cache.keys(("message",))
            assert all(
                obj(e.data)["thread_id"] != threads[1]
                for k in running.cache.keys(("message",))
                if (e := running.cache.get(k)) is not None
            )
            assert running.resyncs["removed"] >= 2  # the detail and its message list
        finally:
            await running.stop()


async def test_a_restart_on_a_correct_cache_of_threads_costs_pages_and_changes(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "cache"
    async with NodeToolServer(ping_interval=None, stats_interval=None) as server:
        first = await start(server, directory)
        try:
            threads = await threads_with_a_message(server, first, THREADS)
        finally:
            await first.stop()
        changed = threads[10:12]
        for t in changed:
            server.update("thread", t, {"title": "renamed while stopped"})
        before = snapshot(server)

        second = await start(server, directory)
        try:
            async with asyncio.timeout(20):
                await second.settle(quiet=0.1)
            spent = gets(server, before)
            # Was 2 x 25 details + 25 lists + messages: every entry refetched.
            assert spent["GET /api/threads/"] == 3
            assert spent["GET /api/threads/{id}"] == len(changed)
            assert spent["GET /api/messages/"] == THREADS  # no etag proves them
            assert spent["GET /api/messages/{id}"] == 0
            stats = second.cache.stats()
            assert stats["stale"] == 0, stats
            async with asyncio.timeout(30):
                agreement = await audit(second.cache, second.api, expect=LIST_KEYS)
            assert agreement.ok, agreement.disagreements[:5]
        finally:
            await second.stop()


async def test_workflow_list_etags_prove_nothing_so_every_detail_is_refetched(
    tmp_path: Path,
) -> None:
    async with NodeToolServer(ping_interval=None, stats_interval=None) as server:
        running = await start(server, tmp_path / "cache")
        try:
            workflows = [
                server.create("workflow", {**WORKFLOW, "name": f"w{i}"})["id"] for i in range(6)
            ]
            async with asyncio.timeout(20):
                await running.settle(quiet=0.05)
            listed = obj(running.cache.get(("workflows",)).data)["workflows"]  # type: ignore[union-attr]
            detail = running.cache.get(("workflow", workflows[0]))
            assert detail is not None
            # The quirk the embedded server reproduces: the list reads fewer columns.
            item = next(w for w in listed if w["id"] == workflows[0])
            assert item["etag"] != detail.etag
            async with asyncio.timeout(10):
                await server.stop(code=None)
            server.update("workflow", workflows[2], {"name": "renamed while down"})
            server.delete("workflow", workflows[4])
            before = snapshot(server)
            async with asyncio.timeout(10):
                await server.start()
                await server.wait_for_connections(1)
            async with asyncio.timeout(20):
                await running.settle(quiet=0.1)
            spent = gets(server, before)
            # Every listed workflow's detail and versions, spread under the limit; the
            # deleted one is removed without a GET (the list names every workflow).
            # (An empty version list is checked against its workflow: one more detail
            # GET each, as for any empty per-resource list.)
            left = len(workflows) - 1
            assert spent["GET /api/workflows/{id}"] == 2 * left
            assert spent["GET /api/workflows/{id}/versions"] == left
            assert ("workflow", workflows[4]) not in running.cache
            renamed = running.cache.get(("workflow", workflows[2]))
            assert renamed is not None
            assert obj(renamed.data)["name"] == "renamed while down"
            async with asyncio.timeout(30):
                agreement = await audit(running.cache, running.api, expect=LIST_KEYS)
            assert agreement.ok, agreement.disagreements[:5]
        finally:
            await running.stop()


async def test_confirm_marks_a_stale_row_fresh_only_for_its_own_etag(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    with QueryCache(directory) as cache:
        cache.set(("thread", "a"), {"id": "a", "etag": "e1"})
        cache.set(("thread", "b"), {"id": "b", "etag": "e1"})
    # Reopened: the rows are on disk only, and a resume marks every entry stale.
    async with QueryCache(directory) as cache:
        cache.invalidate_all(refetch="none")
        before = cache.stats()["rows_read"]
        assert await cache.confirm(("thread", "a"), "e1")
        assert not await cache.confirm(("thread", "b"), "e2")
        assert not await cache.confirm(("thread", "missing"), "e1")
        assert cache.stats()["rows_read"] == before + 2  # read off the loop, once each
        a, b = cache.get(("thread", "a")), cache.get(("thread", "b"))
        assert a is not None
        assert b is not None
        assert (a.stale, b.stale) == (False, True)
        assert cache.stats()["skipped_fresh"] == 1
    # The confirmation was written: a later open still finds it fresh.
    with QueryCache(directory) as cache:
        a, b = cache.get(("thread", "a")), cache.get(("thread", "b"))
        assert a is not None
        assert b is not None
        assert (a.stale, b.stale) == (False, True)
