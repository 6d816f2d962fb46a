"""routed_to: decoded messages -> the ones addressed to one job, workflow or thread."""

from __future__ import annotations

from collections import Counter
from typing import Any

from reactivex import Observable, abc

from querysync._signals import Resync

from ._stage import Stage

__all__ = ["ROUTING_FIELDS", "routed_to_"]

ROUTING_FIELDS = ("job_id", "workflow_id", "thread_id")


def routed_to_(key: str) -> Stage[Any, dict[str, Any] | Resync]:
    def build(
        source: Observable[Any], counts: Counter[str]
    ) -> Observable[dict[str, Any] | Resync]:
        def subscribe(
            observer: abc.ObserverBase[dict[str, Any] | Resync],
            scheduler: abc.SchedulerBase | None = None,
        ) -> abc.DisposableBase:
            def on_next(message: Any) -> None:
                # A reconnect may have lost this job's messages too: its consumer needs
                # to hear about it as much as the cache does.
                if isinstance(message, Resync):
                    observer.on_next(message)
                    return
                # Resource changes only invalidate caches; the seed's router never hands
                # them to job, workflow or thread handlers.
                if not isinstance(message, dict) or message.get("type") == "resource_change":
                    return
                for name in ROUTING_FIELDS:
                    if message.get(name) == key:
                        counts["routed"] += 1
                        observer.on_next(message)
                        return

            return source.subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler
            )

        return Observable(subscribe)

    return Stage(f"routed_to({key!r})", build)
