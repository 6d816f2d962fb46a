"""routed_to(key): the seed's routing of regular messages by job_id / workflow_id / thread_id."""

from __future__ import annotations

import json
from typing import Any

import pytest
import reactivex
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.recorded import Recorded

from querysync import Resync
from querysync.operators import decode, routed_to
from querysync.testing import marbles

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
on_error = ReactiveTest.on_error
subscribe = ReactiveTest.subscribe

JOB_1: dict[str, Any] = {"type": "job_update", "job_id": "k1", "status": "running"}
NODE_1: dict[str, Any] = {"type": "node_update", "job_id": "k1", "workflow_id": "wf"}
WORKFLOW_1: dict[str, Any] = {"type": "output_update", "workflow_id": "k1", "value": 1}
THREAD_1: dict[str, Any] = {"type": "message", "thread_id": "k1", "content": "hi"}
JOB_2: dict[str, Any] = {"type": "job_update", "job_id": "k2", "status": "done"}
PING: dict[str, Any] = {"type": "ping", "ts": 1.0}
CHANGE_1: dict[str, Any] = {
    "type": "resource_change",
    "event": "updated",
    "resource_type": "job",
    "resource": {"id": "k1"},
    "job_id": "k1",
    "workflow_id": "k1",
    "thread_id": "k1",
}


def run(*messages: Recorded[Any], disposed: float = 1000) -> tuple[list[Recorded[Any]], Any]:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(*messages)
    results = scheduler.start(lambda: xs.pipe(routed_to("k1")), disposed=disposed)
    return results.messages, xs.subscriptions


def test_completed() -> None:
    messages, subs = run(
        on_next(150, JOB_1),
        on_next(210, JOB_1),
        on_next(215, JOB_2),
        on_next(220, WORKFLOW_1),
        on_next(225, PING),
        on_next(230, THREAD_1),
        on_next(235, CHANGE_1),
        on_completed(250),
    )
    assert messages == [
        on_next(210, JOB_1),
        on_next(220, WORKFLOW_1),
        on_next(230, THREAD_1),
        on_completed(250),
    ]
    assert subs == [subscribe(200, 250)]


def test_empty() -> None:
    messages, subs = run(on_next(150, JOB_1), on_completed(250))
    assert messages == [on_completed(250)]
    assert subs == [subscribe(200, 250)]


def test_never() -> None:
    messages, subs = run(on_next(150, JOB_1))
    assert messages == []
    assert subs == [subscribe(200, 1000)]


def test_error() -> None:
    ex = Exception("closed")
    messages, subs = run(on_next(210, JOB_1), on_error(220, ex), on_next(230, JOB_1))
    assert messages == [on_next(210, JOB_1), on_error(220, ex)]
    assert subs == [subscribe(200, 220)]


def test_dispose() -> None:
    messages, subs = run(on_next(210, JOB_1), on_next(300, THREAD_1), disposed=250)
    assert messages == [on_next(210, JOB_1)]
    assert subs == [subscribe(200, 250)]


def test_cold_source() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_cold_observable(on_next(3, JOB_2), on_next(4, NODE_1), on_completed(6))
    results = scheduler.start(lambda: xs.pipe(routed_to("k1")))
    assert results.messages == [on_next(204, NODE_1), on_completed(206)]
    assert xs.subscriptions == [subscribe(200, 206)]


@pytest.mark.parametrize("field", ["job_id", "workflow_id", "thread_id"])
def test_each_routing_field_routes(field: str) -> None:
    message = {"type": "x", field: "k1"}
    got: list[Any] = []
    reactivex.of(message, {"type": "x", field: "k2"}).pipe(routed_to("k1")).subscribe(got.append)
    assert len(got) == 1
    assert got[0] is message  # unchanged: the very same object


def test_a_message_matches_on_any_one_of_its_fields() -> None:
    message = {"type": "x", "job_id": "other", "workflow_id": "k1"}
    got: list[Any] = []
    reactivex.of(message).pipe(routed_to("k1")).subscribe(got.append)
    assert got == [message]


def test_a_message_addressed_twice_passes_once() -> None:
    got: list[Any] = []
    reactivex.of(NODE_1).pipe(routed_to("k1")).subscribe(got.append)
    reactivex.of(NODE_1).pipe(routed_to("wf")).subscribe(got.append)
    assert got == [NODE_1, NODE_1]


@pytest.mark.parametrize(
    ("message", "key"),
    [
        ({"type": "x", "job_id": 1}, "1"),  # equality, not "same text"
        ({"type": "x", "job_id": "k10"}, "k1"),  # equality, not prefix
        ({"type": "x", "job_id": "k1"}, "k10"),
        ({"type": "x", "job_id": "K1"}, "k1"),
        ({"type": "x", "id": "k1"}, "k1"),  # not a routing field
        ({"type": "x", "resource": {"job_id": "k1"}}, "k1"),
        ({"type": "x"}, "k1"),
    ],
)
def test_only_equal_routing_fields_route(message: dict[str, Any], key: str) -> None:
    got: list[Any] = []
    reactivex.of(message).pipe(routed_to(key)).subscribe(got.append)
    assert got == []


def test_resource_change_never_passes() -> None:
    got: list[Any] = []
    reactivex.of(CHANGE_1).pipe(routed_to("k1")).subscribe(got.append)
    assert got == []


def test_resync_passes_in_order() -> None:
    # A reconnect may have lost the routed messages too, so their consumer hears of it.
    resync = Resync(attempt=2)
    messages, _ = run(on_next(210, resync), on_next(220, JOB_1), on_completed(250))
    assert messages == [on_next(210, resync), on_next(220, JOB_1), on_completed(250)]


def test_counts_routed_messages() -> None:
    op = routed_to("k1")
    reactivex.of(JOB_1, JOB_2, THREAD_1, CHANGE_1).pipe(op).subscribe(lambda _: None)
    assert op.counts["routed"] == 2


def test_after_decode() -> None:
    frames = [json.dumps(JOB_1), json.dumps(CHANGE_1), "garbage", json.dumps(THREAD_1)]
    got: list[Any] = []
    reactivex.from_iterable(frames).pipe(decode(), routed_to("k1")).subscribe(got.append)
    assert got == [JOB_1, THREAD_1]


def test_marbles() -> None:
    with marbles() as m:
        source = m.hot("-a-b-r-w-|", a=JOB_1, b=JOB_2, r=CHANGE_1, w=WORKFLOW_1)
        result = m.start(source.pipe(routed_to("k1")))
        assert result == m.exp("-a-----w-|", a=JOB_1, w=WORKFLOW_1)
