"""When did each query key's row reach the disk? Stamps taken as a QueryCache's transactions commit.

``QueryCache`` has no public commit hook yet, so this wraps the ``diskcache.Cache`` its
writer thread uses (``cache._store._cache``, private). The writer looks that attribute
up for every transaction, so the wrapper sees each row it writes and the moment the
transaction that held the row has committed. It runs on the writer thread and adds a
list append per row; remove it once the cache can report commits itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from querysync import QueryKey
from querysync.sinks import QueryCache

__all__ = ["CommitClock"]


class CommitClock:
    """``committed[key]``: ``time.perf_counter()`` when the key's first row committed."""

    def __init__(self, cache: QueryCache) -> None:
        store = cache._store
        self._inner: Any = store._cache
        self._rows: list[Any] = []
        self.committed: dict[QueryKey, float] = {}
        self.transactions = 0
        store._cache = self

    @contextmanager
    def transact(self, retry: bool = False) -> Iterator[None]:
        """The wrapped cache's transaction; stamps its rows once it has committed."""
        self._rows = []
        with self._inner.transact(retry=retry):
            yield
        now = time.perf_counter()
        self.transactions += 1
        for key in self._rows:
            if isinstance(key, tuple):
                self.committed.setdefault(key, now)
        self._rows = []

    def set(self, key: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        self._rows.append(key)
        return self._inner.set(key, value, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
