"""``sync()`` both ways: ``await sync(...)`` and ``async with sync(...) as running:``.

Before, ``async with querysync.sync(...)`` failed with "'coroutine' object does not
support the asynchronous context manager protocol" (issue 13 item 2).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import querysync
from querysync.server import NodeToolServer
from querysync.sinks import QueryCache
from querysync.streams import ConnectionState

WORKFLOW = {"name": "w", "access": "private", "graph": {"nodes": [], "edges": []}}


async def test_async_with_runs_the_sync_and_stops_it_at_the_end(
    server: NodeToolServer, tmp_path: Path
) -> None:
    directory = tmp_path / "cache"
    async with querysync.sync(server.ws_url, server.api_url, directory, window=0.05) as running:
        assert isinstance(running, querysync.Sync)
        async with asyncio.timeout(10):
            await server.wait_for_connections(1)
            created = server.create("workflow", WORKFLOW)
            await running.settle()
        entry = running.cache.get(("workflow", created["id"]))
        assert entry is not None
        assert entry.etag == created["etag"]
    # The block's end stopped it: the connection is closed and so is the cache.
    assert running.source.state is ConnectionState.CLOSED
    with pytest.raises(querysync.CacheClosedError):
        running.cache.get(("workflows",))
    with QueryCache(directory) as cache:
        assert ("workflow", created["id"]) in cache


async def test_async_with_stops_it_when_the_block_raises(
    server: NodeToolServer, tmp_path: Path
) -> None:
    seen: list[querysync.Sync] = []

    async def fail_inside() -> None:
        async with querysync.sync(server.ws_url, server.api_url, tmp_path / "c") as running:
            seen.append(running)
            async with asyncio.timeout(10):
                await server.wait_for_connections(1)
            raise LookupError("the caller's own error goes through")

    with pytest.raises(LookupError):
        await fail_inside()
    [running] = seen
    assert running.source.state is ConnectionState.CLOSED
    with pytest.raises(querysync.CacheClosedError):
        running.cache.get(("workflows",))


async def test_await_returns_a_running_sync_the_caller_stops(
    server: NodeToolServer, tmp_path: Path
) -> None:
    running = await querysync.sync(server.ws_url, server.api_url, tmp_path / "c", window=0.05)
    try:
        async with asyncio.timeout(10):
            await server.wait_for_connections(1)
            await running.settle()
        assert ("workflows",) in running.cache
        # Awaited, nothing stops it on the caller's behalf.
        assert running.source.state is ConnectionState.CONNECTED
    finally:
        await running.stop()


async def test_a_sync_that_cannot_start_raises_from_async_with(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(querysync.CacheError, match="a-file"):
        async with querysync.sync("ws://127.0.0.1:9/ws", "http://127.0.0.1:9", blocker / "c"):
            pytest.fail("the block must not run")
