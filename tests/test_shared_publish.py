"""sync(share=...) publishes into a real NATS JetStream bucket; SharedCache reads it live."""

from __future__ import annotations

import asyncio
from pathlib import Path

from _nats_server import NatsServer
from _shared_support import agreed, describe, start_publisher

from querysync.server import NodeToolServer, Workload
from querysync.sinks import SharedCache


async def test_a_burst_reaches_a_reader_and_the_reader_agrees_with_the_server(
    server: NodeToolServer, nats_server: NatsServer, tmp_path: Path
) -> None:
    running = await start_publisher(server, nats_server.url, tmp_path / "pub")
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
