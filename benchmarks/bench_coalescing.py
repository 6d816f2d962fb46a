"""Coalescing: 10,000 updates in one second over 100 resources, via the embedded server and sync.

The embedded NodeTool server (same process, loopback) holds 100 resources; a steady
workload updates them, picked at random, 10,000 times at 10,000 per second. ``sync``
in mirror mode (throttle window 0.25 s) keeps a cache in a temporary directory. The
figures: fetches per resource detail key (``("job", id)`` and so on) during the burst,
against the number of throttle windows the burst spans, plus one; and an audit, once
the feed is quiet, of every cached entry against a fresh REST answer.

The baseline is the same run with the throttle off (``window=None``), where only the
cache's own rule (an invalidation during a fetch makes one more fetch) holds refetches
down. Secrets are left out of the workload: they have no detail key to count.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
from collections import Counter
from dataclasses import dataclass
from typing import Any

from querysync import QueryKey
from querysync._audit import audit
from querysync._sync import sync
from querysync.server import NodeToolServer, Workload
from querysync.sinks import CacheEvent

from ._figures import Figure, figure

__all__ = ["run"]

WINDOW = 0.25
TYPES = ("workflow", "job", "asset", "thread", "message", "workspace")
SETTLE_TIMEOUT = 60.0


@dataclass(frozen=True)
class Coalesced:
    """What one run did."""

    updates: int
    elapsed: float
    per_resource: dict[QueryKey, int]
    list_fetches: dict[QueryKey, int]
    invalidations: int
    checked: int
    disagreements: int
    problems: tuple[str, ...]

    @property
    def most(self) -> int:
        """The most fetches any one resource's detail key had."""
        return max(self.per_resource.values(), default=0)

    @property
    def mean(self) -> float:
        return sum(self.per_resource.values()) / max(1, len(self.per_resource))


async def _measure(
    updates: int, resources: int, rate: float, window: float | None, seed: int
) -> Coalesced:
    server = NodeToolServer(ping_interval=None, stats_interval=None)
    async with server:
        workload = Workload(server, seed=seed, types=TYPES, pool_size=resources)
        # Fill the pool before anyone listens: the burst below is updates only.
        await workload.run(kind="steady", rate=1e6, seconds=60, max_changes=resources)
        with tempfile.TemporaryDirectory(prefix="querysync-bench-") as directory:
            running = await sync(
                server.ws_url,
                server.api_url,
                directory,
                window=window,
                mirror=True,
            )
            fetches: Counter[QueryKey] = Counter()

            def count(event: CacheEvent) -> None:
                if event.kind == "fetch_started":
                    fetches[event.key] += 1

            subscription: Any = None
            try:
                async with asyncio.timeout(SETTLE_TIMEOUT):
                    await server.wait_for_connections(1)
                    await running.settle()
                subscription = running.cache.events().subscribe(count)
                report = await workload.run(
                    kind="steady", rate=rate, seconds=60, max_changes=updates
                )
                async with asyncio.timeout(SETTLE_TIMEOUT):
                    await running.settle()
                detail: list[QueryKey] = [
                    (t, rid) for t, ids in workload.resources.items() for rid in ids
                ]
                invalidations = running.pipeline.counts()["invalidations"]
                agreement = await audit(running.cache, running.api, expect=detail)
            finally:
                if subscription is not None:
                    subscription.dispose()
                await running.stop()
    per_resource = {key: fetches[key] for key in detail}
    lists: dict[QueryKey, int] = {key: n for key, n in fetches.items() if len(key) == 1}
    return Coalesced(
        report.updated,
        report.elapsed,
        per_resource,
        lists,
        invalidations,
        agreement.checked,
        len(agreement.disagreements),
        tuple(f"{d.key}: {d.problem}" for d in agreement.disagreements[:5]),
    )


def run(*, small: bool = False) -> list[Figure]:
    """Refetches per resource with and without the throttle, and the final audit."""
    updates, resources, rate = (400, 10, 4_000.0) if small else (10_000, 100, 10_000.0)
    # The smoke run uses a shorter window so that its quiet periods are short too.
    window = 0.1 if small else WINDOW
    ours = asyncio.run(_measure(updates, resources, rate, window, seed=1))
    base = asyncio.run(_measure(updates, resources, rate, None, seed=1))
    if ours.updates != updates:
        raise RuntimeError(f"the workload made {ours.updates} of {updates} updates")
    windows = math.ceil(ours.elapsed / window)
    label = f"{updates:,} updates, {resources} resources, {ours.elapsed:.2f} s, window {window:g} s"
    return [
        figure(
            f"coalescing: most fetches of one resource ({label}, {windows} windows)",
            ours.most,
            "fetches",
            baseline=base.most,
            target=f"<= windows + 1 = {windows + 1}",
            met=ours.most <= windows + 1,
        ),
        figure(
            "coalescing: mean fetches per resource",
            ours.mean,
            "fetches",
            baseline=base.mean,
        ),
        figure(
            "coalescing: most fetches of one list key",
            max(ours.list_fetches.values(), default=0),
            "fetches",
            baseline=max(base.list_fetches.values(), default=0),
            # The cache's per-key fetch window (sync passes the throttle window) bounds
            # a shared key's fetches; without it each cluster of trailing edges cost one.
            target="ratio <= 1",
            met=max(ours.list_fetches.values(), default=0)
            <= max(base.list_fetches.values(), default=0),
        ),
        figure(
            "coalescing: invalidations reaching the cache",
            ours.invalidations,
            "invalidations",
            baseline=base.invalidations,
        ),
        figure(
            f"coalescing: cached entries disagreeing with the server ({ours.checked} checked)",
            ours.disagreements,
            "entries",
            target="0",
            met=ours.disagreements == 0 and ours.checked >= resources,
        ),
    ]


if __name__ == "__main__":
    import sys

    from .run import main

    raise SystemExit(main(["coalescing", *sys.argv[1:]]))
