"""Plain helpers shared by several test files (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from querysync import JSON, LIST_KEYS, Fetched, QueryKey, endpoint_for, nodetool_registry
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


def data_of(fetched: object) -> Any:
    """What a fetcher answered, as data: a :class:`querysync.Fetched`'s data, or itself."""
    return fetched.data if isinstance(fetched, Fetched) else fetched


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
