"""Token auth of the embedded server: the live server's header, query parameter and close codes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import WSMsgType

from querysync.server import NodeToolServer

TOKEN = "s3cret-token"


@pytest.fixture
async def server() -> AsyncIterator[NodeToolServer]:
    async with NodeToolServer(token=TOKEN, ping_interval=None, stats_interval=None) as s:
        yield s


async def first_message(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    return await ws.receive(timeout=5)


@pytest.mark.parametrize(
    ("query", "headers", "reason"),
    [
        ("", {}, "Missing authentication"),
        ("?token=" + TOKEN, {}, "Missing authentication"),
        ("?api_key=nope", {}, "Invalid authentication"),
        ("", {"Authorization": "Bearer nope"}, "Invalid authentication"),
        ("", {"Authorization": "Basic " + TOKEN}, "Missing authentication"),
        ("?api_key=" + TOKEN, {"Authorization": "Bearer nope"}, "Invalid authentication"),
    ],
    ids=["none", "token-param", "wrong-api-key", "wrong-bearer", "basic", "header-wins"],
)
async def test_a_refused_client_is_accepted_then_closed_with_1008(
    server: NodeToolServer,
    session: aiohttp.ClientSession,
    query: str,
    headers: dict[str, str],
    reason: str,
) -> None:
    async with session.ws_connect(server.ws_url + query, headers=headers) as ws:
        msg = await first_message(ws)
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1008, reason)
        assert ws.close_code == 1008
    assert server.counts["auth_rejected"] == 1
    assert server.counts["connections"] == 0


@pytest.mark.parametrize(
    ("query", "headers"),
    [("", {"Authorization": "Bearer " + TOKEN}), ("?api_key=" + TOKEN, {})],
    ids=["bearer", "api-key"],
)
async def test_the_right_token_connects_and_receives_changes(
    server: NodeToolServer, session: aiohttp.ClientSession, query: str, headers: dict[str, str]
) -> None:
    async with session.ws_connect(server.ws_url + query, headers=headers) as ws:
        await ws.send_str(json.dumps({"type": "ping"}))
        msg = await first_message(ws)
        assert msg.type is WSMsgType.TEXT
        assert json.loads(msg.data)["type"] == "pong"
        thread = server.create("thread", {"title": "t"})
        msg = await first_message(ws)
        assert json.loads(msg.data)["resource"]["id"] == thread["id"]


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("", {}),
        ("?api_key=" + TOKEN, {}),
        ("?token=" + TOKEN, {}),
        ("", {"Authorization": "Bearer wrong"}),
    ],
    ids=["none", "api-key", "token-param", "wrong-bearer"],
)
async def test_rest_wants_the_bearer_header(
    server: NodeToolServer, session: aiohttp.ClientSession, query: str, headers: dict[str, str]
) -> None:
    async with session.get(f"{server.api_url}/api/workflows/{query}", headers=headers) as resp:
        assert resp.status == 401
        assert isinstance((await resp.json())["detail"], str)
    async with session.post(
        f"{server.api_url}/api/threads/{query}", headers=headers, json={"title": "t"}
    ) as resp:
        assert resp.status == 401
    assert server.snapshot()["thread"] == {}


async def test_rest_with_the_bearer_header_works(
    server: NodeToolServer, session: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with session.post(
        f"{server.api_url}/api/threads/", headers=headers, json={"title": "t"}
    ) as resp:
        assert resp.status == 200
        thread = await resp.json()
    async with session.get(f"{server.api_url}/api/threads/", headers=headers) as resp:
        assert resp.status == 200
        assert (await resp.json())["threads"] == [thread]


async def test_without_a_token_anyone_connects(session: aiohttp.ClientSession) -> None:
    async with NodeToolServer(ping_interval=None, stats_interval=None) as s:
        async with session.ws_connect(s.ws_url) as ws:
            s.create("thread", {})
            msg = await first_message(ws)
            assert msg.type is WSMsgType.BINARY
        async with session.get(f"{s.api_url}/api/threads/") as resp:
            assert resp.status == 200
