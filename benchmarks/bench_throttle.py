"""Memory and threads: many distinct resources through ``throttle_per_resource``.

Each update names a resource never seen before, so every update opens a window of its
own (``window`` seconds, on the asyncio loop). The figures: resident memory growth once
every window has closed, peak growth while they were open, OS threads before, during
and after, and updates per second. The baseline is what reactivex offers out of the
box: ``group_by`` on the same key with a ``throttle_first`` per group (leading edge
only, and a group is never released). Each variant runs in a fresh process.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Literal

from reactivex import Observable
from reactivex import operators as ops
from reactivex.scheduler.eventloop import AsyncIOScheduler
from reactivex.subject import Subject

from querysync import Resource, ResourceChangeUpdate
from querysync.operators import throttle_per_resource

from ._figures import Figure, figure
from ._isolated import in_fresh_process
from ._process import settled_resident_bytes, thread_count

__all__ = ["run"]

Variant = Literal["querysync", "group_by", "none"]

WINDOW = 0.05  # seconds: short, so a million windows close within the run
CHUNK = 10_000  # updates made, pushed, then dropped together; bounds the test data's memory
MB = 1_000_000


@dataclass(frozen=True)
class Measure:
    """What one variant did, in its own process."""

    variant: str
    updates: int
    emitted: int
    busy: float
    growth_after: int
    growth_peak: int
    threads_before: int
    threads_during: int
    threads_after: int

    @property
    def rate(self) -> float:
        return self.updates / self.busy


def _chunk(start: int, count: int) -> list[ResourceChangeUpdate]:
    # model_construct skips validation: the benchmark times the throttle, not pydantic.
    return [
        ResourceChangeUpdate.model_construct(
            event="updated",
            resource_type="workflow",
            resource=Resource.model_construct(id=f"r{i}", etag=None),
        )
        for i in range(start, start + count)
    ]


def _stage(variant: Variant, scheduler: AsyncIOScheduler) -> Any:
    if variant == "querysync":
        # No scheduler given: the default one, on the running loop, is what users get.
        return throttle_per_resource(WINDOW)
    if variant == "group_by":

        def per_group(group: Observable[ResourceChangeUpdate]) -> Observable[Any]:
            return group.pipe(ops.throttle_first(WINDOW, scheduler=scheduler))

        def grouped(source: Observable[ResourceChangeUpdate]) -> Observable[Any]:
            return source.pipe(
                ops.group_by(lambda u: (u.resource_type, u.resource.id)),
                ops.flat_map(per_group),
            )

        return grouped
    return ops.map(lambda u: u)


async def _measure(variant: Variant, updates: int, chunk_size: int) -> Measure:
    scheduler = AsyncIOScheduler(asyncio.get_running_loop())
    subject: Subject[ResourceChangeUpdate] = Subject()
    emitted = 0

    def count(_: object) -> None:
        nonlocal emitted
        emitted += 1

    stream: Observable[Any] = subject.pipe(_stage(variant, scheduler))
    subscription = stream.subscribe(count)
    # Warm up with the same allocation pattern, so the first measurement does not count
    # the allocator's arenas for the test data as growth.
    for start in range(-5 * chunk_size, 0, chunk_size):
        chunk = _chunk(start, chunk_size)
        del chunk
    before = settled_resident_bytes()
    threads_before = threads_during = thread_count()
    peak = before
    busy = 0.0
    on_next = subject.on_next
    for start in range(0, updates, chunk_size):
        chunk = _chunk(start, min(chunk_size, updates - start))
        began = time.perf_counter()
        for update in chunk:
            on_next(update)
        # Closing windows is part of the cost: the loop runs the due timers here.
        await asyncio.sleep(0)
        busy += time.perf_counter() - began
        del chunk
        threads_during = max(threads_during, thread_count())
        if start % (10 * chunk_size) == 0:
            peak = max(peak, settled_resident_bytes())
    peak = max(peak, settled_resident_bytes())
    await asyncio.sleep(3 * WINDOW)
    after = settled_resident_bytes()
    threads_after = thread_count()
    subscription.dispose()
    return Measure(
        variant,
        updates,
        emitted,
        busy,
        after - before,
        peak - before,
        threads_before,
        threads_during,
        threads_after,
    )


def measure(variant: Variant, updates: int, chunk_size: int = CHUNK) -> Measure:
    """Push ``updates`` distinct resources through ``variant`` on a fresh asyncio loop.

    Updates are made ``chunk_size`` at a time (outside the timed part) and dropped once
    pushed, so the test data never holds more than one chunk.
    """
    return asyncio.run(_measure(variant, updates, chunk_size))


def run(*, small: bool = False) -> list[Figure]:
    """The throttle's memory growth, threads and speed, against ``group_by``."""
    updates = 5_000 if small else 1_000_000
    chunk_size = 1_000 if small else CHUNK
    # group_by holds a Subject, a subscription chain and locks per group forever; at a
    # million groups that is gigabytes and minutes, so it runs on fewer resources and the
    # comparison is per resource.
    baseline_updates = 500 if small else 20_000
    ours = in_fresh_process(measure, "querysync", updates, chunk_size)
    base = in_fresh_process(measure, "group_by", baseline_updates, chunk_size)
    if ours.emitted != updates or base.emitted != baseline_updates:
        raise RuntimeError(f"lost updates: {ours.emitted}/{updates}, {base.emitted}")
    per_resource = ours.growth_after / updates
    base_per_resource = base.growth_after / baseline_updates
    constant = ours.threads_before == ours.threads_during == ours.threads_after
    label = f"{updates:,} resources"
    return [
        figure(
            f"throttle: memory growth after windows close ({label})",
            ours.growth_after / MB,
            "MB",
            target="< 20 MB",
            met=ours.growth_after < 20 * MB,
        ),
        figure(
            "throttle: memory held per resource after close",
            per_resource,
            "B",
            baseline=base_per_resource,
            target="ratio < 1",
            met=per_resource < base_per_resource,
        ),
        figure(f"throttle: peak memory growth ({label})", ours.growth_peak / MB, "MB"),
        figure(
            "throttle: OS threads during the run",
            ours.threads_during,
            "threads",
            baseline=ours.threads_before,
            target="constant (before = during = after)",
            met=constant,
        ),
        figure(
            "throttle: updates per second",
            ours.rate,
            "msg/s",
            baseline=base.rate,
            target="ratio >= 1",
            met=ours.rate >= base.rate,
        ),
    ]


if __name__ == "__main__":
    import sys

    from .run import main

    raise SystemExit(main(["throttle", *sys.argv[1:]]))
