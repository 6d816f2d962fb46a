"""The backend killed and restarted mid-stream: no crash, a resync per reconnect, and agreement.

The embedded server is stopped (cut off without a close frame, or closed with a going-away
or internal-error code) while a workload keeps writing to its store, then started again on
the same port. Changes made while it was away are never announced; the Resync after each
reconnect is what makes the cache catch up.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

from _support import mirrored_keys, obj

from querysync._audit import audit
from querysync._nodetool import LIST_KEYS
from querysync._sync import sync
from querysync.server import NodeToolServer, ResourceStore, Workload
from querysync.sinks import CacheEvent, QueryCache
from querysync.streams import Backoff, ConnectionState

FAST = Backoff(initial=0.01, factor=2.0, max_delay=0.05, jitter=0.0)
RESTARTS = 5
# None: the process vanished (no close frame); 1001: a clean shutdown; 1011: a crash the
# server still reported. None of them is final: the client must come back each time.
KILL_CODES: tuple[int | None, ...] = (None, 1001, 1011, None, 1001)


async def test_five_restarts_under_a_workload_end_with_the_cache_agreeing(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    rng = random.Random(20)
    server = NodeToolServer(ping_interval=None, stats_interval=None)
    await server.start()
    cache = QueryCache(tmp_path / "cache", retries=3, retry_delay=0.02)
    resyncs = asyncio.Queue[CacheEvent]()
    events = cache.events().subscribe(
        lambda e: resyncs.put_nowait(e) if e.kind == "resync" else None
    )
    running = await sync(
        server.ws_url,
        server.api_url,
        cache,
        window=0.05,
        source_options={"backoff": FAST},
    )
    workload = Workload(server, seed=3)
    writing: asyncio.Task[object] | None = None
    try:
        async with asyncio.timeout(10):
            await server.wait_for_connections(1)
            await cache.wait_idle()
        writing = asyncio.ensure_future(workload.run(seconds=40, rate=400, kind="mixed"))
        changes_down = 0
        for code in KILL_CODES:
            await asyncio.sleep(rng.uniform(0.1, 0.25))
            assert running.source.state == ConnectionState.CONNECTED
            async with asyncio.timeout(10):
                await server.stop(code=code)
            before = server.counts["resource_changes"]
            await asyncio.sleep(rng.uniform(0.05, 0.2))  # the workload keeps writing
            changes_down += server.counts["resource_changes"] - before
            async with asyncio.timeout(10):
                await server.start()
            async with asyncio.timeout(10):
                event = await resyncs.get()
                await server.wait_for_connections(1)
            assert event.key == ()
        await asyncio.sleep(0.2)
        workload.stop()
        async with asyncio.timeout(10):
            report = await writing
        async with asyncio.timeout(30):
            await running.settle(quiet=0.15)

        assert running.error is None
        assert running.source.state == ConnectionState.CONNECTED
        counts = running.source.counts
        # At least one reconnect per restart: NodeToolServer.stop() closes the connections
        # before it stops listening, so a quick client may reconnect in between and be
        # cut once more. Whatever their number, each reconnect brought its Resync.
        assert counts["reconnects"] >= RESTARTS
        assert counts["resyncs"] == counts["reconnects"]
        assert cache.stats()["resync"] == counts["resyncs"]
        assert changes_down > 0  # changes really were made while nobody could see them

        # Every list, and every live resource's keys: the resync's discovery fetched the
        # ones created while the server was down, which no frame ever named.
        expected = mirrored_keys(server.snapshot())
        async with asyncio.timeout(30):
            agreement = await audit(cache, running.api, expect=expected)
        assert agreement.ok, agreement.disagreements[:10]
        assert agreement.checked >= len(expected)
        record_property("restarts_survived", RESTARTS)
        record_property("reconnects_seen", counts["reconnects"])
        record_property("resyncs_seen", counts["resyncs"])
        record_property("workload_writes_during_restarts", getattr(report, "changes", 0))
        record_property("changes_made_while_down", changes_down)
    finally:
        if writing is not None and not writing.done():
            workload.stop()
            await asyncio.wait({writing}, timeout=5)
        events.dispose()
        async with asyncio.timeout(20):
            await running.stop()
            await cache.aclose()
            await server.stop()


async def test_a_backend_that_comes_back_empty_empties_the_cache(tmp_path: Path) -> None:
    """The restarted backend lost its data: the resync's refetches find 404s and empty
    lists, and every entry for a resource that no longer exists goes."""
    first = NodeToolServer(ping_interval=None, stats_interval=None)
    await first.start()
    cache = QueryCache(tmp_path / "cache", retries=2, retry_delay=0.02)
    running = await sync(
        first.ws_url, first.api_url, cache, window=0.02, source_options={"backoff": FAST}
    )
    second: NodeToolServer | None = None
    try:
        async with asyncio.timeout(10):
            await first.wait_for_connections(1)
        report = await Workload(first, seed=9).run(seconds=5, rate=2000, max_changes=60)
        async with asyncio.timeout(20):
            await running.settle(quiet=0.1)
        assert len(cache.keys(("workflow",))) > 0
        port = first.port
        async with asyncio.timeout(10):
            await first.stop(code=None)

        second = NodeToolServer(ping_interval=None, stats_interval=None, store=ResourceStore())
        async with asyncio.timeout(10):
            await second.start(port=port)
        async with asyncio.timeout(10):
            await second.wait_for_connections(1)
        async with asyncio.timeout(20):
            await running.settle(quiet=0.1)

        assert report.created > 0
        assert running.source.counts["resyncs"] == 1
        assert cache.keys(("workflow",)) == []
        assert cache.keys(("job",)) == []
        workflows = cache.get(("workflows",))
        assert workflows is not None
        assert not workflows.stale
        assert obj(workflows.data)["workflows"] == []
        agreement = await audit(cache, running.api, expect=LIST_KEYS)
        assert agreement.ok, agreement.disagreements[:10]
    finally:
        async with asyncio.timeout(20):
            await running.stop()
            await cache.aclose()
            await first.stop()
            if second is not None:
                await second.stop()
