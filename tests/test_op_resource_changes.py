"""resource_changes(): frames -> ResourceChangeUpdate; bad input rejected, never on_error."""

from __future__ import annotations

import json
import logging
from typing import Any

import msgpack
import pytest
import reactivex
from _support import wire
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.recorded import Recorded

from querysync import Rejected, Resource, ResourceChangeUpdate, Resync
from querysync.operators import resource_changes
from querysync.testing import change, marbles

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
on_error = ReactiveTest.on_error
subscribe = ReactiveTest.subscribe


W1 = wire("updated", "workflow", {"id": "w1", "etag": "e1"})
W1_UPDATE = ResourceChangeUpdate(
    event="updated", resource_type="workflow", resource=Resource(id="w1", etag="e1")
)
J1 = wire("created", "job", {"id": "j1", "etag": "e2", "status": "running"})
J1_UPDATE = change("created", "job", "j1", etag="e2", status="running")

# What the live server sends besides resource changes (nodetool-protocol.md).
OTHER_MESSAGES: list[dict[str, Any]] = [
    {"type": "ping", "ts": 1.0},
    {"type": "pong", "ts": 2.0},
    {"type": "system_stats", "stats": {"cpu": 3}},
    {"type": "job_update", "job_id": "j1", "status": "running"},
    {"type": "node_update", "job_id": "j1", "node_id": "n"},
    {"type": "message", "thread_id": "t1", "content": "hi"},
    {"error": "invalid_message", "detail": "no command"},
    {},
    {"type": None},
    {"type": ["resource_change"]},
]


def run(
    *messages: Recorded[Any], disposed: float = 1000
) -> tuple[list[Recorded[Any]], Any, list[Rejected]]:
    rejected: list[Rejected] = []
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(*messages)
    op = resource_changes(on_reject=rejected.append)
    results = scheduler.start(lambda: xs.pipe(op), disposed=disposed)
    return results.messages, xs.subscriptions, rejected


def test_completed() -> None:
    messages, subs, rejected = run(
        on_next(150, W1),
        on_next(210, W1),
        on_next(220, json.dumps(J1)),
        on_completed(250),
    )
    assert messages == [on_next(210, W1_UPDATE), on_next(220, J1_UPDATE), on_completed(250)]
    assert subs == [subscribe(200, 250)]
    assert rejected == []


def test_empty() -> None:
    messages, subs, _ = run(on_next(150, W1), on_completed(250))
    assert messages == [on_completed(250)]
    assert subs == [subscribe(200, 250)]


def test_never() -> None:
    messages, subs, _ = run(on_next(150, W1))
    assert messages == []
    assert subs == [subscribe(200, 1000)]


def test_error() -> None:
    ex = Exception("connection lost")
    messages, subs, _ = run(on_next(210, W1), on_error(220, ex), on_next(230, J1))
    assert messages == [on_next(210, W1_UPDATE), on_error(220, ex)]
    assert subs == [subscribe(200, 220)]


def test_dispose() -> None:
    messages, subs, _ = run(on_next(210, W1), on_next(300, J1), disposed=250)
    assert messages == [on_next(210, W1_UPDATE)]
    assert subs == [subscribe(200, 250)]


def test_cold_source() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_cold_observable(on_next(5, W1), on_next(7, J1), on_completed(9))
    results = scheduler.start(lambda: xs.pipe(resource_changes()))
    assert results.messages == [
        on_next(205, W1_UPDATE),
        on_next(207, J1_UPDATE),
        on_completed(209),
    ]
    assert xs.subscriptions == [subscribe(200, 209)]


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda m: m, id="dict"),
        pytest.param(json.dumps, id="json-text"),
        pytest.param(lambda m: msgpack.packb(m, use_bin_type=True), id="msgpack-bytes"),
        pytest.param(lambda m: bytearray(msgpack.packb(m)), id="msgpack-bytearray"),
    ],
)
def test_every_frame_kind_gives_the_same_update(encode: Any) -> None:
    got: list[Any] = []
    reactivex.of(encode(J1)).pipe(resource_changes()).subscribe(got.append)
    assert got == [J1_UPDATE]


def test_create_sends_two_frames_and_both_come_out() -> None:
    # nodetool-protocol.md: every create sends `updated`, then `created`, same etag.
    frames = [
        msgpack.packb(wire("updated", "workflow", {"id": "w9", "etag": "x"})),
        msgpack.packb(wire("created", "workflow", {"id": "w9", "etag": "x"})),
    ]
    got: list[Any] = []
    reactivex.from_iterable(frames).pipe(resource_changes()).subscribe(got.append)
    assert [(u.event, u.resource.id, u.resource.etag) for u in got] == [
        ("updated", "w9", "x"),
        ("created", "w9", "x"),
    ]


def test_other_message_types_are_skipped_silently(caplog: pytest.LogCaptureFixture) -> None:
    rejected: list[Rejected] = []
    op = resource_changes(on_reject=rejected.append)
    got: list[Any] = []
    frames: list[Any] = [*OTHER_MESSAGES, *(json.dumps(m) for m in OTHER_MESSAGES)]
    frames += [msgpack.packb(m) for m in OTHER_MESSAGES]
    with caplog.at_level(logging.DEBUG, logger="querysync"):
        reactivex.from_iterable([*frames, W1]).pipe(op).subscribe(got.append)
    assert got == [W1_UPDATE]
    assert rejected == []
    assert op.counts["rejected"] == 0
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


INVALID_CHANGES: list[tuple[str, dict[str, Any], str]] = [
    (
        "missing event",
        {"type": "resource_change", "resource_type": "job", "resource": {"id": "j"}},
        "event",
    ),
    ("unknown event", wire("renamed", "job", {"id": "j"}), "event"),
    ("event not a string", {**wire("updated", "job", {"id": "j"}), "event": 1}, "event"),
    ("empty resource_type", wire("updated", "", {"id": "j"}), "resource_type"),
    (
        "missing resource_type",
        {"type": "resource_change", "event": "updated", "resource": {"id": "j"}},
        "resource_type",
    ),
    (
        "resource_type not a string",
        {**wire("updated", "job", {"id": "j"}), "resource_type": 3},
        "resource_type",
    ),
    ("integer id", wire("updated", "job", {"id": 123}), "id"),
    ("null id", wire("updated", "job", {"id": None}), "id"),
    ("list id", wire("updated", "job", {"id": ["j"]}), "id"),
    ("integer etag", wire("updated", "job", {"id": "j", "etag": 5}), "etag"),
    (
        "resource not an object",
        {**wire("updated", "job", {}), "resource": "j1"},
        "resource",
    ),
    ("resource null", {**wire("updated", "job", {}), "resource": None}, "resource"),
    (
        "missing resource",
        {"type": "resource_change", "event": "updated", "resource_type": "job"},
        "resource",
    ),
]


@pytest.mark.parametrize(
    ("message", "field"),
    [pytest.param(m, f, id=name) for name, m, f in INVALID_CHANGES],
)
@pytest.mark.parametrize("kind", ["dict", "json", "msgpack"])
def test_invalid_resource_change_is_rejected_with_a_reason(
    message: dict[str, Any], field: str, kind: str
) -> None:
    frame: Any = {
        "dict": message,
        "json": json.dumps(message),
        "msgpack": msgpack.packb(message, use_bin_type=True),
    }[kind]
    messages, _, rejected = run(on_next(210, frame), on_next(220, W1), on_completed(250))
    assert messages == [on_next(220, W1_UPDATE), on_completed(250)]
    assert len(rejected) == 1
    assert rejected[0].frame is frame
    assert field in rejected[0].reason
    assert "resource_change" in rejected[0].reason


UNDECODABLE: list[Any] = [
    "{not json",
    "[]",
    "42",
    b"\xc1\xc1",
    msgpack.packb(W1)[:-4],
    msgpack.packb("a string"),
    b"",
    None,
    3.5,
    ["resource_change"],
]


@pytest.mark.parametrize("frame", UNDECODABLE)
def test_undecodable_frames_are_rejected(frame: Any) -> None:
    messages, _, rejected = run(on_next(210, frame), on_next(220, W1), on_completed(250))
    assert messages == [on_next(220, W1_UPDATE), on_completed(250)]
    assert len(rejected) == 1
    assert rejected[0].frame is frame
    assert len(rejected[0].reason.split()) >= 2


def test_rejections_are_counted_logged_and_never_on_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    op = resource_changes()
    source: Subject[Any] = Subject()
    got: list[Any] = []
    errors: list[Exception] = []
    source.pipe(op).subscribe(got.append, errors.append)
    bad = [m for _, m, _ in INVALID_CHANGES] + UNDECODABLE
    with caplog.at_level(logging.WARNING, logger="querysync"):
        for frame in bad:
            source.on_next(frame)
            source.on_next(W1)
    assert errors == []
    assert got == [W1_UPDATE] * len(bad)
    assert op.counts["rejected"] == len(bad)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    # The first 20 are warnings, the rest debug lines: counted all the same.
    assert len(warnings) == min(len(bad), 20)


def test_rejection_warnings_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    op = resource_changes()
    source: Subject[Any] = Subject()
    got: list[Any] = []
    source.pipe(op).subscribe(got.append)
    with caplog.at_level(logging.WARNING, logger="querysync"):
        for _ in range(2500):
            source.on_next(b"\xc1")
        source.on_next(W1)
    assert got == [W1_UPDATE]
    assert op.counts["rejected"] == 2500
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    # 20 first ones, then the 1000th and the 2000th.
    assert len(warnings) == 22
    assert "2000 so far" in warnings[-1].getMessage()


def test_a_raising_on_reject_does_not_end_the_stream() -> None:
    calls: list[Rejected] = []

    def broken(rejected: Rejected) -> None:
        calls.append(rejected)
        raise ValueError("user callback bug")

    got: list[Any] = []
    errors: list[Exception] = []
    done: list[bool] = []
    frames = [b"\xc1", W1, wire("zapped", "job", {"id": "j"}), J1]
    reactivex.from_iterable(frames).pipe(resource_changes(on_reject=broken)).subscribe(
        got.append, errors.append, lambda: done.append(True)
    )
    assert got == [W1_UPDATE, J1_UPDATE]
    assert len(calls) == 2
    assert errors == []
    assert done == [True]


def test_extra_top_level_fields_do_not_reject() -> None:
    got: list[Any] = []
    reactivex.of({**W1, "ts": 1.0, "seq": 7}).pipe(resource_changes()).subscribe(got.append)
    assert got == [W1_UPDATE]


def test_huge_and_deep_resource_properties_are_kept() -> None:
    deep: Any = "leaf"
    for _ in range(200):
        deep = {"d": deep}
    message = wire("updated", "asset", {"id": "a1", "blob": "x" * 1_000_000, "deep": deep})
    got: list[Any] = []
    reactivex.of(msgpack.packb(message)).pipe(resource_changes()).subscribe(got.append)
    assert len(got) == 1
    extra = got[0].resource.model_extra or {}
    assert len(extra["blob"]) == 1_000_000
    assert extra["deep"]["d"]["d"]["d"] is not None


def test_resync_passes_through_in_order() -> None:
    resync = Resync("reconnected", attempt=1)
    messages, _, _ = run(
        on_next(210, W1),
        on_next(215, resync),
        on_next(220, J1),
        on_completed(250),
    )
    assert messages == [
        on_next(210, W1_UPDATE),
        on_next(215, resync),
        on_next(220, J1_UPDATE),
        on_completed(250),
    ]


def test_counts_are_shared_by_subscriptions_of_one_operator() -> None:
    op = resource_changes()
    reactivex.of(W1, "bad").pipe(op).subscribe(lambda _: None)
    reactivex.of(J1, {"type": "ping"}).pipe(op).subscribe(lambda _: None)
    assert op.counts["rejected"] == 1
    assert op.counts["frames"] == 4


def test_marbles() -> None:
    with marbles() as m:
        source = m.hot(
            "-u-p-x-v-|",
            u=W1,
            p={"type": "ping"},
            x=b"\xc1",
            v=json.dumps(J1),
        )
        result = m.start(source.pipe(resource_changes()))
        assert result == m.exp("-u-----v-|", u=W1_UPDATE, v=J1_UPDATE)
