"""sync(share=...) publishes into a real NATS JetStream bucket; SharedCache reads it live."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
from _nats_server import NatsServer
from _support import mirrored_keys

from querysync import Agreement, NodeToolApi, Sync, audit, sync
from querysync.server import NodeToolServer, Workload
from querysync.sinks import CacheReader, QueryCache, ShareConfig, SharedCache
from querysync.streams import Backoff

FAST = Backoff(initial=0.02, factor=2.0, max_delay=0.1, jitter=0.0)


def describe(agreement: Agreement) -> str:
    return "; ".join(f"{list(d.key)}: {d.problem}" for d in agreement.disagreements[:10])


async def start_publisher(
    server: NodeToolServer, nats: NatsServer, directory: Path, **share: Any
) -> Sync:
    config = ShareConfig(nats.url, bucket="t", lease=share.pop("lease", 1.0), **share)
    return await sync(
        server.ws_url,
        server.api_url,
        QueryCache(directory, retry_delay=0.05, retry_cap=0.2),
        window=0.05,
        source_options={"backoff": FAST},
        share=config,
    )


async def agreed(reader: CacheReader, server: NodeToolServer, seconds: float = 15.0) -> Agreement:
    """Audit ``reader`` against the server until it agrees (or time runs out); the last audit."""
    async with aiohttp.ClientSession() as session:
        api = NodeToolApi(server.api_url, session)
        last: Agreement | None = None
        try:
            async with asyncio.timeout(seconds):
                while True:
                    last = await audit(reader, api, expect=mirrored_keys(server.snapshot()))
                    if last.ok:
                        return last
                    await asyncio.sleep(0.2)
        except TimeoutError:
            assert last is not None
            return last


async def test_a_burst_reaches_a_reader_and_the_reader_agrees_with_the_server(
    server: NodeToolServer, nats_server: NatsServer, tmp_path: Path
) -> None:
    running = await start_publisher(server, nats_server, tmp_path / "pub")
    try:
        async with SharedCache(nats_server.url, bucket="t") as reader:
            report = await Workload(server, seed=3).run(seconds=1.0, rate=300, kind="mixed")
            assert report.changes > 100
            async with asyncio.timeout(20):
                await running.settle()
            agreement = await agreed(reader, server)
            assert agreement.checked > 5
            assert agreement.ok, describe(agreement)
            assert running.share.counts["published"] > 0
    finally:
        await running.stop()
