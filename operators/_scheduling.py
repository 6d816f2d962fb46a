"""Which scheduler a time-based operator runs on when the caller names none."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from reactivex import abc
from reactivex.scheduler.eventloop import AsyncIOScheduler

from querysync._exceptions import ConfigurationError

__all__ = ["LoopScheduler", "resolve_scheduler"]


def resolve_scheduler(
    scheduler: abc.SchedulerBase | None, scheduler_: abc.SchedulerBase | None
) -> abc.SchedulerBase:
    """``scheduler`` (the operator's), else ``scheduler_`` (the subscription's), else the loop.

    reactivex's own default, TimeoutScheduler, starts one OS thread per timer; with
    thousands of open windows that is thousands of threads, so querysync never uses it.
    """
    if scheduler is not None:
        return scheduler
    if scheduler_ is not None:
        return scheduler_
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise ConfigurationError(
            "no scheduler given and no running asyncio loop: pass scheduler= "
            "(an AsyncIOScheduler, or a TestScheduler in tests) or subscribe inside a coroutine"
        ) from None
    return LoopScheduler(loop)


class LoopScheduler(AsyncIOScheduler):
    """An ``AsyncIOScheduler`` whose ``now`` follows the loop's monotonic clock.

    reactivex reports wall-clock time, so a clock stepped back by NTP would keep held
    updates in the throttle until the wall clock caught up. Anchoring ``now`` to
    ``loop.time()`` keeps windows exactly as long as they say.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._loop_ref = loop
        self._origin = datetime.now(UTC) - timedelta(seconds=loop.time())

    @property
    def now(self) -> datetime:
        return self._origin + timedelta(seconds=self._loop_ref.time())
