"""Throughput over loopback: frames per second, querysync's pipeline against a hand-written loop.

A server in another process pushes ``N`` pre-encoded ``resource_change`` frames (ids
drawn from 1,000 resources) as fast as the socket takes them, once as MessagePack and
once as JSON. Two consumers take each feed:

- hand-written: an aiohttp receive loop that decodes, validates with
  ``ResourceChangeUpdate.model_validate``, looks the keys up in the registry and marks
  them stale in a dict;
- querysync: ``websocket()`` -> ``resource_changes`` -> ``throttle_per_resource(0.25)``
  -> ``expand_keys`` -> ``apply(QueryCache)`` in a temporary directory, with the
  source's defaults (as ``sync`` uses it); once more with ``silence_timeout=None``,
  because the hand-written loop has no dead-connection detection at all. The default
  timeout is watched by one timer per connection (it reads the frame counter every
  ``silence_timeout / 4`` s), not per frame, so the two rows should differ only by noise.

Both are timed from the connection to the last frame handled (for querysync: the
stream's completion, after the throttle has flushed). The cache's disk writes go on in
its writer thread; the time they take after the stream ended is reported apart.
``python -m benchmarks.bench_throughput --profile`` prints where the pipeline's time goes
(cProfile), ``--breakdown`` the CPU time per message as the stages are added one by one
(add ``--json`` for the JSON feed).
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from reactivex import Observable

from querysync import nodetool_registry
from querysync.operators import expand_keys, resource_changes, throttle_per_resource
from querysync.sinks import QueryCache

from ._consumers import (
    HandWritten,
    Outcome,
    keys_of_resources,
    prefill_cache,
    run_hand_written,
    run_pipeline,
    run_stages,
)
from ._feed import Feed, FeedServer
from ._figures import Figure, figure

__all__ = ["run"]

RESOURCES = 1_000
WINDOW = 0.25
TARGET_RATIO = 0.8
TARGET_RATE = 150_000.0
Encoding = Literal["msgpack", "json"]
ENCODINGS: tuple[Encoding, ...] = ("msgpack", "json")
QUIET: dict[str, Any] = {"silence_timeout": None}


async def _hand_written(url: str) -> Outcome:
    return await run_hand_written(url, HandWritten(keys_of_resources(RESOURCES)))


async def _pipeline(
    url: str,
    profile: cProfile.Profile | None = None,
    source_options: dict[str, Any] | None = None,
) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="querysync-bench-") as directory:
        cache = QueryCache(directory)
        try:
            prefill_cache(cache, keys_of_resources(RESOURCES))
            if profile is not None:
                profile.enable()
            try:
                return await run_pipeline(url, cache, window=WINDOW, source_options=source_options)
            finally:
                if profile is not None:
                    profile.disable()
        finally:
            await cache.aclose()


def _feeds(count: int, rounds: int) -> dict[str, Feed]:
    # Each connection gets its own copy of the feed, so a consumer never meets a
    # server that is still busy with the previous one.
    return {
        f"{encoding}-{who}-{n}": Feed(encoding, count, RESOURCES, seed=n)
        for encoding in ENCODINGS
        for who in ("hand", "pipe", "quiet")
        for n in range(rounds)
    }


@dataclass(frozen=True)
class _Best:
    hand: Outcome
    pipe: Outcome
    quiet: Outcome  # the pipeline without the source's silence timeout


async def _measure(server: FeedServer, rounds: int) -> dict[str, _Best]:
    best: dict[str, _Best] = {}
    for encoding in ENCODINGS:
        hands: list[Outcome] = []
        pipes: list[Outcome] = []
        quiets: list[Outcome] = []
        for n in range(rounds):
            # Alternate, so a noisy neighbour hurts the consumers alike.
            hands.append(await _hand_written(server.url(f"{encoding}-hand-{n}")))
            pipes.append(await _pipeline(server.url(f"{encoding}-pipe-{n}")))
            quiets.append(
                await _pipeline(server.url(f"{encoding}-quiet-{n}"), source_options=QUIET)
            )
        best[encoding] = _Best(_best(hands), _best(pipes), _best(quiets))
    return best


def _best(outcomes: list[Outcome]) -> Outcome:
    # The best round is the one least disturbed by the rest of the machine.
    return max(outcomes, key=lambda o: o.rate)


def run(*, small: bool = False) -> list[Figure]:
    """Messages per second for both consumers and both encodings, and their ratio."""
    count = 2_000 if small else 200_000
    rounds = 1 if small else 3
    with FeedServer(_feeds(count, rounds)) as server:
        results = asyncio.run(_measure(server, rounds))
    figures: list[Figure] = []
    for encoding, b in results.items():
        hand, pipe, quiet = b.hand, b.pipe, b.quiet
        for outcome in (hand, pipe, quiet):
            if outcome.messages != count:
                raise RuntimeError(f"{encoding}: {outcome.messages} of {count} frames arrived")
        figures.append(
            figure(
                f"throughput {encoding}: pipeline vs hand-written loop ({count:,} frames)",
                pipe.rate,
                "msg/s",
                baseline=hand.rate,
                target=f"ratio >= {TARGET_RATIO}",
                met=pipe.rate >= TARGET_RATIO * hand.rate,
            )
        )
        figures.append(
            figure(
                f"throughput {encoding}: pipeline absolute",
                pipe.rate,
                "msg/s",
                target=f"> {TARGET_RATE:,.0f} msg/s",
                met=pipe.rate > TARGET_RATE,
            )
        )
        figures.append(
            figure(
                f"throughput {encoding}: per CPU-second (pipeline vs hand-written)",
                pipe.cpu_rate,
                "msg/cpu-s",
                baseline=hand.cpu_rate,
                target=f"ratio >= {TARGET_RATIO}",
                met=pipe.cpu_rate >= TARGET_RATIO * hand.cpu_rate,
            )
        )
        figures.append(
            figure(
                f"throughput {encoding}: pipeline without silence_timeout vs hand-written",
                quiet.rate,
                "msg/s",
                baseline=hand.rate,
            )
        )
        figures.append(
            figure(f"throughput {encoding}: cache flush after the stream", pipe.flush_seconds, "s")
        )
    return figures


class _ReceiveOnly(HandWritten):
    """The floor: aiohttp's receive loop and nothing else."""

    def handle(self, data: bytes | str) -> None:
        self.messages += 1


async def _stage_costs(server: FeedServer, tries: int) -> list[tuple[str, float]]:
    registry = nodetool_registry()
    stages: list[tuple[str, Callable[[Observable[Any]], Observable[Any]]]] = [
        ("websocket(silence_timeout=None)", lambda s: s),
        ("+ resource_changes", lambda s: s.pipe(resource_changes())),
        (
            "+ throttle_per_resource(0.25)",
            lambda s: s.pipe(resource_changes(), throttle_per_resource(WINDOW)),
        ),
        (
            "+ expand_keys",
            lambda s: s.pipe(
                resource_changes(), throttle_per_resource(WINDOW), expand_keys(registry)
            ),
        ),
    ]
    rows: list[tuple[str, float]] = []
    n = 0

    def url() -> str:
        nonlocal n
        n += 1
        return server.url(f"b{n - 1}")

    def run_stages_at_next_url(
        build: Callable[[Observable[Any]], Observable[Any]],
    ) -> Awaitable[Outcome]:
        # Without the silence timeout; the last row shows the source with its defaults.
        return run_stages(url(), build, source_options=QUIET)

    async def best(run: Callable[[], Awaitable[Outcome]]) -> float:
        outcomes = [await run() for _ in range(tries)]
        return min(o.cpu_seconds / o.messages for o in outcomes)

    rows.append(
        (
            "aiohttp receive loop alone",
            await best(lambda: run_hand_written(url(), _ReceiveOnly([]))),
        )
    )
    rows.append(
        (
            "hand-written loop",
            await best(lambda: run_hand_written(url(), HandWritten(keys_of_resources(RESOURCES)))),
        )
    )
    for label, build in stages:
        rows.append((label, await best(partial(run_stages_at_next_url, build))))
    rows.append(
        (
            "+ apply(QueryCache)",
            await best(lambda: _pipeline(url(), source_options=QUIET)),
        )
    )
    rows.append(
        (
            "the pipeline as sync() builds it",
            await best(lambda: _pipeline(url())),
        )
    )
    return rows


def breakdown(encoding: Encoding = "msgpack", count: int = 200_000, tries: int = 2) -> str:
    """CPU microseconds per message of the pipeline built up stage by stage, and the baseline."""
    feeds = {f"b{i}": Feed(encoding, count, RESOURCES, seed=i) for i in range(8 * tries)}
    with FeedServer(feeds) as server:
        rows = asyncio.run(_stage_costs(server, tries))
    out = [f"{encoding}, {count:,} frames, best of {tries}: CPU µs per message (all threads)"]
    previous = None
    for label, cost in rows:
        step = (
            ""
            if previous is None or not label.startswith("+")
            else f"  ({(cost - previous) * 1e6:+.2f})"
        )
        out.append(f"  {label:40s} {cost * 1e6:6.2f}{step}")
        if label.startswith(("websocket", "+")):
            previous = cost
    out.append(
        "  (the last row: websocket()'s default silence_timeout=45 s, watched by one timer"
        " per connection, not per frame)"
    )
    return "\n".join(out)


def profile(encoding: Encoding = "msgpack", count: int = 200_000, top: int = 30) -> str:
    """cProfile of the pipeline taking one feed: the ``top`` functions by own time."""
    prof = cProfile.Profile()
    with FeedServer({"p": Feed(encoding, count, RESOURCES)}) as server:
        outcome = asyncio.run(_pipeline(server.url("p"), prof))
    out = io.StringIO()
    print(f"{outcome.messages} messages in {outcome.seconds:.2f} s under the profiler", file=out)
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


if __name__ == "__main__":
    chosen: Encoding = "json" if "--json" in sys.argv[1:] else "msgpack"
    if "--profile" in sys.argv[1:]:
        print(profile(chosen))
    elif "--breakdown" in sys.argv[1:]:
        print(breakdown(chosen))
    else:
        from .run import main

        raise SystemExit(main(["throughput", *(a for a in sys.argv[1:] if a == "--small")]))
