"""The per-key fetch window and the per-fetch timeout, on virtual time.

The windows, retry backoffs and fetch timeouts of a QueryCache read time from the
scheduler it is given: here a reactivex ``TestScheduler`` that only moves when a test
advances it. The fetches themselves run on the real event loop (fetchers that answer at
once, or wait at a gate the test opens), and the cache's disk is a real directory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from _support import at, obj, parked, spin
from reactivex.testing import TestScheduler

from querysync import QueryKey
from querysync.sinks import CacheEvent, QueryCache

A: QueryKey = ("workflow", "a")
B: QueryKey = ("workflow", "b")
LIST: QueryKey = ("workflows",)
WINDOW = 1.0


class Server:
    """Fetchers over a versioned state: each key answers its current version."""

    def __init__(self) -> None:
        self.version: dict[QueryKey, int] = {}
        self.calls: list[QueryKey] = []
        self.fail = 0  # how many upcoming calls raise
        self.gate = asyncio.Event()
        self.gate.set()
        self.hang: set[QueryKey] = set()  # keys whose calls never return
        self.running = 0

    def write(self, key: QueryKey) -> None:
        self.version[key] = self.version.get(key, 0) + 1

    async def __call__(self, key: QueryKey) -> Any:
        self.calls.append(key)
        self.running += 1
        try:
            if key in self.hang:
                await asyncio.Event().wait()
            await self.gate.wait()
            if self.fail:
                self.fail -= 1
                raise RuntimeError("backend down")
            return {"v": self.version.get(key, 0)}
        finally:
            self.running -= 1

    def count(self, key: QueryKey) -> int:
        return self.calls.count(key)


@pytest.fixture
def clock() -> TestScheduler:
    return TestScheduler()


@pytest.fixture
async def cache(tmp_path: Path, clock: TestScheduler) -> AsyncIterator[QueryCache]:
    async with QueryCache(
        tmp_path / "c", fetch_window=WINDOW, scheduler=clock, retry_delay=0.1, retry_cap=0.4
    ) as c:
        yield c


@pytest.fixture
def server(cache: QueryCache) -> Server:
    s = Server()
    cache.register_fetcher((), s)
    return s


def change(server: Server, cache: QueryCache, key: QueryKey) -> None:
    """The server's state of ``key`` changes and the cache hears of it."""
    server.write(key)
    cache.invalidate(key, refetch="all")


def value(cache: QueryCache, key: QueryKey) -> tuple[int, bool]:
    entry = cache.get(key)
    assert entry is not None
    v = obj(entry.data)["v"]
    assert isinstance(v, int)
    return v, entry.stale


async def seed(cache: QueryCache, *keys: QueryKey) -> None:
    """Entries for ``keys``, fetched outside any window (as a cache opened earlier)."""
    for key in keys:
        cache.set(key, {"v": 0})


async def test_leading_edge_fetches_at_once(
    cache: QueryCache, server: Server, clock: TestScheduler
) -> None:
    await seed(cache, A)
    change(server, cache, A)
    await parked(cache)
    # No virtual time has passed: the first change of a quiet key is fetched at once.
    assert clock.clock == 0.0
    assert server.count(A) == 1
    assert value(cache, A) == (1, False)
    assert cache.stats()["in_flight"] == 0


async def test_trailing_edge_one_fetch_when_the_window_closes(
    cache: QueryCache, server: Server, clock: TestScheduler
) -> None:
    await seed(cache, A)
    change(server, cache, A)
    await parked(cache)
    for step in range(1, 10):
        await at(clock, cache, step * 0.1)
        change(server, cache, A)
    await parked(cache)
    assert server.count(A) == 1  # nine changes held, not fetched
    assert cache.stats()["waiting"] == 1
    assert value(cache, A) == (1, True)
    await at(clock, cache, WINDOW - 0.01)
    assert server.count(A) == 1
    await at(clock, cache, WINDOW)
    assert server.count(A) == 2  # exactly one fetch for the nine
    assert value(cache, A) == (10, False)
    # Nothing pending: the next window passes without a fetch.
    await at(clock, cache, 3 * WINDOW)
    assert server.count(A) == 2
    assert cache.stats()["in_flight"] == 0


async def test_latest_wins_and_a_quiet_window_leaves_the_next_change_leading(
    cache: QueryCache, server: Server, clock: TestScheduler
) -> None:
    await seed(cache, A)
    events: list[CacheEvent] = []
    cache.events().subscribe(events.append)
    change(server, cache, A)
    await parked(cache)
    change(server, cache, A)
    await at(clock, cache, 0.5)
    change(server, cache, A)
    await at(clock, cache, WINDOW)
    assert value(cache, A) == (3, False)
    fetched = [e for e in events if e.kind == "fetched"]
    assert len(fetched) == 2
    # The trailing fetch opened a window of its own: a change inside it is held too.
    change(server, cache, A)
    await at(clock, cache, 1.5)
    assert server.count(A) == 2
    await at(clock, cache, 2 * WINDOW)
    assert server.count(A) == 3
    assert value(cache, A) == (4, False)
    # Long after: leading again, at once.
    await at(clock, cache, 10.0)
    change(server, cache, A)
    await parked(cache)
    assert server.count(A) == 4
    assert value(cache, A) == (5, False)


async def test_keys_have_windows_of_their_own(
    cache: QueryCache, server: Server, clock: TestScheduler
) -> None:
    await seed(cache, A, B, LIST)
    change(server, cache, A)
    change(server, cache, LIST)
    await parked(cache)
    await at(clock, cache, 0.5)
    # A and the list are inside their windows; B has none yet: fetched at once.
    change(server, cache, A)
    change(server, cache, LIST)
    change(server, cache, B)
    await parked(cache)
    assert (server.count(A), server.count(LIST), server.count(B)) == (1, 1, 1)
    assert value(cache, B) == (1, False)
    await at(clock, cache, WINDOW)
    assert (server.count(A), server.count(LIST), server.count(B)) == (2, 2, 1)
    change(server, cache, B)
    await at(clock, cache, 1.4)
    assert server.count(B) == 1  # B's window runs from 0.5 to 1.5
    await at(clock, cache, 1.5)
    assert server.count(B) == 2
    assert [value(cache, k) for k in (A, B, LIST)] == [(2, False), (2, False), (2, False)]


async def test_a_fetch_in_flight_when_the_window_closes_is_followed_by_one_more(
    cache: QueryCache, server: Server, clock: TestScheduler
) -> None:
    await seed(cache, A)
    server.gate.clear()
    change(server, cache, A)
    await spin()
    assert server.running == 1
    for step in range(1, 6):
        clock.advance_to(step * 0.5)  # the window closes while the fetch still runs
        change(server, cache, A)
    assert server.count(A) == 1
    server.gate.set()
    await parked(cache)
    # Its window closed at 1.0: the refetch for what changed meanwhile starts at once.
    assert server.count(A) == 2
    assert value(cache, A) == (6, False)
    assert cache.stats()["in_flight"] == 0


async def test_removal_inside_a_window_cancels_the_held_fetch(
    cache: QueryCache, server: Server, clock: TestScheduler
) -> None:
    await seed(cache, A, B)
    change(server, cache, A)
    change(server, cache, B)
    await parked(cache)
    change(server, cache, A)
    change(server, cache, B)
    await parked(cache)
    assert cache.stats()["waiting"] == 2
    assert cache.remove(A) == 1
    await parked(cache)
    # Released at once, without waiting for the window: only B is still held.
    assert cache.stats()["in_flight"] == 1
    await at(clock, cache, WINDOW)
    assert server.count(A) == 1
    assert server.count(B) == 2
    assert cache.get(A) is None
    # Asked for by name afterwards, the key is fetched again (in a window of its own).
    change(server, cache, A)
    cache.prefetch(A)
    await parked(cache)
    assert value(cache, A) == (3, False)


async def test_a_failing_fetch_retries_inside_windows_and_ends_fresh(
    cache: QueryCache, server: Server, clock: TestScheduler
) -> None:
    await seed(cache, A)
    server.fail = 2
    change(server, cache, A)
    await parked(cache)
    assert server.count(A) == 1
    # The retries follow the policy (0.1 s, then 0.2 s), not the window.
    await at(clock, cache, 0.1)
    assert server.count(A) == 2
    change(server, cache, A)  # arrives during the second backoff
    await at(clock, cache, 0.3)
    assert server.count(A) == 3
    # The third attempt began at 0.3 and succeeded, but a change came after the first
    # began: one more fetch, when the window of the last attempt closes.
    assert value(cache, A) == (2, True)
    await at(clock, cache, 1.29)
    assert server.count(A) == 3
    await at(clock, cache, 1.3)
    assert server.count(A) == 4
    entry = cache.get(A)
    assert entry is not None
    assert (entry.data, entry.stale, entry.error) == ({"v": 2}, False, None)
    assert cache.stats()["fetch_retry"] == 2
    assert cache.stats()["fetch_failed"] == 0


async def test_a_held_key_never_occupies_a_concurrency_slot(
    tmp_path: Path, clock: TestScheduler
) -> None:
    server = Server()
    async with QueryCache(
        tmp_path / "c", fetch_window=WINDOW, scheduler=clock, concurrency=1
    ) as cache:
        cache.register_fetcher((), server)
        keys = [("item", str(i)) for i in range(5)]
        await seed(cache, A, *keys)
        for key in keys:
            change(server, cache, key)
        await parked(cache)
        assert len(server.calls) == 5
        for key in keys:
            change(server, cache, key)  # all five held for their windows
        await parked(cache)
        assert cache.stats()["waiting"] == 5
        # With the only slot free, a key of its own is fetched at once, time standing still.
        change(server, cache, A)
        await parked(cache)
        assert server.count(A) == 1
        assert value(cache, A) == (1, False)
        await at(clock, cache, WINDOW)
        assert len(server.calls) == 11
        assert all(value(cache, k) == (2, False) for k in keys)


async def test_window_zero_keeps_fetching_back_to_back(
    tmp_path: Path, clock: TestScheduler
) -> None:
    server = Server()
    async with QueryCache(tmp_path / "c", scheduler=clock) as cache:
        cache.register_fetcher((), server)
        await seed(cache, A)
        for _ in range(3):
            change(server, cache, A)
            await parked(cache)
        assert server.count(A) == 3
        assert clock.clock == 0.0


async def test_eight_hung_fetchers_time_out_and_free_their_slots(
    tmp_path: Path, clock: TestScheduler
) -> None:
    """Regression (issue 12.5): a fetcher that never returned held its slot for ever;
    eight of them starved every other key until aclose()."""
    server = Server()
    hung = [("hung", str(i)) for i in range(8)]
    server.hang.update(hung)
    async with QueryCache(
        tmp_path / "c", scheduler=clock, fetch_timeout=5.0, retries=1, retry_delay=1.0
    ) as cache:
        cache.register_fetcher((), server)
        events = _events_of(cache)
        for key in hung:
            cache.prefetch(key)
        await spin()
        assert server.running == 8
        cache.prefetch(A)
        await spin()
        assert server.count(A) == 0  # every slot is taken
        clock.advance_to(4.99)
        await spin()
        assert server.count(A) == 0
        clock.advance_to(5.0)  # the timeout: the eight are cancelled, their slots freed
        await spin()
        assert value(cache, A) == (0, False)
        assert cache.stats()["fetch_timeouts"] == 8
        assert server.running == 0  # cancelled, not merely abandoned
        # Each was retried per the policy (one retry, 1 s later), timed out again, failed.
        clock.advance_to(6.0)
        await spin()
        assert server.running == 8
        assert server.count(A) == 1
        await at(clock, cache, 11.0)
        assert cache.stats()["fetch_timeouts"] == 16
        assert cache.stats()["fetch_failed"] == 8
        assert cache.stats()["in_flight"] == 0
        errors = [e.error or "" for e in events if e.kind == "fetch_failed"]
        assert len(errors) == 8
        assert all("timed out after 5 s" in error for error in errors), errors
        failed = [cache.get(k) for k in hung]
        assert failed == [None] * 8  # a first fetch that failed leaves no entry


def _events_of(cache: QueryCache) -> list[CacheEvent]:
    seen: list[CacheEvent] = []
    cache.events().subscribe(seen.append)
    return seen


async def test_a_timed_out_fetch_records_why_and_keeps_the_last_good_data(
    tmp_path: Path, clock: TestScheduler
) -> None:
    server = Server()
    async with QueryCache(tmp_path / "c", scheduler=clock, fetch_timeout=2.0, retries=0) as cache:
        cache.register_fetcher((), server)
        await seed(cache, A)
        server.hang.add(A)
        change(server, cache, A)
        await spin()
        assert server.running == 1
        await at(clock, cache, 2.0)
        entry = cache.get(A)
        assert entry is not None
        assert (entry.data, entry.stale) == ({"v": 0}, True)
        assert entry.error is not None
        assert "timed out after 2 s" in entry.error


async def test_bad_window_and_timeout_values_are_refused(tmp_path: Path) -> None:
    for kwargs in (
        {"fetch_window": -1.0},
        {"fetch_window": float("nan")},
        {"fetch_timeout": 0.0},
        {"fetch_timeout": float("nan")},
    ):
        with pytest.raises(ValueError, match="fetch_"):
            QueryCache(tmp_path / "c", **kwargs)  # type: ignore[arg-type]
