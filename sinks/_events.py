"""CacheEvent, and Broadcast: a fan-out whose subscribers cannot break the publisher."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar, get_args

from reactivex import Observable, abc
from reactivex.disposable import Disposable

from querysync._keys import QueryKey
from querysync._model import ResourceChangeUpdate

__all__ = ["EVENT_KINDS", "Broadcast", "CacheEvent", "CacheEventKind"]

log = logging.getLogger("querysync.sinks")

CacheEventKind = Literal[
    "set",
    "invalidated",
    "skipped_fresh",
    "removed",
    "resync",
    "fetch_started",
    "fetch_retry",
    "fetched",
    "fetch_failed",
    "fetch_gone",
    "fetch_discarded",
    "fetch_cancelled",
]
EVENT_KINDS: tuple[CacheEventKind, ...] = get_args(CacheEventKind)


@dataclass(frozen=True, slots=True)
class CacheEvent:
    """One thing the cache did to one key.

    ``kind``:

    - ``set``: :meth:`QueryCache.set` stored data;
    - ``invalidated``: an entry was marked stale;
    - ``skipped_fresh``: an update's etag equals the entry's, so it stayed fresh (or a
      list proved a stale entry current: :meth:`QueryCache.confirm_many`);
    - ``removed``: an entry was removed;
    - ``resync``: everything was invalidated after a :class:`querysync.Resync` (key ``()``);
    - ``fetch_started``: one fetch attempt began;
    - ``fetch_retry``: an attempt failed and another follows after a backoff;
    - ``fetched``: a fetch stored new data;
    - ``fetch_failed``: the last attempt failed; the entry keeps its data and the error;
    - ``fetch_gone``: the server answered 404 (:class:`querysync.ResourceGone`); the entry
      was removed, not retried: the resource was deleted, which is no failure;
    - ``fetch_discarded``: a fetch finished after its key was removed; its data was dropped;
    - ``fetch_cancelled``: :meth:`QueryCache.cancel` stopped a fetch; the entry is unchanged.

    ``at`` is epoch seconds, ``error`` the failure's message (fetch_retry, fetch_failed)
    and ``update`` the resource change that caused it, when one did.
    """

    kind: CacheEventKind
    key: QueryKey
    at: float
    error: str | None = None
    update: ResourceChangeUpdate | None = None


_T = TypeVar("_T")


class Broadcast(Generic[_T]):
    """Hands each value to every current subscriber; one that raises is logged and skipped.

    A ``reactivex.Subject`` stops at the first observer that raises and lets the
    exception reach the publisher; here the publisher is the cache, in the middle of
    an invalidation, so a faulty subscriber must cost only its own notification.
    ``on_last`` runs when the last subscriber leaves.
    """

    __slots__ = ("_counts", "_observers", "on_last")

    def __init__(self, counts: Counter[str]) -> None:
        self._observers: list[abc.ObserverBase[_T]] = []
        # Failures are counted as "subscriber_errors" here, shared with the owner.
        self._counts = counts
        self.on_last: Callable[[], None] | None = None

    def __bool__(self) -> bool:
        return bool(self._observers)

    def __len__(self) -> int:
        return len(self._observers)

    def observable(
        self, on_subscribe: Callable[[abc.ObserverBase[_T]], None] | None = None
    ) -> Observable[_T]:
        """An Observable of what is published from now on.

        ``on_subscribe`` runs after the observer is registered, e.g. to send it a
        current value.
        """

        def subscribe(
            observer: abc.ObserverBase[_T], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            self._observers.append(observer)
            if on_subscribe is not None:
                on_subscribe(observer)

            def dispose() -> None:
                try:
                    self._observers.remove(observer)
                except ValueError:
                    return
                if not self._observers and self.on_last is not None:
                    self.on_last()

            return Disposable(dispose)

        return Observable(subscribe)

    def emit(self, value: _T) -> None:
        """Send ``value`` to every subscriber, isolating their failures."""
        for observer in tuple(self._observers):
            self.send(observer, value)

    def send(self, observer: abc.ObserverBase[_T], value: _T) -> None:
        """Send ``value`` to one subscriber, isolating its failure."""
        try:
            observer.on_next(value)
        except Exception:
            self._counts["subscriber_errors"] += 1
            log.exception("a cache subscriber raised; it misses this value, the cache goes on")

    def complete(self) -> None:
        """Complete every subscriber and forget them."""
        observers, self._observers = self._observers, []
        for observer in observers:
            try:
                observer.on_completed()
            except Exception:
                self._counts["subscriber_errors"] += 1
                log.exception("a cache subscriber raised on completion")
