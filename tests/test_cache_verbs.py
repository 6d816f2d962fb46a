"""TanStack Query's verbs on QueryCache: refetch, cancel, set with an updater, status.

Windows and retry backoffs run on virtual time (a reactivex ``TestScheduler`` that moves
only when a test advances it); fetchers run on the real event loop and the cache's disk
is a real directory.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from _support import at, obj, parked, spin
from reactivex.testing import TestScheduler

from querysync import JSON, QueryKey
from querysync.sinks import QueryCache, QueryStatus

A: QueryKey = ("workflow", "a")
B: QueryKey = ("workflow", "b")
LIST: QueryKey = ("workflows",)
JOB: QueryKey = ("job", "j")
WINDOW = 1.0
DOWN = "RuntimeError: backend down"


class Server:
    """Fetchers over a versioned state: each key answers its current version."""

    def __init__(self) -> None:
        self.version: dict[QueryKey, int] = {}
        self.calls: list[QueryKey] = []
        self.completed: list[QueryKey] = []
        self.fail = 0  # how many upcoming calls raise
        self.gate = asyncio.Event()
        self.gate.set()
        self.hang: set[QueryKey] = set()  # keys whose calls wait on an Event never set
        self.running = 0
        self.max_running = 0

    def write(self, key: QueryKey) -> None:
        self.version[key] = self.version.get(key, 0) + 1

    async def __call__(self, key: QueryKey) -> Any:
        self.calls.append(key)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if key in self.hang:
                await asyncio.Event().wait()
            await self.gate.wait()
            if self.fail:
                self.fail -= 1
                raise RuntimeError("backend down")
            self.completed.append(key)
            return {"v": self.version.get(key, 0)}
        finally:
            self.running -= 1

    def count(self, key: QueryKey) -> int:
        return self.calls.count(key)


def value(cache: QueryCache, key: QueryKey) -> tuple[int, bool]:
    entry = cache.get(key)
    assert entry is not None
    v = obj(entry.data)["v"]
    assert isinstance(v, int)
    return v, entry.stale


def open_cache(tmp_path: Path, clock: TestScheduler, **kwargs: Any) -> QueryCache:
    kwargs.setdefault("retry_delay", 0.1)
    kwargs.setdefault("retry_cap", 0.4)
    return QueryCache(tmp_path / "c", scheduler=clock, **kwargs)


# -- refetch ---------------------------------------------------------------------------


async def test_refetch_fetches_exactly_the_keys_under_the_prefix_that_have_a_fetcher(
    tmp_path: Path,
) -> None:
    server = Server()
    async with QueryCache(tmp_path / "c", concurrency=1) as cache:
        cache.register_fetcher(("workflow",), server)
        cache.register_fetcher(LIST, server)
        for key in (A, B, LIST, JOB):  # JOB has no fetcher
            cache.set(key, {"v": 0})
        for key in (A, B, LIST):
            server.write(key)
        # Fresh entries are fetched all the same.
        assert await cache.refetch(("workflow",)) == 2
        assert sorted(server.calls) == sorted([A, B])
        assert value(cache, A) == (1, False)
        assert value(cache, B) == (1, False)
        assert value(cache, LIST) == (0, False)
        assert server.max_running == 1  # the concurrency limit holds
        assert await cache.refetch(A, exact=True) == 1
        assert server.calls.count(A) == 2
        assert server.calls.count(B) == 1
        # Everything: the three with a fetcher, never the job.
        assert await cache.refetch() == 3
        assert JOB not in server.calls
        assert cache.stats()["in_flight"] == 0


async def test_refetch_joins_a_running_fetch_and_fetches_once_more_after_it(
    tmp_path: Path,
) -> None:
    server = Server()
    server.gate.clear()
    async with QueryCache(tmp_path / "c") as cache:
        cache.register_fetcher((), server)
        cache.prefetch(A)  # no entry yet: only the running fetch knows the key
        await spin()
        assert server.count(A) == 1
        refetching = asyncio.create_task(cache.refetch(("workflow",)))
        await spin()
        assert not refetching.done()
        server.write(A)  # changed after the running call read it
        server.gate.set()
        assert await refetching == 1
        # The running call may have read the old state: exactly one more fetch.
        assert server.count(A) == 2
        assert value(cache, A) == (1, False)


async def test_refetch_inside_the_window_gets_the_trailing_fetch(
    tmp_path: Path, clock: TestScheduler
) -> None:
    server = Server()
    async with open_cache(tmp_path, clock, fetch_window=WINDOW) as cache:
        cache.register_fetcher((), server)
        cache.set(A, {"v": 0})
        await cache.refetch(A)  # leading: at once
        assert server.count(A) == 1
        assert clock.clock == 0.0
        server.write(A)
        refetching = asyncio.create_task(cache.refetch(A))
        await at(clock, cache, 0.5)
        assert server.count(A) == 1  # held for the window, holding no slot
        assert cache.stats()["waiting"] == 1
        assert not refetching.done()
        await at(clock, cache, WINDOW)
        assert await refetching == 1
        assert server.count(A) == 2
        assert value(cache, A) == (1, False)


@pytest.fixture
def clock() -> TestScheduler:
    return TestScheduler()


# -- cancel ----------------------------------------------------------------------------


async def test_cancel_stops_a_running_fetch_and_leaves_the_entry_as_it_was(
    tmp_path: Path,
) -> None:
    server = Server()
    async with QueryCache(tmp_path / "c", concurrency=1) as cache:
        cache.register_fetcher((), server)
        cache.set(A, {"v": 0})
        server.hang.add(A)
        server.write(A)
        cache.invalidate(A, refetch="all")
        waiter = asyncio.create_task(cache.fetch(A))  # joins the running fetch
        await spin()
        assert server.running == 1
        cache.prefetch(B)  # waits for the one slot A holds
        await spin()
        assert server.count(B) == 0
        assert cache.cancel(("workflow",), exact=True) == 0  # no fetch of that key alone
        assert cache.cancel(A) == 1
        # The waiting fetch() returns the entry as it is, with no error of its own.
        entry = await asyncio.wait_for(waiter, 5)
        assert entry is not None
        assert obj(entry.data) == {"v": 0}
        assert entry.stale
        assert await cache.wait_idle(5)
        assert A not in server.completed
        assert value(cache, A) == (0, True)  # still stale: the cancel changed nothing
        after = cache.get(A)
        assert after is not None
        assert after.error is None
        assert server.completed == [B]  # the slot was freed
        stats = cache.stats()
        assert stats["fetch_cancelled"] == 1
        assert stats["in_flight"] == 0
        assert stats["fetch_failed"] == 0
        assert stats["fetch_discarded"] == 0
        # A later invalidation fetches again, normally.
        server.hang.clear()
        cache.invalidate(A, refetch="all")
        assert await cache.wait_idle(5)
        assert value(cache, A) == (1, False)


async def test_cancel_drops_a_fetch_held_for_its_window(
    tmp_path: Path, clock: TestScheduler
) -> None:
    server = Server()
    async with open_cache(tmp_path, clock, fetch_window=WINDOW) as cache:
        cache.register_fetcher((), server)
        cache.set(A, {"v": 0})
        server.write(A)
        cache.invalidate(A, refetch="all")
        await parked(cache)
        assert value(cache, A) == (1, False)
        server.write(A)
        cache.invalidate(A, refetch="all")
        await parked(cache)
        assert cache.stats()["waiting"] == 1  # held until the window closes
        assert cache.cancel(()) == 1
        await parked(cache)
        assert cache.stats()["waiting"] == 0
        assert cache.stats()["in_flight"] == 0
        await at(clock, cache, 3 * WINDOW)
        assert server.count(A) == 1  # the held fetch never ran
        assert value(cache, A) == (1, True)
        cache.invalidate(A, refetch="all")
        await parked(cache)
        assert server.count(A) == 2
        assert value(cache, A) == (2, False)


async def test_cancel_drops_a_retry_backoff(tmp_path: Path, clock: TestScheduler) -> None:
    server = Server()
    async with open_cache(tmp_path, clock) as cache:
        cache.register_fetcher((), server)
        cache.set(A, {"v": 0})
        server.fail = 10
        cache.invalidate(A, refetch="all")
        await parked(cache)
        assert server.count(A) == 1
        assert cache.stats()["waiting"] == 1
        assert cache.cancel(A) == 1
        await parked(cache)
        await at(clock, cache, 60.0)
        assert server.count(A) == 1  # no retry after the cancel
        assert cache.stats()["fetch_failed"] == 0
        entry = cache.get(A)
        assert entry is not None
        assert entry.error is None
        assert entry.stale
        assert obj(entry.data) == {"v": 0}


# -- set with an updater -----------------------------------------------------------------


async def test_set_with_an_updater_sees_the_old_data(tmp_path: Path) -> None:
    seen: list[JSON] = []

    def bump(old: JSON) -> JSON:
        seen.append(old)
        n = obj(old)["n"] if old is not None else 0
        return {"n": n + 1, "etag": f"e{n + 1}"}

    with QueryCache(tmp_path / "c") as cache:
        first = cache.set(A, bump)
        assert seen == [None]  # no entry: None
        assert first.data == {"n": 1, "etag": "e1"}
        assert first.etag == "e1"
        cache.invalidate(A)
        cache.set(A, bump)  # a stale entry's data is handed over too
        assert seen[1] == {"n": 1, "etag": "e1"}
        assert obj(cache.get(A).data)["n"] == 2  # type: ignore[union-attr]
        # The plain form still works, etag argument included.
        entry = cache.set(A, {"n": 7}, etag="x")
        assert entry.etag == "x"
        assert not entry.stale
    with QueryCache(tmp_path / "c") as reopened:
        assert obj(reopened.get(A).data) == {"n": 7}  # type: ignore[union-attr]
        reopened.set(A, lambda old: [old, old])
        assert reopened.get(A).data == [{"n": 7}, {"n": 7}]  # type: ignore[union-attr]


async def test_a_raising_updater_leaves_the_entry_as_it_was(tmp_path: Path) -> None:
    def spoil(old: JSON) -> JSON:
        obj(old)["n"] = 99  # changed in place, then raising
        raise KeyError("boom")

    with QueryCache(tmp_path / "c") as cache:
        cache.set(A, {"n": 1}, etag="e1")
        cache.invalidate(A)
        with pytest.raises(KeyError, match="boom"):
            cache.set(A, spoil)
        entry = cache.get(A)
        assert entry is not None
        assert entry.data == {"n": 1}
        assert entry.etag == "e1"
        assert entry.stale
        assert cache.stats()["set"] == 1
        with pytest.raises(TypeError, match="not JSON"):
            cache.set(A, lambda old: {"n": float("nan")})
        assert cache.get(A) == entry


# -- status ------------------------------------------------------------------------------


async def test_status_through_two_failures_and_a_success(
    tmp_path: Path, clock: TestScheduler
) -> None:
    server = Server()
    async with open_cache(tmp_path, clock, retries=3) as cache:
        cache.register_fetcher((), server)
        assert cache.status(A) == QueryStatus(
            fetching=False,
            failure_count=0,
            error=None,
            fetched_at=None,
            stale=True,
            has_data=False,
        )
        server.fail = 2
        cache.prefetch(A)
        await parked(cache)  # the first attempt failed; backing off 0.1 s
        status = cache.status(A)
        assert (status.fetching, status.failure_count, status.error) == (True, 1, DOWN)
        assert not status.has_data
        assert status.fetched_at is None
        await at(clock, cache, 0.1)  # the second failed; backing off 0.2 s
        assert (cache.status(A).failure_count, cache.status(A).fetching) == (2, True)
        before = time.time()
        await at(clock, cache, 0.3)
        status = cache.status(A)
        assert (status.fetching, status.failure_count, status.error) == (False, 0, None)
        assert status.has_data
        assert not status.stale
        assert status.fetched_at is not None
        assert status.fetched_at >= before
        fetched_at = status.fetched_at
        # Every attempt fails now: the error reaches the entry as well.
        server.fail = 10
        cache.invalidate(A, refetch="all")
        for step in range(1, 6):  # backoffs of 0.1, 0.2 and 0.4 s, one after the other
            await at(clock, cache, 0.3 + step * 0.5)
        status = cache.status(A)
        assert (status.fetching, status.failure_count, status.error) == (False, 4, DOWN)
        assert status.stale
        assert status.has_data
        assert status.fetched_at == fetched_at  # failures store no data
        entry = cache.get(A)
        assert entry is not None
        assert entry.error == DOWN
        assert entry.updated_at == fetched_at
        # A set is a success.
        cache.set(A, {"v": 5})
        status = cache.status(A)
        assert (status.failure_count, status.error, status.stale) == (0, None, False)


async def test_status_is_derived_for_healthy_keys(tmp_path: Path) -> None:
    with QueryCache(tmp_path / "c") as cache:
        for i in range(100):
            cache.set(("workflow", str(i)), {"v": i})
        assert len(cache._failures) == 0  # nothing held per healthy key
        status = cache.status(("workflow", "3"))
        assert status.has_data
        assert not status.stale
        assert not status.fetching
    with QueryCache(tmp_path / "c") as reopened:  # read from disk
        status = reopened.status(("workflow", "3"))
        assert status.has_data
        assert status.fetched_at is not None
        assert status.error is None


async def test_an_invalidation_right_after_a_cancel_fetches_afresh(tmp_path: Path) -> None:
    server = Server()
    async with QueryCache(tmp_path / "c") as cache:
        cache.register_fetcher((), server)
        cache.set(A, {"v": 0})
        server.hang.add(A)
        cache.invalidate(A, refetch="all")
        await spin()
        assert server.running == 1
        assert cache.cancel(A) == 1
        # Before the cancelled task has even unwound: this must not join it.
        server.hang.clear()
        server.write(A)
        cache.invalidate(A, refetch="all")
        assert await cache.wait_idle(5)
        assert value(cache, A) == (1, False)
        assert server.count(A) == 2
