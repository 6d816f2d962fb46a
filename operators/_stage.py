"""The shape every querysync operator shares: a callable operator that keeps counts."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Generic, TypeVar

from reactivex import Observable

__all__ = ["Stage", "log"]

_T = TypeVar("_T")
_R = TypeVar("_R")

log = logging.getLogger("querysync.operators")


class Stage(Generic[_T, _R]):
    """An operator (``Observable[T] -> Observable[R]``) that counts what it did.

    ``counts`` is shared by every subscription of this operator instance, so a pipeline
    can read how many frames were rejected or coalesced without extra wiring.
    """

    __slots__ = ("_build", "counts", "name")

    def __init__(
        self,
        name: str,
        build: Callable[[Observable[_T], Counter[str]], Observable[_R]],
    ) -> None:
        self.name = name
        self.counts: Counter[str] = Counter()
        self._build = build

    def __call__(self, source: Observable[_T]) -> Observable[_R]:
        return self._build(source, self.counts)

    def __repr__(self) -> str:
        return f"<{self.name} {dict(self.counts)}>"
