"""The REST fetchers against a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from _support import data_of
from aiohttp import web

from querysync import FetchError, ResourceGone
from querysync._nodetool import LIST_KEYS, NodeToolApi, endpoint_for
from querysync.server import NodeToolServer

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
            data_of(await api.fetch(("workflow", wid)))
    assert isinstance(info.value, FetchError)


async def test_unreachable_server_is_a_fetch_error() -> None:
    async with aiohttp.ClientSession() as session:
        api = NodeToolApi("http://127.0.0.1:9", session, timeout=1.0)
        with pytest.raises(FetchError, match="GET /api/jobs/"):
            data_of(await api.fetch(("jobs",)))


async def test_key_without_endpoint_is_a_fetch_error() -> None:
    async with aiohttp.ClientSession() as session:
        api = NodeToolApi("http://127.0.0.1:9", session)
        with pytest.raises(FetchError, match="no NodeTool endpoint"):
            data_of(await api.fetch(("nope",)))


# -- credentials ---------------------------------------------------------------------------


@pytest.fixture
async def expiring() -> AsyncIterator[NodeToolServer]:
    async with NodeToolServer(
        token_ttl=30.0, ping_interval=None, stats_interval=None
    ) as server:
        yield server


async def test_a_401_asks_the_source_once_and_repeats_the_request_once(
    expiring: NodeToolServer,
) -> None:
    good = expiring.issue_token()
    answers = iter(["not-issued-token", good])
    async with aiohttp.ClientSession() as session:
        api = NodeToolApi(expiring.api_url, session, token=lambda: next(answers))
        body = data_of(await api.fetch(("workflows",)))
        assert body["workflows"] == []
        assert data_of(await api.fetch(("jobs",))) == {"jobs": [], "next_start_key": None}
    assert (api.counts["unauthorized"], api.counts["token_refreshes"]) == (1, 1)
    assert expiring.counts["rest_unauthorized"] == 1


async def test_a_second_401_is_a_fetch_error_for_that_fetch_only(
    expiring: NodeToolServer,
) -> None:
    calls = 0

    def source() -> str:
        nonlocal calls
        calls += 1
        return f"never-valid-{calls}"

    async with aiohttp.ClientSession() as session:
        api = NodeToolApi(expiring.api_url, session, token=source)
        with pytest.raises(FetchError, match="HTTP 401") as raised:
            data_of(await api.fetch(("workflows",)))
    assert calls == 2
    assert "never-valid" not in str(raised.value)
    assert expiring.counts["rest_unauthorized"] == 2


async def test_a_fixed_token_is_not_retried_after_a_401(expiring: NodeToolServer) -> None:
    async with aiohttp.ClientSession() as session:
        api = NodeToolApi(expiring.api_url, session, token="fixed-but-wrong")
        with pytest.raises(FetchError, match="HTTP 401"):
            data_of(await api.fetch(("workflows",)))
    assert expiring.counts["rest_unauthorized"] == 1
    assert api.counts["token_refreshes"] == 0


async def test_a_failing_token_source_is_a_counted_fetch_error(expiring: NodeToolServer) -> None:
    def source() -> str:
        raise RuntimeError("vault sealed")

    async with aiohttp.ClientSession() as session:
        api = NodeToolApi(expiring.api_url, session, token=source)
        with pytest.raises(FetchError, match="vault sealed"):
            data_of(await api.fetch(("workflows",)))
    assert api.counts["token_errors"] == 1
    assert expiring.counts["rest_requests"] == 0


async def test_the_api_repr_and_errors_hide_url_credentials() -> None:
    async with aiohttp.ClientSession() as session:
        api = NodeToolApi("http://user:PASSW0RD@127.0.0.1:9", session, timeout=1.0)
        assert "PASSW0RD" not in repr(api)
        with pytest.raises(FetchError) as raised:
            data_of(await api.fetch(("jobs",)))
    assert "PASSW0RD" not in str(raised.value)


async def test_fetch_returns_the_data_and_the_text_the_server_sent(
    api_server: tuple[str, list[web.Request]],
) -> None:
    url, _ = api_server
    async with aiohttp.ClientSession() as session:
        fetched = await NodeToolApi(url, session).fetch(("workflow", "spaced"))
    assert fetched.text == SPACED  # as sent: spacing, escapes and all
    assert fetched.data == {"id": "spaced", "name": "caf\u00e9 \u2615", "etag": "e1"}
