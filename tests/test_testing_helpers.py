"""querysync.testing: change() and marbles() make marble tests short, and still catch mistakes."""

from __future__ import annotations

import doctest

import pytest
import reactivex
from pydantic import ValidationError
from reactivex import operators as ops
from reactivex.testing import ReactiveTest

import querysync.testing
from querysync import ResourceChangeUpdate
from querysync.operators import throttle_per_resource
from querysync.testing import change, marbles

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
on_error = ReactiveTest.on_error


def times_ten(x: int) -> int:
    return x * 10


def plus_one(x: int) -> int:
    return x + 1


# change()


def test_change_builds_an_update() -> None:
    update = change("updated", "workflow", "w1", etag="e1")
    assert isinstance(update, ResourceChangeUpdate)
    assert update.type == "resource_change"
    assert (update.event, update.resource_type) == ("updated", "workflow")
    assert (update.resource.id, update.resource.etag) == ("w1", "e1")
    assert update.resource.model_extra == {}


def test_change_equals_the_validated_wire_message() -> None:
    wire = {
        "type": "resource_change",
        "event": "created",
        "resource_type": "job",
        "resource": {"id": "job-456", "etag": "def456", "status": "running"},
    }
    built = change("created", "job", "job-456", etag="def456", status="running")
    assert built == ResourceChangeUpdate.model_validate(wire)


def test_change_defaults() -> None:
    update = change("deleted", "asset")
    assert update.resource.id == ""
    assert update.resource.etag is None


def test_change_keeps_extra_properties() -> None:
    update = change("updated", "workflow", "w1", etag="e1", name="n", thread_id="t")
    assert update.resource.model_extra == {"name": "n", "thread_id": "t"}


def test_change_validates() -> None:
    with pytest.raises(ValidationError):
        change("renamed", "workflow", "w1")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        change("updated", "", "w1")


# marbles()


def test_hot_exp_and_start_agree() -> None:
    with marbles() as m:
        source = m.hot("-a-b-|", a=1, b=2)
        result = m.start(source.pipe(ops.map(times_ten)))
        assert result == m.exp("-a-b-|", a=10, b=20)
        # exp() is plain reactivex.testing records: time 0 of the string is 200.
        assert result == [on_next(201, 10), on_next(203, 20), on_completed(205)]


def test_a_wrong_value_is_caught() -> None:
    with marbles() as m:
        result = m.start(m.hot("-a-|", a=1).pipe(ops.map(plus_one)))
        assert result != m.exp("-a-|", a=1)
        assert result == m.exp("-a-|", a=2)


def test_a_wrong_time_is_caught() -> None:
    with marbles() as m:
        result = m.start(m.hot("-a-|", a=1))
        assert result != m.exp("--a|", a=1)
        assert result != m.exp("-a--|", a=1)
        assert result != m.exp("-a-", a=1)


def test_a_wrong_throttle_expectation_is_caught() -> None:
    a1 = change("updated", "workflow", "a", etag="1")
    a2 = change("updated", "workflow", "a", etag="2")
    with marbles() as m:
        result = m.start(m.hot("-a-b---|", a=a1, b=a2).pipe(throttle_per_resource(3)))
        # Plain throttle-first would drop b; latest-wins must not.
        assert result != m.exp("-a-----|", a=a1)
        # b is not let through at once either.
        assert result != m.exp("-a-b---|", a=a1, b=a2)
        assert result == m.exp("-a--b--|", a=a1, b=a2)


def test_cold_starts_at_subscription() -> None:
    with marbles() as m:
        source = m.cold("a-b|", a="x", b="y")
        result = m.start(source)
        assert result == m.exp("a-b|", a="x", b="y")
        assert result == [on_next(200, "x"), on_next(202, "y"), on_completed(203)]


def test_start_accepts_a_factory_and_a_dispose_time() -> None:
    with marbles() as m:
        source = m.hot("-a-b-c-|", a=1, b=2, c=3)
        result = m.start(lambda: source, disposed=204)
        assert result == m.exp("-a-b", a=1, b=2)


def test_errors_use_the_given_exception() -> None:
    boom = ValueError("boom")
    with marbles(error=boom) as m:
        result = m.start(m.hot("-a-#", a=1))
        assert result == m.exp("-a-#", a=1)
        assert result[-1] == on_error(203, boom)
        assert result[-1] != on_error(203, ValueError("other"))


def test_timespan_scales_the_marbles() -> None:
    with marbles(timespan=10) as m:
        result = m.start(m.hot("-a-|", a=1))
        assert result == [on_next(210, 1), on_completed(230)]


def test_groups_share_one_instant() -> None:
    with marbles() as m:
        source = m.hot("-(a,b)-|", a=1, b=2)
        result = m.start(source)
        assert result == [on_next(201, 1), on_next(201, 2), on_completed(207)]


def test_operators_pick_up_the_test_scheduler() -> None:
    # No scheduler= anywhere: the time-based operator must run on m.scheduler, not on a
    # thread or an asyncio loop (there is none here).
    a1 = change("updated", "job", "j", etag="1")
    a2 = change("updated", "job", "j", etag="2")
    with marbles() as m:
        result = m.start(m.hot("-a-b-|", a=a1, b=a2).pipe(throttle_per_resource(10)))
        assert result == m.exp("-a---(b,|)", a=a1, b=a2)
        assert float(m.scheduler.clock) == 1000.0


def test_each_context_has_its_own_scheduler() -> None:
    with marbles() as first, marbles() as second:
        assert first.scheduler is not second.scheduler
        first.start(reactivex.empty())
        assert float(second.scheduler.clock) == 0.0


def test_module_docstring_example_runs() -> None:
    failures, attempted = doctest.testmod(querysync.testing, raise_on_error=False)
    assert attempted > 0
    assert failures == 0


def test_hot_created_inside_the_start_factory_keeps_its_times() -> None:
    with marbles() as m:
        result = m.start(lambda: m.hot("-a-|", a=1))
        assert result == m.exp("-a-|", a=1)
