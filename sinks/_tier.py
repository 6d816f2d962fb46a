"""MemoryTier: the entries whose data is held in memory, within a byte budget (LRU).

Why a tier and not every entry: a cache of a million entries held whole took 4.4 GB
(parsed JSON is several times its text). Only the index (key and stale flag) stays for
every entry; data lives on disk and here, and a read that misses here reads the row.
Watched keys are pinned: their subscribers must be answered at once, so they are never
evicted (and do not count against the budget).
"""

from __future__ import annotations

from collections import OrderedDict

from querysync._keys import QueryKey

from ._entry import Record

__all__ = ["DEFAULT_MEMORY_LIMIT", "MemoryTier"]

DEFAULT_MEMORY_LIMIT = 64 * 1024 * 1024
"""Bytes of entry data held in memory by default (64 MiB)."""


class MemoryTier:
    """Records by key, least recently used first, evicted past ``limit`` bytes (estimated).

    ``limit`` 0 holds nothing but pinned keys. Not thread-safe: the cache's thread only.
    """

    __slots__ = ("_limit", "_lru", "_pinned", "_size", "evictions")

    def __init__(self, limit: int = DEFAULT_MEMORY_LIMIT) -> None:
        if limit < 0:
            raise ValueError("memory_limit must not be negative")
        self._limit = limit
        self._lru: OrderedDict[QueryKey, tuple[Record, int]] = OrderedDict()
        self._pinned: dict[QueryKey, Record | None] = {}
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
        return item[0]

    def put(self, key: QueryKey, record: Record) -> None:
        """Hold ``record`` as the current state of ``key``."""
        if key in self._pinned:
            self._pinned[key] = record
            return
        self._drop(key)
        size = record.size()
        if size > self._limit:
            return
        self._lru[key] = (record, size)
        self._size += size
        while self._size > self._limit:
            _, (_, dropped) = self._lru.popitem(last=False)
            self._size -= dropped
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
        self._size -= item[1]
        return item[0]
