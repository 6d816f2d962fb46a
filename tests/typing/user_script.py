"""A user's script as mypy --strict sees it: entry data used without casts or Any.

``scripts/test`` type-checks this folder with the rest of ``tests/``; ``assert_type``
fails that check if ``CacheEntry.data`` or ``watch()``'s items turn back into ``Any``.
``tests/test_typed_script.py`` runs it against the embedded server.
"""

from __future__ import annotations

from typing import assert_type

import querysync
from querysync.sinks import CacheEntry, QueryCache, QueryStatus


def workflow_names(entry: CacheEntry | None) -> dict[str, str]:
    """Workflow id -> name, from the ``("workflows",)`` entry's body."""
    if entry is None:
        return {}
    body = entry.data
    assert_type(body, querysync.JSON)
    if not isinstance(body, dict):
        return {}
    items = body.get("workflows")
    names: dict[str, str] = {}
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            wid, name = item.get("id"), item.get("name")
            if isinstance(wid, str) and isinstance(name, str):
                names[wid] = name
    return names


async def use_the_verbs(cache: QueryCache) -> None:
    """TanStack's verbs, typed: refetch, status, set with an updater."""
    refetched = await cache.refetch(("workflows",))
    assert_type(refetched, int)
    assert refetched == 1
    status = cache.status(("workflows",))
    assert_type(status, QueryStatus)
    assert status.has_data
    assert status.failure_count == 0
    assert not status.fetching

    def add_one(old: querysync.JSON) -> querysync.JSON:
        return (old if isinstance(old, int) else 0) + 1

    cache.set(("counter",), add_one)
    cache.set(("counter",), lambda old: [old])
    counter = cache.get(("counter",))
    assert counter is not None
    assert counter.data == [1]


async def mirror_names(ws_url: str, api_url: str, directory: str) -> dict[str, str]:
    """Sync once to a quiet point, then read the workflow names from the cache."""
    async with querysync.sync(ws_url, api_url, directory, window=0.05) as running:
        assert_type(running, querysync.Sync)
        await running.settle()
        stats = running.stats()
        assert_type(stats["cache"], querysync.CacheStats)
        fetched: int = stats["cache"]["fetched"]
        assert fetched >= 0
        seen: list[querysync.JSON] = []
        running.cache.watch(("workflows",)).subscribe(seen.append)
        await use_the_verbs(running.cache)
        return workflow_names(running.cache.get(("workflows",)))
