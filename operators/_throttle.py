"""throttle_per_resource: leading and trailing throttle, keyed by (resource_type, id)."""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Hashable
from datetime import datetime, timedelta
from typing import Any

from reactivex import Observable, abc, typing
from reactivex.disposable import CompositeDisposable, Disposable, SerialDisposable

from querysync._exceptions import ConfigurationError
from querysync._model import ResourceChangeUpdate
from querysync._signals import Resync

from ._scheduling import resolve_scheduler
from ._stage import Stage, log

__all__ = ["throttle_per_resource_"]

_Item = ResourceChangeUpdate | Resync


class _Window:
    __slots__ = ("deadline", "held")

    def __init__(self, deadline: datetime) -> None:
        self.deadline = deadline
        self.held: ResourceChangeUpdate | None = None


def _check_window(window: typing.RelativeTime) -> None:
    # Checked at the call, not at subscription: a bad window is a mistake in the code
    # that builds the pipeline, and should fail there rather than as an on_error later.
    seconds = window.total_seconds() if isinstance(window, timedelta) else float(window)
    if not (seconds > 0 and math.isfinite(seconds)):  # `not >` also catches NaN
        raise ConfigurationError(
            f"window must be a finite number of seconds greater than zero, got {window!r}"
        )


def throttle_per_resource_(
    window: typing.RelativeTime,
    scheduler: abc.SchedulerBase | None = None,
) -> Stage[_Item, _Item]:
    _check_window(window)

    def build(source: Observable[_Item], counts: Counter[str]) -> Observable[_Item]:
        def subscribe(
            observer: abc.ObserverBase[_Item],
            scheduler_: abc.SchedulerBase | None = None,
        ) -> abc.DisposableBase:
            sched = resolve_scheduler(scheduler, scheduler_)
            duration = sched.to_timedelta(window)

            open_windows: dict[Hashable, _Window] = {}
            # Every window lasts the same time, so windows close in the order they
            # opened: one FIFO and one pending timer replace a timer per resource.
            closing: deque[tuple[Hashable, _Window]] = deque()
            timer = SerialDisposable()
            stopped = False

            def arm() -> None:
                if closing:
                    timer.disposable = sched.schedule_absolute(closing[0][1].deadline, on_timer)

            def emit_held(update: ResourceChangeUpdate) -> None:
                try:
                    observer.on_next(update)
                except Exception:
                    # Raised by a subscriber downstream while we run on the scheduler:
                    # nobody above us could catch it, and the other windows must go on.
                    counts["downstream_errors"] += 1
                    log.exception("subscriber raised on a trailing update; continuing")

            def on_timer(_: abc.SchedulerBase, __: Any = None) -> None:
                if stopped:
                    return
                now = sched.now
                while closing and closing[0][1].deadline <= now:
                    key, win = closing.popleft()
                    held = win.held
                    if held is None:
                        del open_windows[key]
                        continue
                    win.held = None
                    win.deadline = now + duration
                    closing.append((key, win))
                    counts["trailing"] += 1
                    emit_held(held)
                    if stopped:
                        return
                arm()

            def on_next(item: _Item) -> None:
                if not isinstance(item, ResourceChangeUpdate):
                    observer.on_next(item)
                    return
                key = (item.resource_type, item.resource.id)
                win = open_windows.get(key)
                if win is not None:
                    if win.held is not None:
                        counts["coalesced"] += 1
                    win.held = item
                    return
                win = _Window(sched.now + duration)
                open_windows[key] = win
                closing.append((key, win))
                if len(closing) == 1:
                    arm()
                counts["leading"] += 1
                observer.on_next(item)

            def stop() -> None:
                nonlocal stopped
                stopped = True
                timer.dispose()
                open_windows.clear()
                closing.clear()

            def on_completed() -> None:
                held = [win.held for _, win in closing if win.held is not None]
                stop()
                for update in held:
                    counts["flushed"] += 1
                    observer.on_next(update)
                observer.on_completed()

            def on_error(error: Exception) -> None:
                stop()
                observer.on_error(error)

            subscription = source.subscribe(on_next, on_error, on_completed, scheduler=scheduler_)
            return CompositeDisposable(subscription, Disposable(stop))

        return Observable(subscribe)

    return Stage("throttle_per_resource", build)

