"""throttle_per_resource on virtual time: leading edge, latest-wins trailing edge, per resource."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any, cast

import pytest
import reactivex
from reactivex import abc, typing
from reactivex.disposable import SingleAssignmentDisposable
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.recorded import Recorded

from querysync import ConfigurationError, ResourceChangeUpdate, Resync
from querysync.operators import throttle_per_resource
from querysync.testing import change, marbles

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
on_error = ReactiveTest.on_error
subscribe = ReactiveTest.subscribe

Item = ResourceChangeUpdate | Resync

WINDOW = 20.0

a0 = change("updated", "workflow", "a", etag="0")
a1 = change("updated", "workflow", "a", etag="1")
a2 = change("updated", "workflow", "a", etag="2")
a3 = change("updated", "workflow", "a", etag="3")
a4 = change("updated", "workflow", "a", etag="4")
b1 = change("updated", "workflow", "b", etag="1")
b2 = change("updated", "workflow", "b", etag="2")
b3 = change("deleted", "workflow", "b", etag="3")
# Same id as "a" but another type: another resource.
j1 = change("updated", "job", "a", etag="1")
j2 = change("updated", "job", "a", etag="2")


def run(*messages: Recorded[Item], window: float = WINDOW, disposed: float = 1000) -> Any:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(*messages)
    results = scheduler.start(lambda: xs.pipe(throttle_per_resource(window)), disposed=disposed)
    return results.messages, xs.subscriptions


class TimerCountingScheduler(TestScheduler):
    """A TestScheduler that can tell how many scheduled actions are still pending."""

    def __init__(self) -> None:
        super().__init__()
        self.timers: list[tuple[float, SingleAssignmentDisposable]] = []

    def schedule_absolute(
        self,
        duetime: typing.AbsoluteTime,
        action: typing.ScheduledAction[Any],
        state: Any = None,
    ) -> abc.DisposableBase:
        disposable = super().schedule_absolute(duetime, action, state)
        seconds = duetime if isinstance(duetime, float) else self.to_seconds(duetime)
        self.timers.append((seconds, cast(SingleAssignmentDisposable, disposable)))
        return disposable

    def pending(self) -> int:
        clock = float(self.clock)
        return sum(1 for due, d in self.timers if due > clock and not d.is_disposed)


class Recorder(abc.ObserverBase[Any]):
    """Subscribes to an observable and notes the virtual time of every notification."""

    def __init__(self, scheduler: TestScheduler) -> None:
        self.scheduler = scheduler
        self.events: list[tuple[float, str, object]] = []

    def on_next(self, value: object) -> None:
        self.events.append((float(self.scheduler.clock), "N", value))

    def on_error(self, error: Exception) -> None:
        self.events.append((float(self.scheduler.clock), "E", error))

    def on_completed(self) -> None:
        self.events.append((float(self.scheduler.clock), "C", None))


# The five standard scenarios.


def test_completed() -> None:
    messages, subs = run(
        on_next(150, a0),
        on_next(210, a1),
        on_next(215, a2),
        on_next(220, a3),
        on_completed(300),
    )
    assert messages == [on_next(210, a1), on_next(230, a3), on_completed(300)]
    assert subs == [subscribe(200, 300)]


def test_empty() -> None:
    messages, subs = run(on_next(150, a0), on_completed(250))
    assert messages == [on_completed(250)]
    assert subs == [subscribe(200, 250)]


def test_never() -> None:
    messages, subs = run(on_next(150, a0))
    assert messages == []
    assert subs == [subscribe(200, 1000)]


def test_never_operator() -> None:
    scheduler = TestScheduler()
    results = scheduler.start(lambda: reactivex.never().pipe(throttle_per_resource(WINDOW)))
    assert results.messages == []


def test_error_passes_at_once_and_drops_what_was_held() -> None:
    ex = Exception("boom")
    messages, subs = run(on_next(210, a1), on_next(215, a2), on_error(220, ex))
    assert messages == [on_next(210, a1), on_error(220, ex)]
    assert subs == [subscribe(200, 220)]


def test_error_with_nothing_held() -> None:
    ex = Exception("boom")
    messages, subs = run(on_next(150, a0), on_error(250, ex))
    assert messages == [on_error(250, ex)]
    assert subs == [subscribe(200, 250)]


def test_dispose_cancels_the_pending_window() -> None:
    messages, subs = run(on_next(210, a1), on_next(215, a2), on_next(240, b1), disposed=225)
    assert messages == [on_next(210, a1)]
    assert subs == [subscribe(200, 225)]


def test_dispose_leaves_no_pending_timer() -> None:
    scheduler = TimerCountingScheduler()
    source: Subject[Item] = Subject()
    rec = Recorder(scheduler)
    subscription = source.pipe(throttle_per_resource(WINDOW)).subscribe(rec, scheduler=scheduler)
    scheduler.advance_to(210)
    source.on_next(a1)
    source.on_next(a2)
    assert scheduler.pending() == 1
    scheduler.advance_to(215)
    subscription.dispose()
    assert scheduler.pending() == 0
    scheduler.advance_to(500)
    assert rec.events == [(210.0, "N", a1)]


def test_cold_source() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_cold_observable(
        on_next(10, a1), on_next(15, a2), on_next(18, b1), on_completed(50)
    )
    results = scheduler.start(lambda: xs.pipe(throttle_per_resource(WINDOW)))
    assert results.messages == [
        on_next(210, a1),
        on_next(218, b1),
        on_next(230, a2),
        on_completed(250),
    ]
    assert xs.subscriptions == [subscribe(200, 250)]


# The rules of the issue.


def test_leading_edge_passes_at_once() -> None:
    messages, _ = run(on_next(210, a1), on_next(260, b1), on_completed(300))
    assert messages == [on_next(210, a1), on_next(260, b1), on_completed(300)]


def test_trailing_edge_is_the_latest_update() -> None:
    messages, _ = run(
        on_next(210, a1),
        on_next(212, a2),
        on_next(214, a3),
        on_next(216, a4),
        on_completed(400),
    )
    assert messages == [on_next(210, a1), on_next(230, a4), on_completed(400)]


def test_trailing_emission_opens_a_new_window() -> None:
    messages, _ = run(
        on_next(210, a1),
        on_next(215, a2),  # held, emitted at 230, which opens 230..250
        on_next(240, a3),  # held again, emitted at 250, which opens 250..270
        on_completed(400),
    )
    assert messages == [on_next(210, a1), on_next(230, a2), on_next(250, a3), on_completed(400)]


def test_state_is_released_when_a_window_closes_with_nothing_held() -> None:
    messages, _ = run(
        on_next(210, a1),
        on_next(215, a2),  # trailing at 230, window 230..250 closes empty
        on_next(255, a3),  # no open window: passes at once
        on_next(300, a4),  # 255..275 closed empty too
        on_completed(400),
    )
    assert messages == [
        on_next(210, a1),
        on_next(230, a2),
        on_next(255, a3),
        on_next(300, a4),
        on_completed(400),
    ]


def test_update_at_the_closing_instant_is_not_lost() -> None:
    messages, _ = run(on_next(210, a1), on_next(230, a2), on_completed(400))
    assert messages == [on_next(210, a1), on_next(230, a2), on_completed(400)]


def test_resources_are_independent() -> None:
    messages, _ = run(
        on_next(210, a1),
        on_next(212, j1),  # same id, other type
        on_next(215, b1),
        on_next(220, a2),
        on_next(222, j2),
        on_next(225, b2),
        on_next(228, b3),
        on_completed(400),
    )
    assert messages == [
        on_next(210, a1),
        on_next(212, j1),
        on_next(215, b1),
        on_next(230, a2),
        on_next(232, j2),
        on_next(235, b3),
        on_completed(400),
    ]


def test_flush_on_completion_before_on_completed() -> None:
    messages, subs = run(
        on_next(210, a1),
        on_next(211, b1),
        on_next(215, a2),
        on_next(216, b2),
        on_completed(220),
    )
    assert messages == [
        on_next(210, a1),
        on_next(211, b1),
        on_next(220, a2),
        on_next(220, b2),
        on_completed(220),
    ]
    assert subs == [subscribe(200, 220)]


def test_completion_does_not_repeat_what_already_passed() -> None:
    messages, _ = run(on_next(210, a1), on_next(215, b1), on_completed(220))
    assert messages == [on_next(210, a1), on_next(215, b1), on_completed(220)]


def test_completion_after_trailing_emission_flushes_only_what_is_held() -> None:
    messages, _ = run(on_next(210, a1), on_next(215, a2), on_next(235, a3), on_completed(240))
    assert messages == [on_next(210, a1), on_next(230, a2), on_next(240, a3), on_completed(240)]


def test_resync_passes_through_in_order() -> None:
    r1 = Resync("reconnected", attempt=1)
    r2 = Resync("reconnected", attempt=2)
    messages, _ = run(
        on_next(210, a1),
        on_next(212, r1),
        on_next(215, a2),
        on_next(216, r2),
        on_next(217, b1),
        on_completed(400),
    )
    assert messages == [
        on_next(210, a1),
        on_next(212, r1),
        on_next(216, r2),
        on_next(217, b1),
        on_next(230, a2),
        on_completed(400),
    ]


def test_window_may_be_a_timedelta() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(on_next(210, a1), on_next(215, a2), on_completed(400))
    op = throttle_per_resource(timedelta(seconds=20))
    results = scheduler.start(lambda: xs.pipe(op))
    assert results.messages == [on_next(210, a1), on_next(230, a2), on_completed(400)]


def test_counts_coalesced_updates() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        on_next(210, a1), on_next(211, a2), on_next(212, a3), on_next(213, a4), on_completed(400)
    )
    op = throttle_per_resource(WINDOW)
    scheduler.start(lambda: xs.pipe(op))
    # a2 and a3 were replaced by a later update and never emitted.
    assert op.counts["coalesced"] == 2


def test_explicit_scheduler_is_used_without_a_subscription_scheduler() -> None:
    scheduler = TestScheduler()
    source: Subject[Item] = Subject()
    rec = Recorder(scheduler)
    source.pipe(throttle_per_resource(WINDOW, scheduler=scheduler)).subscribe(rec)
    scheduler.advance_to(210)
    source.on_next(a1)
    source.on_next(a2)
    scheduler.advance_to(300)
    assert rec.events == [(210.0, "N", a1), (230.0, "N", a2)]


def test_each_subscription_has_its_own_windows() -> None:
    scheduler = TestScheduler()
    op = throttle_per_resource(WINDOW)
    first: Subject[Item] = Subject()
    second: Subject[Item] = Subject()
    rec1, rec2 = Recorder(scheduler), Recorder(scheduler)
    first.pipe(op).subscribe(rec1, scheduler=scheduler)
    second.pipe(op).subscribe(rec2, scheduler=scheduler)
    scheduler.advance_to(210)
    first.on_next(a1)
    second.on_next(a2)
    assert rec1.events == [(210.0, "N", a1)]
    assert rec2.events == [(210.0, "N", a2)]


def test_a_subscriber_raising_on_a_trailing_update_does_not_stop_other_windows() -> None:
    scheduler = TestScheduler()
    source: Subject[Item] = Subject()
    seen: list[tuple[float, Item]] = []

    def picky(item: Item) -> None:
        seen.append((float(scheduler.clock), item))
        if item == a2:
            raise RuntimeError("subscriber bug")

    source.pipe(throttle_per_resource(WINDOW)).subscribe(picky, scheduler=scheduler)
    scheduler.advance_to(210)
    source.on_next(a1)
    source.on_next(a2)
    scheduler.advance_to(212)
    source.on_next(b1)
    source.on_next(b2)
    scheduler.advance_to(300)
    assert seen == [(210.0, a1), (212.0, b1), (230.0, a2), (232.0, b2)]


# Memory: state follows the resources active within one window.


def test_one_pending_timer_serves_all_windows_and_none_is_left() -> None:
    scheduler = TimerCountingScheduler()
    source: Subject[Item] = Subject()
    rec = Recorder(scheduler)
    source.pipe(throttle_per_resource(WINDOW)).subscribe(rec, scheduler=scheduler)
    n = 500
    for i in range(n):
        scheduler.advance_to(210 + i * 0.01)
        source.on_next(change("updated", "job", f"j{i}", etag="1"))
        source.on_next(change("updated", "job", f"j{i}", etag="2"))
        assert scheduler.pending() <= 1
    assert scheduler.pending() == 1
    scheduler.advance_to(260)
    assert len(rec.events) == 2 * n
    assert scheduler.pending() == 0
    # Every window closed with nothing held, so every resource starts afresh.
    scheduler.advance_to(300)
    fresh = change("updated", "job", "j0", etag="3")
    source.on_next(fresh)
    assert rec.events[-1] == (300.0, "N", fresh)
    assert scheduler.pending() == 1
    scheduler.advance_to(400)
    assert scheduler.pending() == 0


def test_a_window_that_closed_empty_leaves_no_timer() -> None:
    scheduler = TimerCountingScheduler()
    source: Subject[Item] = Subject()
    rec = Recorder(scheduler)
    source.pipe(throttle_per_resource(WINDOW)).subscribe(rec, scheduler=scheduler)
    scheduler.advance_to(210)
    source.on_next(a1)
    scheduler.advance_to(231)
    assert scheduler.pending() == 0
    source.on_next(a2)
    assert rec.events == [(210.0, "N", a1), (231.0, "N", a2)]


# Configuration.


@pytest.mark.parametrize("window", [0, 0.0, -1, -0.5, timedelta(0), timedelta(seconds=-1)])
def test_window_must_be_positive(window: typing.RelativeTime) -> None:
    with pytest.raises(ConfigurationError, match="window"):
        throttle_per_resource(window)


@pytest.mark.parametrize("window", [float("nan"), float("inf")])
def test_window_must_be_finite(window: float) -> None:
    with pytest.raises(ConfigurationError, match="window"):
        throttle_per_resource(window)


def test_no_scheduler_and_no_running_loop_is_a_configuration_error() -> None:
    errors: list[Exception] = []
    reactivex.of(a1).pipe(throttle_per_resource(1)).subscribe(
        on_next=lambda _: None, on_error=errors.append
    )
    assert len(errors) == 1
    assert isinstance(errors[0], ConfigurationError)
    assert "scheduler" in str(errors[0])


def test_no_scheduler_and_no_running_loop_raises_to_a_plain_subscriber() -> None:
    source: Subject[Item] = Subject()
    with pytest.raises(ConfigurationError):
        source.pipe(throttle_per_resource(1)).subscribe(lambda _: None)


async def test_runs_on_the_running_loop_without_threads() -> None:
    # Compare sets, not counts: a thread left by another test may end meanwhile.
    threads_before = set(threading.enumerate())
    source: Subject[Item] = Subject()
    received: list[Item] = []
    loop = asyncio.get_running_loop()
    got_trailing = loop.create_future()

    def collect(item: Item) -> None:
        received.append(item)
        if item == a2 and not got_trailing.done():
            got_trailing.set_result(None)

    subscription = source.pipe(throttle_per_resource(0.05)).subscribe(collect)
    source.on_next(a1)
    source.on_next(a2)
    source.on_next(b1)
    assert received == [a1, b1]
    # Two windows are open now; a thread per timer would show here.
    assert set(threading.enumerate()) - threads_before == set()
    await asyncio.wait_for(got_trailing, timeout=5)
    assert received == [a1, b1, a2]
    # The window opened by a2 closes empty; then a3 passes at once.
    await asyncio.sleep(0.15)
    source.on_next(a3)
    assert received == [a1, b1, a2, a3]
    source.on_next(a4)  # held
    subscription.dispose()
    await asyncio.sleep(0.1)
    assert received == [a1, b1, a2, a3]
    assert set(threading.enumerate()) - threads_before == set()


# The same rules through querysync.testing.marbles.


def test_marbles_leading_trailing_and_new_window() -> None:
    with marbles() as m:
        source = m.hot("-a-b-c----------|", a=a1, b=a2, c=a3)
        result = m.start(source.pipe(throttle_per_resource(3)))
        assert result == m.exp("-a--b--c--------|", a=a1, b=a2, c=a3)


def test_marbles_independent_resources_and_flush() -> None:
    with marbles() as m:
        source = m.hot("-a-b-c-d|", a=a1, b=b1, c=a2, d=b2)
        result = m.start(source.pipe(throttle_per_resource(10)))
        assert result == m.exp("-a-b----(c,d,|)", a=a1, b=b1, c=a2, d=b2)


def test_marbles_error_drops_held() -> None:
    with marbles() as m:
        source = m.hot("-a-b-#", a=a1, b=a2)
        result = m.start(source.pipe(throttle_per_resource(10)))
        assert result == m.exp("-a---#", a=a1)


def test_marbles_cold_source() -> None:
    with marbles() as m:
        source = m.cold("a-b-c---|", a=a1, b=a2, c=a3)
        result = m.start(source.pipe(throttle_per_resource(3)))
        assert result == m.exp("a--b--c-|", a=a1, b=a2, c=a3)
