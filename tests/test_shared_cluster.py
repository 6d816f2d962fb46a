"""A three-node JetStream cluster, a bucket of three replicas, one node killed mid-burst."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from _nats_server import NatsCluster
from _shared_support import FAST, agreed, describe

from querysync import sync
from querysync.server import NodeToolServer, Workload
from querysync.sinks import QueryCache, ShareConfig, SharedCache
from querysync.sinks._shared_conn import connect_bucket


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    c = NatsCluster(tmp_path / "cluster")
    c.start()
    yield c
    c.stop()


async def bucket_ready(config: ShareConfig, seconds: float = 20.0) -> None:
    """Wait until the cluster has elected a meta leader and the bucket exists."""
    async with asyncio.timeout(seconds):
        while True:
            try:
                conn = await connect_bucket(config)
            except Exception:  # no JetStream leader yet
                await asyncio.sleep(0.2)
                continue
            await conn.close()
            return


async def test_a_node_killed_mid_burst_loses_nothing_with_three_replicas(
    server: NodeToolServer, cluster: NatsCluster, tmp_path: Path
) -> None:
    config = ShareConfig(cluster.url, bucket="t", lease=2.0, replicas=3, ack_timeout=2.0)
    await bucket_ready(config)
    running = await sync(
        server.ws_url, server.api_url,
        QueryCache(tmp_path / "pub", retry_delay=0.05, retry_cap=0.2),
        window=0.05, source_options={"backoff": FAST}, share=config,
    )
    try:
        async with SharedCache(config) as reader:
            workload = Workload(server, seed=51)
            writing = asyncio.ensure_future(workload.run(seconds=2.0, rate=250, kind="mixed"))
            await asyncio.sleep(0.6)
            # The node the publisher is connected to: it must fail over to another.
            connected = running.share.bucket.nc.connected_url
            assert connected is not None
            node = next(n for n in cluster.nodes if n.port == connected.port)
            await asyncio.to_thread(node.stop, signal.SIGKILL)
            report = await writing
            assert report.changes > 200
            async with asyncio.timeout(30):
                await running.settle()
            agreement = await agreed(reader, server, seconds=25)
            assert agreement.ok, describe(agreement)
            assert running.error is None
        # A reader that starts now, with one node of three gone, reads it all too.
        async with SharedCache(config) as late:
            late_agreement = await agreed(late, server, seconds=10)
            assert late_agreement.ok, describe(late_agreement)
    finally:
        await running.stop()
