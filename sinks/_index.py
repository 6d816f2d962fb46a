"""KeyTrie: the query keys of a cache, arranged so a prefix finds its keys without a scan."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from querysync._keys import QueryKey

__all__ = ["KeyTrie"]


class _Node:
    __slots__ = ("children", "key", "mark")

    def __init__(self) -> None:
        # Leaves are most nodes; they get a dict only when a longer key passes through.
        self.children: dict[Any, _Node] | None = None
        self.key: QueryKey | None = None
        # What the owner keeps per key (the cache: the generation an entry is fresh at,
        # or -1 when stale). A small int: CPython shares those, so it costs one slot.
        self.mark = 0


class KeyTrie:
    """A set of query keys, one trie level per key element.

    Invalidating ``("workflow", "w1")`` in a cache of 100,000 entries must not look at
    the other 99,998: walking two levels and collecting the subtree costs time in
    proportion to the matches, not to the cache. Elements compare as dict keys, i.e.
    with Python equality, the same rule :func:`querysync.key_matches` applies to
    tuples (so ``1``, ``1.0`` and ``True`` are one element, as they are in a tuple).
    """

    __slots__ = ("_root", "_size")

    def __init__(self) -> None:
        self._root = _Node()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __contains__(self, key: QueryKey) -> bool:
        node = self._find(key)
        return node is not None and node.key is not None

    def __iter__(self) -> Iterator[QueryKey]:
        return iter(self.matching(()))

    def add(self, key: QueryKey, mark: int = 0) -> bool:
        """Add ``key`` (or set its mark); True when it was not there yet."""
        node = self._root
        for part in key:
            if node.children is None:
                node.children = {}
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = _Node()
            node = child
        node.mark = mark
        if node.key is not None:
            return False
        node.key = key
        self._size += 1
        return True

    def mark_of(self, key: QueryKey) -> int | None:
        """The mark of ``key``; None when the key is not in the set."""
        node = self._find(key)
        return None if node is None or node.key is None else node.mark

    def set_mark(self, key: QueryKey, mark: int) -> int | None:
        """Set the mark of ``key`` when it is in the set; its previous mark (None: absent)."""
        node = self._find(key)
        if node is None or node.key is None:
            return None
        old, node.mark = node.mark, mark
        return old

    def count_marked(self, mark: int) -> int:
        """How many keys carry ``mark`` (a walk of the whole set)."""
        count = 0
        stack = [self._root]
        while stack:
            n = stack.pop()
            if n.key is not None and n.mark == mark:
                count += 1
            if n.children:
                stack.extend(n.children.values())
        return count

    def discard(self, key: QueryKey) -> bool:
        """Remove ``key`` and prune the branch it leaves empty; True when it was there."""
        path: list[tuple[_Node, Any]] = []
        node = self._root
        for part in key:
            children = node.children
            child = children.get(part) if children is not None else None
            if child is None:
                return False
            path.append((node, part))
            node = child
        if node.key is None:
            return False
        node.key = None
        self._size -= 1
        for parent, part in reversed(path):
            if node.key is not None or node.children:
                break
            assert parent.children is not None
            del parent.children[part]
            node = parent
        return True

    def matching(self, prefix: QueryKey, *, exact: bool = False) -> list[QueryKey]:
        """The keys equal to ``prefix`` (exact) or starting with it element by element."""
        node = self._find(prefix)
        if node is None:
            return []
        if exact:
            return [node.key] if node.key is not None else []
        found: list[QueryKey] = []
        stack = [node]
        while stack:
            n = stack.pop()
            if n.key is not None:
                found.append(n.key)
            if n.children:
                stack.extend(n.children.values())
        return found

    def clear(self) -> None:
        """Forget every key."""
        self._root = _Node()
        self._size = 0

    def _find(self, key: QueryKey) -> _Node | None:
        node = self._root
        for part in key:
            children = node.children
            if children is None:
                return None
            child = children.get(part)
            if child is None:
                return None
            node = child
        return node
