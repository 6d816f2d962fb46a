"""Property tests: random mixtures of valid updates and bad frames through the operators.

Every valid update comes out, in order, and nothing else does; every frame that cannot
become an update is rejected (counted and handed to on_reject), never on_error; other
message types are skipped silently.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal, cast

import msgpack
from _support import wire
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reactivex.notification import Notification, OnNext
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler

from querysync import ChangeEvent, Rejected, Resource, ResourceChangeUpdate
from querysync.operators import resource_changes, throttle_per_resource

Kind = Literal["valid", "invalid", "other"]


@dataclass(frozen=True)
class Case:
    """One frame and what should become of it."""

    frame: Any
    kind: Kind
    expected: ResourceChangeUpdate | None = None


SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

EVENTS: tuple[ChangeEvent, ...] = ("created", "updated", "deleted")


def texts(min_size: int = 0, max_size: int = 12) -> st.SearchStrategy[str]:
    # No lone surrogates: MessagePack cannot encode them (JSON escapes them), and a
    # frame the test itself cannot build says nothing about the operator.
    alphabet = st.characters(codec="utf-8")
    return st.text(alphabet, min_size=min_size, max_size=max_size)


# A few types and ids repeat often, so the throttle sees the same resource many times.
resource_types = st.one_of(
    st.sampled_from(["workflow", "job", "asset", "thread", "message"]),
    texts(min_size=1, max_size=12),
)
ids = st.one_of(st.sampled_from(["", "a", "b", "c"]), texts(max_size=12))
etags = st.one_of(st.none(), texts(max_size=16))
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    int64,
    st.floats(allow_nan=False, allow_infinity=False),
    texts(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(texts(max_size=8), inner, max_size=4),
    ),
    max_leaves=12,
)
extras = st.dictionaries(
    texts(max_size=10).filter(lambda k: k not in ("id", "etag")), json_values, max_size=4
)
encodings = st.sampled_from(["dict", "json", "msgpack"])


def encode(message: dict[str, Any], how: str) -> Any:
    if how == "json":
        return json.dumps(message)
    if how == "msgpack":
        return msgpack.packb(message, use_bin_type=True)
    return message


@st.composite
def valid_cases(draw: st.DrawFn) -> Case:
    event = draw(st.sampled_from(EVENTS))
    rtype = draw(resource_types)
    rid = draw(ids)
    etag = draw(etags)
    props = draw(extras)
    shape = draw(st.sampled_from(["plain", "huge", "deep", "no-id", "no-etag"]))
    if shape == "huge":
        props = {**props, "blob": "x" * draw(st.integers(10_000, 200_000))}
    elif shape == "deep":
        deep: Any = "leaf"
        for _ in range(draw(st.integers(1, 200))):
            deep = {"d": [deep]}
        props = {**props, "deep": deep}
    resource: dict[str, Any] = {**props}
    if shape != "no-id":
        resource["id"] = rid
    if shape != "no-etag":
        resource["etag"] = etag
    expected = ResourceChangeUpdate(
        event=event,
        resource_type=rtype,
        resource=Resource(
            id=rid if shape != "no-id" else "",
            etag=etag if shape != "no-etag" else None,
            **props,
        ),
    )
    return Case(encode(wire(event, rtype, resource), draw(encodings)), "valid", expected)


@st.composite
def invalid_change_cases(draw: st.DrawFn) -> Case:
    """Frames that say resource_change but fail validation."""
    good = wire(draw(st.sampled_from(EVENTS)), draw(resource_types), {"id": draw(ids)})
    flaw = draw(
        st.sampled_from(
            [
                "missing-event",
                "unknown-event",
                "empty-type",
                "non-string-type",
                "non-string-id",
                "non-string-etag",
                "resource-not-object",
                "missing-resource",
            ]
        )
    )
    message = dict(good)
    if flaw == "missing-event":
        del message["event"]
    elif flaw == "unknown-event":
        message["event"] = draw(texts(max_size=10).filter(lambda e: e not in EVENTS))
    elif flaw == "empty-type":
        message["resource_type"] = ""
    elif flaw == "non-string-type":
        message["resource_type"] = draw(st.one_of(st.none(), int64, st.lists(texts())))
    elif flaw == "non-string-id":
        message["resource"] = {
            "id": draw(
                st.one_of(
                    int64,
                    st.floats(allow_nan=False),
                    st.none(),
                    st.booleans(),
                    st.lists(texts(max_size=3), max_size=2),
                )
            )
        }
    elif flaw == "non-string-etag":
        message["resource"] = {"id": "a", "etag": draw(int64)}
    elif flaw == "resource-not-object":
        message["resource"] = draw(
            st.one_of(st.none(), texts(max_size=5), st.lists(int64, max_size=3))
        )
    else:
        del message["resource"]
    return Case(encode(message, draw(encodings)), "invalid")


@st.composite
def undecodable_cases(draw: st.DrawFn) -> Case:
    what = draw(
        st.sampled_from(
            ["reserved-byte", "truncated-msgpack", "json-wrong-shape", "bad-json", "deep", "huge"]
        )
    )
    frame: Any
    if what == "reserved-byte":
        # 0xc1 is never used by MessagePack: whatever follows, this cannot decode.
        frame = b"\xc1" + draw(st.binary(max_size=40))
    elif what == "truncated-msgpack":
        whole = msgpack.packb(wire("updated", "job", {"id": draw(ids), "etag": "e"}))
        frame = whole[: draw(st.integers(0, len(whole) - 1))]
    elif what == "json-wrong-shape":
        frame = json.dumps(
            draw(st.one_of(st.lists(json_scalars, max_size=3), json_scalars, st.just([])))
        )
    elif what == "bad-json":
        frame = "{" + draw(texts(max_size=30))
    elif what == "deep":
        frame = "[" * draw(st.integers(50_000, 120_000))
    else:
        frame = "x" * draw(st.integers(100_000, 1_000_000))
    return Case(frame, "invalid")


@st.composite
def random_bytes_cases(draw: st.DrawFn) -> Case:
    frame = draw(st.binary(min_size=0, max_size=64))
    # Decoding here is the test's own oracle, with msgpack itself: random bytes that
    # happen to be a MessagePack map are a (typeless) other message, the rest must be
    # rejected.
    try:
        value = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except Exception:
        return Case(frame, "invalid")
    if isinstance(value, dict):
        assert value.get("type") != "resource_change"
        return Case(frame, "other")
    return Case(frame, "invalid")


@st.composite
def other_cases(draw: st.DrawFn) -> Case:
    mtype = draw(
        st.one_of(
            st.sampled_from(
                ["ping", "pong", "system_stats", "job_update", "node_update", "message", "error"]
            ),
            st.none(),
            int64,
        )
    )
    message: dict[str, Any] = {"type": mtype, "job_id": draw(ids), "body": draw(json_values)}
    if draw(st.booleans()):
        del message["type"]
    return Case(encode(message, draw(encodings)), "other")


cases = st.lists(
    st.one_of(
        valid_cases(),
        valid_cases(),
        invalid_change_cases(),
        undecodable_cases(),
        random_bytes_cases(),
        other_cases(),
    ),
    max_size=30,
)


@SETTINGS
@given(cases)
def test_resource_changes_lets_exactly_the_valid_updates_through(mixture: list[Case]) -> None:
    rejected: list[Rejected] = []
    op = resource_changes(on_reject=rejected.append)
    source: Subject[Any] = Subject()
    out: list[Any] = []
    errors: list[Exception] = []
    completed: list[bool] = []
    source.pipe(op).subscribe(out.append, errors.append, lambda: completed.append(True))
    for case in mixture:
        source.on_next(case.frame)
    source.on_completed()

    assert out == [c.expected for c in mixture if c.kind == "valid"]
    invalid = [c.frame for c in mixture if c.kind == "invalid"]
    assert [r.frame for r in rejected] == invalid
    assert all(r.reason for r in rejected)
    assert op.counts["rejected"] == len(invalid)
    assert errors == []
    assert completed == [True]


@SETTINGS
@given(cases)
def test_throttle_with_a_huge_window_delivers_each_resources_first_and_last_update(
    mixture: list[Case],
) -> None:
    scheduler = TestScheduler()
    messages = [ReactiveTest.on_next(210 + i, c.frame) for i, c in enumerate(mixture)]
    end = 210 + len(mixture) + 5
    xs = scheduler.create_hot_observable(*messages, ReactiveTest.on_completed(end))
    parse = resource_changes()
    throttle = throttle_per_resource(1_000_000)
    results = scheduler.start(lambda: xs.pipe(parse, throttle), disposed=end + 100)

    valid = [c.expected for c in mixture if c.kind == "valid"]
    assert parse.counts["rejected"] == sum(1 for c in mixture if c.kind == "invalid")

    first: dict[tuple[str, str], ResourceChangeUpdate] = {}
    last: dict[tuple[str, str], ResourceChangeUpdate] = {}
    count: Counter[tuple[str, str]] = Counter()
    for update in valid:
        assert update is not None
        key = (update.resource_type, update.resource.id)
        first.setdefault(key, update)
        last[key] = update
        count[key] += 1

    notes = [(m.time, cast(Notification[Any], m.value)) for m in results.messages]
    kinds = [n.kind for _, n in notes]
    assert kinds[-1] == "C"
    assert kinds.count("C") == 1
    assert "E" not in kinds
    assert notes[-1][0] == end
    leading = [n.value for t, n in notes if isinstance(n, OnNext) and t < end]
    flushed = [n.value for t, n in notes if isinstance(n, OnNext) and t == end]
    # The window never closes: the first update of each resource passes at once, in
    # arrival order, and the last one of each resource updated again is flushed on
    # completion; nothing else comes out.
    assert leading == list(first.values())
    assert Counter(flushed) == Counter(last[k] for k in count if count[k] > 1)
