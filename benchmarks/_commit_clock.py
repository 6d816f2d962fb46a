"""When did each query key's row reach the disk? Stamps taken as a QueryCache's transactions commit.

Given to ``QueryCache(..., on_commit=clock)``: the cache calls it on its writer thread
right after each transaction commits, with the keys the transaction wrote. It adds a
clock read per transaction and a dict lookup per key to the writer's work.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from querysync import QueryKey

__all__ = ["CommitClock"]


class CommitClock:
    """``committed[key]``: ``time.perf_counter()`` when the key's first row committed since start().

    Commits before :meth:`start` (filling the cache) are not recorded.
    """

    def __init__(self) -> None:
        self.committed: dict[QueryKey, float] = {}
        self.transactions = 0
        self._running = False

    def start(self) -> None:
        """Record the commits from now on."""
        self._running = True

    def __call__(self, keys: Sequence[QueryKey]) -> None:
        if not self._running:
            return
        now = time.perf_counter()
        self.transactions += 1
        committed = self.committed
        for key in keys:
            committed.setdefault(key, now)
