"""ConnectionState and the observable cell that holds a source's current state."""

from __future__ import annotations

import logging
from collections import Counter
from enum import StrEnum

from reactivex import Observable, abc
from reactivex.disposable import Disposable

__all__ = ["ConnectionState", "StateCell"]

log = logging.getLogger("querysync.streams")


class ConnectionState(StrEnum):
    """Where a WebSocket source stands; the values are plain strings."""

    CONNECTING = "connecting"
    """The first connection attempt of a run is under way."""
    CONNECTED = "connected"
    """A connection is open and frames are being read."""
    RECONNECTING = "reconnecting"
    """The connection was lost or refused; waiting for, or making, the next attempt."""
    CLOSED = "closed"
    """No connection: not started yet, closed by the server with 1000, or closed by us."""
    FAILED = "failed"
    """Gave up: rejected credentials, a final close code, or too many failed attempts."""


class StateCell:
    """The current ``ConnectionState`` and an Observable of its changes.

    Like a ``BehaviorSubject``: a subscriber gets the current state at once, then
    every change (a repeated state is not emitted twice). It never completes, since
    a source that closed can be started again by a new subscription. A subscriber
    that raises is logged and counted, and still gets the next changes.
    """

    def __init__(self, counts: Counter[str], initial: ConnectionState) -> None:
        self._counts = counts
        self._value = initial
        self._observers: dict[int, abc.ObserverBase[ConnectionState]] = {}
        self._next_token = 0
        self.observable: Observable[ConnectionState] = Observable(self._subscribe)

    @property
    def value(self) -> ConnectionState:
        """The current state."""
        return self._value

    def set(self, state: ConnectionState) -> None:
        """Move to ``state`` and tell the subscribers, unless it is the current one."""
        if state == self._value:
            return
        log.debug("connection state %s -> %s", self._value, state)
        self._value = state
        for token, observer in list(self._observers.items()):
            if token in self._observers:
                self._deliver(observer, state)

    def _deliver(self, observer: abc.ObserverBase[ConnectionState], state: ConnectionState) -> None:
        try:
            observer.on_next(state)
        except Exception:
            self._counts["subscriber_errors"] += 1
            log.exception("a subscriber of the connection states raised")

    def _subscribe(
        self,
        observer: abc.ObserverBase[ConnectionState],
        scheduler: abc.SchedulerBase | None = None,
    ) -> abc.DisposableBase:
        token = self._next_token
        self._next_token += 1
        self._observers[token] = observer
        self._deliver(observer, self._value)

        def unsubscribe() -> None:
            self._observers.pop(token, None)

        return Disposable(unsubscribe)
