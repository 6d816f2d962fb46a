"""The resync: after changes were missed, fetch only what the lists cannot prove current.

What it reads is data, not branches: each list endpoint's ``detail``, ``proof`` and
``names_all`` (``ENDPOINTS`` in ``_nodetool.py``); docs/refetch.md shows the outcome per
type. Run by :class:`querysync.Sync` in mirror mode, after a reconnect and at the start
on a persisted cache, once every entry has been marked stale (in O(1) writes).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

from ._keys import KeyRegistry, QueryKey
from ._nodetool import ENDPOINTS, INCOMPLETE_MEMBER, LIST_KEYS, Endpoint

if TYPE_CHECKING:
    from .sinks import CacheEntry, QueryCache

__all__ = ["WIDTH", "resync"]

log = logging.getLogger("querysync.sync")

WIDTH = 16
"""Fetches the resync asks for at once: the cache runs ``concurrency`` of them (default 8)
and the rest wait their turn, so that 20,000 refetches never become 20,000 tasks."""

_YIELD_EVERY = 500  # items looked at between two returns to the event loop

Items = dict[str, dict[str, Any]]


class _Listed:
    """The items of one type read from its list(s), and whether they name every resource."""

    __slots__ = ("complete", "items")

    def __init__(self) -> None:
        self.items: Items = {}
        self.complete = True

    def add(self, entry: CacheEntry | BaseException | None, ep: Endpoint) -> None:
        body = entry.data if entry is not None and not isinstance(entry, BaseException) else None
        items = body.get(ep.items) if isinstance(body, dict) and ep.items else None
        if not isinstance(items, list) or entry is None or isinstance(entry, BaseException):
            self.complete = False  # not read: absence from it proves nothing
            return
        if entry.stale or body.get(INCOMPLETE_MEMBER) is True:  # type: ignore[union-attr]
            self.complete = False
        for item in items:
            if not isinstance(item, dict):
                continue
            rid = item.get("id")
            if isinstance(rid, str) and rid:
                self.items[rid] = item


async def resync(
    cache: QueryCache,
    registry: KeyRegistry,
    *,
    width: int = WIDTH,
    trusted: Callable[[], AbstractSet[QueryKey]] = frozenset,
) -> Counter[str]:
    """Read every list (every page), then fetch what they cannot prove; what was done.

    Per listed type, a cached detail whose list item proves it current (the endpoint's
    ``proof``) is marked fresh without a GET; every other listed resource's detail is
    fetched (new, changed, or unprovable), as is each of its other mirrored keys (a
    thread's messages, a workflow's versions: no list etag covers them). A cached
    detail missing from a complete list that ``names_all`` is removed with its mirrored
    keys, without a GET; missing from any other list, it is fetched (a 404 removes it).
    The per-resource lists fetched so (a thread's messages) are then the lists of their
    own items' type, which goes through the same steps. Counts: ``confirmed``,
    ``fetched``, ``removed``. ``trusted()`` names the list keys whose fetch in flight
    started after the connection (``Sync`` prefetches the lists then): joined, not
    repeated.
    """
    counts: Counter[str] = Counter()
    keys = list(LIST_KEYS)
    # The keys cached before the lists are asked for: only they can be gone. One that a
    # frame brings in meanwhile names a resource the lists may be too old to show.
    before = set(cache.keys())
    # A list fetch in flight now may have asked before a change that a cached detail
    # already shows: its answer could make that resource look gone. It is waited for,
    # and the list read by a fetch that starts after it.
    started_now = trusted()
    earlier = [k for k in keys if cache.fetching(k) and k not in started_now]
    if earlier:
        await asyncio.gather(*(cache.fetch(k) for k in earlier), return_exceptions=True)
    entries = await asyncio.gather(*(cache.fetch(k) for k in keys), return_exceptions=True)
    for key, entry in zip(keys, entries, strict=True):
        ep = ENDPOINTS[(str(key[0]), False)]
        if ep.detail is None or ep.item_type is None:
            continue
        listed = _Listed()
        listed.add(entry, ep)
        await _resync_type(cache, registry, ep, listed, counts, width, before)
    return counts


async def _resync_type(
    cache: QueryCache,
    registry: KeyRegistry,
    ep: Endpoint,
    listed: _Listed,
    counts: Counter[str],
    width: int,
    before: set[QueryKey],
) -> None:
    assert ep.detail is not None
    assert ep.item_type is not None
    detail = ep.detail
    others = _other_keys(registry, ep.item_type, detail)
    fresh = await cache.confirm_many(_proofs(cache, ep, detail, listed.items))
    counts["confirmed"] += len(fresh)
    wanted: list[QueryKey] = []
    for n, rid in enumerate(listed.items):
        if (detail, rid) not in fresh:
            wanted.append((detail, rid))
        for name in others:
            wanted.append((name, rid))
        if n % _YIELD_EVERY == _YIELD_EVERY - 1:
            await asyncio.sleep(0)
    # Gone: a resource some key of which is cached (its detail, or only its messages).
    gone = [
        k
        for name in (detail, *others)
        for k in cache.keys((name,))
        if len(k) == 2
        and k[1] not in listed.items
        and k in before
        # Fetched since the resync began: maybe newer than the list, so kept.
        and not cache.marked_fresh(k)
    ]
    if gone and listed.complete and ep.names_all:
        for n, key in enumerate(gone):
            counts["removed"] += cache.remove(key, exact=True)
            if n % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)
    else:
        # Absent from a list that may not name it: a GET tells (a 404 removes the key).
        wanted.extend(gone)
    # The items of every one of these lists (a thread's messages), as one list of their
    # type: complete when every list of every resource was read (none cut, none failed).
    # Taken from each entry as it comes: 10,000 parsed lists held until the last one
    # arrived were as many objects more for every full collection to walk.
    unions: dict[str, tuple[_Listed, Endpoint]] = {}
    for name in others:
        child = _child_endpoint(name)
        if child is not None:
            unions[name] = (_Listed(), child)
            unions[name][0].complete = listed.complete

    def take(key: QueryKey, entry: CacheEntry | BaseException | None) -> None:
        # A listed resource's own list; a gone one's (fetched for its 404) is no item.
        found = unions.get(str(key[0]))
        if found is not None and key[1] in listed.items:
            found[0].add(entry, found[1])

    await _fetch_spread(cache, wanted, width, take)
    counts["fetched"] += len(wanted)
    for union, child in unions.values():
        await _resync_type(cache, registry, child, union, counts, width, before)


def _other_keys(registry: KeyRegistry, resource_type: str, detail: str) -> tuple[str, ...]:
    """The names of the mirrored keys of one resource besides its detail (``messages``)."""
    from ._sync import mirrored_keys

    probe = "\x00resync-probe"
    names = []
    for key in mirrored_keys(registry, resource_type, probe):
        if len(key) == 2 and key[1] == probe and key[0] != detail and isinstance(key[0], str):
            names.append(key[0])
    return tuple(names)


def _child_endpoint(name: str) -> Endpoint | None:
    """The endpoint of a per-resource list whose items have their own details, if any."""
    ep = ENDPOINTS.get((name, True))
    return ep if ep is not None and ep.items is not None and ep.detail is not None else None


def _proofs(
    cache: QueryCache, ep: Endpoint, detail: str, items: Items
) -> Iterator[tuple[QueryKey, Callable[[CacheEntry], bool]]]:
    """The proof of each listed resource whose detail is cached, made as it is asked for
    (``confirm_many`` takes them a batch at a time and yields the loop between)."""
    for rid, item in items.items():
        key: QueryKey = (detail, rid)
        test = _proof(ep, item)
        if test is not None and key in cache:
            yield key, test


def _proof(ep: Endpoint, item: dict[str, Any]) -> Callable[[CacheEntry], bool] | None:
    if ep.proof == "etag":
        etag = item.get("etag")
        if isinstance(etag, str) and etag:
            return lambda entry: entry.etag == etag
        return None
    if ep.proof == "data":
        return lambda entry: entry.data == item
    return None


async def _fetch_spread(
    cache: QueryCache,
    keys: Iterable[QueryKey],
    width: int,
    take: Callable[[QueryKey, CacheEntry | BaseException | None], None],
) -> None:
    """Fetch ``keys``, ``width`` at a time; ``take`` is given each key's outcome."""
    pending: set[asyncio.Task[None]] = set()

    async def one(key: QueryKey) -> None:
        try:
            entry: CacheEntry | BaseException | None = await cache.fetch(key)
        except Exception as exc:  # no fetcher, a closed cache: this key only
            log.warning("resync: fetching %r failed: %s", key, exc)
            entry = exc
        take(key, entry)

    try:
        for key in dict.fromkeys(keys):
            if len(pending) >= width:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            pending.add(asyncio.ensure_future(one(key)))
        if pending:
            await asyncio.wait(pending)
    finally:
        # Cancelled (the sync stops): the fetches asked for stop with it.
        for task in pending:
            task.cancel()
