"""A slow fetcher and a slow disk: the event loop keeps turning and the connection holds.

The server runs on its own thread and loop, as a remote backend would, pinging every
50 ms while a workload writes. On the client's loop a ticker records how late each
10 ms sleep wakes up. Meanwhile every fetch is slowed down, a flood of large entries is
written, and another connection holds the SQLite write lock for a second, so
the cache's writes queue up behind a disk that does not answer.

The longest stall is reported, not asserted (speed belongs to the benchmarks); what is
asserted is that the loop ran while the disk was locked, no connection was lost, and
nothing queued was lost either.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from querysync._audit import audit
from querysync._keys import QueryKey
from querysync._nodetool import FETCH_PREFIXES, LIST_KEYS
from querysync._sync import sync
from querysync.server import NodeToolServer, Workload, WorkloadReport
from querysync.sinks import QueryCache
from querysync.streams import Backoff, ConnectionState

T = TypeVar("T")
FAST = Backoff(initial=0.01, factor=2.0, max_delay=0.05, jitter=0.0)
PING = 0.05
TICK = 0.01
LOCK_HOLD = 1.0
FLOOD = 2000
FLOOD_SIZE = 10_000  # bytes of payload per flooded entry


class ServerThread:
    """A NodeToolServer on its own thread and event loop: a backend in another process."""

    def __init__(self, server: NodeToolServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="nodetool-server")

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self.call(self.server.start)
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.call(self.server.stop)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()

    def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make()`` on the server's loop and wait for it (blocking: setup only)."""
        return self.submit(make).result(timeout=20)

    def submit(self, make: Callable[[], Awaitable[T]]) -> concurrent.futures.Future[T]:
        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self.loop)


@dataclass
class Ticker:
    """How late each ``asyncio.sleep(TICK)`` on the client's loop woke up."""

    ticks: list[float] = field(default_factory=list)
    longest: float = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(TICK)
            now = loop.time()
            self.ticks.append(now)
            self.longest = max(self.longest, now - before - TICK)


@contextmanager
def disk_lock(
    db: Path, held: list[tuple[float, float]], loop: asyncio.AbstractEventLoop
) -> Iterator[threading.Event]:
    """Another connection takes the database's write lock and keeps it until released."""
    release = threading.Event()
    acquired = threading.Event()

    def hold() -> None:
        con = sqlite3.connect(db, timeout=10)
        try:
            con.execute("BEGIN EXCLUSIVE")
            start = loop.time()
            acquired.set()
            release.wait(timeout=10)
            con.commit()
            held.append((start, loop.time()))
        finally:
            con.close()

    thread = threading.Thread(target=hold, name="disk-lock")
    thread.start()
    try:
        acquired.wait(timeout=10)
        yield release
    finally:
        release.set()
        thread.join(timeout=15)


def flood_value(i: int) -> dict[str, Any]:
    return {"i": i, "body": f"{i:08d}" * (FLOOD_SIZE // 8)}


async def test_slow_fetches_and_a_locked_disk_never_stall_the_loop_or_drop_the_connection(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    server = NodeToolServer(ping_interval=PING, stats_interval=0.2)
    with ServerThread(server) as remote:
        cache = QueryCache(tmp_path / "cache", timeout=10, batch_size=500)
        running = await sync(
            server.ws_url,
            server.api_url,
            cache,
            window=0.05,
            source_options={"backoff": FAST, "silence_timeout": 1.0, "heartbeat": 1.0},
        )
        api = running.api

        async def slow_fetch(key: QueryKey) -> Any:
            await asyncio.sleep(0.05)  # a backend that takes its time to answer
            return await api.fetch(key)

        for prefix in FETCH_PREFIXES:
            cache.register_fetcher(prefix, slow_fetch)

        pings: list[float] = []
        loop = asyncio.get_running_loop()
        pings_sub = running.source.subscribe(
            lambda m: pings.append(loop.time())
            if isinstance(m, dict) and m.get("type") == "ping"
            else None
        )
        ticker = Ticker()
        ticking = asyncio.ensure_future(ticker.run())
        workload = Workload(server, seed=4)
        held: list[tuple[float, float]] = []
        queued_while_locked = 0
        try:
            async with asyncio.timeout(10):
                await asyncio.wrap_future(remote.submit(lambda: server.wait_for_connections(1)))
                await cache.wait_idle()
            writing = remote.submit(
                lambda: workload.run(seconds=1.5, rate=500, kind="mixed")
            )
            with disk_lock(tmp_path / "cache" / "cache.db", held, loop) as release:
                for start in range(0, FLOOD, 100):
                    for i in range(start, start + 100):
                        cache.set(("flood", i), flood_value(i))
                    await asyncio.sleep(0)
                await asyncio.sleep(LOCK_HOLD)
                queued_while_locked = cache.stats()["queued_writes"]
                release.set()
            async with asyncio.timeout(20):
                report: WorkloadReport = await asyncio.wrap_future(writing)
            async with asyncio.timeout(30):
                await running.settle(quiet=0.2)

            # The loop turned while the disk was locked: the writes were not on it.
            (lock_start, lock_end) = held[0]
            during = [t for t in ticker.ticks if lock_start < t < lock_end]
            assert len(during) > 0
            assert queued_while_locked > 0  # ...and the disk really held them back
            # No connection lost, no silence, no resync.
            source = running.source
            assert running.error is None
            assert source.state == ConnectionState.CONNECTED
            assert (source.counts["reconnects"], source.counts["drops"]) == (0, 0)
            assert source.counts["silent"] == 0
            assert len(pings) > 0
            assert report.changes > 0

            ticking.cancel()  # the checks below may block; they are not what is measured

            # Nothing the locked disk held back was lost: another reader finds it all.
            def read_flood() -> list[Any]:
                with QueryCache(tmp_path / "cache") as other:
                    assert other.stats()["corrupt_rows"] == 0
                    entries = [other.get(("flood", i)) for i in range(FLOOD)]
                    return [e.data if e is not None else None for e in entries]

            assert await asyncio.to_thread(read_flood) == [flood_value(i) for i in range(FLOOD)]

            cache.remove(("flood",))  # no endpoint serves these: keep them out of the audit
            async with asyncio.timeout(30):
                agreement = await audit(cache, api, expect=LIST_KEYS)
            assert agreement.ok, agreement.disagreements[:10]
        finally:
            ticking.cancel()
            pings_sub.dispose()
            async with asyncio.timeout(20):
                await running.stop()
                await cache.aclose()

    gaps = [b - a for a, b in itertools.pairwise(pings)]
    record_property("longest_loop_stall_ms", round(ticker.longest * 1000, 1))
    record_property("longest_gap_between_pings_ms", round(max(gaps, default=0) * 1000, 1))
    record_property("pings_seen", len(pings))
    record_property("writes_queued_behind_locked_disk", queued_while_locked)
