"""Which scheduler a time-based operator runs on when the caller names none."""

from __future__ import annotations

import asyncio

from reactivex import abc
from reactivex.scheduler.eventloop import AsyncIOScheduler

from querysync._exceptions import ConfigurationError

__all__ = ["resolve_scheduler"]


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
    return AsyncIOScheduler(loop)
