"""apply: the stage that turns invalidations into cache effects and passes them on."""

from __future__ import annotations

import logging
from collections import Counter

from reactivex import Observable, abc

from querysync._signals import Invalidation, Resync
from querysync.operators import Stage

from ._cache import QueryCache, RefetchType, _check_refetch

__all__ = ["apply_"]

log = logging.getLogger("querysync.sinks")

_Item = Invalidation | Resync


def apply_(
    cache: QueryCache,
    refetch: RefetchType,
    fetch_missing: bool,
    resync_refetch: RefetchType | None = None,
) -> Stage[_Item, _Item]:
    _check_refetch(refetch)
    on_resync = refetch if resync_refetch is None else resync_refetch
    _check_refetch(on_resync)

    def build(source: Observable[_Item], counts: Counter[str]) -> Observable[_Item]:
        def subscribe(
            observer: abc.ObserverBase[_Item], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            def on_next(item: _Item) -> None:
                try:
                    chosen = on_resync if isinstance(item, Resync) else refetch
                    cache.apply_invalidation(item, refetch=chosen, fetch_missing=fetch_missing)
                except Exception:
                    # A closed cache or a bad item costs this item's effects only: the
                    # stream (and the items after it) go on.
                    counts["errors"] += 1
                    cache._note_apply_error()
                    log.exception("applying %r to the cache failed", item)
                else:
                    counts["resyncs" if isinstance(item, Resync) else "applied"] += 1
                try:
                    observer.on_next(item)
                except Exception:
                    # Raised by a subscriber further down: the effects are done, and
                    # the source that called us must not be torn down by it.
                    counts["downstream_errors"] += 1
                    log.exception("a subscriber after apply() raised; continuing")

            return source.subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler
            )

        return Observable(subscribe)

    return Stage("apply", build)
