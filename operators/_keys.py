"""expand_keys: ResourceChangeUpdate -> Invalidation(update, keys)."""

from __future__ import annotations

from collections import Counter

from reactivex import Observable, abc

from querysync._keys import KeyRegistry, default_registry
from querysync._model import ResourceChangeUpdate
from querysync._signals import Invalidation, Resync

from ._stage import Stage, log

__all__ = ["expand_keys_"]


def expand_keys_(
    registry: KeyRegistry | None = None,
) -> Stage[ResourceChangeUpdate | Resync, Invalidation | Resync]:
    reg = registry if registry is not None else default_registry()

    def build(
        source: Observable[ResourceChangeUpdate | Resync], counts: Counter[str]
    ) -> Observable[Invalidation | Resync]:
        def subscribe(
            observer: abc.ObserverBase[Invalidation | Resync],
            scheduler: abc.SchedulerBase | None = None,
        ) -> abc.DisposableBase:
            def on_next(item: ResourceChangeUpdate | Resync) -> None:
                if isinstance(item, Resync):
                    observer.on_next(item)
                    return
                keys = reg.keys_for(item)
                if not keys:
                    rt = item.resource_type
                    if reg.is_ignored(rt):
                        counts["ignored"] += 1
                    else:
                        counts["unknown_type"] += 1
                        # Warn once per type: a server that emits a new type emits it
                        # often, and one line says all there is to say.
                        first = counts[f"unknown_type:{rt}"] == 0
                        counts[f"unknown_type:{rt}"] += 1
                        if first:
                            log.warning("no query keys for resource type %r; dropped", rt)
                    counts["dropped"] += 1
                    return
                counts["invalidations"] += 1
                observer.on_next(Invalidation(item, tuple(keys)))

            return source.subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler
            )

        return Observable(subscribe)

    return Stage("expand_keys", build)
