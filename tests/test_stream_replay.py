"""from_iterable and from_jsonl on virtual time (TestScheduler) and on the asyncio loop."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from reactivex.notification import OnError
from reactivex.scheduler.eventloop import AsyncIOScheduler
from reactivex.testing import ReactiveTest, TestScheduler

from querysync import ConfigurationError, Rejected, Resync, SourceError
from querysync.operators import resource_changes
from querysync.streams import from_iterable, from_jsonl
from querysync.testing import change, marbles

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
on_error = ReactiveTest.on_error
subscribe = ReactiveTest.subscribe

A = {"type": "a"}
B = {"type": "b"}
C = {"type": "c"}
D = {"type": "d"}


def write_lines(path: Path, *lines: Any) -> Path:
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines),
        encoding="utf-8",
    )
    return path


# -- from_iterable ------------------------------------------------------------------------


def test_from_iterable_spaces_items_by_interval() -> None:
    scheduler = TestScheduler()
    result = scheduler.start(lambda: from_iterable([A, B, C], interval=20))
    assert result.messages == [
        on_next(200, A),
        on_next(220, B),
        on_next(240, C),
        on_completed(240),
    ]


def test_from_iterable_without_interval_emits_at_subscription_on_the_scheduler() -> None:
    scheduler = TestScheduler()
    result = scheduler.start(lambda: from_iterable(["x", b"y", A]))
    assert result.messages == [
        on_next(200, "x"),
        on_next(200, b"y"),
        on_next(200, A),
        on_completed(200),
    ]


def test_from_iterable_dispose_stops_the_replay() -> None:
    scheduler = TestScheduler()
    result = scheduler.start(lambda: from_iterable([A, B, C, D], interval=20), disposed=230)
    assert result.messages == [on_next(200, A), on_next(220, B)]


def test_from_iterable_empty_completes_at_once() -> None:
    scheduler = TestScheduler()
    result = scheduler.start(lambda: from_iterable([], interval=5))
    assert result.messages == [on_completed(200)]


def test_from_iterable_without_scheduler_is_synchronous() -> None:
    items: list[Any] = []
    done: list[bool] = []
    from_iterable([A, Resync(reason="r"), B]).subscribe(
        items.append, on_completed=lambda: done.append(True)
    )
    assert items == [A, Resync(reason="r"), B]
    assert done == [True]


def test_from_iterable_feeds_the_operators_like_a_live_source() -> None:
    update = {
        "type": "resource_change",
        "event": "updated",
        "resource_type": "workflow",
        "resource": {"id": "w1", "etag": "e1"},
    }
    with marbles() as m:
        result = m.start(
            from_iterable([json.dumps(update), "junk", A], interval=2).pipe(resource_changes())
        )
        assert result == m.exp("u---|", u=change("updated", "workflow", "w1", etag="e1"))


def test_from_iterable_interval_needs_a_scheduler_or_loop() -> None:
    errors: list[Exception] = []
    from_iterable([A], interval=1.0).subscribe(on_error=errors.append)
    assert len(errors) == 1
    assert isinstance(errors[0], ConfigurationError)


def test_from_iterable_bad_interval_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        from_iterable([A], interval=-1.0)


def test_a_raising_subscriber_does_not_stop_the_replay() -> None:
    scheduler = TestScheduler()
    replay = from_iterable([A, B], interval=1.0, scheduler=scheduler)
    seen: list[Any] = []

    def explode(value: Any) -> None:
        seen.append(value)
        raise RuntimeError("subscriber bug")

    replay.subscribe(explode)
    scheduler.start()
    assert seen == [A, B]
    assert replay.counts["subscriber_errors"] == 2


# -- from_jsonl ---------------------------------------------------------------------------


def test_from_jsonl_with_timing_emits_at_the_recorded_offsets(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "rec.jsonl",
        {"t": 0.0, "frame": A},
        B,  # a bare message: right after the line before it
        {"t": 20.0, "frame": C},
        {"t": 31, "frame": D},
    )
    scheduler = TestScheduler()
    result = scheduler.start(lambda: from_jsonl(path, timing=True))
    assert result.messages == [
        on_next(200, A),
        on_next(200, B),
        on_next(220, C),
        on_next(231, D),
        on_completed(231),
    ]


def test_from_jsonl_speed_divides_the_offsets(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "rec.jsonl", {"t": 10, "frame": A}, {"t": 40, "frame": B})
    scheduler = TestScheduler()
    result = scheduler.start(lambda: from_jsonl(path, timing=True, speed=2.0))
    assert result.messages == [on_next(205, A), on_next(220, B), on_completed(220)]


def test_from_jsonl_without_timing_emits_everything_at_once(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "rec.jsonl", {"t": 10, "frame": A}, {"t": 40, "frame": B})
    scheduler = TestScheduler()
    result = scheduler.start(lambda: from_jsonl(path))
    assert result.messages == [on_next(200, A), on_next(200, B), on_completed(200)]


def test_from_jsonl_rejects_bad_lines_and_keeps_the_good_ones(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "rec.jsonl",
        {"t": 0, "frame": A},
        "not json",
        "[1, 2]",
        {"t": -1, "frame": B},
        {"t": "soon", "frame": B},
        {"t": 1, "frame": [1]},
        {"t": 1, "resync": "yes"},
        "",
        {"t": 2, "frame": C},
    )
    rejected: list[Rejected] = []
    scheduler = TestScheduler()
    replay = from_jsonl(path, timing=True, on_reject=rejected.append)
    result = scheduler.start(lambda: replay)
    assert result.messages == [on_next(200, A), on_next(202, C), on_completed(202)]
    assert [r.reason.split(":")[0] for r in rejected] == [
        "line 2",
        "line 3",
        "line 4",
        "line 5",
        "line 6",
        "line 7",
    ]
    assert replay.counts["rejected"] == 6
    assert all(r.stage == "replay" for r in rejected)


def test_from_jsonl_never_reorders(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "rec.jsonl", {"t": 5, "frame": A}, {"t": 2, "frame": B}, {"t": 6, "frame": C}
    )
    scheduler = TestScheduler()
    replay = from_jsonl(path, timing=True)
    result = scheduler.start(lambda: replay)
    assert result.messages == [
        on_next(205, A),
        on_next(205, B),
        on_next(206, C),
        on_completed(206),
    ]
    assert replay.counts["reordered"] == 1


def test_from_jsonl_replays_resync_records(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "rec.jsonl",
        {"t": 0, "frame": A},
        {"t": 3, "resync": {"reason": "reconnected after close code 1001", "attempt": 2}},
        {"t": 3, "frame": B},
    )
    scheduler = TestScheduler()
    result = scheduler.start(lambda: from_jsonl(path, timing=True))
    assert result.messages == [
        on_next(200, A),
        on_next(203, Resync(reason="reconnected after close code 1001", attempt=2)),
        on_next(203, B),
        on_completed(203),
    ]


def test_from_jsonl_dispose_stops_the_replay(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "rec.jsonl", *({"t": i * 10, "frame": {"i": i}} for i in range(5))
    )
    scheduler = TestScheduler()
    result = scheduler.start(lambda: from_jsonl(path, timing=True), disposed=215)
    assert result.messages == [on_next(200, {"i": 0}), on_next(210, {"i": 1})]


def test_from_jsonl_missing_file_is_a_source_error(tmp_path: Path) -> None:
    scheduler = TestScheduler()
    result = scheduler.start(lambda: from_jsonl(tmp_path / "nope.jsonl", timing=True))
    assert len(result.messages) == 1
    notification = result.messages[0].value
    assert isinstance(notification, OnError)
    error = notification.exception
    assert isinstance(error, SourceError)
    assert "nope.jsonl" in str(error)


def test_from_jsonl_timing_needs_a_scheduler_or_loop(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "rec.jsonl", A)
    errors: list[Exception] = []
    from_jsonl(path, timing=True).subscribe(on_error=errors.append)
    assert len(errors) == 1
    assert isinstance(errors[0], ConfigurationError)


def test_from_jsonl_bad_speed_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        from_jsonl(tmp_path / "rec.jsonl", speed=0)


async def test_from_jsonl_on_the_running_loop_yields_between_batches(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "rec.jsonl", *({"i": i} for i in range(2000)))
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    items: list[Any] = []
    turns = 0

    def tick() -> None:
        nonlocal turns
        turns += 1
        if not done.done():
            loop.call_soon(tick)

    from_jsonl(path, scheduler=AsyncIOScheduler(loop)).subscribe(
        items.append, done.set_exception, lambda: done.set_result(None)
    )
    assert items == []  # nothing happens inside subscribe
    loop.call_soon(tick)
    await asyncio.wait_for(done, 5.0)
    assert [item["i"] for item in items] == list(range(2000))
    assert turns >= 3  # the loop ran other callbacks while the file was replayed


async def test_from_jsonl_with_timing_on_the_running_loop(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "rec.jsonl", {"t": 0, "frame": A}, {"t": 0.02, "frame": B})
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    items: list[Any] = []
    from_jsonl(path, timing=True).subscribe(
        items.append, done.set_exception, lambda: done.set_result(None)
    )
    await asyncio.wait_for(done, 5.0)
    assert items == [A, B]
