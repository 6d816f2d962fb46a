"""Shared-cache readers through faults: a NATS restart, a cut network, a late start.

Every scenario ends with an audit of each reader against the NodeTool server: no key at
an old state, no removed key left behind, every list and live resource present.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from _nats_server import NatsServer
from _shared_support import (
    Proxy,
    agreed,
    describe,
    folder_agreed,
    spawn_mirror,
    start_publisher,
)

from querysync.server import NodeToolServer, Workload
from querysync.sinks import SharedCache
from querysync.testing import free_port


async def test_a_nats_restart_mid_burst_leaves_publisher_and_readers_agreeing(
    server: NodeToolServer, nats_server: NatsServer, tmp_path: Path
) -> None:
    running = await start_publisher(server, nats_server.url, tmp_path / "pub")
    mirror = await spawn_mirror(tmp_path, nats_server.url, tmp_path / "m")
    try:
        await mirror.wait_line("mirroring")
        async with SharedCache(nats_server.url, bucket="t") as reader:
            workload = Workload(server, seed=31)
            writing = asyncio.ensure_future(workload.run(seconds=2.0, rate=250, kind="mixed"))
            await asyncio.sleep(0.6)
            await asyncio.to_thread(nats_server.stop)
            await asyncio.sleep(0.5)  # writes go on meanwhile, none of them reach NATS
            await asyncio.to_thread(nats_server.start)
            report = await writing
            assert report.changes > 200
            async with asyncio.timeout(30):
                await running.settle()
            agreement = await agreed(reader, server, seconds=20)
            assert agreement.ok, describe(agreement)
            assert reader.stats()["resync"] >= 1  # it did start over after the restart
            assert running.error is None
        folder = await folder_agreed(tmp_path / "m", server)
        assert folder.ok, describe(folder)
    finally:
        await mirror.stop()
        await running.stop()


async def test_a_reader_cut_off_for_a_while_and_a_reader_started_late_both_converge(
    server: NodeToolServer, nats_server: NatsServer, tmp_path: Path
) -> None:
    proxy = Proxy(nats_server.port, free_port())
    await proxy.start()
    running = await start_publisher(server, nats_server.url, tmp_path / "pub")
    try:
        async with SharedCache(proxy.url, bucket="t") as cut_off:
            workload = Workload(server, seed=41)
            await workload.run(seconds=0.6, rate=250, kind="mixed")
            async with asyncio.timeout(20):
                await running.settle()
            before = {k: cut_off.get(k) for k in cut_off}
            assert before
            await proxy.cut()
            # While it is away: updates, creations and deletions (some of what it holds).
            report = await workload.run(seconds=1.0, rate=250, kind="mixed")
            alive = server.snapshot()
            deleted = [
                k for k in before
                if len(k) == 2 and k[0] in alive and k[1] not in alive[str(k[0])]
            ]
            assert deleted  # the reader holds entries of resources deleted while it was away
            assert report.changes > 100
            async with asyncio.timeout(20):
                await running.settle()
            stale_view = dict(before)
            assert {k: cut_off.get(k) for k in cut_off} == stale_view  # it heard nothing
            await proxy.start()
            agreement = await agreed(cut_off, server, seconds=20)
            assert agreement.ok, describe(agreement)
            assert cut_off.stats()["resync"] >= 1
            for key in deleted:
                assert key not in cut_off
            async with SharedCache(nats_server.url, bucket="t") as late:
                late_agreement = await agreed(late, server, seconds=10)
                assert late_agreement.ok, describe(late_agreement)
                assert sorted(late.keys(), key=repr) == sorted(cut_off.keys(), key=repr)
    finally:
        await running.stop()
        await proxy.cut()
