"""A user's script as mypy --strict sees it: entry data used without casts or Any.

``scripts/test`` type-checks this folder with the rest of ``tests/``; ``assert_type``
fails that check if ``CacheEntry.data`` or ``watch()``'s items turn back into ``Any``.
``tests/test_typed_script.py`` runs it against the embedded server.
"""

from __future__ import annotations

from typing import assert_type

import querysync
from querysync.sinks import CacheEntry


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
        return workflow_names(running.cache.get(("workflows",)))
