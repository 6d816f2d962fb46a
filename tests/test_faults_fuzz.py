"""Fuzzed frames into the whole pipeline and a real cache: bad input is counted, valid updates land.

Two runs of the same idea. In-process: many hypothesis scripts of valid writes and bad
frames pushed through ``build_pipeline`` over a Subject into a QueryCache whose fetcher
is a small fake backend. Over a real WebSocket: the embedded server announces real
writes while ``broadcast_raw`` slips bad frames between them, into a running ``sync``.
In both, the stream never ends, every frame is accounted for, every valid update reaches
the cache, and the cache ends equal to the backend.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgpack
import pytest
from _support import obj, wire
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reactivex.subject import Subject

from querysync import (
    NODETOOL_INTERNAL_TYPES,
    Invalidation,
    ResourceChangeUpdate,
    ResourceGone,
    Resync,
)
from querysync._audit import audit
from querysync._keys import KeyRegistry, QueryKey
from querysync._nodetool import LIST_KEYS
from querysync._pipeline import build_pipeline
from querysync._sync import Sync, sync
from querysync.server import NodeToolServer, Workload
from querysync.sinks import CacheEvent, QueryCache
from querysync.streams import Backoff, ConnectionState

T = TypeVar("T")
Kind = Literal["valid", "unknown", "other", "reject", "maybe"]
"""What must become of a frame.

valid: a resource_change of a known type; it must reach the cache. unknown: a
well-formed resource_change of a type no query shows; counted, no effect. other: another
message type; skipped. reject: cannot become an update; counted as rejected. maybe:
random input whose fate the test does not predict; it only has to be accounted for.
"""

FAST = Backoff(initial=0.01, factor=2.0, max_delay=0.05, jitter=0.0)
MIB = 1024 * 1024

# What a NodeTool client caches per resource type, from the seed document's table plus
# the detail keys the live server's REST API serves (written out here, not read from the
# registry under test).
GENERAL: dict[str, tuple[str, ...]] = {
    "workflow": ("workflows", "templates"),
    "job": ("jobs",),
    "asset": ("assets",),
    "thread": ("threads",),
    "message": ("messages",),
    "workspace": ("workspaces",),
    "secret": ("secrets",),
}
SPECIFIC: dict[str, tuple[str, ...]] = {
    "workflow": ("workflow", "workflow_versions"),
    "job": ("job",),
    "asset": ("asset",),
    "thread": ("thread", "messages"),
    "message": ("message",),
    "workspace": ("workspace",),
    "secret": (),
}
TYPES = tuple(GENERAL)
LIST_NAMES: tuple[QueryKey, ...] = tuple(
    sorted({(name,) for names in GENERAL.values() for name in names})
)
KNOWN_TYPES = frozenset(
    {*TYPES, "collection", "model", "workflowversion", "runevent", "runnodestate", "runlease"}
    | {"runinboxmessage", "prediction", "oauthcredential", "triggerinput"}
)
EVENTS = ("created", "updated", "deleted")


def fuzz_registry() -> KeyRegistry:
    """The tables above as a registry: the in-process run checks the pipeline's faults
    against its own oracle, whatever the library's refetch table holds."""
    def by_id(names: tuple[str, ...]) -> Callable[[ResourceChangeUpdate], list[QueryKey]]:
        return lambda update: [(name, update.resource.id) for name in names]

    reg = KeyRegistry()
    for rtype in TYPES:
        reg.register(rtype, GENERAL[rtype], by_id(SPECIFIC[rtype]))
    reg.register("collection", ["collections"])
    reg.register("model", ["models"])
    reg.register("workflowversion", ["workflow_versions"])
    reg.ignore(*NODETOOL_INTERNAL_TYPES)
    return reg


def packb(value: Any) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def identity(update: ResourceChangeUpdate) -> tuple[str, str, str, str | None]:
    """What makes two announcements the same: extras (huge strings, nesting) aside."""
    return (update.event, update.resource_type, update.resource.id, update.resource.etag)


def run_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on ``loop`` (in another thread) and return its result: hypothesis
    drives the examples from a worker thread so that one server, one sync and a final
    audit can frame them all."""
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=45)


# -- bad frames ---------------------------------------------------------------------------

texts = st.text(st.characters(codec="utf-8"), max_size=12)
not_strings = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=3),
    st.dictionaries(texts, st.integers(min_value=0, max_value=9), max_size=2),
)
a_valid_message = st.builds(
    lambda event, rtype, rid, etag: wire(event, rtype, {"id": rid, "etag": etag}),
    st.sampled_from(EVENTS),
    st.sampled_from(TYPES),
    texts,
    st.one_of(st.none(), texts),
)


def encoded(value: Any, how: str) -> str | bytes:
    return json.dumps(value) if how == "json" else packb(value)


encodings = st.sampled_from(["json", "msgpack"])


@st.composite
def truncated(draw: st.DrawFn) -> tuple[str | bytes, Kind]:
    # Any strict prefix of an encoded object is incomplete in both encodings.
    data = encoded(draw(a_valid_message), draw(encodings))
    cut = draw(st.integers(min_value=0, max_value=len(data) - 1))
    return data[:cut], "reject"


@st.composite
def wrong_shape(draw: st.DrawFn) -> tuple[str | bytes, Kind]:
    msg = draw(a_valid_message)
    field_ = draw(
        st.sampled_from(
            ["top", "event", "resource_type", "resource", "id", "etag", "drop"]
        )
    )
    value: Any
    if field_ == "top":
        value = draw(st.one_of(not_strings, texts, st.lists(a_valid_message, max_size=2)))
        if isinstance(value, dict):
            value = [value]
    elif field_ == "event":
        msg["event"] = draw(st.one_of(not_strings, texts.filter(lambda e: e not in EVENTS)))
        value = msg
    elif field_ == "resource_type":
        msg["resource_type"] = draw(st.one_of(st.just(""), not_strings))
        value = msg
    elif field_ == "resource":
        msg["resource"] = draw(st.one_of(not_strings.filter(lambda v: not isinstance(v, dict))))
        value = msg
    elif field_ == "id":
        msg["resource"]["id"] = draw(not_strings)
        value = msg
    elif field_ == "etag":
        msg["resource"]["etag"] = draw(not_strings.filter(lambda v: v is not None))
        value = msg
    else:
        del msg[draw(st.sampled_from(["event", "resource_type", "resource"]))]
        value = msg
    return encoded(value, draw(encodings)), "reject"


@st.composite
def deeply_nested(draw: st.DrawFn) -> tuple[str | bytes, Kind]:
    depth = draw(st.sampled_from([2_000, 100_000]))
    where = draw(st.sampled_from(["top", "resource"]))
    if draw(encodings) == "json":
        nest = "[" * depth + "]" * depth
        if where == "top":
            return nest, "reject"
        return json.dumps(wire("updated", "workflow", {})).replace("{}", nest), "reject"
    # A MessagePack array of one element, depth times over.
    nested = b"\x91" * depth + b"\x01"
    if where == "top":
        return nested, "reject"
    head = packb(wire("updated", "workflow", {}))
    return head[:-1] + nested, "reject"


@st.composite
def huge(draw: st.DrawFn) -> tuple[str | bytes, Kind]:
    size = draw(st.sampled_from([100_000, MIB]))
    if draw(st.booleans()):
        return "x" * size, "reject"
    msg = wire(draw(texts.filter(lambda e: e not in EVENTS)), "workflow", {"id": "x" * size})
    return encoded(msg, draw(encodings)), "reject"


@st.composite
def unknown_type(draw: st.DrawFn) -> tuple[str | bytes, Kind]:
    rtype = draw(st.one_of(st.sampled_from(["runevent", "prediction"]), texts.filter(bool)))
    if rtype in KNOWN_TYPES and rtype not in NODETOOL_INTERNAL_TYPES:
        rtype = "runlease"  # drew a type the client caches: use one it ignores instead
    msg = wire(draw(st.sampled_from(EVENTS)), rtype, {"id": draw(texts), "etag": None})
    return encoded(msg, draw(encodings)), "unknown"


@st.composite
def other_message(draw: st.DrawFn) -> tuple[str | bytes, Kind]:
    value = draw(
        st.sampled_from(
            [
                {"type": "ping", "ts": 1.5},
                {"type": "system_stats", "stats": {"cpu": 3}},
                {"type": "job_update", "job_id": "j1", "status": "running"},
                {"error": "invalid_message", "detail": "nope"},
                {},
                {"type": None},
                {"type": "resource_changes", "event": "updated"},
            ]
        )
    )
    return encoded(value, draw(encodings)), "other"


bad_frames: st.SearchStrategy[tuple[str | bytes, Kind]] = st.one_of(
    st.tuples(st.binary(max_size=64), st.just("maybe")),
    st.tuples(st.text(max_size=64), st.just("maybe")),
    truncated(),
    wrong_shape(),
    deeply_nested(),
    huge(),
    unknown_type(),
    other_message(),
)


# -- the in-process run -------------------------------------------------------------------


class Backend:
    """The fake backend of the in-process run: resources, and the answer for each key."""

    def __init__(self) -> None:
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}
        self.revision = 0

    def write(self, action: str, rtype: str, rid: str) -> list[dict[str, Any]]:
        """Apply one write and return the resource_change messages it announces."""
        here = self.resources.get((rtype, rid))
        if action == "touch":
            self.revision += 1
            body = {"id": rid, "rev": self.revision}
            etag = hashlib.md5(json.dumps(body, sort_keys=True).encode()).hexdigest()
            self.resources[(rtype, rid)] = {**body, "etag": etag}
            ref = {"id": rid, "etag": etag}
            # The live server announces every create twice: updated, then created.
            return [wire("updated", rtype, ref)] + (
                [wire("created", rtype, dict(ref))] if here is None else []
            )
        if action == "delete":
            if here is not None:
                del self.resources[(rtype, rid)]
            return [wire("deleted", rtype, {"id": rid, "etag": here and here["etag"]})]
        if action == "phantom":  # a change for a resource this backend never had
            return [wire("updated", rtype, {"id": f"ghost-{rid}", "etag": "ghost"})]
        return [wire("updated", rtype, {})]  # no id: only the lists are suspect

    def answer(self, key: QueryKey) -> Any:
        """What a GET of ``key`` returns now; ResourceGone when nothing serves it."""
        name = key[0]
        if len(key) == 1:
            items = [
                r
                for (rtype, _), r in sorted(self.resources.items())
                if name in GENERAL[rtype]
            ]
            return {"items": items}
        for rtype, names in SPECIFIC.items():
            if name in names:
                found = self.resources.get((rtype, str(key[1])))
                if found is not None:
                    return {"key": name, **found}
        raise ResourceGone(f"nothing serves {key!r}")

    def expected_keys(self) -> set[QueryKey]:
        """Mirror mode's promise: every list, and each live resource's own keys."""
        keys: set[QueryKey] = set(LIST_NAMES)
        for rtype, rid in self.resources:
            keys.update((name, rid) for name in SPECIFIC[rtype])
        return keys


def short(value: object) -> str:
    """A repr cut to a readable length: hypothesis prints every example it reports."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}...<{len(text)} chars>"


class Brief:
    """Printed by hypothesis through its short ``repr``: hypothesis's own printer spells
    out a dataclass's fields in full, megabyte strings included."""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


@dataclass(frozen=True, repr=False)
class Write(Brief):
    action: str
    rtype: str
    rid: str
    encoding: str
    extra: dict[str, Any]

    def __repr__(self) -> str:
        fields = (self.action, self.rtype, short(self.rid), self.encoding, short(self.extra))
        return "Write({}, {}, {}, {}, {})".format(*fields)


@dataclass(frozen=True, repr=False)
class Bad(Brief):
    frame: Any
    kind: Kind

    def __repr__(self) -> str:
        return f"Bad({short(self.frame)}, {self.kind})"


@dataclass(frozen=True, repr=False)
class Burst(Brief):
    """Bad frames back to back, as a broken sender repeats itself."""

    frames: tuple[Bad, ...]

    def __repr__(self) -> str:
        return f"Burst({', '.join(map(repr, self.frames))})"


@dataclass(frozen=True)
class Pause:
    """Let the loop run ``turns`` times: fetches progress between frames."""

    turns: int = 1


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"down": value}
    return value


extras = st.one_of(
    st.just({}),
    st.fixed_dictionaries({"name": st.text(max_size=20)}),
    st.fixed_dictionaries({"big": st.sampled_from([10_000, 2 * MIB]).map(lambda n: "y" * n)}),
    st.fixed_dictionaries({"deep": st.sampled_from([20, 200]).map(nested)}),
    st.fixed_dictionaries({"thread_id": st.sampled_from(["a", "b", "nope"])}),
)
ids = st.one_of(
    st.sampled_from(["a", "b", "c"]),
    st.text(min_size=1, max_size=6),
    st.just("\ud800 lone surrogate"),
    st.just(20_000).map(lambda n: "h" * n),
)
writes = st.builds(
    Write,
    st.sampled_from(["touch", "touch", "touch", "delete", "phantom", "anonymous"]),
    st.sampled_from(TYPES),
    ids,
    st.sampled_from(["json", "msgpack", "dict", "bytearray", "memoryview"]),
    extras,
)
odd_objects = st.sampled_from([None, 42, 3.5, ["a", "list"], ("a", "tuple"), object()])
steps = st.one_of(
    writes,
    writes,
    bad_frames.map(lambda fk: Bad(fk[0], fk[1])),
    odd_objects.map(lambda o: Bad(o, "reject")),
    st.lists(bad_frames.map(lambda fk: Bad(fk[0], fk[1])), min_size=5, max_size=25).map(
        lambda frames: Burst(tuple(frames))
    ),
    st.builds(Pause, st.integers(min_value=1, max_value=3)),
)


def encode_for_subject(msg: dict[str, Any], how: str, extra: dict[str, Any]) -> Any:
    if extra:
        msg = {**msg, "resource": {**msg["resource"], **extra}}
    if how == "json":
        return json.dumps(msg)
    if how == "dict":
        return msg
    try:
        data = packb(msg)
    except UnicodeEncodeError:
        return json.dumps(msg)  # MessagePack cannot carry a lone surrogate; JSON escapes it
    if how == "bytearray":
        return bytearray(data)
    if how == "memoryview":
        return memoryview(data)
    return data


@dataclass
class Tally:
    """Across all examples: the figures the report quotes."""

    examples: int = 0
    bad_frames: int = 0
    valid_updates: int = 0
    kinds: Counter[str] = field(default_factory=Counter)


@dataclass
class InProcess:
    loop: asyncio.AbstractEventLoop
    cache: QueryCache
    backend: Backend
    tally: Tally


async def run_script(bench: InProcess, script: list[Write | Bad | Burst | Pause]) -> None:
    backend = bench.backend = Backend()
    cache = bench.cache
    # A clean slate: the previous example's entries, fetches and writes are gone.
    cache.remove(())
    async with asyncio.timeout(20):
        await cache.wait_idle()
    for key in LIST_NAMES:
        cache.prefetch(key)
    async with asyncio.timeout(20):
        await cache.wait_idle()

    subject: Subject[Any] = Subject()
    pipeline = build_pipeline(
        subject,
        cache,
        window=None,
        registry=fuzz_registry(),
        refetch="all",
        fetch_missing=True,
    )
    passed: list[Invalidation | Resync] = []
    ended: list[str] = []
    events: list[CacheEvent] = []
    pipeline.observable.subscribe(
        passed.append,
        lambda e: ended.append(f"error: {e!r}"),
        lambda: ended.append("completed"),
    )
    events_sub = cache.events().subscribe(events.append)

    sent: Counter[Kind] = Counter()
    valid: list[dict[str, Any]] = []
    for step in script:
        if isinstance(step, Pause):
            for _ in range(step.turns):
                await asyncio.sleep(0)
            continue
        if isinstance(step, Write):
            for msg in backend.write(step.action, step.rtype, step.rid):
                sent["valid"] += 1
                valid.append(msg)
                subject.on_next(encode_for_subject(msg, step.encoding, step.extra))
            continue
        for bad in step.frames if isinstance(step, Burst) else (step,):
            sent[bad.kind] += 1
            subject.on_next(bad.frame)
    async with asyncio.timeout(30):
        await cache.wait_idle()
    events_sub.dispose()

    bench.tally.examples += 1
    bench.tally.bad_frames += sum(n for kind, n in sent.items() if kind != "valid")
    bench.tally.valid_updates += sent["valid"]
    bench.tally.kinds.update(sent)

    # The stream is still open, and every frame is accounted for exactly once.
    assert ended == []
    counts = pipeline.counts()
    total = sum(sent.values())
    assert counts["frames"] == total
    assert counts["resource_changes"] + counts["rejected"] + counts["other_messages"] == total
    assert counts["rejected"] >= sent["reject"]
    assert counts["other_messages"] >= sent["other"]
    assert counts["resource_changes"] >= sent["valid"] + sent["unknown"]
    assert cache.stats()["apply_errors"] == 0

    # Every valid update came out of the pipeline, in order, and took effect in the cache.
    wanted = [(m["event"], m["resource_type"], m["resource"].get("id", ""), m["resource"].get(
        "etag")) for m in valid]
    out = [identity(item.update) for item in passed if isinstance(item, Invalidation)]
    it = iter(out)
    missing = [w for w in wanted if not any(o == w for o in it)]
    assert missing == [], "valid updates lost (or out of order) in the pipeline"
    touched = {identity(e.update) for e in events if e.update is not None}
    assert [w for w in wanted if w not in touched] == []

    # The cache holds exactly what the backend serves, all of it fresh.
    assert set(cache.keys()) == backend.expected_keys()
    for key in cache:
        entry = cache.get(key)
        assert entry is not None
        assert not entry.stale, key
        assert entry.data == backend.answer(key), key


@pytest.fixture
async def in_process(tmp_path: Path) -> AsyncIterator[InProcess]:
    cache = QueryCache(tmp_path / "cache", retries=0)
    bench = InProcess(asyncio.get_running_loop(), cache, Backend(), Tally())

    async def fetch(key: QueryKey) -> Any:
        # The answer is read after a turn of the loop or none, as a server
        # answers some time after the ask: changes announced meanwhile must lead to one
        # more fetch, not to a stale entry.
        for _ in range(bench.backend.revision % 2):
            await asyncio.sleep(0)
        return bench.backend.answer(key)

    cache.register_fetcher((), fetch)
    yield bench
    await cache.aclose()


async def test_fuzzed_frames_in_process_never_end_the_stream_or_lose_an_update(
    in_process: InProcess, record_property: Callable[[str, object], None]
) -> None:
    bench = in_process

    @settings(
        max_examples=400,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(steps, max_size=40))
    def check(script: list[Write | Bad | Burst | Pause]) -> None:
        run_on(bench.loop, run_script(bench, script))

    await asyncio.to_thread(check)

    # What the last example left must also be what a reopen reads from disk.
    memory = {k: bench.cache.get(k) for k in bench.cache}
    await bench.cache.aclose()
    with QueryCache(bench.cache.directory) as reopened:
        assert set(reopened.keys()) == set(memory)
        for key, entry in memory.items():
            again = reopened.get(key)
            assert entry is not None
            assert again is not None
            assert (again.data, again.stale, again.etag) == (entry.data, entry.stale, entry.etag)
        assert reopened.stats()["corrupt_rows"] == 0

    assert bench.tally.examples >= 200
    assert bench.tally.kinds["reject"] > 0
    assert bench.tally.kinds["valid"] > 0
    record_property("frames_fuzzed_in_process", bench.tally.bad_frames)
    record_property("valid_updates_in_process", bench.tally.valid_updates)
    record_property("examples_in_process", bench.tally.examples)


# -- over a real WebSocket ----------------------------------------------------------------


@dataclass(frozen=True)
class Writes:
    count: int


@dataclass(frozen=True)
class Mode:
    mode: Literal["text", "binary"]


ws_steps = st.one_of(
    st.builds(Writes, st.integers(min_value=1, max_value=8)),
    bad_frames.map(lambda fk: Bad(fk[0], fk[1])),
    st.lists(bad_frames.map(lambda fk: Bad(fk[0], fk[1])), min_size=5, max_size=25).map(
        lambda frames: Burst(tuple(frames))
    ),
    st.sampled_from([Mode("text"), Mode("binary")]),
    st.just(Pause()),
)


@dataclass
class OverWs:
    loop: asyncio.AbstractEventLoop
    server: NodeToolServer
    running: Sync
    workload: Workload
    tally: Tally
    changes: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    events: list[CacheEvent] = field(default_factory=list)
    markers: dict[int, asyncio.Event] = field(default_factory=dict)
    serial: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def held_back(running: Sync) -> int:
    """Updates the throttle holds now: every update it took in and has not passed on."""
    throttle = running.pipeline.throttle
    assert throttle is not None
    took = running.pipeline.parse.counts["resource_changes"]
    t = throttle.counts
    return took - (t["leading"] + t["coalesced"] + t["trailing"] + t["flushed"])


async def run_ws_script(
    bench: OverWs, script: list[Writes | Bad | Burst | Mode | Pause]
) -> None:
    server, running = bench.server, bench.running
    source, cache = running.source, running.cache
    before_source = Counter(source.counts)
    before = running.pipeline.counts()
    bench.changes.clear()
    bench.events.clear()
    sent: Counter[Kind] = Counter()
    for step in script:
        if isinstance(step, Writes):
            await bench.workload.run(max_changes=step.count, rate=1e6, seconds=5, kind="mixed")
        elif isinstance(step, Bad | Burst):
            for bad in step.frames if isinstance(step, Burst) else (step,):
                sent[bad.kind] += 1
                assert server.broadcast_raw(bad.frame) == 1
        elif isinstance(step, Mode):
            async with asyncio.timeout(5):
                await source.send({"command": "set_mode", "data": {"mode": step.mode}})
        else:
            await asyncio.sleep(0.002)
    # A marker after the script: when it arrives, every frame before it has been through
    # the pipeline (the server writes one connection's frames in order).
    bench.serial += 1
    arrived = bench.markers[bench.serial] = asyncio.Event()
    server.broadcast({"type": "fuzz_marker", "n": bench.serial})
    async with asyncio.timeout(20):
        await arrived.wait()
    # Then until the throttle holds nothing back (a fixed sleep raced with its timers
    # on a loaded machine) and the cache is idle.
    try:
        async with asyncio.timeout(20):
            # Polled: an update of an unknown type leaves the throttle and then goes
            # nowhere, so no event downstream could announce it.
            while held_back(running) > 0:  # noqa: ASYNC110
                await asyncio.sleep(running.pipeline.window or 0.01)
            # settle(), not only the cache: a message's thread may still be resolving.
            await running.settle(quiet=0.02)
    except TimeoutError:
        throttle = running.pipeline.throttle
        raise AssertionError(
            f"not settled: {running.pipeline.parse.counts} {throttle and throttle.counts} "
            f"{cache.stats()}"
        ) from None

    bench.tally.examples += 1
    bench.tally.bad_frames += sum(sent.values())
    bench.tally.valid_updates += len(bench.changes)
    bench.tally.kinds.update(sent)

    # Still the same connection: bad frames never cost it.
    assert running.error is None
    assert source.state == ConnectionState.CONNECTED
    assert source.counts["reconnects"] == 0

    # Every frame is accounted for: rejected by the source, or parsed by the pipeline.
    delta = Counter(running.pipeline.counts())
    delta.subtract(before)
    source_delta = Counter(source.counts)
    source_delta.subtract(before_source)
    assert source_delta["frames"] == source_delta["rejected"] + delta["frames"]
    assert delta["frames"] == (
        delta["resource_changes"] + delta["rejected"] + delta["other_messages"]
    )
    assert source_delta["rejected"] + delta["rejected"] >= sent["reject"]
    assert delta["resource_changes"] >= len(bench.changes) + sent["unknown"]

    # The last announcement of every resource written reached the cache.
    last: dict[tuple[str, str], tuple[str, str, str, str | None]] = {}
    for event, rtype, resource in bench.changes:
        last[(rtype, resource["id"])] = (event, rtype, resource["id"], resource["etag"])
    seen = {identity(e.update) for e in bench.events if e.update is not None}
    # A message frame names no thread: a deleted message that no entry holds (its
    # detail never fetched, no cached list listing it) leaves nothing to reach. That
    # nothing names it afterwards is checked below, on the lists and the details.
    exempt = {u for u in last.values() if u[:2] == ("deleted", "message")}
    assert [u for u in last.values() if u not in seen and u not in exempt] == []
    alive_messages = set(server.snapshot()["message"])
    for key in cache.keys(("messages",)):
        listed = cache.get(key)
        assert listed is not None
        assert {m["id"] for m in obj(listed.data)["messages"]} <= alive_messages, key

    # ...and what the cache holds for them is what the server serves now.
    for rtype, rid in last:
        alive = rid in server.snapshot().get(rtype, {})
        for name in SPECIFIC.get(rtype, ()):
            entry = cache.get((name, rid))
            if not alive:
                assert entry is None, (name, rid)
                continue
            assert entry is not None, (name, rid)
            assert not entry.stale, (name, rid)
            assert entry.data == (await running.api.fetch((name, rid))).data, (name, rid)
    for key in LIST_KEYS:
        entry = cache.get(key)
        assert entry is not None, key
        assert not entry.stale, key


@pytest.fixture
async def over_ws(tmp_path: Path) -> AsyncIterator[OverWs]:
    server = NodeToolServer(ping_interval=None, stats_interval=None)
    await server.start()
    cache = QueryCache(tmp_path / "cache", retries=2, retry_delay=0.01)
    running = await sync(
        server.ws_url,
        server.api_url,
        cache,
        window=0.02,
        source_options={"backoff": FAST, "silence_timeout": None},
    )
    bench = OverWs(asyncio.get_running_loop(), server, running, Workload(server, seed=5), Tally())
    unsubscribe = server.store.subscribe(
        lambda event, rtype, resource: bench.changes.append((event, rtype, resource))
    )
    events = cache.events().subscribe(bench.events.append)

    def on_message(item: object) -> None:
        if isinstance(item, dict) and item.get("type") == "fuzz_marker":
            bench.markers[item["n"]].set()

    markers = running.source.subscribe(on_message)
    try:
        async with asyncio.timeout(10):
            await server.wait_for_connections(1)
            await cache.wait_idle()
        yield bench
    finally:
        markers.dispose()
        events.dispose()
        unsubscribe()
        async with asyncio.timeout(20):
            await running.stop()
            await cache.aclose()
            await server.stop()


async def test_fuzzed_frames_over_a_real_websocket_never_cost_the_connection(
    over_ws: OverWs, record_property: Callable[[str, object], None]
) -> None:
    bench = over_ws

    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(ws_steps, min_size=1, max_size=24))
    def check(script: list[Writes | Bad | Burst | Mode | Pause]) -> None:
        run_on(bench.loop, run_ws_script(bench, script))

    await asyncio.to_thread(check)

    # After everything: the whole cache agrees with the server.
    expected: list[QueryKey] = list(LIST_KEYS)
    for rtype, resources in bench.server.snapshot().items():
        if rtype in SPECIFIC:
            expected += [(name, rid) for rid in resources for name in SPECIFIC[rtype]]
    async with asyncio.timeout(30):
        agreement = await audit(bench.running.cache, bench.running.api, expect=expected)
    assert agreement.ok, agreement.disagreements[:10]
    assert agreement.checked >= len(expected)
    assert bench.tally.kinds["reject"] > 0
    record_property("frames_fuzzed_websocket", bench.tally.bad_frames)
    record_property("valid_updates_websocket", bench.tally.valid_updates)
    record_property("examples_websocket", bench.tally.examples)


async def test_a_frame_over_the_hard_limit_costs_one_reconnect_and_a_resync(
    tmp_path: Path,
) -> None:
    """aiohttp's memory guard drops the connection; the source comes back and resyncs."""
    async with NodeToolServer(ping_interval=None, stats_interval=None) as server:
        cache = QueryCache(tmp_path / "cache", retries=2, retry_delay=0.01)
        running = await sync(
            server.ws_url,
            server.api_url,
            cache,
            window=0.02,
            source_options={"backoff": FAST, "max_msg_size": 64 * 1024},
        )
        try:
            async with asyncio.timeout(10):
                await server.wait_for_connections(1)
            created = server.create("workflow", {"name": "w", "access": "private", "graph": {}})
            # Over max_msg_size (64 KiB) but under the hard limit (16 MiB): one rejection.
            server.broadcast_raw(json.dumps({"type": "resource_change", "pad": "z" * 100_000}))
            # Over the hard limit: aiohttp drops the connection.
            server.broadcast_raw(b"\x00" * (17 * MIB))
            resynced = asyncio.Event()
            sub = cache.events().subscribe(
                lambda e: resynced.set() if e.kind == "resync" else None
            )
            async with asyncio.timeout(10):
                await resynced.wait()
                await server.wait_for_connections(1)
            sub.dispose()
            server.update("workflow", created["id"], {"description": "after the drop"})
            async with asyncio.timeout(10):
                await running.settle(quiet=0.1)
            counts = running.source.counts
            assert counts["oversize"] >= 1
            assert counts["oversize_dropped"] == 1
            assert cache.stats()["resync"] == 1
            entry = cache.get(("workflow", created["id"]))
            assert entry is not None
            assert not entry.stale
            assert obj(entry.data)["description"] == "after the drop"
            agreement = await audit(cache, running.api, expect=LIST_KEYS)
            assert agreement.ok, agreement.disagreements
        finally:
            async with asyncio.timeout(20):
                await running.stop()
                await cache.aclose()
