"""Fetchers that fail: retried with backoff, last good data kept, stale and error recorded.

A small aiohttp app on loopback plays a NodeTool REST API whose answers a test scripts
per resource id: good JSON, HTTP 500, a hang past the client's timeout, a body that is not
JSON, a dropped connection, or 404. Invalidations come through the real pipeline.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from reactivex.subject import Subject

from querysync._keys import QueryKey
from querysync._nodetool import NodeToolApi
from querysync._pipeline import build_pipeline
from querysync.sinks import CacheEvent, QueryCache

RETRY_DELAY = 0.02
RETRIES = 3


@dataclass
class Api:
    """The scripted REST server: ``script[id]`` is the list of answers still to give."""

    url: str = ""
    script: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    version: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    requests: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def body(self, rid: str) -> dict[str, Any]:
        version = self.version[rid]
        return {"id": rid, "etag": f"{rid}-v{version}", "name": f"{rid} v{version}"}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        rid = request.match_info["id"]
        self.requests[rid].append(asyncio.get_running_loop().time())
        plan = self.script[rid]
        answer = plan.pop(0) if len(plan) > 1 else (plan[0] if plan else "ok")
        if answer == "500":
            return web.Response(status=500, text="Internal Server Error")
        if answer == "404":
            return web.json_response({"detail": "Workflow not found"}, status=404)
        if answer == "malformed":
            cut = json.dumps(self.body(rid))[:-9]
            return web.Response(text=cut, content_type="application/json")
        if answer == "hang":
            # Longer than the client waits; released at teardown so the server can stop.
            await self.release.wait()
            return web.Response(status=503)
        if answer == "reset":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        assert answer == "ok", answer
        return web.json_response(self.body(rid))

    async def list_(self, request: web.Request) -> web.StreamResponse:
        self.requests["*list*"].append(asyncio.get_running_loop().time())
        return web.json_response({"next": None, "workflows": [self.body(r) for r in ("steady",)]})


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    state = Api()
    app = web.Application()
    app.router.add_get("/api/workflows/", state.list_)
    app.router.add_get("/api/workflows/{id}", state.handle)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield state
    finally:
        state.release.set()
        await runner.cleanup()


@dataclass
class Rig:
    cache: QueryCache
    client: NodeToolApi
    subject: Subject[Any]
    events: list[CacheEvent]

    def announce(self, *ids: str) -> None:
        """The server says these workflows changed (unknown etags: nothing proves them fresh)."""
        for rid in ids:
            self.subject.on_next(
                json.dumps(
                    {
                        "type": "resource_change",
                        "event": "updated",
                        "resource_type": "workflow",
                        "resource": {"id": rid, "etag": "changed"},
                    }
                )
            )

    def of(self, kind: str, rid: str) -> list[CacheEvent]:
        return [e for e in self.events if e.kind == kind and e.key == ("workflow", rid)]


@pytest.fixture
async def rig(api: Api, tmp_path: Path) -> AsyncIterator[Rig]:
    async with aiohttp.ClientSession() as session:
        cache = QueryCache(
            tmp_path / "cache", retries=RETRIES, retry_delay=RETRY_DELAY, retry_cap=1.0
        )
        client = NodeToolApi(api.url, session, timeout=0.2)
        client.register(cache)
        subject: Subject[Any] = Subject()
        events: list[CacheEvent] = []
        pipeline = build_pipeline(subject, cache, window=None, refetch="all")
        errors: list[Exception] = []
        sub = pipeline.observable.subscribe(on_error=errors.append)
        events_sub = cache.events().subscribe(events.append)
        async with asyncio.timeout(10):
            await cache.fetch(("workflows",))
        try:
            yield Rig(cache, client, subject, events)
            assert errors == []
        finally:
            sub.dispose()
            events_sub.dispose()
            await cache.aclose()


async def settle(cache: QueryCache) -> None:
    async with asyncio.timeout(10):
        await cache.wait_idle()


async def test_transient_failures_are_retried_with_backoff_until_one_succeeds(
    api: Api, rig: Rig
) -> None:
    api.script["flaky"] = ["500", "hang", "malformed", "ok"]
    api.version["flaky"] = 1
    async with asyncio.timeout(10):
        entry = await rig.cache.fetch(("workflow", "flaky"))
    assert entry is not None
    assert entry.data == api.body("flaky")
    assert (entry.stale, entry.error) == (False, None)

    retries = [e.error or "" for e in rig.of("fetch_retry", "flaky")]
    assert len(retries) == 3
    assert "HTTP 500" in retries[0]
    assert "timed out" in retries[1]
    assert "malformed JSON" in retries[2]
    # Each wait is at least the policy's: 0.02 s, then 0.04, then 0.08 (doubling).
    times = api.requests["flaky"]
    assert len(times) == 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for n, gap in enumerate(gaps):
        assert gap >= 0.9 * RETRY_DELAY * 2**n, gaps
    assert rig.cache.stats()["fetch_failed"] == 0


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        ("500", "HTTP 500"),
        ("hang", "timed out"),
        ("malformed", "malformed JSON"),
        ("reset", "Disconnected"),
    ],
)
async def test_a_failing_refetch_keeps_the_last_good_data_stale_with_its_error(
    api: Api, rig: Rig, failure: str, error: str, tmp_path: Path
) -> None:
    for rid in ("broken", "steady", "bystander"):
        api.version[rid] = 1
        async with asyncio.timeout(10):
            await rig.cache.fetch(("workflow", rid))
    good = rig.cache.get(("workflow", "broken"))
    bystander = rig.cache.get(("workflow", "bystander"))
    assert good is not None
    assert bystander is not None
    requests_before = len(api.requests["broken"])

    api.script["broken"] = [failure]
    api.version["broken"] = api.version["steady"] = 2
    rig.announce("broken", "steady")
    await settle(rig.cache)

    entry = rig.cache.get(("workflow", "broken"))
    assert entry is not None
    assert entry.data == good.data  # the last good data, not the failure
    assert entry.stale
    assert entry.error is not None
    assert error in entry.error
    assert len(rig.of("fetch_started", "broken")) == 1 + RETRIES + 1  # first fetch, then 4
    assert len(rig.of("fetch_retry", "broken")) == RETRIES
    requests = len(api.requests["broken"]) - requests_before
    # aiohttp itself retries a GET once when a reused connection drops before the answer.
    assert requests == RETRIES + 1 if failure != "reset" else requests >= RETRIES + 1
    assert len(rig.of("fetch_failed", "broken")) == 1

    # Nothing else disturbed: the other changed key is fresh at its new state, and the
    # key nobody announced was neither refetched nor marked.
    steady = rig.cache.get(("workflow", "steady"))
    assert steady is not None
    assert not steady.stale
    assert steady.error is None
    assert steady.data == api.body("steady")
    assert rig.cache.get(("workflow", "bystander")) == bystander
    assert rig.of("fetch_failed", "steady") == []
    workflows = rig.cache.get(("workflows",))
    assert workflows is not None
    assert not workflows.stale

    # The stale flag and the error survive a restart, next to the data they qualify.
    await rig.cache.aclose()
    with QueryCache(tmp_path / "cache") as reopened:
        again = reopened.get(("workflow", "broken"))
        assert again is not None
        assert (again.data, again.stale, again.error) == (good.data, True, entry.error)


async def test_the_next_change_after_a_failure_heals_the_entry(api: Api, rig: Rig) -> None:
    api.version["broken"] = 1
    async with asyncio.timeout(10):
        await rig.cache.fetch(("workflow", "broken"))
    api.script["broken"] = ["500"]
    rig.announce("broken")
    await settle(rig.cache)
    failed = rig.cache.get(("workflow", "broken"))
    assert failed is not None
    assert failed.error is not None

    api.script["broken"] = ["ok"]
    api.version["broken"] = 3
    rig.announce("broken")
    await settle(rig.cache)
    healed = rig.cache.get(("workflow", "broken"))
    assert healed is not None
    assert (healed.data, healed.stale, healed.error) == (api.body("broken"), False, None)


async def test_404_removes_the_entry_at_once_without_retrying(api: Api, rig: Rig) -> None:
    """A 404 is not a failure to retry: the resource is gone, and so is its entry."""
    for rid in ("doomed", "steady"):
        api.version[rid] = 1
        async with asyncio.timeout(10):
            await rig.cache.fetch(("workflow", rid))
    api.script["doomed"] = ["404"]
    api.version["steady"] = 2
    rig.announce("doomed", "steady")
    await settle(rig.cache)

    assert rig.cache.get(("workflow", "doomed")) is None
    assert len(api.requests["doomed"]) == 2  # the first fetch, then one 404
    assert rig.of("fetch_retry", "doomed") == []
    assert rig.of("fetch_failed", "doomed") == []  # not a failure: the resource is gone
    gone = rig.of("fetch_gone", "doomed")
    assert len(gone) == 1
    assert "404" in (gone[0].error or "")
    assert len(rig.of("removed", "doomed")) == 1
    steady = rig.cache.get(("workflow", "steady"))
    assert steady is not None
    assert steady.data == api.body("steady")
    assert not steady.stale


async def test_raw_fetchers_that_raise_or_return_non_json(tmp_path: Path) -> None:
    answers: dict[str, Any] = {"k": {"v": 1}, "other": {"v": 1}}

    async def fetch(key: QueryKey) -> Any:
        answer = answers[str(key[1])]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async with QueryCache(tmp_path / "c", retries=1, retry_delay=0.001) as cache:
        cache.register_fetcher(("x",), fetch)
        async with asyncio.timeout(10):
            await cache.fetch(("x", "k"))
            await cache.fetch(("x", "other"))
        other = cache.get(("x", "other"))
        bad: list[tuple[Any, str]] = [
            (RuntimeError("backend exploded"), "RuntimeError: backend exploded"),
            (KeyError("k"), "KeyError"),
            (math.nan, "not JSON"),
            ({"when": object()}, "not JSON"),
            ({1, 2}, "not JSON"),
        ]
        for answer, error in bad:
            answers["k"] = answer
            cache.invalidate(("x", "k"), refetch="all")
            await settle(cache)
            entry = cache.get(("x", "k"))
            assert entry is not None
            assert (entry.data, entry.stale) == ({"v": 1}, True)
            assert entry.error is not None
            assert error in entry.error, entry.error
        assert cache.get(("x", "other")) == other
        assert cache.stats()["apply_errors"] == 0


async def test_a_hung_fetcher_holds_only_its_own_key_and_close_still_returns(
    tmp_path: Path,
) -> None:
    """Until its fetch_timeout (30 s by default; see test_cache_window for what follows) a
    fetcher that never returns costs one concurrency slot, and aclose() cancels it."""
    hung = asyncio.Event()

    async def fetch(key: QueryKey) -> Any:
        if key[1] == "hang":
            hung.set()
            await asyncio.Event().wait()
        return {"key": list(key)}

    cache = QueryCache(tmp_path / "c", concurrency=2)
    cache.register_fetcher(("x",), fetch)
    cache.prefetch(("x", "hang"))
    async with asyncio.timeout(5):
        await hung.wait()
        for i in range(20):
            entry = await cache.fetch(("x", str(i)))
            assert entry is not None
            assert entry.data == {"key": ["x", str(i)]}
    assert cache.stats()["in_flight"] == 1
    async with asyncio.timeout(5):
        await cache.aclose()


async def test_an_invalidation_as_a_fetch_returns_is_not_lost(tmp_path: Path) -> None:
    """Regression: the fetch task had returned but its done callback had not run yet; an
    invalidation in that turn of the loop marked a flight that never ran again, and the
    entry stayed stale (and a start() joined the finished task)."""
    state = {"v": 1}

    async def fetch(key: QueryKey) -> Any:
        return state["v"]

    async with QueryCache(tmp_path / "c") as cache:
        cache.register_fetcher(("k",), fetch)
        async with asyncio.timeout(5):
            await cache.fetch(("k",))
        loop = asyncio.get_running_loop()

        def change() -> None:
            state["v"] = 2
            cache.invalidate(("k",), refetch="all")

        cache.invalidate(("k",), refetch="all")  # a refetch task, scheduled to run
        loop.call_soon(change)  # runs right after that task's only step
        await settle(cache)
        entry = cache.get(("k",))
        assert entry is not None
        assert (entry.data, entry.stale) == (2, False)

        # The same turn, through a watcher: its refetch must not join the finished task.
        seen: list[Any] = []
        sub = cache.watch(("k",)).subscribe(seen.append)
        state["v"] = 3
        cache.invalidate(("k",))
        loop.call_soon(lambda: (state.update(v=4), cache.invalidate(("k",))))
        await settle(cache)
        sub.dispose()
        entry = cache.get(("k",))
        assert entry is not None
        assert (entry.data, entry.stale) == (4, False)
        assert seen[-1] == 4


class Gate:
    """A fetcher whose answers wait until the test opens the gate."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.open = asyncio.Event()
        self.calls = 0

    async def __call__(self, key: QueryKey) -> Any:
        self.calls += 1
        await self.open.wait()
        return self.answer


async def test_a_removed_key_is_not_revived_by_an_invalidation_of_its_prefix(
    tmp_path: Path,
) -> None:
    """Regression, found by the fuzzer: a thread deleted while its message list was being
    refetched came back as an empty list (the REST answer for a thread that is gone),
    because the deletion of its messages invalidated ("messages",) after the removal and
    re-armed the discarded fetch."""
    gate = Gate({"messages": []})
    async with QueryCache(tmp_path / "c") as cache:
        cache.register_fetcher(("messages",), gate)
        cache.set(("messages", "t1"), {"messages": [{"id": "m1"}]})
        cache.set(("messages",), {"messages": [{"id": "m1"}]})
        cache.invalidate(("messages", "t1"), exact=True, refetch="all")  # a refetch, held
        cache.remove(("messages", "t1"))  # the thread is deleted meanwhile
        cache.invalidate(("messages",), refetch="all")  # ...and so are its messages
        gate.open.set()
        await settle(cache)
        assert cache.get(("messages", "t1")) is None
        lists = cache.get(("messages",))
        assert lists is not None
        assert not lists.stale

        # Removed before its refetch even began: that refetch never runs.
        cache.set(("messages", "t2"), {"messages": []})
        calls = gate.calls
        cache.invalidate(("messages", "t2"), refetch="all")
        cache.remove(("messages", "t2"))
        await settle(cache)
        assert cache.get(("messages", "t2")) is None
        assert gate.calls == calls


async def test_a_key_asked_for_again_after_its_removal_is_fetched(tmp_path: Path) -> None:
    """The other side of the rule above: a fetch asked for by name (the resource created
    again, a prefetch, a watcher) after a removal must not join the fetch being dropped."""
    gate = Gate({"id": "w1", "etag": "e2"})
    async with QueryCache(tmp_path / "c") as cache:
        cache.register_fetcher(("workflow",), gate)
        cache.set(("workflow", "w1"), {"id": "w1", "etag": "e1"})
        cache.invalidate(("workflow", "w1"), refetch="all")
        cache.remove(("workflow", "w1"))
        cache.prefetch(("workflow", "w1"))
        gate.open.set()
        await settle(cache)
        entry = cache.get(("workflow", "w1"))
        assert entry is not None
        assert (entry.data, entry.stale) == ({"id": "w1", "etag": "e2"}, False)

        seen: list[Any] = []
        gate.open.clear()
        cache.invalidate(("workflow", "w1"), refetch="all")
        cache.remove(("workflow", "w1"))
        sub = cache.watch(("workflow", "w1")).subscribe(seen.append)
        gate.open.set()
        await settle(cache)
        sub.dispose()
        assert seen == [{"id": "w1", "etag": "e2"}]
