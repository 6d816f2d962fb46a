"""The two consumers every feed benchmark compares: a hand-written loop and querysync's pipeline."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgpack
from pydantic import ValidationError
from reactivex import Observable

from querysync import KeyRegistry, QueryKey, ResourceChangeUpdate, nodetool_registry
from querysync._pipeline import Pipeline, build_pipeline
from querysync.sinks import QueryCache
from querysync.streams import ConnectionState, websocket

from ._feed import resource_ids

__all__ = [
    "HandWritten",
    "Outcome",
    "keys_of_resources",
    "prefill_cache",
    "run_hand_written",
    "run_pipeline",
    "run_stages",
]

_validate = ResourceChangeUpdate.model_validate
_MAX_MSG = 4 * 1024 * 1024


@dataclass
class Outcome:
    """How one consumer took one feed: messages, seconds, and what came out of it."""

    messages: int
    seconds: float
    cpu_seconds: float
    marked: int
    flush_seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Messages per second of wall-clock time."""
        return self.messages / self.seconds

    @property
    def cpu_rate(self) -> float:
        """Messages per second of this process's CPU time (all its threads).

        Steadier than ``rate`` on a shared machine: time spent waiting for a core that
        another process holds is not counted.
        """
        return self.messages / self.cpu_seconds


def keys_of_resources(count: int, registry: KeyRegistry | None = None) -> list[QueryKey]:
    """Every query key the feed's first ``count`` resources map to, general keys once."""
    reg = registry if registry is not None else nodetool_registry()
    keys: dict[QueryKey, None] = {}
    for index in range(count):
        resource_type, rid = resource_ids(index)
        update = ResourceChangeUpdate.model_validate(
            {"event": "updated", "resource_type": resource_type, "resource": {"id": rid}}
        )
        keys.update(dict.fromkeys(reg.keys_for(update)))
    return list(keys)


def prefill_cache(cache: QueryCache, keys: Iterable[QueryKey]) -> None:
    """A fresh entry for each key, written to disk before the run starts."""
    for key in keys:
        cache.set(key, {"key": list(key), "etag": "0"})
    cache.flush()


class HandWritten:
    """What a user would write without querysync: receive, decode, validate, mark stale."""

    def __init__(self, keys: Iterable[QueryKey], registry: KeyRegistry | None = None) -> None:
        self.registry = registry if registry is not None else nodetool_registry()
        self.stale: dict[QueryKey, bool] = dict.fromkeys(keys, False)
        self.messages = 0
        self.rejected = 0
        self.marked = 0

    def handle(self, data: bytes | str) -> ResourceChangeUpdate | None:
        """Decode, validate and apply one frame; the update, or None if it was not one."""
        self.messages += 1
        try:
            if isinstance(data, bytes):
                message = msgpack.unpackb(data, raw=False)
            else:
                message = json.loads(data)
            if not isinstance(message, dict) or message.get("type") != "resource_change":
                return None
            update = _validate(message)
        except (ValueError, ValidationError, msgpack.UnpackException):
            self.rejected += 1
            return None
        stale = self.stale
        for key in self.registry.keys_for(update):
            if key in stale:
                stale[key] = True
                self.marked += 1
        return update


async def run_hand_written(
    url: str,
    consumer: HandWritten,
    on_update: Callable[[ResourceChangeUpdate], None] | None = None,
) -> Outcome:
    """Take the feed at ``url`` with ``consumer`` until the server closes; timed from connect."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, max_msg_size=_MAX_MSG) as ws,
    ):
        began = time.perf_counter()
        cpu_began = time.process_time()
        handle = consumer.handle
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.BINARY or msg.type is aiohttp.WSMsgType.TEXT:
                update = handle(msg.data)
                if update is not None and on_update is not None:
                    on_update(update)
            elif msg.type is aiohttp.WSMsgType.CLOSE or msg.type is aiohttp.WSMsgType.CLOSED:
                break
            elif msg.type is aiohttp.WSMsgType.ERROR:
                raise RuntimeError(f"the feed failed: {msg.data}")
        seconds = time.perf_counter() - began
        cpu_seconds = time.process_time() - cpu_began
    return Outcome(consumer.messages, seconds, cpu_seconds, consumer.marked)


async def run_pipeline(
    url: str,
    cache: QueryCache,
    *,
    window: float | None = 0.25,
    tap: Callable[[Observable[Any]], Observable[Any]] | None = None,
    source_options: dict[str, Any] | None = None,
) -> Outcome:
    """Take the feed at ``url`` with websocket -> build_pipeline -> apply(cache).

    Timed from the connection to the pipeline's completion (the server closes with
    1000, the throttle flushes what it holds); ``flush_seconds`` is the extra time
    until the cache has written everything to disk. ``tap`` may wrap the source;
    ``source_options`` go to ``websocket()`` (its defaults otherwise, as ``sync`` has).
    """
    built: list[Pipeline] = []

    def build(source: Observable[Any]) -> Observable[Any]:
        stream = source if tap is None else tap(source)
        pipeline = build_pipeline(stream, cache, window=window, registry=nodetool_registry())
        built.append(pipeline)
        return pipeline.observable

    outcome = await run_stages(url, build, cache, source_options=source_options)
    counts = built[0].counts()
    outcome.counts.update(counts)
    outcome.marked = counts["invalidations"]
    return outcome


async def run_stages(
    url: str,
    build: Callable[[Observable[Any]], Observable[Any]],
    cache: QueryCache | None = None,
    *,
    source_options: dict[str, Any] | None = None,
) -> Outcome:
    """Take the feed at ``url`` with ``build(websocket(url))``, subscribed until it completes.

    Timed from the connection to the completion; then, with a ``cache``, until its
    writes are on disk (``flush_seconds``).
    """
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        options = {"max_msg_size": _MAX_MSG, **(source_options or {})}
        source = websocket(url, session=session, **options)
        stream = build(source)
        done: asyncio.Future[None] = loop.create_future()
        connected: list[tuple[float, float]] = []

        def on_state(state: ConnectionState) -> None:
            if state is ConnectionState.CONNECTED and not connected:
                connected.append((time.perf_counter(), time.process_time()))

        def on_error(error: Exception) -> None:
            if not done.done():
                done.set_exception(error)

        def on_completed() -> None:
            if not done.done():
                done.set_result(None)

        states = source.states.subscribe(on_state)
        subscription = stream.subscribe(on_error=on_error, on_completed=on_completed)
        try:
            await done
            ended = time.perf_counter()
            cpu_ended = time.process_time()
            if cache is not None:
                await cache.wait_idle()
            flushed = time.perf_counter()
        finally:
            subscription.dispose()
            states.dispose()
            await source.close()
    return Outcome(
        source.counts["messages"],
        ended - connected[0][0],
        cpu_ended - connected[0][1],
        0,
        flushed - ended,
        {f"source.{k}": v for k, v in source.counts.items()},
    )
