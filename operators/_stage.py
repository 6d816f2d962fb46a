"""The shape every querysync operator shares: a callable operator that keeps counts."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from reactivex import Observable, abc

from querysync._signals import Resync

__all__ = ["Stage", "item_stage", "log"]

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


def item_stage(
    name: str, handle: Callable[[Any, Counter[str]], _R | None]
) -> Stage[Any, _R | Resync]:
    """A stage that turns each item into at most one item: ``handle`` returns None to skip.

    A :class:`querysync.Resync` passes through unchanged and in order, without reaching
    ``handle``; errors and completion pass through. ``handle`` must not raise for bad
    input: it counts, reports and returns None instead, so the stream goes on.
    """

    def build(source: Observable[Any], counts: Counter[str]) -> Observable[_R | Resync]:
        def subscribe(
            observer: abc.ObserverBase[_R | Resync],
            scheduler: abc.SchedulerBase | None = None,
        ) -> abc.DisposableBase:
            def on_next(item: Any) -> None:
                if isinstance(item, Resync):
                    observer.on_next(item)
                    return
                out = handle(item, counts)
                if out is not None:
                    observer.on_next(out)

            return source.subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler
            )

        return Observable(subscribe)

    return Stage(name, build)
