"""The REST fetchers against a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from querysync import FetchError, ResourceGone
from querysync._nodetool import LIST_KEYS, NodeToolApi, endpoint_for

# Written from the table in shared/nodetool-protocol.md, not from the code.
EXPECTED_PATHS = {
    ("workflows",): "/api/workflows/",
    ("templates",): "/api/workflows/examples",
    ("workflow", "w1"): "/api/workflows/w1",
    ("workflow_versions", "w1"): "/api/workflows/w1/versions",
    ("jobs",): "/api/jobs/",
    ("job", "j1"): "/api/jobs/j1",
    ("assets",): "/api/assets/",
    ("asset", "a1"): "/api/assets/a1",
    ("threads",): "/api/threads/",
    ("thread", "t1"): "/api/threads/t1",
    ("messages", "t1"): "/api/messages/?thread_id=t1",
    ("message", "m1"): "/api/messages/m1",
    ("collections",): "/api/collections/",
    ("workspaces",): "/api/workspaces/",
    ("workspace", "s1"): "/api/workspaces/s1",
    ("secrets",): "/api/settings/secrets",
    ("models",): "/api/models/all",
}


@pytest.mark.parametrize(("key", "path"), sorted(EXPECTED_PATHS.items(), key=repr))
def test_endpoint_for_follows_the_protocol_table(key: tuple[str, ...], path: str) -> None:
    assert endpoint_for(key) == path


def test_every_list_key_has_an_endpoint() -> None:
    assert all(endpoint_for(k) is not None for k in LIST_KEYS)


@pytest.mark.parametrize(
    "key", [(), ("nope",), ("workflow",), ("workflows", "x"), ("workflow", ""), (1, "x")]
)
def test_keys_without_an_endpoint(key: tuple[object, ...]) -> None:
    assert endpoint_for(key) is None  # type: ignore[arg-type]


def test_ids_are_quoted_into_one_path_segment() -> None:
    assert endpoint_for(("workflow", "a/b?c")) == "/api/workflows/a%2Fb%3Fc"


SPACED = '{ "id": "spaced",\n  "name": "caf\u00e9 ☕", "etag": "e1" }\n'


@pytest.fixture
async def api_server() -> AsyncIterator[tuple[str, list[web.Request]]]:
    seen: list[web.Request] = []

    async def workflow(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        wid = request.match_info["id"]
        if wid == "gone":
            return web.json_response({"detail": "not found"}, status=404)
        if wid == "broken":
            return web.Response(text="{not json", content_type="application/json")
        if wid == "nan":
            return web.Response(text='{"v": NaN}', content_type="application/json")
        if wid == "spaced":
            return web.Response(text=SPACED, content_type="application/json")
        if wid == "boom":
            return web.json_response({"detail": "boom"}, status=500)
        if wid == "slow":
            await asyncio.sleep(1)
        return web.json_response({"id": wid, "etag": "e-" + wid})

    app = web.Application()
    app.router.add_get("/api/workflows/{id}", workflow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_fetch_returns_the_body_and_sends_the_bearer_token(
    api_server: tuple[str, list[web.Request]],
) -> None:
    url, seen = api_server
    async with aiohttp.ClientSession() as session:
        api = NodeToolApi(url + "/", session, token="secret")
        fetched = await api.fetch(("workflow", "w1"))
        assert fetched.data == {"id": "w1", "etag": "e-w1"}
    assert seen[0].headers["Authorization"] == "Bearer secret"


@pytest.mark.parametrize(
    ("wid", "error", "words"),
    [
        ("gone", ResourceGone, "404"),
        ("broken", FetchError, "malformed JSON"),
        ("nan", FetchError, "malformed JSON.*NaN is not JSON"),
        ("boom", FetchError, "HTTP 500"),
        ("slow", FetchError, "timed out"),
    ],
)
async def test_failures_become_fetch_errors(
    api_server: tuple[str, list[web.Request]], wid: str, error: type[Exception], words: str
) -> None:
    url, _ = api_server
    async with aiohttp.ClientSession() as session:
        api = NodeToolApi(url, session, timeout=0.2)
        with pytest.raises(error, match=words) as info:
            await api.fetch(("workflow", wid))
    assert isinstance(info.value, FetchError)


async def test_unreachable_server_is_a_fetch_error() -> None:
    async with aiohttp.ClientSession() as session:
        api = NodeToolApi("http://127.0.0.1:9", session, timeout=1.0)
        with pytest.raises(FetchError, match="GET /api/jobs/"):
            await api.fetch(("jobs",))


async def test_key_without_endpoint_is_a_fetch_error() -> None:
    async with aiohttp.ClientSession() as session:
        api = NodeToolApi("http://127.0.0.1:9", session)
        with pytest.raises(FetchError, match="no NodeTool endpoint"):
            await api.fetch(("nope",))


async def test_fetch_returns_the_data_and_the_text_the_server_sent(
    api_server: tuple[str, list[web.Request]],
) -> None:
    url, _ = api_server
    async with aiohttp.ClientSession() as session:
        fetched = await NodeToolApi(url, session).fetch(("workflow", "spaced"))
    assert fetched.text == SPACED  # as sent: spacing, escapes and all
    assert fetched.data == {"id": "spaced", "name": "caf\u00e9 \u2615", "etag": "e1"}
