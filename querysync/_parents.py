"""ParentResolver: the thread of a message (and the workflow of a version) a frame does not name."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from reactivex import abc

from ._keys import PARENTS, QueryKey
from ._model import ResourceChangeUpdate
from ._nodetool import ENDPOINTS
from ._signals import Invalidation

if TYPE_CHECKING:
    from .sinks import CacheEvent, QueryCache

__all__ = ["ParentResolver"]

log = logging.getLogger("querysync.sync")

# list key name ("messages") -> (resource type, the body member holding its items)
_LISTS: dict[str, tuple[str, str]] = {
    parent.list_name: (rtype, items)
    for rtype, parent in PARENTS.items()
    if (items := ENDPOINTS[(parent.list_name, True)].items) is not None
}


# How many resources' last reached etags are remembered (see ParentResolver._reach).
_REMEMBERED = 4096


class ParentResolver:
    """Finds the parent a ``message`` or ``workflowversion`` frame lacks, and reaches its list.

    For each such change it looks in the cache first: the resource's own detail entry
    (a message's ``thread_id``), else the items of the cached parent lists (indexed as
    they are fetched). When the cache cannot tell, a message costs one
    ``GET /api/messages/{id}``, made through the cache so that it joins the detail fetch
    mirror mode starts anyway; a version (no GET serves one) reaches every cached
    version list instead. Then only the parent's list is invalidated, as the pipeline
    would have done had the frame named it; in mirror mode a list the cache does not
    hold yet is fetched, whole, except on ``deleted``. The live server announces every
    create twice with one etag: a change whose etag already reached the list is not
    applied again. ``counts``: ``from_cache``, ``fetched``, ``unresolved``, ``repeats``.
    """

    def __init__(self, cache: QueryCache, *, mirror: bool) -> None:
        self._cache = cache
        self._mirror = mirror
        # (resource type, id) -> parent id: a message never moves to another thread.
        self._index: dict[tuple[str, str], str] = {}
        self._primed = False
        # (resource type, id) -> the etag last reached; insertion order, oldest first.
        self._reached: dict[tuple[str, str], str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._events: abc.DisposableBase | None = cache.events().subscribe(self._on_event)
        self.counts: Counter[str] = Counter()

    def parent_of(self, resource_type: str, resource_id: str) -> str | None:
        """The parent id of a resource as far as the cache knows, else None."""
        parent = PARENTS.get(resource_type)
        if parent is None or not resource_id:
            return None
        found = self._from_detail(parent.detail, parent.field, resource_id)
        if found is None:
            if not self._primed:
                self._prime()
            found = self._index.get((resource_type, resource_id))
        return found

    def on_invalidation(self, item: Invalidation) -> None:
        """Reach the parent list of the change's resource, if its frame did not name it."""
        update = item.update
        parent = PARENTS.get(update.resource_type)
        if parent is None or not update.resource.id:
            return
        named = [k for k in item.keys if len(k) == 2 and k[0] == parent.list_name]
        if named:
            if self._mirror and update.event != "deleted":
                for key in named:
                    if key not in self._cache:
                        self._cache.prefetch(key)
            return
        found = self.parent_of(update.resource_type, update.resource.id)
        if found is not None:
            self.counts["from_cache"] += 1
            self._reach((parent.list_name, found), update)
        elif parent.detail is not None and update.event != "deleted":
            task = asyncio.get_running_loop().create_task(
                self._resolve(parent.detail, parent.field, parent.list_name, update)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif parent.detail is None:
            # A version nothing cached lists (a new one): every cached version list.
            self.counts["unresolved"] += 1
            self._reach((parent.list_name,), update)
        else:
            # A deleted message that no entry holds: there is nothing it could change.
            self.counts["unresolved"] += 1

    async def wait(self) -> None:
        """Return once no resolution runs."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def aclose(self) -> None:
        """Stop resolving: cancel what runs and stop watching the cache."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        if self._events is not None:
            self._events.dispose()
            self._events = None

    async def _resolve(
        self, detail: str, field: str, list_name: str, update: ResourceChangeUpdate
    ) -> None:
        rid = update.resource.id
        try:
            entry = await self._cache.fetch((detail, rid))
        except Exception:
            # A closed cache or a lost key costs this resolution only.
            log.exception("resolving the parent of %r failed", (detail, rid))
            entry = None
        data = entry.data if entry is not None else None
        parent = data.get(field) if isinstance(data, dict) else None
        if not isinstance(parent, str) or not parent:
            self.counts["unresolved"] += 1
            log.info("no %s for %r: its list is not refetched", field, (detail, rid))
            return
        self.counts["fetched"] += 1
        self._reach((list_name, parent), update)

    def _reach(self, key: QueryKey, update: ResourceChangeUpdate) -> None:
        etag = update.resource.etag
        seen = (update.resource_type, update.resource.id)
        if etag and self._reached.get(seen) == etag and update.event != "deleted":
            # The same state announced again (updated, then created): the list was
            # reached after the first announcement, so it already shows this state.
            self.counts["repeats"] += 1
            return
        if etag:
            self._reached.pop(seen, None)
            self._reached[seen] = etag
            if len(self._reached) > _REMEMBERED:
                del self._reached[next(iter(self._reached))]
        if self._mirror and len(key) == 2 and key not in self._cache:
            if update.event != "deleted":
                self._cache.prefetch(key)
            return
        # As the pipeline would have applied it, had the frame named the parent: the
        # cache's events carry the update, and no etag can prove a list fresh.
        late = Invalidation(update, (key,), ())
        self._cache.apply_invalidation(late, refetch="all" if self._mirror else "active")

    def _from_detail(self, detail: str | None, field: str, rid: str) -> str | None:
        if detail is None:
            return None
        entry = self._cache.get((detail, rid))
        value = (
            entry.data.get(field) if entry is not None and isinstance(entry.data, dict) else None
        )
        return value if isinstance(value, str) and value else None

    def _prime(self) -> None:
        # Lists loaded from disk were fetched before this process watched the events.
        self._primed = True
        for list_name in _LISTS:
            for key in self._cache.keys((list_name,)):
                self._index_list(key)

    def _on_event(self, event: CacheEvent) -> None:
        if event.kind in ("fetched", "set") and len(event.key) == 2:
            self._index_list(event.key)

    def _index_list(self, key: QueryKey) -> None:
        found = _LISTS.get(key[0]) if isinstance(key[0], str) else None
        parent = key[1] if len(key) == 2 else None
        if found is None or not isinstance(parent, str):
            return
        resource_type, member = found
        entry = self._cache.get(key)
        body: Any = entry.data if entry is not None else None
        items = body.get(member) if isinstance(body, dict) else None
        for item in items if isinstance(items, list) else ():
            rid = item.get("id") if isinstance(item, dict) else None
            if isinstance(rid, str) and rid:
                self._index[(resource_type, rid)] = parent
