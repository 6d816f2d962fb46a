"""A mirror under steady and burst loads, with the per-key fetch window: fresh at the end.

The embedded server on loopback, ``sync`` in mirror mode with a short window (the
cache it opens takes the same ``fetch_window``), and the workload generator making
updates faster than the window. At the end every cached entry must agree with the
server (``querysync.audit``), and no key may have been fetched twice within a window.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from pathlib import Path

import pytest
from _support import mirrored_keys

from querysync import LIST_KEYS, QueryKey, audit, sync
from querysync.server import NodeToolServer, Workload, WorkloadKind
from querysync.sinks import CacheEvent
from querysync.streams import Backoff

WINDOW = 0.1
FAST = Backoff(initial=0.02, factor=2.0, max_delay=0.1, jitter=0.0)


@pytest.mark.parametrize("kind", ["steady", "burst"])
async def test_a_mirror_under_load_fetches_each_key_once_per_window_and_ends_fresh(
    server: NodeToolServer, tmp_path: Path, kind: WorkloadKind
) -> None:
    running = await sync(
        server.ws_url,
        server.api_url,
        tmp_path / "cache",
        window=WINDOW,
        source_options={"backoff": FAST},
    )
    loop = asyncio.get_running_loop()
    starts: dict[QueryKey, list[float]] = defaultdict(list)

    def on_event(event: CacheEvent) -> None:
        if event.kind == "fetch_started":
            starts[event.key].append(loop.time())

    subscription = running.cache.events().subscribe(on_event)
    try:
        async with asyncio.timeout(20):
            await server.wait_for_connections(1)
            await running.settle()
            workload = Workload(
                server, seed=3, types=("workflow", "job"), pool_size=20, hot_resources=3
            )
            report = await workload.run(kind=kind, rate=1_000, seconds=10, max_changes=400)
            await running.settle()
        assert report.updated > 300
        expected = mirrored_keys(server.snapshot())
        agreement = await audit(running.cache, running.api, expect=expected)
        assert agreement.ok, agreement.disagreements[:5]
        assert agreement.checked >= len(expected) > len(LIST_KEYS)
        assert running.cache.stats()["fetch_retry"] == 0
        for key, times in starts.items():
            gaps = [b - a for a, b in itertools.pairwise(times)]
            # The loop's own clock decides when a held key may start: never early.
            assert all(gap >= WINDOW * 0.99 for gap in gaps), (key, gaps)
        assert len(starts[("workflows",)]) >= 2  # at connect, and again for the load
    finally:
        subscription.dispose()
        await running.stop()
