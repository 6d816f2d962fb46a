"""Several `sync --share` processes on one bucket: one active, standbys taking over on SIGKILL.

Real processes throughout: publishers and `mirror` readers are `python -m querysync`
children; the NodeTool server and nats-server are real, on loopback.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from _nats_server import NatsServer
from _shared_support import Child, agreed, describe, folder_agreed, spawn_mirror, spawn_publisher
from _support import until

from querysync.server import NodeToolServer, Workload
from querysync.sinks import SharedCache


def state(child: Child) -> str:
    """What a publisher said it is last: "active" or "standby"."""
    said = [line for line in child.lines if line in ("active", "standby")]
    return said[-1] if said else ""


async def first_active(children: list[Child], seconds: float = 15.0) -> Child:
    async with asyncio.timeout(seconds):
        while True:
            for child in children:
                if state(child) == "active":
                    return child
            await asyncio.sleep(0.02)


async def test_one_publisher_three_mirrors_and_a_sigkilled_active_replaced_by_a_standby(
    server: NodeToolServer, nats_server: NatsServer, tmp_path: Path
) -> None:
    lease = 1.0
    publishers = [
        await spawn_publisher(tmp_path, server, nats_server.url, tmp_path / f"pub{i}", lease=lease)
        for i in range(2)
    ]
    mirrors = [await spawn_mirror(tmp_path, nats_server.url, tmp_path / f"m{i}") for i in range(3)]
    children = publishers + mirrors
    try:
        active = await first_active(publishers)
        standby = publishers[1 - publishers.index(active)]
        async with asyncio.timeout(10):
            await server.wait_for_connections(1)
        for m in mirrors:
            await m.wait_line("mirroring")
        # A standby holds no WebSocket: only the active publisher is connected.
        await asyncio.sleep(0.3)
        assert server.connections == 1
        assert state(standby) == "standby"
        assert state(active) == "active"

        workload = Workload(server, seed=21)
        writing = asyncio.ensure_future(workload.run(seconds=2.0, rate=250, kind="mixed"))
        await asyncio.sleep(0.7)
        active.kill(signal.SIGKILL)
        # Taking over waits for the lease to run out (bench_shared measures how long).
        await until(lambda: state(standby) == "active", lease + 10)
        report = await writing
        assert report.changes > 200

        async with SharedCache(nats_server.url, bucket="t") as reader:
            agreement = await agreed(reader, server, seconds=20)
            assert agreement.ok, (describe(agreement), standby.lines[-40:])
            assert agreement.checked > 5
        for i in range(3):
            folder = await folder_agreed(tmp_path / f"m{i}", server)
            assert folder.ok, (i, describe(folder))
    finally:
        for child in children:
            await child.stop()
