"""MemoryTier: the entries whose data is held in memory, within a byte budget (LRU).

Why a tier and not every entry: a cache of a million entries held whole took 4.4 GB
(parsed JSON is several times its text). Only the index (key and stale flag) stays for
every entry; data lives on disk and here, and a read that misses here reads the row.
Watched keys are pinned: their subscribers must be answered at once, so they are never
evicted (and do not count against the budget).

Unpinned entries are held as their JSON text in a tuple of scalars, and decoded again
on each read. Why not the parsed data: the cyclic garbage collector walks every
container object alive at each full collection, on whichever thread starts it, the
event loop's included. 64 MiB of parsed JSON is hundreds of thousands of dicts and
lists (with a record and an entry object each): measured, full collections of 80 to
100 ms during a restart of 10,000 threads. A tuple of strings and numbers is untracked
by the collector after the first young collection it survives, and text is about a
fifth of the memory of its parsed form.
"""

from __future__ import annotations

from collections import OrderedDict

from querysync._keys import QueryKey

from ._entry import Head, Record

# (data_json, etag, stale, updated_at, error, gen, size): scalars only, untracked by gc.
_Held = tuple[str, str | None, bool, float, str | None, int, int]

_RECENT = 256
"""Records most recently put or read, kept as objects (decoded once read): a fetch's
caller, or a key read again and again, gets its data without a second decode."""

_OVERHEAD = 450
"""Bytes an unpinned entry costs beside its text and etag. Counted by tracemalloc: the
text's own header (49), the tuple (112), the ordered dict's slot and link (about 90),
the float of ``updated_at`` (24), the etag's header (49); and 90 to 130 more of the
allocators' own (resident memory given back when the tier is emptied, per entry held,
measured by bench_cache at 100,000 and 1,000,000 entries)."""

__all__ = ["DEFAULT_MEMORY_LIMIT", "MemoryTier"]

DEFAULT_MEMORY_LIMIT = 64 * 1024 * 1024
"""Bytes of entry data held in memory by default (64 MiB)."""


class MemoryTier:
    """Records by key, least recently used first, evicted past ``limit`` bytes (estimated).

    ``limit`` 0 holds nothing but pinned keys. Not thread-safe: the cache's thread only.
    """

    __slots__ = ("_limit", "_lru", "_pinned", "_recent", "_size", "evictions")

    def __init__(self, limit: int = DEFAULT_MEMORY_LIMIT) -> None:
        if limit < 0:
            raise ValueError("memory_limit must not be negative")
        self._limit = limit
        self._lru: OrderedDict[QueryKey, _Held] = OrderedDict()
        self._pinned: dict[QueryKey, Record | None] = {}
        self._recent: OrderedDict[QueryKey, Record] = OrderedDict()
        self._size = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._lru) + sum(1 for r in self._pinned.values() if r is not None)

    @property
    def size(self) -> int:
        """Estimated bytes held by the unpinned records."""
        return self._size

    def get(self, key: QueryKey) -> Record | None:
        """The record of ``key`` when it is held (now the most recently used)."""
        pinned = self._pinned.get(key)
        if pinned is not None:
            return pinned
        item = self._lru.get(key)
        if item is None:
            return None
        self._lru.move_to_end(key)
        recent = self._recent
        record = recent.get(key)
        if record is None:
            record = _record(key, item)
            self._remember(key, record)
        else:
            recent.move_to_end(key)
        return record

    def holds(self, key: QueryKey, record: Record) -> bool:
        """Whether ``key``'s held state is ``record``'s, or nothing is held for it."""
        pinned = self._pinned.get(key)
        if pinned is not None:
            return pinned is record
        item = self._lru.get(key)
        return item is None or item[:6] == _held(record, 0)[:6]

    def put(self, key: QueryKey, record: Record) -> None:
        """Hold ``record`` as the current state of ``key``."""
        if key in self._pinned:
            self._pinned[key] = record
            return
        self._drop(key)
        size = _OVERHEAD + len(record.json()) + len(record.etag or "")
        if size > self._limit:
            return
        self._lru[key] = _held(record, size)
        self._remember(key, record)
        self._size += size
        while self._size > self._limit:
            gone, dropped = self._lru.popitem(last=False)
            self._recent.pop(gone, None)
            self._size -= dropped[6]
            self.evictions += 1

    def discard(self, key: QueryKey) -> None:
        """Forget the record of ``key`` (removed, or changed on disk only)."""
        if key in self._pinned:
            self._pinned[key] = None
        else:
            self._drop(key)

    def clear(self) -> None:
        """Forget every unpinned record and the records of the pinned keys."""
        self._lru.clear()
        self._recent.clear()
        self._size = 0
        for key in self._pinned:
            self._pinned[key] = None

    def pin(self, key: QueryKey, record: Record | None) -> None:
        """Keep ``key`` whatever the budget (its record, or None for none yet)."""
        held = self._drop(key)
        self._pinned[key] = record if record is not None else held

    def unpin(self, key: QueryKey) -> None:
        """Let ``key`` be evicted again."""
        record = self._pinned.pop(key, None)
        if record is not None:
            self.put(key, record)

    def _drop(self, key: QueryKey) -> Record | None:
        item = self._lru.pop(key, None)
        if item is None:
            return None
        self._size -= item[6]
        return self._recent.pop(key, None) or _record(key, item)

    def _remember(self, key: QueryKey, record: Record) -> None:
        recent = self._recent
        recent[key] = record
        recent.move_to_end(key)
        if len(recent) > _RECENT:
            recent.popitem(last=False)


def _held(record: Record, size: int) -> _Held:
    _, etag, stale, updated_at, error = record.head
    return (record.json(), etag, stale, updated_at, error, record.gen, size)


def _record(key: QueryKey, item: _Held) -> Record:
    data_json, etag, stale, updated_at, error, gen, _ = item
    head: Head = (key, etag, stale, updated_at, error)
    return Record.of_text(head, data_json, gen)
