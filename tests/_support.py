"""Plain helpers shared by several test files (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from reactivex.testing import TestScheduler

from querysync import JSON, LIST_KEYS, Fetched, QueryKey, endpoint_for, nodetool_registry
from querysync.sinks import QueryCache
from querysync.testing import change


async def until(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    """Return as soon as ``predicate()`` holds; TimeoutError after ``seconds``."""
    async with asyncio.timeout(seconds):
        # The conditions span processes, the cache and server counters: no one event to await.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def obj(data: JSON) -> dict[str, Any]:
    """``data`` (an entry's JSON) as the object it must be; fails the test otherwise."""
    assert isinstance(data, dict), data
    return data


def data_of(fetched: Fetched) -> Any:
    """The data of what ``NodeToolApi.fetch`` answered (a :class:`querysync.Fetched`)."""
    assert isinstance(fetched, Fetched), fetched
    return fetched.data


def mirrored_keys(snapshot: dict[str, dict[str, Any]]) -> list[QueryKey]:
    """What mirror mode promises: every list, and the fetchable keys of each live resource.

    Derived here rather than taken from querysync.cli's ``expected_keys``, so that the
    audits in the tests do not check the code against itself.
    """
    registry = nodetool_registry()
    keys: list[QueryKey] = list(LIST_KEYS)
    for resource_type, resources in snapshot.items():
        for resource_id in resources:
            _, specific = registry.split(change("updated", resource_type, resource_id))
            keys.extend(k for k in specific if endpoint_for(k) is not None)
    return keys


def wire(event: str, resource_type: str, resource: dict[str, Any]) -> dict[str, Any]:
    """A ``resource_change`` message as the backend sends it, before any encoding."""
    return {
        "type": "resource_change",
        "event": event,
        "resource_type": resource_type,
        "resource": resource,
    }


async def parked(cache: QueryCache) -> None:
    """Run the loop until every fetch is done or waits on the (virtual) clock."""
    for _ in range(1000):
        await asyncio.sleep(0)
        stats = cache.stats()
        if stats["in_flight"] == stats["waiting"]:
            return
    raise AssertionError(f"fetches still running: {cache.stats()}")


async def spin(turns: int = 100) -> None:
    """Let the loop run ``turns`` times (for fetches that hang, so never park)."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def at(clock: TestScheduler, cache: QueryCache, seconds: float) -> None:
    """Move virtual time to ``seconds``, then let what that released run."""
    clock.advance_to(seconds)
    await parked(cache)
