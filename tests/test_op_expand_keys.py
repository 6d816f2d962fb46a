"""expand_keys(): updates -> Invalidation(update, keys); no keys -> dropped and counted."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import reactivex
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.recorded import Recorded

from querysync import Invalidation, KeyRegistry, Resync, nodetool_registry
from querysync.operators import expand_keys
from querysync.testing import change, marbles

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
on_error = ReactiveTest.on_error
subscribe = ReactiveTest.subscribe

WF = change("updated", "workflow", "w1", etag="e")
JOB = change("created", "job", "j1")
ASSET = change("deleted", "asset", "a1")
ODD = change("updated", "gizmo", "g1")
# Keys from the seed table (SEED.md), written out by hand.
WF_INV = Invalidation(
    WF, (("workflows",), ("templates",), ("workflow", "w1"), ("workflow_versions", "w1"))
)
JOB_INV = Invalidation(JOB, (("jobs",), ("job", "j1")))
ASSET_INV = Invalidation(ASSET, (("assets",),))


def run(*messages: Recorded[Any], disposed: float = 1000) -> tuple[list[Recorded[Any]], Any]:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(*messages)
    results = scheduler.start(lambda: xs.pipe(expand_keys()), disposed=disposed)
    return results.messages, xs.subscriptions


def test_completed() -> None:
    messages, subs = run(
        on_next(150, WF),
        on_next(210, WF),
        on_next(220, JOB),
        on_next(225, ODD),
        on_next(230, ASSET),
        on_completed(250),
    )
    assert messages == [
        on_next(210, WF_INV),
        on_next(220, JOB_INV),
        on_next(230, ASSET_INV),
        on_completed(250),
    ]
    assert subs == [subscribe(200, 250)]


def test_empty() -> None:
    messages, subs = run(on_next(150, WF), on_completed(250))
    assert messages == [on_completed(250)]
    assert subs == [subscribe(200, 250)]


def test_never() -> None:
    messages, subs = run(on_next(150, WF))
    assert messages == []
    assert subs == [subscribe(200, 1000)]


def test_error() -> None:
    ex = Exception("upstream")
    messages, subs = run(on_next(210, WF), on_error(220, ex), on_next(230, JOB))
    assert messages == [on_next(210, WF_INV), on_error(220, ex)]
    assert subs == [subscribe(200, 220)]


def test_dispose() -> None:
    messages, subs = run(on_next(210, WF), on_next(300, JOB), disposed=250)
    assert messages == [on_next(210, WF_INV)]
    assert subs == [subscribe(200, 250)]


def test_cold_source() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_cold_observable(on_next(1, JOB), on_completed(2))
    results = scheduler.start(lambda: xs.pipe(expand_keys()))
    assert results.messages == [on_next(201, JOB_INV), on_completed(202)]
    assert xs.subscriptions == [subscribe(200, 202)]


def test_empty_id_gives_general_keys_only() -> None:
    update = change("deleted", "thread", "")
    got: list[Any] = []
    reactivex.of(update).pipe(expand_keys()).subscribe(got.append)
    assert got == [Invalidation(update, (("threads",),))]


def test_unknown_type_is_dropped_counted_and_logged_once_per_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    op = expand_keys()
    got: list[Any] = []
    updates = [
        change("updated", "gizmo", "g1"),
        WF,
        change("updated", "gizmo", "g2"),
        change("deleted", "widget", "x"),
        change("updated", "gizmo", "g3"),
    ]
    with caplog.at_level(logging.DEBUG, logger="querysync"):
        reactivex.from_iterable(updates).pipe(op).subscribe(got.append)
    assert got == [WF_INV]
    assert op.counts["unknown_type"] == 4
    assert op.counts["dropped"] == 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2
    assert "gizmo" in warnings[0]
    assert "widget" in warnings[1]


def test_nodetool_internal_types_are_counted_quietly(caplog: pytest.LogCaptureFixture) -> None:
    op = expand_keys(nodetool_registry())
    got: list[Any] = []
    internal = [change("updated", t, "x") for t in ("runevent", "runnodestate", "runlease")]
    message = change("created", "message", "m1", thread_id="t1")
    with caplog.at_level(logging.DEBUG, logger="querysync"):
        reactivex.from_iterable([*internal, message]).pipe(op).subscribe(got.append)
    assert len(got) == 1
    assert got[0].update == message
    assert ("messages", "t1") in got[0].keys
    assert op.counts["ignored"] == 3
    assert op.counts["unknown_type"] == 0
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_custom_registry() -> None:
    reg = KeyRegistry()
    reg.register("gizmo", ["gizmos"], lambda u: [("gizmo", u.resource.id, "detail")])
    got: list[Any] = []
    reactivex.of(ODD, WF).pipe(expand_keys(reg)).subscribe(got.append)
    assert got == [Invalidation(ODD, (("gizmos",), ("gizmo", "g1", "detail")))]


def test_the_registry_is_read_at_each_update() -> None:
    # Registering a type after the pipeline is built takes effect for later updates.
    reg = KeyRegistry()
    op = expand_keys(reg)
    got: list[Any] = []
    reactivex.of(ODD).pipe(op).subscribe(got.append)
    reg.register("gizmo", ["gizmos"])
    reactivex.of(ODD).pipe(op).subscribe(got.append)
    assert got == [Invalidation(ODD, (("gizmos",),))]


def test_resync_passes_through_in_order() -> None:
    resync = Resync("reconnected", attempt=2)
    messages, _ = run(on_next(210, WF), on_next(215, resync), on_next(220, JOB), on_completed(250))
    assert messages == [
        on_next(210, WF_INV),
        on_next(215, resync),
        on_next(220, JOB_INV),
        on_completed(250),
    ]


def test_marbles() -> None:
    with marbles() as m:
        source = m.hot("-w-z-j-|", w=WF, z=ODD, j=JOB)
        result = m.start(source.pipe(expand_keys()))
        assert result == m.exp("-w---j-|", w=WF_INV, j=JOB_INV)


def test_specific_keys_come_from_the_rule_and_name_the_id() -> None:
    reg = KeyRegistry()
    # ("jobs", "recent") is a general key that happens to contain a job's id.
    reg.register("job", [("jobs", "recent")], lambda u: [("job", u.resource.id), ("log",)])
    got: list[Any] = []
    reactivex.of(change("deleted", "job", "recent")).pipe(expand_keys(reg)).subscribe(got.append)
    (inv,) = got
    assert inv.keys == (("jobs", "recent"), ("job", "recent"), ("log",))
    assert inv.specific_keys == (("job", "recent"),)
    assert inv.general_keys == (("jobs", "recent"), ("log",))


def test_a_raising_rule_keeps_the_general_keys(caplog: pytest.LogCaptureFixture) -> None:
    def broken(update: Any) -> list[Any]:
        raise KeyError("thread_id")

    reg = KeyRegistry()
    reg.register("message", ["messages"], broken)
    op = expand_keys(reg)
    got: list[Any] = []
    errors: list[Exception] = []
    with caplog.at_level(logging.ERROR, logger="querysync"):
        reactivex.of(change("updated", "message", "m1"), JOB).pipe(op).subscribe(
            got.append, errors.append
        )
    assert errors == []
    assert [i.keys for i in got] == [(("messages",),)]
    assert op.counts["rule_errors"] == 1
    assert any("raised" in r.getMessage() for r in caplog.records)


def test_unknown_type_names_are_not_kept_without_bound() -> None:
    op = expand_keys()
    source = reactivex.from_iterable(change("updated", f"t{i}", "x") for i in range(1000))
    source.pipe(op).subscribe()
    assert op.counts["unknown_type"] == 1000
    assert len(op.counts) <= 3
