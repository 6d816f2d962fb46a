"""KeyTrie: the query keys of a cache, arranged so a prefix finds its keys without a scan."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from querysync._keys import QueryKey

__all__ = ["KeyTrie"]


_Split = dict[QueryKey, Any] | list[dict[QueryKey, Any]]
"""A dict, or once it has grown past ``split_at`` entries, that many shards of one."""

SPLIT_AT = 8192
"""Entries from which one of the index's dicts becomes ``_SHARDS`` smaller ones."""

_SHARDS = 256


class KeyTrie:
    """A set of query keys with a small int mark each, found by prefix without a scan.

    Invalidating ``("workflow", "w1")`` in a cache of 100,000 entries must not look at
    the other 99,998: each key is also filed under each of its proper prefixes, so a
    prefix's keys are one dict lookup away and cost time in proportion to the matches.
    Elements compare as dict keys, i.e. with Python equality, the same rule
    :func:`querysync.key_matches` applies to tuples (so ``1``, ``1.0`` and ``True`` are
    one element, as they are in a tuple).

    Why flat dicts and not a tree of node objects: the cyclic garbage collector walks
    every container object alive at each full collection, on whichever thread starts
    it. A node object per key made the index the largest thing it walked (30,000 nodes
    for 10,000 threads: a 100 ms event-loop stall per full collection). Here a key
    costs entries in a few large dicts, and its tuple of JSON scalars is untracked by
    the collector after the first young collection it survives; the marks are ints.

    Why a large dict is split into shards (past ``split_at`` entries, 8,192 by
    default): growing a dict is one C call that copies it whole, holding the GIL. At a
    million keys, read on a worker thread by ``load_index``, the resizes at 350,000 and
    700,000 keys stopped the event loop for 240 to 700 ms each (first touches of fresh
    memory are slow in a VM). A shard never grows past a few thousand entries.
    """

    __slots__ = ("_marks", "_size", "_split_at", "_under")

    def __init__(self, *, split_at: int = SPLIT_AT) -> None:
        # What the owner keeps per key (the cache: the generation an entry is fresh at,
        # or -1 when stale). A small int: CPython shares those, so it costs one slot.
        self._marks: _Split = {}
        # Every proper, non-empty prefix of a key -> the keys under it (a dict as an
        # ordered set whose values are all None).
        self._under: dict[QueryKey, _Split] = {}
        self._size = 0
        self._split_at = split_at

    def __len__(self) -> int:
        return self._size

    def __contains__(self, key: QueryKey) -> bool:
        return key in _part(self._marks, key)

    def __iter__(self) -> Iterator[QueryKey]:
        return iter(_keys(self._marks))

    def add(self, key: QueryKey, mark: int = 0) -> bool:
        """Add ``key`` (or set its mark); True when it was not there yet."""
        marks = _part(self._marks, key)
        if key in marks:
            marks[key] = mark
            return False
        marks[key] = mark
        self._size += 1
        if isinstance(self._marks, dict) and self._size > self._split_at:
            self._marks = _split(self._marks)
        under = self._under
        for end in range(1, len(key)):
            prefix = key[:end]
            bucket = under.get(prefix)
            if bucket is None:
                under[prefix] = {key: None}
            elif isinstance(bucket, dict):
                bucket[key] = None
                if len(bucket) > self._split_at:
                    under[prefix] = _split(bucket)
            else:
                _part(bucket, key)[key] = None
        return True

    def mark_of(self, key: QueryKey) -> int | None:
        """The mark of ``key``; None when the key is not in the set."""
        mark: int | None = _part(self._marks, key).get(key)
        return mark

    def set_mark(self, key: QueryKey, mark: int) -> int | None:
        """Set the mark of ``key`` when it is in the set; its previous mark (None: absent)."""
        marks = _part(self._marks, key)
        old: int | None = marks.get(key)
        if old is not None:
            marks[key] = mark
        return old

    def count_marked(self, mark: int) -> int:
        """How many keys carry ``mark`` (a pass over every mark, in C)."""
        marks = self._marks
        if isinstance(marks, dict):
            return list(marks.values()).count(mark)
        return sum(list(shard.values()).count(mark) for shard in marks)

    def discard(self, key: QueryKey) -> bool:
        """Remove ``key`` and the prefix buckets it leaves empty; True when it was there."""
        if _part(self._marks, key).pop(key, None) is None:
            return False
        self._size -= 1
        under = self._under
        for end in range(1, len(key)):
            prefix = key[:end]
            bucket = under[prefix]
            if isinstance(bucket, dict):
                del bucket[key]
                if not bucket:
                    del under[prefix]
            else:
                del _part(bucket, key)[key]  # a split bucket stays, even emptied
        return True

    def matching(self, prefix: QueryKey, *, exact: bool = False) -> list[QueryKey]:
        """The keys equal to ``prefix`` (exact) or starting with it element by element."""
        if not prefix:
            return [] if exact else _keys(self._marks)
        found = [self._stored(prefix)] if prefix in _part(self._marks, prefix) else []
        if not exact:
            bucket = self._under.get(prefix)
            if bucket is not None:
                found.extend(_keys(bucket))
        return found

    def clear(self) -> None:
        """Forget every key."""
        self._marks = {}
        self._under = {}
        self._size = 0

    def _stored(self, key: QueryKey) -> QueryKey:
        """The key object as it was added, which may differ from an equal ``key``.

        ``("page", 1)`` and ``("page", True)`` are one key here but name different rows
        on disk, so the caller gets the one stored. Only numbers and booleans compare
        equal across types; keys without them (nearly all) are returned as they are.
        """
        if all(type(part) is str or part is None for part in key):
            return key
        pool = self._under.get(key[:-1], {}) if len(key) > 1 else self._marks
        for stored in _keys(pool):
            if len(stored) == len(key) and stored == key:
                return stored
        return key


def _part(split: _Split, key: QueryKey) -> dict[QueryKey, Any]:
    """The dict of ``split`` that holds ``key``, if anything does."""
    return split if isinstance(split, dict) else split[hash(key) % _SHARDS]


def _split(whole: dict[QueryKey, Any]) -> list[dict[QueryKey, Any]]:
    shards: list[dict[QueryKey, Any]] = [{} for _ in range(_SHARDS)]
    for key, value in whole.items():
        shards[hash(key) % _SHARDS][key] = value
    return shards


def _keys(split: _Split) -> list[QueryKey]:
    if isinstance(split, dict):
        return list(split)
    return [key for shard in split for key in shard]
