"""decode(): JSON text, MessagePack bytes and dicts -> message dicts; bad frames rejected."""

from __future__ import annotations

import json
import logging
from types import MappingProxyType
from typing import Any

import msgpack
import pytest
import reactivex
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.recorded import Recorded

from querysync import Rejected, Resync
from querysync.operators import decode
from querysync.testing import marbles

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
on_error = ReactiveTest.on_error
subscribe = ReactiveTest.subscribe

PING: dict[str, Any] = {"type": "ping", "ts": 1.5}
JOB: dict[str, Any] = {"type": "job_update", "job_id": "j1", "status": "running"}
CHANGE: dict[str, Any] = {
    "type": "resource_change",
    "event": "updated",
    "resource_type": "workflow",
    "resource": {"id": "w1", "etag": "e1"},
}


def run(
    *messages: Recorded[Any], disposed: float = 1000
) -> tuple[list[Recorded[Any]], Any, list[Rejected]]:
    rejected: list[Rejected] = []
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(*messages)
    results = scheduler.start(lambda: xs.pipe(decode(on_reject=rejected.append)), disposed=disposed)
    return results.messages, xs.subscriptions, rejected


def test_completed_with_every_kind_of_frame() -> None:
    messages, subs, rejected = run(
        on_next(150, json.dumps(PING)),
        on_next(210, json.dumps(PING)),
        on_next(220, msgpack.packb(JOB, use_bin_type=True)),
        on_next(230, CHANGE),
        on_next(235, bytearray(msgpack.packb(CHANGE, use_bin_type=True))),
        on_completed(250),
    )
    assert messages == [
        on_next(210, PING),
        on_next(220, JOB),
        on_next(230, CHANGE),
        on_next(235, CHANGE),
        on_completed(250),
    ]
    assert subs == [subscribe(200, 250)]
    assert rejected == []


def test_empty() -> None:
    messages, subs, _ = run(on_next(150, "{}"), on_completed(250))
    assert messages == [on_completed(250)]
    assert subs == [subscribe(200, 250)]


def test_never() -> None:
    messages, subs, _ = run(on_next(150, "{}"))
    assert messages == []
    assert subs == [subscribe(200, 1000)]


def test_error() -> None:
    ex = Exception("socket closed")
    messages, subs, _ = run(on_next(210, "{}"), on_error(220, ex))
    assert messages == [on_next(210, {}), on_error(220, ex)]
    assert subs == [subscribe(200, 220)]


def test_dispose() -> None:
    messages, subs, _ = run(on_next(210, "{}"), on_next(300, "{}"), disposed=250)
    assert messages == [on_next(210, {})]
    assert subs == [subscribe(200, 250)]


def test_cold_source() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_cold_observable(on_next(10, '{"a": 1}'), on_completed(20))
    results = scheduler.start(lambda: xs.pipe(decode()))
    assert results.messages == [on_next(210, {"a": 1}), on_completed(220)]
    assert xs.subscriptions == [subscribe(200, 220)]


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        '{"type": "ping"',  # truncated JSON
        "[1, 2]",  # JSON, but not an object
        '"text"',
        "null",
        b"\xc1",  # a byte MessagePack never uses
        msgpack.packb(CHANGE)[:-3],  # truncated MessagePack
        msgpack.packb([1, 2]),  # MessagePack, but not a map
        b"",
        "[" * 100_000,  # nests too deeply for the JSON parser
        b"\x91" * 100_000 + b"\x00",  # nests too deeply for MessagePack
        12,
        None,
        ["type", "ping"],
    ],
)
def test_bad_frames_are_rejected_and_the_stream_goes_on(frame: object) -> None:
    messages, _, rejected = run(on_next(210, frame), on_next(220, "{}"), on_completed(250))
    assert messages == [on_next(220, {}), on_completed(250)]
    assert len(rejected) == 1
    assert rejected[0].frame is frame
    assert rejected[0].stage == "decode"
    # A reason a person can act on: at least a few words, not an empty string.
    assert len(rejected[0].reason.split()) >= 2
    assert rejected[0].reason.rstrip().endswith(":") is False


def test_rejections_are_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    op = decode()
    got: list[Any] = []
    with caplog.at_level(logging.WARNING, logger="querysync"):
        reactivex.from_iterable(["{}", "nope", b"\xc1", "[]"]).pipe(op).subscribe(got.append)
    assert got == [{}]
    assert op.counts["rejected"] == 3
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 3


def test_a_raising_on_reject_does_not_end_the_stream() -> None:
    def broken(_: Rejected) -> None:
        raise RuntimeError("user bug")

    got: list[Any] = []
    errors: list[Exception] = []
    completed: list[bool] = []
    reactivex.from_iterable(["nope", '{"a": 1}', b"\xc1", '{"b": 2}']).pipe(
        decode(on_reject=broken)
    ).subscribe(got.append, errors.append, lambda: completed.append(True))
    assert got == [{"a": 1}, {"b": 2}]
    assert errors == []
    assert completed == [True]


def test_other_mappings_become_dicts() -> None:
    got: list[Any] = []
    reactivex.of(MappingProxyType({"type": "ping"})).pipe(decode()).subscribe(got.append)
    assert got == [{"type": "ping"}]
    assert type(got[0]) is dict


def test_resync_passes_through_in_order() -> None:
    resync = Resync("reconnected", attempt=3)
    messages, _, rejected = run(
        on_next(210, "{}"),
        on_next(215, resync),
        on_next(220, '{"x": 1}'),
        on_completed(250),
    )
    assert messages == [
        on_next(210, {}),
        on_next(215, resync),
        on_next(220, {"x": 1}),
        on_completed(250),
    ]
    assert rejected == []


def test_marbles() -> None:
    with marbles() as m:
        source = m.hot("-t-b-x-d-|", t=json.dumps(PING), b=msgpack.packb(JOB), x="{oops", d=CHANGE)
        result = m.start(source.pipe(decode()))
        assert result == m.exp("-t-b---d-|", t=PING, b=JOB, d=CHANGE)
