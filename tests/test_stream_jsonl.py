"""to_jsonl -> from_jsonl: a recording replays as it was received, at its pace."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import msgpack
import reactivex
from reactivex.testing import ReactiveTest, TestScheduler

from querysync import Invalidation, Rejected, Resync
from querysync.sinks._jsonl import to_jsonl
from querysync.streams import from_jsonl
from querysync.testing import change

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed

A = {"type": "a", "n": 1}
B = {"type": "b", "nested": {"x": [1, 2.5, None, True]}}
C = {"type": "c", "text": "héllo ✓"}


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_recording_keeps_the_offsets_of_the_first_message(tmp_path: Path) -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        on_next(150, {"type": "before"}),
        on_next(230, A),
        on_next(245, B),
        on_next(261, C),
        on_completed(300),
    )
    path = tmp_path / "rec.jsonl"
    recorder = to_jsonl(path, scheduler=scheduler)
    scheduler.schedule_absolute(200, lambda *_: source.subscribe(recorder))
    scheduler.start()
    assert read_records(path) == [
        {"t": 0.0, "frame": A},
        {"t": 15.0, "frame": B},
        {"t": 31.0, "frame": C},
    ]

    replayer = TestScheduler()
    result = replayer.start(lambda: from_jsonl(path, timing=True))
    assert result.messages == [
        on_next(200, A),
        on_next(215, B),
        on_next(231, C),
        on_completed(231),
    ]


def test_every_kind_of_value_round_trips(tmp_path: Path) -> None:
    update = change("updated", "workflow", "w1", etag="e1", name="flow")
    values: list[Any] = [
        A,
        json.dumps(B),  # a JSON text frame
        msgpack.packb(C, use_bin_type=True),  # a MessagePack frame
        update,
        Invalidation(update, (("workflows",), ("workflow", "w1"))),
        Resync(reason="reconnected after close code 1001", attempt=3),
    ]
    path = tmp_path / "rec.jsonl"
    recorder = to_jsonl(path)
    reactivex.from_iterable(values).subscribe(recorder)
    assert recorder.counts["written"] == 6
    replayed: list[Any] = []
    from_jsonl(path).subscribe(replayed.append)
    dumped = {
        "type": "resource_change",
        "event": "updated",
        "resource_type": "workflow",
        "resource": {"id": "w1", "etag": "e1", "name": "flow"},
    }
    assert replayed == [A, B, C, dumped, dumped, values[5]]


def test_unrecordable_values_are_rejected_and_recording_goes_on(tmp_path: Path) -> None:
    rejected: list[Rejected] = []
    path = tmp_path / "rec.jsonl"
    recorder = to_jsonl(path, on_reject=rejected.append)
    recorder.on_next(A)
    recorder.on_next({"type": "binary_update", "data": b"\x00\x01"})  # bytes: not JSON
    recorder.on_next({"type": "stats", "cpu": float("nan")})
    recorder.on_next(object())
    recorder.on_next("not json")
    recorder.on_next({"type": "bad", "text": "\ud800"})  # a lone surrogate
    recorder.on_next(B)
    recorder.on_completed()
    assert [r["frame"] for r in read_records(path)] == [A, B]
    assert recorder.counts["rejected"] == 5
    assert len(rejected) == 5
    assert all(r.stage == "to_jsonl" for r in rejected)


def test_a_file_object_is_flushed_not_closed() -> None:
    out = io.StringIO()
    recorder = to_jsonl(out)
    recorder.on_next(A)
    recorder.on_completed()
    recorder.on_next(B)
    assert not out.closed
    assert [json.loads(line)["frame"] for line in out.getvalue().splitlines()] == [A]
    assert recorder.counts["after_close"] == 1


def test_the_real_clock_starts_at_zero_and_never_goes_back(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    with to_jsonl(path) as recorder:
        for i in range(50):
            recorder.on_next({"i": i})
    offsets = [record["t"] for record in read_records(path)]
    assert offsets[0] == 0.0
    assert offsets == sorted(offsets)
    assert len(offsets) == 50


def test_on_error_closes_the_recording(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    recorder = to_jsonl(path)
    reactivex.concat(reactivex.of(A), reactivex.throw(RuntimeError("source died"))).subscribe(
        recorder
    )
    recorder.on_next(B)
    assert [r["frame"] for r in read_records(path)] == [A]
