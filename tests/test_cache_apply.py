"""apply(): invalidations and resyncs become cache effects, published and counted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import reactivex

from querysync import Invalidation, QueryKey, ResourceChangeUpdate, Resync, default_registry
from querysync.operators import expand_keys
from querysync.sinks import CacheEvent, QueryCache, apply
from querysync.testing import change, marbles


def _inv(update: ResourceChangeUpdate) -> Invalidation:
    return Invalidation(update, tuple(default_registry().keys_for(update)))


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[QueryCache]:
    with QueryCache(tmp_path / "c") as c:
        for key, data in [
            (("workflow", "w1"), {"id": "w1", "etag": "e1"}),
            (("workflow", "w1", "graph"), {"nodes": []}),
            (("workflow", "w10"), {"id": "w10", "etag": "e1"}),
            (("workflow_versions", "w1"), [{"version": 1}]),
            (("workflows",), [{"id": "w1"}]),
            (("templates",), []),
            (("jobs",), []),
        ]:
            c.set(key, data)
        yield c


def _stale(cache: QueryCache) -> set[QueryKey]:
    return {k for k in cache if (e := cache.get(k)) is not None and e.stale}


def _record(cache: QueryCache) -> list[CacheEvent]:
    seen: list[CacheEvent] = []
    cache.events().subscribe(seen.append)
    return seen


def test_items_pass_through_in_marble_time(cache: QueryCache) -> None:
    a = _inv(change("updated", "job", "j1", etag="x"))
    r = Resync()
    with marbles() as m:
        stage = apply(cache)
        source = m.hot("-a--r-|", a=a, r=r)
        assert m.start(source.pipe(stage)) == m.exp("-a--r-|", a=a, r=r)
    assert stage.counts["applied"] == 1
    assert stage.counts["resyncs"] == 1
    assert _stale(cache) == set(cache.keys())


def test_errors_pass_through(cache: QueryCache) -> None:
    boom = ValueError("upstream")
    with marbles(error=boom) as m:
        source = m.hot("-#")
        assert m.start(source.pipe(apply(cache))) == m.exp("-#")


def test_update_with_the_held_etag_leaves_the_entry_fresh(cache: QueryCache) -> None:
    events = _record(cache)
    update = change("updated", "workflow", "w1", etag="e1")
    cache.apply_invalidation(_inv(update))
    assert _stale(cache) == {
        ("workflows",),
        ("templates",),
        ("workflow_versions", "w1"),
        ("workflow", "w1", "graph"),
    }
    skipped = [e for e in events if e.kind == "skipped_fresh"]
    assert [(e.key, e.update) for e in skipped] == [(("workflow", "w1"), update)]
    assert all(e.update == update for e in events)
    stats = cache.stats()
    assert (stats["skipped_fresh"], stats["invalidated"]) == (1, 4)


def test_update_with_another_etag_invalidates_the_entry(cache: QueryCache) -> None:
    cache.apply_invalidation(_inv(change("updated", "workflow", "w1", etag="e2")))
    assert ("workflow", "w1") in _stale(cache)
    assert ("workflow", "w10") not in _stale(cache)
    assert cache.stats()["skipped_fresh"] == 0


def test_update_without_etag_or_of_a_stale_entry_invalidates(cache: QueryCache) -> None:
    cache.apply_invalidation(_inv(change("created", "workflow", "w1")))
    assert ("workflow", "w1") in _stale(cache)
    # Stale with the same etag: the entry was not proven fresh, so it stays invalidated.
    cache.apply_invalidation(_inv(change("updated", "workflow", "w1", etag="e1")))
    assert ("workflow", "w1") in _stale(cache)
    assert cache.stats()["skipped_fresh"] == 0


def test_delete_removes_specific_and_invalidates_general(cache: QueryCache) -> None:
    events = _record(cache)
    cache.apply_invalidation(_inv(change("deleted", "workflow", "w1", etag="e1")))
    assert sorted(cache.keys()) == [
        ("jobs",),
        ("templates",),
        ("workflow", "w10"),
        ("workflows",),
    ]
    assert _stale(cache) == {("workflows",), ("templates",)}
    removed = sorted(e.key for e in events if e.kind == "removed")
    assert removed == [
        ("workflow", "w1"),
        ("workflow", "w1", "graph"),
        ("workflow_versions", "w1"),
    ]
    assert cache.stats()["removed"] == 3


def test_resync_invalidates_everything(cache: QueryCache) -> None:
    events = _record(cache)
    cache.apply_invalidation(Resync(reason="reconnected", attempt=2))
    assert _stale(cache) == set(cache.keys())
    assert [e.kind for e in events].count("resync") == 1
    assert cache.stats()["resync"] == 1
    assert cache.stats()["invalidated"] == len(cache.keys())


def test_pipeline_from_updates(cache: QueryCache) -> None:
    updates = [
        change("updated", "workflow", "w1", etag="e1"),
        change("updated", "job", "j1"),
    ]
    out: list[Any] = []
    stage = apply(cache)
    reactivex.from_iterable(updates).pipe(expand_keys(), stage).subscribe(out.append)
    assert [i.update for i in out] == updates
    assert ("jobs",) in _stale(cache)
    assert ("workflow", "w1") not in _stale(cache)


def test_a_raising_event_subscriber_breaks_nothing(cache: QueryCache) -> None:
    def explode(_: CacheEvent) -> None:
        raise RuntimeError("subscriber bug")

    cache.events().subscribe(explode)
    good = _record(cache)
    out: list[Any] = []
    items: list[Invalidation | Resync] = [_inv(change("updated", "job", "j1")), Resync()]
    reactivex.from_iterable(items).pipe(apply(cache)).subscribe(out.append)
    assert out == items
    assert [e.kind for e in good][:1] == ["invalidated"]
    assert "resync" in [e.kind for e in good]
    assert cache.stats()["subscriber_errors"] == len(good)


def test_cache_errors_are_counted_and_the_stream_goes_on(tmp_path: Path) -> None:
    cache = QueryCache(tmp_path / "c")
    cache.close()
    items: list[Any] = [_inv(change("updated", "job", "j1")), "not an item", Resync()]
    out: list[Any] = []
    done: list[bool] = []
    stage = apply(cache)
    # Bad items on purpose: the stage must survive what its type says cannot come.
    source: reactivex.Observable[Any] = reactivex.from_iterable(items)
    source.pipe(stage).subscribe(out.append, on_completed=lambda: done.append(True))
    assert out == items
    assert done == [True]
    assert stage.counts["errors"] == 3
    assert cache.stats()["apply_errors"] == 3


def test_bad_item_is_counted_on_an_open_cache(cache: QueryCache) -> None:
    stage = apply(cache)
    out: list[Any] = []
    source: reactivex.Observable[Any] = reactivex.from_iterable([42, Resync()])
    source.pipe(stage).subscribe(out.append)
    assert out == [42, Resync()]
    assert stage.counts["errors"] == 1
    assert stage.counts["resyncs"] == 1


def test_a_raising_downstream_subscriber_does_not_reach_the_source(cache: QueryCache) -> None:
    def explode(_: Any) -> None:
        raise RuntimeError("downstream bug")

    stage = apply(cache)
    reactivex.from_iterable([Resync(), Resync()]).pipe(stage).subscribe(explode)
    assert stage.counts["downstream_errors"] == 2
    assert cache.stats()["resync"] == 2


def test_bad_refetch_value_is_refused_at_once(cache: QueryCache) -> None:
    with pytest.raises(ValueError, match="refetch"):
        apply(cache, refetch="sometimes")  # type: ignore[arg-type]


class _Api:
    def __init__(self) -> None:
        self.calls: list[QueryKey] = []

    async def __call__(self, key: QueryKey) -> Any:
        self.calls.append(key)
        return {"id": key[-1], "etag": "fresh"}


async def test_apply_refetches_active_keys(cache: QueryCache) -> None:
    api = _Api()
    cache.register_fetcher(("workflow",), api)
    cache.watch(("workflow", "w1")).subscribe(lambda _: None)
    reactivex.just(_inv(change("updated", "workflow", "w1", etag="e2"))).pipe(
        apply(cache)
    ).subscribe()
    await cache.wait_idle()
    assert api.calls == [("workflow", "w1")]
    entry = cache.get(("workflow", "w1"))
    assert entry is not None
    assert (entry.etag, entry.stale) == ("fresh", False)


async def test_fetch_missing_mirrors_new_resources(tmp_path: Path) -> None:
    api = _Api()
    async with QueryCache(tmp_path / "c") as cache:
        cache.register_fetcher(("job",), api)
        items = [
            _inv(change("created", "job", "j1")),
            _inv(change("deleted", "job", "j2")),
            _inv(change("created", "workflow", "w5")),
        ]
        reactivex.from_iterable(items[:1]).pipe(apply(cache)).subscribe()
        await cache.wait_idle()
        assert api.calls == []
        reactivex.from_iterable(items).pipe(apply(cache, fetch_missing=True)).subscribe()
        await cache.wait_idle()
        assert api.calls == [("job", "j1")]
        assert cache.get(("job", "j1")) is not None
        assert cache.get(("workflow", "w5")) is None
