"""FetchWindows: when each query key may be fetched next, and the waits that timing needs.

At most one fetch of a key starts per window: the first request in a quiet key fetches
at once (the leading edge) and every request inside the window waits for it to close
(the trailing edge). The fetch scheduler holds a key here, outside its concurrency
slots, so a waiting key never keeps another key from being fetched.

Time is read only from a reactivex scheduler (``scheduler.now``) and every wait is a
timer on it, so tests drive windows, retry backoffs and fetch timeouts on virtual time
(a ``TestScheduler``) while the fetches themselves run on the real event loop.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from reactivex import abc

from querysync._keys import QueryKey
from querysync.operators._scheduling import LoopScheduler

__all__ = ["FetchWindows", "check_seconds"]


def check_seconds(name: str, seconds: float) -> None:
    """Refuse a negative, NaN or infinite duration (ValueError), naming the parameter."""
    if not (seconds >= 0 and math.isfinite(seconds)):  # `not >=` also catches NaN
        raise ValueError(f"{name} must be a finite number of seconds >= 0, not {seconds!r}")


class FetchWindows:
    """Per-key fetch windows of ``window`` seconds (0: no window), on ``scheduler``.

    ``scheduler`` defaults to the running asyncio loop's monotonic clock, bound on first
    use (the cache is built in synchronous code and bound to a loop later).
    """

    __slots__ = (
        "_default",
        "_last",
        "_loop",
        "_order",
        "_scheduler",
        "_wakers",
        "_window",
        "waiting",
    )

    def __init__(self, window: float, scheduler: abc.SchedulerBase | None = None) -> None:
        check_seconds("fetch_window", window)
        self._window = timedelta(seconds=window)
        self._scheduler = scheduler
        self._loop: asyncio.AbstractEventLoop | None = None
        self._default: LoopScheduler | None = None
        # When each key's last fetch began, while its window is open. Every window lasts
        # the same time, so they close in the order they opened: a FIFO prunes them
        # without a timer per key.
        self._last: dict[QueryKey, datetime] = {}
        self._order: deque[tuple[QueryKey, datetime]] = deque()
        # The future each held key waits on, so a removal can end the wait early.
        self._wakers: dict[QueryKey, asyncio.Future[None]] = {}
        # Waits (windows, backoffs) whose timer has not fired yet: what a test that
        # drives the clock by hand needs to know to tell "parked" from "running".
        self.waiting = 0

    @property
    def window(self) -> float:
        """The window, seconds."""
        return self._window.total_seconds()

    @property
    def scheduler(self) -> abc.SchedulerBase:
        """The scheduler time is read from; the running loop's when none was given."""
        if self._scheduler is not None:
            return self._scheduler
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._default is None:
            self._loop = loop
            self._default = LoopScheduler(loop)
        return self._default

    def started(self, key: QueryKey) -> None:
        """A fetch attempt of ``key`` begins now: its window opens."""
        if not self._window:
            return
        now = self.scheduler.now
        self._prune(now)
        self._last[key] = now
        self._order.append((key, now))

    def opens_at(self, key: QueryKey) -> datetime | None:
        """When ``key`` may be fetched again, or None when it may be fetched now."""
        last = self._last.get(key)
        if last is None:
            return None
        opens = last + self._window
        return opens if opens > self.scheduler.now else None

    async def hold(self, key: QueryKey, until: datetime) -> None:
        """Wait until ``until`` (a window's end), or until :meth:`release` of ``key``."""
        loop = asyncio.get_running_loop()
        waker: asyncio.Future[None] = loop.create_future()
        self._wakers[key] = waker
        try:
            await self._wait_for(
                waker, lambda sched: sched.schedule_absolute(until, self._waking(waker))
            )
        finally:
            if self._wakers.get(key) is waker:
                del self._wakers[key]

    def release(self, key: QueryKey) -> None:
        """End the window wait of ``key`` now, if one is held (the key was removed)."""
        waker = self._wakers.get(key)
        if waker is not None:
            self._wake(waker)

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on the scheduler (a retry's backoff)."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        waker: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._wait_for(
            waker, lambda sched: sched.schedule_relative(seconds, self._waking(waker))
        )

    def after(self, seconds: float, callback: Callable[[], None]) -> abc.DisposableBase:
        """Call ``callback`` on the scheduler in ``seconds``; dispose the result to cancel."""

        def action(_: abc.SchedulerBase, __: Any = None) -> None:
            callback()

        return self.scheduler.schedule_relative(seconds, action)

    async def _wait_for(
        self,
        waker: asyncio.Future[None],
        arm: Callable[[abc.SchedulerBase], abc.DisposableBase],
    ) -> None:
        self.waiting += 1
        timer = arm(self.scheduler)
        try:
            await waker
        finally:
            timer.dispose()
            if not waker.done():
                waker.cancel()
            if waker.cancelled():  # the waiting task was cancelled (aclose): never woken
                self.waiting -= 1

    def _wake(self, waker: asyncio.Future[None]) -> None:
        # Counted down as the timer fires (or the wait is released), not when the task
        # resumes: in between, the key is about to run, not parked.
        if not waker.done():
            waker.set_result(None)
            self.waiting -= 1

    def _waking(self, waker: asyncio.Future[None]) -> Callable[[abc.SchedulerBase, Any], None]:
        def action(_: abc.SchedulerBase, __: Any = None) -> None:
            self._wake(waker)

        return action

    def _prune(self, now: datetime) -> None:
        order, last, window = self._order, self._last, self._window
        while order and order[0][1] + window <= now:
            key, began = order.popleft()
            if last.get(key) == began:
                del last[key]

