"""Starting, stopping, restarting and dropping: what tests of reconnecting clients need."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import msgpack
import pytest
from aiohttp import WSMsgType

import querysync.server
from querysync.server import (
    InvalidResource,
    NodeToolServer,
    ResourceStore,
    UnknownResource,
    serve,
)

WORKFLOW = {"name": "w", "access": "private", "graph": {}}


def test_the_public_names_are_locked() -> None:
    # The order of __all__ is ruff's to check (RUF022); the names are this test's.
    assert len(querysync.server.__all__) == len(set(querysync.server.__all__))
    assert all(getattr(querysync.server, n) is not None for n in querysync.server.__all__)
    assert set(querysync.server.__all__) == {
        "RESOURCE_TYPES",
        "WORKLOAD_KINDS",
        "ChangeListener",
        "InvalidResource",
        "NodeToolServer",
        "ResourceStore",
        "ResourceWriter",
        "UnknownResource",
        "Workload",
        "WorkloadKind",
        "WorkloadReport",
        "etag_of",
        "serve",
    }


async def test_urls_need_a_start_and_name_loopback(session: aiohttp.ClientSession) -> None:
    server = NodeToolServer(ping_interval=None, stats_interval=None)
    with pytest.raises(RuntimeError):
        _ = server.ws_url
    async with server:
        assert server.running
        assert server.port > 0
        assert server.ws_url == f"ws://127.0.0.1:{server.port}/ws"
        assert server.api_url == f"http://127.0.0.1:{server.port}"
        with pytest.raises(RuntimeError):
            await server.start()
    assert not server.running


async def test_restart_on_the_same_port_keeps_the_store(session: aiohttp.ClientSession) -> None:
    server = NodeToolServer(ping_interval=None, stats_interval=None)
    await server.start()
    try:
        port = server.port
        workflow = server.create("workflow", WORKFLOW)
        async with session.ws_connect(server.ws_url) as ws:
            stopping = asyncio.ensure_future(server.stop())
            msg = await ws.receive(timeout=5)
            await stopping
        assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1001)
        assert ws.close_code == 1001
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://127.0.0.1:{port}/api/workflows/")

        await server.start(port=port)
        assert server.port == port
        async with session.get(f"{server.api_url}/api/workflows/{workflow['id']}") as resp:
            assert await resp.json() == workflow
        async with session.ws_connect(server.ws_url) as ws:
            server.delete("workflow", workflow["id"])
            msg = await ws.receive(timeout=5)
            assert msgpack.unpackb(msg.data)["event"] == "deleted"
    finally:
        await server.stop()


async def test_start_without_a_port_reuses_the_last_one(session: aiohttp.ClientSession) -> None:
    server = NodeToolServer(ping_interval=None, stats_interval=None)
    await server.start()
    port = server.port
    await server.stop(code=None)
    await server.start()
    try:
        assert server.port == port
    finally:
        await server.stop()


async def test_drop_connections_cuts_clients_off_and_keeps_listening(
    session: aiohttp.ClientSession,
) -> None:
    async with NodeToolServer(ping_interval=None, stats_interval=None) as server:
        async with session.ws_connect(server.ws_url) as a, session.ws_connect(server.ws_url) as b:
            assert server.connections == 2
            assert await server.drop_connections() == 2
            for ws in (a, b):
                msg = await ws.receive(timeout=5)
                assert msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR)
                assert ws.close_code == 1006
        assert server.connections == 0
        async with session.ws_connect(server.ws_url) as ws:
            async with asyncio.timeout(5):
                await server.wait_for_connections(1)
            server.create("thread", {})
            assert (await ws.receive(timeout=5)).type is WSMsgType.BINARY


async def test_drop_connections_with_a_code_closes_cleanly(
    session: aiohttp.ClientSession,
) -> None:
    async with NodeToolServer(ping_interval=None, stats_interval=None) as server:
        async with session.ws_connect(server.ws_url) as ws:
            dropping = asyncio.ensure_future(server.drop_connections(code=4000, reason="bye"))
            msg = await ws.receive(timeout=5)
            assert await dropping == 1
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 4000, "bye")
        assert ws.close_code == 4000


async def test_wait_for_connections_waits_for_a_late_client(
    session: aiohttp.ClientSession,
) -> None:
    async with NodeToolServer(ping_interval=None, stats_interval=None) as server:
        waiting = asyncio.ensure_future(server.wait_for_connections(1))
        await asyncio.sleep(0)
        assert not waiting.done()
        async with session.ws_connect(server.ws_url):
            async with asyncio.timeout(5):
                await waiting


async def test_counts_follow_the_frames(session: aiohttp.ClientSession) -> None:
    async with NodeToolServer(ping_interval=None, stats_interval=None) as server:
        async with session.ws_connect(server.ws_url) as ws:
            server.create("thread", {})
            server.create("thread", {})
            for _ in range(4):
                await ws.receive(timeout=5)
            await ws.send_str(json.dumps({"type": "ping"}))
            assert (await ws.receive(timeout=5)).type is WSMsgType.TEXT
        assert server.counts["connections"] == 1
        assert server.counts["resource_changes"] == 4
        assert server.counts["frames_received"] == 1
        # The writer counts a frame after writing it; the pong left after the four.
        assert server.counts["binary_frames_sent"] == 4
        assert server.counts["frames_sent"] >= 4


async def test_the_python_api_validates_like_rest() -> None:
    server = NodeToolServer(ping_interval=None, stats_interval=None)
    with pytest.raises(InvalidResource) as info:
        server.create("workflow", {"name": "w"})
    assert {e["loc"][-1] for e in info.value.errors} == {"access", "graph"}
    with pytest.raises(UnknownResource):
        server.update("workflow", "nope", {"name": "x"})
    with pytest.raises(UnknownResource):
        server.delete("job", "nope")
    with pytest.raises(InvalidResource):
        server.create("gizmo", {})
    made = server.create("workflow", WORKFLOW, id="fixed")
    assert made["id"] == "fixed"
    with pytest.raises(InvalidResource):
        server.create("workflow", WORKFLOW, id="fixed")
    assert list(server.snapshot()["workflow"]) == ["fixed"]


async def test_a_store_can_be_shared_and_listened_to() -> None:
    store = ResourceStore(new_id=iter(["a", "b"]).__next__)
    seen: list[tuple[str, str, str]] = []
    unsubscribe = store.subscribe(lambda e, t, r: seen.append((e, t, r["id"])))
    server = NodeToolServer(store=store, ping_interval=None, stats_interval=None)
    server.create("thread", {})
    unsubscribe()
    server.create("thread", {})
    assert seen == [("updated", "thread", "a"), ("created", "thread", "a")]
    assert set(store.snapshot()["thread"]) == {"a", "b"}


async def test_serve_runs_until_cancelled(session: aiohttp.ClientSession) -> None:
    ready: asyncio.Future[NodeToolServer] = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(
        serve("127.0.0.1", 0, "tok", ping_interval=None, on_ready=ready.set_result)
    )
    async with asyncio.timeout(5):
        server = await ready
    headers = {"Authorization": "Bearer tok"}
    async with session.get(f"{server.api_url}/api/workflows/", headers=headers) as resp:
        assert resp.status == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not server.running


def test_intervals_must_be_positive_or_none() -> None:
    with pytest.raises(ValueError, match="ping_interval"):
        NodeToolServer(ping_interval=0)
    with pytest.raises(ValueError, match="stats_interval"):
        NodeToolServer(stats_interval=-1)
