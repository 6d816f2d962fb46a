"""KeyTrie: the query keys of a cache, arranged so a prefix finds its keys without a scan."""

from __future__ import annotations

from collections.abc import Iterator

from querysync._keys import QueryKey

__all__ = ["KeyTrie"]


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
    """

    __slots__ = ("_marks", "_under")

    def __init__(self) -> None:
        # What the owner keeps per key (the cache: the generation an entry is fresh at,
        # or -1 when stale). A small int: CPython shares those, so it costs one slot.
        self._marks: dict[QueryKey, int] = {}
        # Every proper, non-empty prefix of a key -> the keys under it (a dict as an
        # ordered set whose values are all None).
        self._under: dict[QueryKey, dict[QueryKey, None]] = {}

    def __len__(self) -> int:
        return len(self._marks)

    def __contains__(self, key: QueryKey) -> bool:
        return key in self._marks

    def __iter__(self) -> Iterator[QueryKey]:
        return iter(list(self._marks))

    def add(self, key: QueryKey, mark: int = 0) -> bool:
        """Add ``key`` (or set its mark); True when it was not there yet."""
        marks = self._marks
        if key in marks:
            marks[key] = mark
            return False
        marks[key] = mark
        under = self._under
        for end in range(1, len(key)):
            prefix = key[:end]
            bucket = under.get(prefix)
            if bucket is None:
                under[prefix] = {key: None}
            else:
                bucket[key] = None
        return True

    def mark_of(self, key: QueryKey) -> int | None:
        """The mark of ``key``; None when the key is not in the set."""
        return self._marks.get(key)

    def set_mark(self, key: QueryKey, mark: int) -> int | None:
        """Set the mark of ``key`` when it is in the set; its previous mark (None: absent)."""
        marks = self._marks
        old = marks.get(key)
        if old is not None:
            marks[key] = mark
        return old

    def count_marked(self, mark: int) -> int:
        """How many keys carry ``mark`` (a pass over every mark, in C)."""
        return list(self._marks.values()).count(mark)

    def discard(self, key: QueryKey) -> bool:
        """Remove ``key`` and the prefix buckets it leaves empty; True when it was there."""
        if self._marks.pop(key, None) is None:
            return False
        under = self._under
        for end in range(1, len(key)):
            prefix = key[:end]
            bucket = under[prefix]
            del bucket[key]
            if not bucket:
                del under[prefix]
        return True

    def matching(self, prefix: QueryKey, *, exact: bool = False) -> list[QueryKey]:
        """The keys equal to ``prefix`` (exact) or starting with it element by element."""
        if not prefix:
            return [] if exact else list(self._marks)
        found = [self._stored(prefix)] if prefix in self._marks else []
        if not exact:
            bucket = self._under.get(prefix)
            if bucket is not None:
                found.extend(bucket)
        return found

    def clear(self) -> None:
        """Forget every key."""
        self._marks = {}
        self._under = {}

    def _stored(self, key: QueryKey) -> QueryKey:
        """The key object as it was added, which may differ from an equal ``key``.

        ``("page", 1)`` and ``("page", True)`` are one key here but name different rows
        on disk, so the caller gets the one stored. Only numbers and booleans compare
        equal across types; keys without them (nearly all) are returned as they are.
        """
        if all(type(part) is str or part is None for part in key):
            return key
        pool = self._under.get(key[:-1], {}) if len(key) > 1 else self._marks
        for stored in pool:
            if len(stored) == len(key) and stored == key:
                return stored
        return key
