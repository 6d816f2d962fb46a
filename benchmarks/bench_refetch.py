"""Refetch economy: the GETs and bytes ``sync`` costs per workflow write, against an ideal bound.

The embedded NodeTool server runs in a process of its own (``_counted_server.py``) with
N = 100, 1,000 and 10,000 pre-created workflows and counts every GET it answers, per
route, with its body bytes. ``sync(..., window=0.25, mirror=True)`` keeps a cache in a
temporary directory. Two loads of workflow updates:

- ``steady``: 2,000 updates over 10 s, each to one of the first 100 workflows at random;
- ``bursts``: 20 bursts, one every 0.5 s, of 50 updates to 3 hot workflows.

The bound B1 comes from the writes' own timestamps, throttled leading and trailing with
the same window: the list ``("workflows",)`` is read whole once per emission of all the
type's writes, each workflow's detail once per emission of its own writes. A whole list
is every page of it (the server pages workflows by 100, as the live one does), so each
list emission costs B1 ``ceil(N / 100)`` GETs, and the bytes of the whole list. B1's
bytes are those counts times the mean body of each route as measured in the same run. The
GETs and bytes querysync caused (every route: the list, the details, and also the
``("templates",)`` and ``("workflow_versions", id)`` keys the key table refetches on a
workflow change) are printed as ratios of B1, with the part of the templates and
versions routes beside them.

Freshness (at N = 100): from a write to the moment the cache holds that workflow's
detail at that write's revision or later, p50 and p99, at 10 and at 500 writes/s,
beside one idle GET of a detail (median of 20) measured in the same run.

JSON (at N = 1,000): the client's cost of one fetched list body, decoded once as the
cache now takes it, against the three passes it used to make (decode in the fetcher,
encode and decode again for the cache's copy); and orjson's decode, when orjson is
importable, to show what a faster decoder would add to that.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import random
import statistics
import tempfile
import time
import timeit
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from querysync import Sync
from querysync._audit import audit
from querysync._sync import sync
from querysync.sinks import CacheEvent
from querysync.sinks._entry import encode_data, parse_json

from ._counted_server import CountedServer, Counts, Write, workflow_id
from ._figures import Figure, figure, percentile

__all__ = ["ideal_emissions", "run"]

WORKFLOWS_PAGE = 100
"""The workflows list's default page size, the live server's (shared/nodetool-protocol.md)."""

WINDOW = 0.25
SIZES = (100, 1_000, 10_000)
LIST_ROUTE = "/api/workflows/"
DETAIL_ROUTE = "/api/workflows/{id}"
OTHERS = ("/api/workflows/examples", "/api/workflows/{id}/versions")
SETTLE_TIMEOUT = 120.0

Schedule = list[tuple[float, int]]


@dataclass(frozen=True)
class Load:
    name: str
    schedule: Schedule


def steady(writes: int, seconds: float, pool: int, seed: int) -> Schedule:
    """``writes`` updates evenly over ``seconds``, each to one of ``pool`` workflows."""
    rng = random.Random(seed)
    return [(i * seconds / writes, rng.randrange(pool)) for i in range(writes)]


def bursts(count: int, every: float, size: int, hot: int, seed: int) -> Schedule:
    """``count`` bursts ``every`` seconds apart, each ``size`` updates to ``hot`` workflows."""
    rng = random.Random(seed)
    return [(b * every, rng.randrange(hot)) for b in range(count) for _ in range(size)]


def ideal_emissions(times: Sequence[float], window: float) -> int:
    """How many times a leading+trailing throttle of ``window`` s lets writes at ``times`` out."""
    count = 0
    closes = -float("inf")
    held = False
    for t in sorted(times):
        while t >= closes and held:
            # The held write goes out as the window closes, which opens the next window.
            count += 1
            held = False
            closes += window
        if t >= closes:
            count += 1
            closes = t + window
        else:
            held = True
    return count + int(held)


@dataclass(frozen=True)
class Outcome:
    """What one load cost, and the bound."""

    writes: list[Write]
    counts: Counts
    b1_list: int
    b1_detail: int
    seen: dict[str, list[tuple[float, int]]]
    pages: int  # of the whole workflows list: what reading it once costs in GETs

    @property
    def gets(self) -> int:
        return sum(self.counts.gets.values())

    @property
    def body_bytes(self) -> int:
        return sum(self.counts.bytes.values())

    def mean_body(self, route: str) -> float:
        n = self.counts.gets.get(route, 0)
        return self.counts.bytes.get(route, 0) / n if n else 0.0

    @property
    def b1_gets(self) -> int:
        return self.b1_list * self.pages + self.b1_detail

    @property
    def b1_bytes(self) -> float:
        whole_list = self.pages * self.mean_body(LIST_ROUTE)
        return self.b1_list * whole_list + self.b1_detail * self.mean_body(DETAIL_ROUTE)

    def route_gets(self, *routes: str) -> int:
        return sum(self.counts.gets.get(r, 0) for r in routes)

    def freshness(self) -> tuple[list[float], int]:
        """Seconds from each write to the cache holding it; and how many never got there."""
        delays: list[float] = []
        missing = 0
        for at, index, revision in self.writes:
            for when, held in self.seen.get(workflow_id(index), ()):
                if held >= revision:
                    delays.append(max(0.0, when - at))
                    break
            else:
                missing += 1
        return delays, missing


def _revision(data: Any) -> int:
    text = data.get("description") if isinstance(data, dict) else None
    if isinstance(text, str) and text.startswith("revision "):
        return int(text.split()[1])
    return 0


async def _settle(running: Sync) -> None:
    async with asyncio.timeout(SETTLE_TIMEOUT):
        await running.settle()


async def _load(
    server: CountedServer, running: Sync, schedule: Schedule, workflows: int
) -> Outcome:
    server.take_counts()  # what came before this load is not its cost
    seen: dict[str, list[tuple[float, int]]] = defaultdict(list)
    cache = running.cache

    def on_event(event: CacheEvent) -> None:
        if event.kind == "fetched" and len(event.key) == 2 and event.key[0] == "workflow":
            entry = cache.get(event.key)
            if entry is not None:
                seen[str(event.key[1])].append((time.monotonic(), _revision(entry.data)))

    subscription = cache.events().subscribe(on_event)
    try:
        writes = await asyncio.to_thread(server.write, schedule)
        await _settle(running)
    finally:
        subscription.dispose()
    counts = server.take_counts()
    by_workflow: dict[int, list[float]] = defaultdict(list)
    for at, index, _ in writes:
        by_workflow[index].append(at)
    b1_list = ideal_emissions([at for at, _, _ in writes], WINDOW)
    b1_detail = sum(ideal_emissions(times, WINDOW) for times in by_workflow.values())
    pages = max(1, math.ceil(workflows / WORKFLOWS_PAGE))
    return Outcome(writes, counts, b1_list, b1_detail, dict(seen), pages)


async def _idle_get(running: Sync) -> float:
    """Seconds for one GET of a detail with nothing else going on (median of 20)."""
    times: list[float] = []
    for _ in range(20):
        began = time.perf_counter()
        await running.api.fetch(("workflow", workflow_id(0)))
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _json_rows(text: str, n: int) -> list[Figure]:
    """Microseconds to take one list body in: one pass, the old three, and orjson's one."""

    def best(fn: Any) -> float:
        return min(timeit.repeat(fn, number=20, repeat=5)) / 20 * 1e6

    one = best(lambda: json.loads(text))
    three = best(lambda: parse_json(encode_data(json.loads(text))))
    label = f"refetch JSON: one list body of {n:,} workflows ({len(text) / 1e3:,.0f} kB)"
    rows = [figure(f"{label}, decoded once vs decode+encode+decode", one, "µs", baseline=three)]
    try:
        orjson = importlib.import_module("orjson")
    except ImportError:
        return rows
    fast = best(lambda: orjson.loads(text))
    rows.append(figure(f"{label}, orjson.loads vs json.loads", fast, "µs", baseline=one))
    return rows


def _rows(n: int, load: str, out: Outcome) -> list[Figure]:
    label = f"refetch N={n:,} {load} ({len(out.writes):,} writes)"
    return [
        figure(
            f"{label}: GETs vs B1",
            out.gets,
            "GETs",
            baseline=out.b1_gets,
            target="ratio <= 1.2",
            met=out.gets <= 1.2 * out.b1_gets,
        ),
        figure(
            f"{label}: body bytes vs B1",
            out.body_bytes / 1e6,
            "MB",
            baseline=out.b1_bytes / 1e6,
            target="ratio <= 1.5",
            met=out.body_bytes <= 1.5 * out.b1_bytes,
        ),
        figure(
            f"{label}: list + detail GETs vs B1",
            out.route_gets(LIST_ROUTE, DETAIL_ROUTE),
            "GETs",
            baseline=out.b1_gets,
        ),
        figure(
            f"{label}: templates + workflow_versions GETs vs B1",
            out.route_gets(*OTHERS),
            "GETs",
            baseline=out.b1_gets,
        ),
        figure(
            f"{label}: templates + workflow_versions bytes vs B1",
            sum(out.counts.bytes.get(r, 0) for r in OTHERS) / 1e6,
            "MB",
            baseline=out.b1_bytes / 1e6,
        ),
    ]


async def _measure(
    n: int, loads: list[Load], fresh: list[tuple[float, Load]], measure_json: bool
) -> list[Figure]:
    figures: list[Figure] = []
    with CountedServer(n) as server, tempfile.TemporaryDirectory(prefix="qs-refetch-") as d:
        running = await sync(server.ws_url, server.api_url, d, window=WINDOW, mirror=True)
        try:
            async with asyncio.timeout(SETTLE_TIMEOUT):
                while running.cache.get(("workflows",)) is None:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            await _settle(running)
            touched: set[int] = set()
            for load in loads:
                outcome = await _load(server, running, load.schedule, n)
                touched.update(index for _, index, _ in outcome.writes)
                figures.extend(_rows(n, load.name, outcome))
            if measure_json:
                figures.extend(_json_rows((await running.api.fetch(("workflows",))).text, n))
            if fresh:
                idle = await _idle_get(running)
                figures.append(figure("refetch: one idle GET of a detail", idle * 1e3, "ms"))
                for rate, load in fresh:
                    outcome = await _load(server, running, load.schedule, n)
                    touched.update(index for _, index, _ in outcome.writes)
                    figures.extend(_freshness(rate, outcome, idle))
            expect = [("workflows",), *(("workflow", workflow_id(i)) for i in sorted(touched))]
            agreement = await audit(running.cache, running.api, expect=expect)
            figures.append(
                figure(
                    f"refetch N={n:,}: cached entries disagreeing with the server "
                    f"({agreement.checked} checked)",
                    len(agreement.disagreements),
                    "entries",
                    target="0",
                    met=agreement.ok,
                )
            )
        finally:
            await running.stop()
    return figures


def _freshness(rate: float, out: Outcome, idle: float) -> list[Figure]:
    delays, missing = out.freshness()
    label = f"refetch freshness at {rate:g} writes/s ({len(out.writes):,} writes)"
    p50, p99 = percentile(delays, 50) * 1e3, percentile(delays, 99) * 1e3
    rows = [
        figure(
            f"{label}: p50 vs one idle GET",
            p50,
            "ms",
            baseline=idle * 1e3,
            target="ratio <= 10" if rate <= 10 else None,
            met=p50 <= 10 * idle * 1e3 if rate <= 10 else None,
        ),
        figure(
            f"{label}: p99",
            p99,
            "ms",
            baseline=idle * 1e3,
            target=f"<= window + 50 ms = {WINDOW * 1e3 + 50:g} ms" if rate > 10 else None,
            met=p99 <= WINDOW * 1e3 + 50 if rate > 10 else None,
        ),
        figure(
            f"{label}: writes never seen fresh",
            missing,
            "writes",
            target="0",
            met=missing == 0,
        ),
    ]
    return rows


def run(*, small: bool = False) -> list[Figure]:
    """GETs and bytes per B1 for each N and load, then freshness at N = 100."""
    if small:
        sizes: tuple[int, ...] = (100,)
        loads = [
            Load("steady", steady(200, 1.0, 100, seed=1)),
            Load("bursts", bursts(4, 0.5, 50, 3, seed=2)),
        ]
        fresh = [
            (10.0, Load("10/s", steady(10, 1.0, 100, seed=3))),
            (500.0, Load("500/s", steady(250, 0.5, 100, seed=4))),
        ]
    else:
        sizes = SIZES
        loads = [
            Load("steady", steady(2_000, 10.0, 100, seed=1)),
            Load("bursts", bursts(20, 0.5, 50, 3, seed=2)),
        ]
        fresh = [
            (10.0, Load("10/s", steady(50, 5.0, 100, seed=3))),
            (500.0, Load("500/s", steady(2_000, 4.0, 100, seed=4))),
        ]
    figures: list[Figure] = []
    # The smoke run has no N = 1,000: it measures the JSON passes on its own list.
    json_at = 1_000 if 1_000 in sizes else sizes[0]
    for n in sizes:
        rows = _measure(n, loads, fresh if n == sizes[0] else [], measure_json=n == json_at)
        figures.extend(asyncio.run(rows))
    return figures


if __name__ == "__main__":
    import sys

    from .run import main

    raise SystemExit(main(["refetch", *sys.argv[1:]]))
