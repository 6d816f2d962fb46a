"""Active queries and refetch: shared fetches, refetch after invalidation, retries, concurrency."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from _support import obj

from querysync import ConfigurationError, QueryKey, ResourceGone
from querysync._fetched import Fetched
from querysync.sinks import CacheEvent, QueryCache
from querysync.sinks._fetch import RetryPolicy

W1: QueryKey = ("workflow", "w1")


class Backend:
    """A fetcher that counts its calls, can be held at a gate, and can be made to fail."""

    def __init__(self, *, gated: bool = False) -> None:
        self.calls: list[QueryKey] = []
        self.version = 0
        self.fail = 0  # how many upcoming calls raise
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()
        self.started = asyncio.Event()
        self.running = 0
        self.max_running = 0
        self._running_changed = asyncio.Condition()

    async def wait_running(self, n: int) -> None:
        async with self._running_changed:
            await self._running_changed.wait_for(lambda: self.running >= n)

    async def __call__(self, key: QueryKey) -> Any:
        self.calls.append(key)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        self.started.set()
        async with self._running_changed:
            self._running_changed.notify_all()
        try:
            await self.gate.wait()
            if self.fail:
                self.fail -= 1
                raise RuntimeError("backend down")
            self.version += 1
            return {"id": key[-1], "etag": f"e{self.version}", "v": self.version}
        finally:
            self.running -= 1


@pytest.fixture
async def cache(tmp_path: Path) -> AsyncIterator[QueryCache]:
    async with QueryCache(tmp_path / "c", retry_delay=0.001, retry_cap=0.004) as c:
        yield c


def _events(cache: QueryCache) -> list[CacheEvent]:
    seen: list[CacheEvent] = []
    cache.events().subscribe(seen.append)
    return seen


async def test_watch_emits_current_then_fetches_stale_then_new_values(cache: QueryCache) -> None:
    backend = Backend()
    cache.register_fetcher(("workflow",), backend)
    cache.set(W1, {"id": "w1", "v": 0})
    cache.invalidate(W1, refetch="none")
    seen: list[Any] = []
    sub = cache.watch(W1).subscribe(seen.append)
    await cache.wait_idle()
    assert seen == [{"id": "w1", "v": 0}, {"id": "w1", "etag": "e1", "v": 1}]
    cache.set(W1, {"id": "w1", "v": 9})
    assert seen[-1] == {"id": "w1", "v": 9}
    sub.dispose()
    cache.set(W1, {"id": "w1", "v": 10})
    assert len(seen) == 3
    assert cache.stats()["active"] == 0


async def test_watch_fetches_a_missing_entry_and_skips_unchanged_values(cache: QueryCache) -> None:
    backend = Backend()
    cache.register_fetcher((), lambda key: _constant(backend, key))
    seen: list[Any] = []
    cache.watch(("jobs",)).subscribe(seen.append)
    await cache.wait_idle()
    cache.invalidate(("jobs",))
    await cache.wait_idle()
    assert len(backend.calls) == 2
    assert seen == [{"same": True}]


async def _constant(backend: Backend, key: QueryKey) -> Any:
    backend.calls.append(key)
    return {"same": True}


async def test_watch_of_a_fresh_entry_does_not_fetch(cache: QueryCache) -> None:
    backend = Backend()
    cache.register_fetcher(("workflow",), backend)
    cache.set(W1, {"id": "w1"})
    seen: list[Any] = []
    cache.watch(W1).subscribe(seen.append)
    await cache.wait_idle()
    assert backend.calls == []
    assert seen == [{"id": "w1"}]


async def test_longest_prefix_fetcher_serves_a_key(cache: QueryCache) -> None:
    general, specific = Backend(), Backend()
    cache.register_fetcher(("workflow",), general)
    cache.register_fetcher(("workflow", "w1"), specific)
    await cache.fetch(("workflow", "w1", "versions"))
    await cache.fetch(("workflow", "w10"))
    assert specific.calls == [("workflow", "w1", "versions")]
    assert general.calls == [("workflow", "w10")]


async def test_concurrent_fetches_of_a_key_share_one_call(cache: QueryCache) -> None:
    backend = Backend(gated=True)
    cache.register_fetcher(("workflow",), backend)
    waiters = [asyncio.ensure_future(cache.fetch(W1)) for _ in range(5)]
    await backend.started.wait()
    backend.gate.set()
    entries = await asyncio.gather(*waiters)
    assert len(backend.calls) == 1
    assert all(e is not None and obj(e.data)["v"] == 1 for e in entries)


async def test_invalidation_during_a_fetch_fetches_exactly_once_more(cache: QueryCache) -> None:
    backend = Backend(gated=True)
    cache.register_fetcher(("workflow",), backend)
    events = _events(cache)
    cache.watch(W1).subscribe(lambda _: None)
    await backend.started.wait()
    # The first fetch has no entry yet: the invalidation must still reach it.
    assert cache.invalidate(W1) == 0
    backend.gate.set()
    await cache.wait_idle()
    assert backend.calls == [W1, W1]
    entry = cache.get(W1)
    assert entry is not None
    assert (obj(entry.data)["v"], entry.stale) == (2, False)
    assert [e.kind for e in events if e.kind == "fetched"] == ["fetched", "fetched"]


async def test_burst_of_invalidations_during_a_fetch_costs_at_most_two(cache: QueryCache) -> None:
    backend = Backend()
    cache.register_fetcher(("workflow",), backend)
    cache.watch(W1).subscribe(lambda _: None)
    await cache.wait_idle()
    backend.gate.clear()
    backend.started.clear()
    cache.invalidate(W1)
    await backend.started.wait()
    for _ in range(1000):
        assert cache.invalidate(W1) == 1
    backend.gate.set()
    await cache.wait_idle()
    assert len(backend.calls) == 3  # the first load, the refetch, and one more after the burst
    assert cache.stats()["invalidated"] == 1001
    entry = cache.get(W1)
    assert entry is not None
    assert not entry.stale


async def test_invalidation_with_refetch_none_during_a_fetch_stores_stale(
    cache: QueryCache,
) -> None:
    backend = Backend(gated=True)
    cache.register_fetcher(("workflow",), backend)
    cache.prefetch(W1)
    await backend.started.wait()
    cache.invalidate(W1, refetch="none")
    backend.gate.set()
    await cache.wait_idle()
    assert len(backend.calls) == 1
    entry = cache.get(W1)
    assert entry is not None
    assert entry.stale


async def test_refetch_active_all_none(cache: QueryCache) -> None:
    backend = Backend()
    cache.register_fetcher((), backend)
    for key in [("a", 1), ("a", 2), ("a", 3)]:
        cache.set(key, {"v": 0})
    cache.watch(("a", 1)).subscribe(lambda _: None)
    cache.invalidate(("a",), refetch="none")
    await cache.wait_idle()
    assert backend.calls == []
    cache.invalidate(("a",))  # active: only the watched key
    await cache.wait_idle()
    assert backend.calls == [("a", 1)]
    cache.invalidate(("a",), refetch="all")
    await cache.wait_idle()
    assert sorted(backend.calls[1:]) == [("a", 1), ("a", 2), ("a", 3)]
    assert cache.stats()["stale"] == 0
    with pytest.raises(ValueError, match="refetch"):
        cache.invalidate(("a",), refetch="some")  # type: ignore[arg-type]


async def test_failures_retry_then_keep_last_good_data_and_record_error(
    tmp_path: Path,
) -> None:
    async with QueryCache(tmp_path / "c", retries=2, retry_delay=0.001, retry_cap=0.002) as cache:
        backend = Backend()
        cache.register_fetcher(("workflow",), backend)
        events = _events(cache)
        good = await cache.fetch(W1)
        assert good is not None
        backend.fail = 10
        failed = await cache.fetch(W1)
        assert failed is not None
        assert failed.data == good.data
        assert failed.stale
        assert failed.error == "RuntimeError: backend down"
        assert len(backend.calls) == 1 + 3
        kinds = [e.kind for e in events]
        assert kinds.count("fetch_retry") == 2
        assert kinds.count("fetch_failed") == 1
        assert kinds.count("fetch_started") == 4
        assert [e.error for e in events if e.kind == "fetch_failed"] == [failed.error]
        # The next success clears the error and the stale flag.
        backend.fail = 0
        ok = await cache.fetch(W1)
        assert ok is not None
        assert (ok.error, ok.stale) == (None, False)


async def test_a_failed_first_fetch_leaves_no_entry(cache: QueryCache) -> None:
    backend = Backend()
    backend.fail = 100
    cache.register_fetcher(("workflow",), backend)
    assert await cache.fetch(W1) is None
    assert cache.get(W1) is None
    assert cache.stats()["fetch_failed"] == 1


async def test_retry_then_success(cache: QueryCache) -> None:
    backend = Backend()
    backend.fail = 2
    cache.register_fetcher(("workflow",), backend)
    entry = await cache.fetch(W1)
    assert entry is not None
    assert (obj(entry.data)["v"], entry.error) == (1, None)
    assert len(backend.calls) == 3
    assert cache.stats()["fetch_retry"] == 2


def test_backoff_doubles_from_the_delay_and_stops_at_the_cap() -> None:
    policy = RetryPolicy(retries=6, delay=1.0, cap=30.0)
    assert [policy.backoff(n) for n in range(6)] == [1, 2, 4, 8, 16, 30]
    assert RetryPolicy().retries == 3
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(retries=-1)


async def test_concurrency_is_bounded(tmp_path: Path) -> None:
    async with QueryCache(tmp_path / "c", concurrency=3) as cache:
        backend = Backend(gated=True)
        cache.register_fetcher(("item",), backend)
        for i in range(10):
            cache.prefetch(("item", i))
        await backend.wait_running(3)
        for _ in range(20):
            await asyncio.sleep(0)
        assert backend.running == 3
        assert cache.stats()["in_flight"] == 10
        backend.gate.set()
        await cache.wait_idle()
        assert backend.max_running == 3
        assert len(backend.calls) == 10
        assert len(cache.keys(("item",))) == 10


async def test_same_etag_from_the_fetcher_still_clears_stale(cache: QueryCache) -> None:
    async def same(key: QueryKey) -> Any:
        return {"id": "w1", "etag": "e1"}

    cache.register_fetcher(("workflow",), same)
    cache.set(W1, {"id": "w1", "etag": "e1"})
    cache.invalidate(W1)
    entry = await cache.fetch(W1)
    assert entry is not None
    assert (entry.etag, entry.stale) == ("e1", False)


async def test_remove_during_a_fetch_drops_its_result(cache: QueryCache) -> None:
    backend = Backend(gated=True)
    cache.register_fetcher(("workflow",), backend)
    cache.set(W1, {"v": 0})
    cache.invalidate(W1, refetch="none")
    cache.prefetch(W1)
    await backend.started.wait()
    assert cache.remove(W1) == 1
    backend.gate.set()
    await cache.wait_idle()
    assert cache.get(W1) is None
    assert cache.stats()["fetch_discarded"] == 1


async def test_non_json_fetch_result_is_a_failure(cache: QueryCache) -> None:
    async def bad(key: QueryKey) -> Any:
        return {"when": object()}

    cache.register_fetcher(("workflow",), bad)
    assert await cache.fetch(W1) is None
    assert cache.stats()["fetch_failed"] == 1


async def test_fetch_errors_never_reach_the_loop_handler(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        async with QueryCache(tmp_path / "c", retries=1, retry_delay=0.001) as cache:

            async def boom(key: QueryKey) -> Any:
                raise ValueError("nope")

            cache.register_fetcher(("workflow",), boom)
            cache.prefetch(W1)
            cache.watch(("workflow", "w2")).subscribe(lambda _: None)
            await cache.wait_idle()
            assert cache.stats()["fetch_failed"] == 2
        gc.collect()
        await asyncio.sleep(0)
        assert reported == []
    finally:
        loop.set_exception_handler(None)


async def test_fetch_and_prefetch_need_a_fetcher(cache: QueryCache) -> None:
    with pytest.raises(ConfigurationError, match="no fetcher"):
        await cache.fetch(W1)
    with pytest.raises(ConfigurationError, match="no fetcher"):
        cache.prefetch(W1)


def test_without_a_loop_invalidate_only_marks(tmp_path: Path) -> None:
    calls: list[QueryKey] = []

    async def fetch(key: QueryKey) -> Any:
        calls.append(key)
        return 1

    with QueryCache(tmp_path / "c") as cache:
        cache.register_fetcher((), fetch)
        cache.set(W1, 0)
        seen: list[Any] = []
        cache.watch(W1).subscribe(seen.append)
        assert cache.invalidate(W1, refetch="all") == 1
        entry = cache.get(W1)
        assert entry is not None
        assert entry.stale
        assert seen == [0]
        with pytest.raises(ConfigurationError, match="event loop"):
            cache.prefetch(W1)
    assert calls == []


async def test_aclose_cancels_a_hanging_fetch(tmp_path: Path) -> None:
    cache = QueryCache(tmp_path / "c")
    backend = Backend(gated=True)
    cache.register_fetcher(("workflow",), backend)
    done: list[str] = []
    cache.watch(W1).subscribe(lambda _: None, on_completed=lambda: done.append("watch"))
    cache.events().subscribe(on_completed=lambda: done.append("events"))
    await backend.started.wait()
    await cache.aclose()
    assert cache.stats()["in_flight"] == 0
    assert sorted(done) == ["events", "watch"]


async def test_a_raising_watcher_does_not_break_the_cache(cache: QueryCache) -> None:
    def explode(_: Any) -> None:
        raise RuntimeError("subscriber bug")

    seen: list[Any] = []
    cache.watch(W1).subscribe(explode)
    cache.watch(W1).subscribe(seen.append)
    cache.set(W1, 1)
    cache.set(W1, 2)
    assert seen == [1, 2]
    assert cache.stats()["subscriber_errors"] == 2


async def test_a_gone_resource_is_removed_without_retries(cache: QueryCache) -> None:
    calls: list[QueryKey] = []

    async def gone(key: QueryKey) -> Any:
        calls.append(key)
        raise ResourceGone(f"GET /api/workflows/{key[1]}: 404 not found")

    cache.register_fetcher(("workflow",), gone)
    cache.set(W1, {"id": "w1"})
    cache.set(("workflow", "w10"), {"id": "w10"})
    events = _events(cache)
    assert await cache.fetch(W1) is None
    assert calls == [W1]
    assert cache.keys() == [("workflow", "w10")]
    kinds = [(e.kind, e.key) for e in events]
    assert ("fetch_gone", W1) in kinds
    assert ("removed", W1) in kinds
    assert cache.stats()["fetch_retry"] == 0
    # A deleted resource is no fetch failure.
    assert cache.stats()["fetch_failed"] == 0
    assert cache.stats()["fetch_gone"] == 1


async def test_a_fetched_body_is_kept_as_sent_and_its_data_is_not_copied(
    tmp_path: Path,
) -> None:
    """One JSON pass (issue 9.3): the cache used to encode the decoded body and decode
    that text again to make its copy. A Fetched answer is stored as its text, and the
    decoded object, which nobody else holds, becomes the entry's data."""
    text = '{"id": "w1",  "etag": "e1", "name": "caf\u00e9"}'
    fetched = Fetched(json.loads(text), text)

    async def fetch(key: QueryKey) -> Any:
        return fetched

    async with QueryCache(tmp_path / "c") as cache:
        cache.register_fetcher(("workflow",), fetch)
        entry = await cache.fetch(W1)
        assert entry is not None
        assert entry.data is fetched.data
        assert entry.etag == "e1"
        # The row holds the server's text, spacing included, not a re-encoding.
        held = cache._tier.get(W1)
        assert held is not None
        assert held.json() is text
    with QueryCache(tmp_path / "c") as reopened:
        again = reopened.get(W1)
        assert again is not None
        assert again.data == fetched.data
        read = reopened._tier.get(W1)  # the row read by get(), now held in memory
        assert read is not None
        assert read.json() == text


async def test_plain_data_from_a_fetcher_is_copied_once(cache: QueryCache) -> None:
    shared: dict[str, Any] = {"id": "w1", "tags": ["a"]}

    async def fetch(key: QueryKey) -> Any:
        return shared

    cache.register_fetcher(("workflow",), fetch)
    entry = await cache.fetch(W1)
    assert entry is not None
    shared["tags"].append("changed later")
    assert entry.data == {"id": "w1", "tags": ["a"]}
