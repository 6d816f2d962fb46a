"""Watchdog: one timer per connection that cancels the receiving task when it goes silent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["Watchdog"]

CHECKS_PER_TIMEOUT = 4
"""How often the watchdog looks, per timeout: a silent connection is caught within 1.25x."""


class Watchdog:
    """A timer that cancels ``task`` once ``activity()`` has not changed for ``timeout`` s.

    aiohttp's ``receive(timeout=...)`` arms and cancels a timer for every frame, which
    costs more than everything else the source does per frame. The watchdog instead
    reads a counter the receive loop keeps anyway, every ``timeout / 4`` seconds: a
    change means the connection is alive; no change since ``timeout`` seconds ago means
    it is silent. Since a change is dated when it is seen, not when the frame came, the
    watchdog never fires early and fires at most a quarter of ``timeout`` late.

    On firing it sets :attr:`fired` and cancels ``task``, as ``asyncio.timeout`` would:
    the task catches the ``CancelledError``, sees ``fired`` and calls ``task.uncancel()``
    (a cancellation left after that one is someone else's, and must go on). Call
    :meth:`stop` when the connection ends, before the task goes on to anything else.
    """

    def __init__(
        self, task: asyncio.Task[Any], timeout: float, activity: Callable[[], int]
    ) -> None:
        self.fired = False
        self._task = task
        self._timeout = timeout
        self._interval = timeout / CHECKS_PER_TIMEOUT
        self._activity = activity
        self._loop = task.get_loop()
        self._seen = activity()
        self._quiet_since = self._loop.time()
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(
            self._quiet_since + self._interval, self._check
        )

    def stop(self) -> None:
        """Disarm the timer; the watchdog does nothing after this."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        self._handle = None
        now = self._loop.time()
        seen = self._activity()
        if seen != self._seen:
            self._seen = seen
            self._quiet_since = now
        elif now - self._quiet_since >= self._timeout:
            self.fired = True
            self._task.cancel()
            return
        when = min(now + self._interval, self._quiet_since + self._timeout)
        self._handle = self._loop.call_at(when, self._check)
