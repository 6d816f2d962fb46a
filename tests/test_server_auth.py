"""Token auth of the embedded server: the live server's header, query parameter and close codes."""

from __future__ import annotations

import asyncio
import json
import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path

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


# -- tokens that expire --------------------------------------------------------------------


class Clock:
    """A hand-moved clock for the server's token lifetimes: expiry without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def expiring() -> AsyncIterator[tuple[NodeToolServer, Clock]]:
    clock = Clock()
    server = NodeToolServer(token=TOKEN, token_ttl=60.0, ping_interval=None, stats_interval=None)
    server.credentials._clock = clock
    async with server:
        yield server, clock


async def test_an_issued_token_works_until_its_ttl_then_gets_1008_and_401(
    expiring: tuple[NodeToolServer, Clock], session: aiohttp.ClientSession
) -> None:
    server, clock = expiring
    token = server.issue_token()
    headers = {"Authorization": f"Bearer {token}"}
    async with session.get(f"{server.api_url}/api/workflows/", headers=headers) as resp:
        assert resp.status == 200
    async with session.ws_connect(server.ws_url, headers=headers) as ws:
        server.create("thread", {"title": "t"})
        assert (await first_message(ws)).type is WSMsgType.BINARY
    clock.now += 60.0
    async with session.get(f"{server.api_url}/api/workflows/", headers=headers) as resp:
        assert resp.status == 401
        assert (await resp.json())["detail"] == "Token expired"
    async with session.ws_connect(server.ws_url, headers=headers) as ws:
        msg = await first_message(ws)
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1008, "Token expired")
    # With a ttl the long-lived token only issues tokens; it opens nothing itself.
    master = {"Authorization": f"Bearer {TOKEN}"}
    async with session.get(f"{server.api_url}/api/workflows/", headers=master) as resp:
        assert resp.status == 401


async def test_post_auth_token_issues_a_token_for_the_servers_secret_only(
    expiring: tuple[NodeToolServer, Clock], session: aiohttp.ClientSession
) -> None:
    server, _ = expiring
    url = f"{server.api_url}/api/auth/token"
    for wrong in ({}, {"Authorization": "Bearer nope"}):
        async with session.post(url, headers=wrong) as resp:
            assert resp.status == 401
    async with session.post(url, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
        assert resp.status == 200
        issued = await resp.json()
    assert issued["expires_in"] == 60.0
    headers = {"Authorization": f"Bearer {issued['token']}"}
    async with session.get(f"{server.api_url}/api/threads/", headers=headers) as resp:
        assert resp.status == 200


async def test_an_open_connection_is_closed_with_1008_when_its_token_expires(
    session: aiohttp.ClientSession,
) -> None:
    # Real time: the expiry is a timer on the loop. 0.3 s keeps the test short.
    async with NodeToolServer(token_ttl=0.3, ping_interval=None, stats_interval=None) as server:
        token = server.issue_token()
        headers = {"Authorization": f"Bearer {token}"}
        async with session.ws_connect(server.ws_url, headers=headers) as ws:
            msg = await first_message(ws)
            assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1008, "Token expired")
        assert server.counts["tokens_expired"] == 1


async def test_the_token_file_always_holds_a_valid_token(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    path = tmp_path / "token"
    async with NodeToolServer(
        token_ttl=0.4, token_file=path, ping_interval=None, stats_interval=None
    ) as server:
        first = path.read_text().strip()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        headers = {"Authorization": f"Bearer {first}"}
        async with session.get(f"{server.api_url}/api/threads/", headers=headers) as resp:
            assert resp.status == 200
        async with asyncio.timeout(5):
            # The file is the only sign of a rotation: nothing to await but a look.
            while path.read_text().strip() == first:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        headers = {"Authorization": f"Bearer {path.read_text().strip()}"}
        async with session.get(f"{server.api_url}/api/threads/", headers=headers) as resp:
            assert resp.status == 200


def test_a_token_file_without_a_ttl_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="token_ttl"):
        NodeToolServer(token_file=tmp_path / "t")


# -- bodies the parser cannot take ---------------------------------------------------------


async def test_a_body_nested_200000_deep_is_a_400_with_nothing_logged(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 12.9: json.loads raised RecursionError, answered 500 with a traceback logged.
    caplog.set_level("DEBUG")
    async with NodeToolServer(ping_interval=None, stats_interval=None) as server:
        body = "[" * 200_000 + "]" * 200_000
        headers = {"Content-Type": "application/json"}
        for path in ("/api/threads/", "/api/workflows/"):
            async with session.post(server.api_url + path, data=body, headers=headers) as resp:
                assert resp.status == 400
                assert (await resp.json())["detail"] == "There was an error parsing the body"
        # Malformed but shallow JSON stays FastAPI's 422, as on the live server.
        async with session.post(
            server.api_url + "/api/threads/", data="{not json", headers=headers
        ) as resp:
            assert resp.status == 422
        async with session.get(server.api_url + "/api/threads/") as resp:
            assert resp.status == 200
            assert (await resp.json())["threads"] == []
    assert "RecursionError" not in caplog.text
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
