"""Issue 12 items 1 and 4: bounded response bodies, and ids that cannot change the path.

Both against real aiohttp servers on loopback: one that streams a body that never ends
(or trickles one), and one that records the raw path of every request it gets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from _support import data_of
from aiohttp import web

from querysync import FetchError
from querysync._nodetool import NodeToolApi, endpoint_for

MIB = 1024 * 1024


def rss_bytes() -> int:
    """This process's resident set size now (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def start(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def endless() -> AsyncIterator[tuple[str, list[int]]]:
    """A server whose bodies never end: chunked 1 MiB pieces, or one byte at a time."""
    sent: list[int] = [0]
    chunk = b" " * MIB

    async def flood(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"next": "", "workflows": [')
        try:
            while True:
                await response.write(chunk)
                sent[0] += len(chunk)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            while True:
                await response.write(b" ")
                await asyncio.sleep(0.02)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    async def declared(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b" " * (2 * MIB), content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/workflows/", flood)
    app.router.add_get("/api/jobs/", trickle)
    app.router.add_get("/api/assets/", declared)
    runner, url = await start(app)
    try:
        yield url, sent
    finally:
        await runner.cleanup()


async def test_a_body_that_never_ends_stops_at_max_body_with_rss_bounded(
    endless: tuple[str, list[int]],
) -> None:
    url, sent = endless
    async with aiohttp.ClientSession() as session:
        api = NodeToolApi(url, session, timeout=30.0, max_body=16 * MIB)
        before = rss_bytes()
        with pytest.raises(FetchError, match="larger than max_body"):
            data_of(await api.fetch(("workflows",)))
        grown = rss_bytes() - before
    # What was held is the limit and a chunk or two in flight, never the stream.
    assert grown < 64 * MIB, grown
    assert api.counts["too_large"] == 1
    # The server did stream past the limit: the client stopped, not the server.
    assert sent[0] >= 16 * MIB


async def test_a_declared_length_over_max_body_is_refused_before_reading(
    endless: tuple[str, list[int]],
) -> None:
    url, _ = endless
    async with aiohttp.ClientSession() as session:
        api = NodeToolApi(url, session, max_body=MIB)
        with pytest.raises(FetchError, match="larger than max_body"):
            data_of(await api.fetch(("assets",)))


async def test_the_timeout_bounds_a_trickling_body(endless: tuple[str, list[int]]) -> None:
    url, _ = endless
    async with aiohttp.ClientSession() as session:
        api = NodeToolApi(url, session, timeout=0.3)
        with pytest.raises(FetchError, match="timed out"):
            data_of(await api.fetch(("jobs",)))


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[str, list[str]]]:
    """A server that answers every path and records the raw path (and query) it got."""
    seen: list[str] = []

    async def anything(request: web.Request) -> web.StreamResponse:
        seen.append(request.raw_path)
        # Not empty: an empty per-thread list would add a GET of its thread.
        one = [{"id": "x"}]
        return web.json_response({"next": "", "workflows": one, "versions": one, "messages": one})

    app = web.Application()
    app.router.add_get("/{tail:.*}", anything)
    runner, url = await start(app)
    try:
        yield url, seen
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    "key",
    [
        ("workflow", "."),
        ("workflow", ".."),
        ("asset", "."),
        ("job", ".."),
        ("workflow_versions", "."),
        ("workflow_versions", ".."),
        ("thread", ".."),
    ],
    ids=repr,
)
async def test_dot_segment_ids_are_rejected_and_never_requested(
    recorder: tuple[str, list[str]], key: tuple[str, str]
) -> None:
    url, seen = recorder
    async with aiohttp.ClientSession() as session:
        api = NodeToolApi(url, session)
        with pytest.raises(FetchError, match="cannot be expressed"):
            data_of(await api.fetch(key))
    assert seen == []
    assert api.counts["rejected_keys"] == 1
    assert endpoint_for(key) is None


@pytest.mark.parametrize(
    ("key", "raw"),
    [
        (("workflow", "a/b"), "/api/workflows/a%2Fb"),
        (("workflow", "%2e"), "/api/workflows/%252e"),
        (("workflow", "%2E%2E"), "/api/workflows/%252E%252E"),
        (("workflow", "a?b#c"), "/api/workflows/a%3Fb%23c"),
        (("workflow", "..."), "/api/workflows/..."),
        (("workflow", "a b;c"), "/api/workflows/a%20b%3Bc"),
        (("workflow_versions", "../x"), "/api/workflows/..%2Fx/versions"),
        (("messages", "t&x=1"), "/api/messages/?thread_id=t%26x%3D1"),
        (("messages", "../../threads"), "/api/messages/?thread_id=..%2F..%2Fthreads"),
    ],
    ids=repr,
)
async def test_other_ids_reach_their_own_endpoint(
    recorder: tuple[str, list[str]], key: tuple[str, str], raw: str
) -> None:
    url, seen = recorder
    async with aiohttp.ClientSession() as session:
        await NodeToolApi(url, session).fetch(key)
    assert seen == [raw]
    assert endpoint_for(key) == raw
