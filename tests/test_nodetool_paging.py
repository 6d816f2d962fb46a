"""NodeToolApi reads every page of a list, with each endpoint's own paging names.

The paging names are written here from the table in shared/nodetool-protocol.md, not
read from the endpoint table under test. Servers are real aiohttp apps on loopback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from _support import data_of, obj
from aiohttp import web

from querysync import FetchError, ResourceGone
from querysync._nodetool import NodeToolApi
from querysync.sinks import QueryCache

# key -> (path, items member, cursor parameter, next member, page-size parameter)
PROTOCOL: dict[tuple[str, ...], tuple[str, str, str, str, str | None]] = {
    ("workflows",): ("/api/workflows/", "workflows", "cursor", "next", "limit"),
    ("workflow_versions", "w1"): (
        "/api/workflows/w1/versions",
        "versions",
        "cursor",
        "next",
        "limit",
    ),
    ("jobs",): ("/api/jobs/", "jobs", "start_key", "next_start_key", "limit"),
    ("assets",): ("/api/assets/", "assets", "cursor", "next", "page_size"),
    ("threads",): ("/api/threads/", "threads", "cursor", "next", "limit"),
    ("messages", "t1"): ("/api/messages/", "messages", "cursor", "next", "limit"),
    ("workspaces",): ("/api/workspaces/", "workspaces", "cursor", "next_cursor", "limit"),
    ("secrets",): ("/api/settings/secrets", "secrets", "key", "next_key", None),
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(routes: dict[str, Handler]) -> tuple[web.AppRunner, str]:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def paged(
    items: str, cursor: str, nxt: str, pages: list[list[str]], seen: list[dict[str, str]]
) -> Handler:
    """Serves ``pages`` in order; page n+1 is asked for with cursor "c<n+1>"."""

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.query))
        at = request.query.get(cursor)
        number = int(at[1:]) if at else 0
        more = number + 1 < len(pages)
        return web.json_response(
            {items: [{"id": i} for i in pages[number]], nxt: f"c{number + 1}" if more else ""}
        )

    return handle


@pytest.mark.parametrize("key", sorted(PROTOCOL), ids=repr)
async def test_every_page_is_read_with_the_endpoints_own_names(
    http: aiohttp.ClientSession, key: tuple[str, ...]
) -> None:
    path, items, cursor, nxt, limit = PROTOCOL[key]
    seen: list[dict[str, str]] = []
    pages = [["a", "b"], ["c", "d"], ["e"]]
    runner, url = await serve({path: paged(items, cursor, nxt, pages, seen)})
    try:
        api = NodeToolApi(url, http, page_size=2)
        body = data_of(await api.fetch(key))
    finally:
        await runner.cleanup()
    assert [i["id"] for i in body[items]] == ["a", "b", "c", "d", "e"]
    assert body[nxt] == ""
    assert "incomplete" not in body
    assert [q.get(cursor) for q in seen] == [None, "c1", "c2"]
    if limit is not None:
        assert all(q[limit] == "2" for q in seen)
    if key[0] == "messages":
        assert all(q["thread_id"] == "t1" for q in seen)
    assert api.counts["pages"] == 2


async def test_a_server_that_never_stops_paging_stops_at_max_pages(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    asked = 0

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal asked
        asked += 1
        # Always a new cursor: no loop to detect, only the bound stops it.
        return web.json_response({"next": f"c{asked}", "threads": [{"id": f"t{asked}"}]})

    runner, url = await serve({"/api/threads/": endless})
    try:
        api = NodeToolApi(url, http, max_pages=7)
        with caplog.at_level(logging.WARNING, "querysync.nodetool"):
            body = data_of(await api.fetch(("threads",)))
    finally:
        await runner.cleanup()
    assert asked == 7
    assert [t["id"] for t in body["threads"]] == [f"t{i}" for i in range(1, 8)]
    assert body["incomplete"] is True
    assert body["next"] == "c7"  # the first page not read
    assert api.counts["incomplete"] == 1
    assert "max_pages=7" in caplog.text


def bad_second_page(page: Any) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.query.get("cursor") is None:
            return web.json_response({"next": "c1", "threads": [{"id": "t0"}]})
        if page == "boom":
            return web.json_response({"detail": "boom"}, status=500)
        return web.json_response(page)

    return handle


@pytest.mark.parametrize(
    ("page", "words"),
    [
        ({"next": "c1", "threads": [{"id": "t1"}]}, "came back"),  # a cursor loop
        ({"next": "", "workflows": []}, "no list under 'threads'"),
        ([{"id": "t1"}], "expected a JSON object"),
        ({"next": "c2", "threads": []}, "empty page names a next one"),
        ({"next": ["c2"], "threads": [{"id": "t1"}]}, "not a cursor"),
        ("boom", "HTTP 500"),
    ],
    ids=["loop", "wrong-member", "not-an-object", "empty-with-next", "bad-cursor", "fails"],
)
async def test_a_bad_page_is_a_counted_fetch_error(
    http: aiohttp.ClientSession, page: Any, words: str
) -> None:
    runner, url = await serve({"/api/threads/": bad_second_page(page)})
    try:
        api = NodeToolApi(url, http)
        with pytest.raises(FetchError, match=words):
            data_of(await api.fetch(("threads",)))
    finally:
        await runner.cleanup()
    if page != "boom":
        assert api.counts["bad_pages"] == 1


async def test_a_page_failing_halfway_keeps_the_last_good_entry_and_other_keys(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    broken = False

    async def threads(request: web.Request) -> web.StreamResponse:
        if request.query.get("cursor") is None:
            return web.json_response({"next": "c1", "threads": [{"id": "t0"}]})
        if broken:
            return web.json_response({"detail": "down"}, status=503)
        return web.json_response({"next": "", "threads": [{"id": "t1"}]})

    async def jobs(request: web.Request) -> web.StreamResponse:
        return web.json_response({"jobs": [{"id": "j1"}], "next_start_key": None})

    runner, url = await serve({"/api/threads/": threads, "/api/jobs/": jobs})
    cache = QueryCache(tmp_path / "cache", retries=1, retry_delay=0.0)
    try:
        api = NodeToolApi(url, http)
        api.register(cache)
        good = await cache.fetch(("threads",))
        assert good is not None
        assert await cache.fetch(("jobs",)) is not None
        broken = True
        cache.invalidate(("threads",), refetch="all")
        cache.invalidate(("jobs",), refetch="all")
        await cache.wait_idle()
        kept = cache.get(("threads",))
        assert kept is not None
        assert [t["id"] for t in obj(kept.data)["threads"]] == ["t0", "t1"]
        assert kept.stale
        assert kept.error is not None
        assert "HTTP 503" in kept.error
        jobs_entry = cache.get(("jobs",))
        assert jobs_entry is not None
        assert not jobs_entry.stale
    finally:
        await cache.aclose()
        await runner.cleanup()


async def test_an_empty_list_of_a_gone_thread_is_gone_not_empty(
    http: aiohttp.ClientSession,
) -> None:
    # The live server answers a deleted thread's messages with 200 and [] (not 404).
    async def messages(request: web.Request) -> web.StreamResponse:
        return web.json_response({"next": "", "messages": []})

    async def thread(request: web.Request) -> web.StreamResponse:
        if request.match_info["id"] == "alive":
            return web.json_response({"id": "alive"})
        return web.json_response({"detail": "Thread not found"}, status=404)

    runner, url = await serve({"/api/messages/": messages, "/api/threads/{id}": thread})
    try:
        api = NodeToolApi(url, http)
        assert data_of(await api.fetch(("messages", "alive"))) == {"next": "", "messages": []}
        with pytest.raises(ResourceGone):
            data_of(await api.fetch(("messages", "deleted")))
    finally:
        await runner.cleanup()
    assert api.counts["owners_gone"] == 1


async def test_lists_without_paging_are_read_once(http: aiohttp.ClientSession) -> None:
    asked: list[str] = []

    async def collections(request: web.Request) -> web.StreamResponse:
        asked.append(request.path_qs)
        return web.json_response({"collections": [{"name": "c"}], "count": 1})

    async def models(request: web.Request) -> web.StreamResponse:
        asked.append(request.path_qs)
        return web.json_response([{"id": "m"}])

    runner, url = await serve({"/api/collections/": collections, "/api/models/all": models})
    try:
        api = NodeToolApi(url, http)
        listed = data_of(await api.fetch(("collections",)))
        assert listed == {"collections": [{"name": "c"}], "count": 1}
        assert data_of(await api.fetch(("models",))) == [{"id": "m"}]
    finally:
        await runner.cleanup()
    assert asked == ["/api/collections/", "/api/models/all"]


async def test_pages_share_one_fetcher_call_and_its_deadline(
    http: aiohttp.ClientSession,
) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        if request.query.get("cursor"):
            await asyncio.sleep(1)
        return web.json_response({"next": "c1", "threads": [{"id": "t"}]})

    runner, url = await serve({"/api/threads/": slow})
    try:
        api = NodeToolApi(url, http, timeout=0.2)
        with pytest.raises(FetchError, match="timed out"):
            data_of(await api.fetch(("threads",)))
    finally:
        await runner.cleanup()


async def test_a_change_while_the_pages_are_read_fetches_the_list_again(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    second_page_asked = asyncio.Event()
    release = asyncio.Event()
    version = 0

    async def threads(request: web.Request) -> web.StreamResponse:
        if request.query.get("cursor") is None:
            return web.json_response({"next": "c1", "threads": [{"id": "t0", "v": version}]})
        second_page_asked.set()
        await release.wait()
        return web.json_response({"next": "", "threads": [{"id": "t1", "v": version}]})

    runner, url = await serve({"/api/threads/": threads})
    cache = QueryCache(tmp_path / "cache", retries=0)
    starts: list[object] = []
    events = cache.events().subscribe(
        lambda e: starts.append(e.key) if e.kind == "fetch_started" else None
    )
    try:
        NodeToolApi(url, http).register(cache)
        cache.prefetch(("threads",))
        async with asyncio.timeout(10):
            await second_page_asked.wait()
        version = 1  # a change lands between the pages...
        cache.invalidate(("threads",), refetch="all")  # ...and is announced
        release.set()
        async with asyncio.timeout(10):
            await cache.wait_idle()
        entry = cache.get(("threads",))
        assert entry is not None
        assert not entry.stale
        assert [t["v"] for t in obj(entry.data)["threads"]] == [1, 1]
        assert starts == [("threads",), ("threads",)]
    finally:
        events.dispose()
        await cache.aclose()
        await runner.cleanup()
