"""QueryCache storage: set/get/keys, invalidate and remove matching, write-behind, persistence."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from querysync import CacheClosedError
from querysync.sinks import CacheEntry, QueryCache


def _rows(directory: Path) -> dict[str, dict[str, object]]:
    """The entry rows of the SQLite file, read without querysync: key text -> document."""
    con = sqlite3.connect(directory / "cache.db")
    try:
        rows = con.execute("SELECT key, mode, value FROM Cache").fetchall()
    finally:
        con.close()
    out = {}
    for key, mode, value in rows:
        assert mode == 1, "small values are stored in the row, as JSON bytes"
        out[key] = json.loads(value)
    return out


def test_set_get_and_etag_from_data(tmp_path: Path) -> None:
    with QueryCache(tmp_path / "c") as cache:
        entry = cache.set(("workflow", "w1"), {"id": "w1", "etag": "e1"})
        assert cache.get(("workflow", "w1")) == entry
        assert entry.etag == "e1"
        assert not entry.stale
        assert entry.error is None
        assert abs(entry.updated_at - time.time()) < 60
        assert cache.set(("workflow", "w2"), {"etag": "e9"}, etag="given").etag == "given"
        assert cache.set(("workflow", "w3"), {"etag": 5}).etag is None
        assert cache.set(("workflows",), [{"etag": "x"}]).etag is None
        assert cache.get(("workflow", "missing")) is None


def test_bare_string_key_is_one_element(tmp_path: Path) -> None:
    with QueryCache(tmp_path / "c") as cache:
        cache.set("workflows", [1])
        assert cache.keys() == [("workflows",)]
        assert cache.get(("workflows",)) is not None


def test_data_is_copied_through_json(tmp_path: Path) -> None:
    with QueryCache(tmp_path / "c") as cache:
        data: dict[str, Any] = {"items": [1, 2], "t": (1, 2)}
        cache.set(("k",), data)
        data["items"].append(3)
        entry = cache.get(("k",))
        assert entry is not None
        assert entry.data == {"items": [1, 2], "t": [1, 2]}


@pytest.mark.parametrize("bad", [{1, 2}, float("nan"), object()])
def test_non_json_data_is_refused(tmp_path: Path, bad: object) -> None:
    with QueryCache(tmp_path / "c") as cache:
        with pytest.raises(TypeError, match="not JSON"):
            cache.set(("k",), bad)
        assert cache.get(("k",)) is None


@pytest.mark.parametrize("key", [(), ("a", b"x"), ("a", float("inf")), ("a", ["x"])])
def test_bad_keys_are_refused(tmp_path: Path, key: tuple[object, ...]) -> None:
    with QueryCache(tmp_path / "c") as cache, pytest.raises((TypeError, ValueError)):
        cache.set(key, 1)  # type: ignore[arg-type]


def test_invalidate_prefix_versus_exact(tmp_path: Path) -> None:
    with QueryCache(tmp_path / "c") as cache:
        for key in [("workflow", "w1"), ("workflow", "w10"), ("workflow", "w1", "versions")]:
            cache.set(key, {"k": list(key)})
        assert cache.invalidate(("workflow", "w1")) == 2
        assert _stale(cache.get(("workflow", "w1")))
        assert _stale(cache.get(("workflow", "w1", "versions")))
        assert not _stale(cache.get(("workflow", "w10")))
        # Already-stale entries still count as matches.
        assert cache.invalidate(("workflow", "w1")) == 2
        assert cache.invalidate(("workflow", "w10"), exact=True) == 1
        assert cache.invalidate(("workflow",), exact=True) == 0
        assert cache.invalidate(("nothing",)) == 0
        assert cache.stats()["stale"] == 3


def test_invalidate_keeps_data_and_set_clears_stale(tmp_path: Path) -> None:
    with QueryCache(tmp_path / "c") as cache:
        cache.set(("jobs",), [1])
        cache.invalidate(("jobs",))
        entry = cache.get(("jobs",))
        assert entry is not None
        assert (entry.data, entry.stale) == ([1], True)
        cache.set(("jobs",), [2])
        assert not _stale(cache.get(("jobs",)))
        assert cache.stats()["stale"] == 0


def test_remove_prefix_versus_exact(tmp_path: Path) -> None:
    with QueryCache(tmp_path / "c") as cache:
        for key in [("workflow", "w1"), ("workflow", "w10"), ("workflow", "w1", "versions")]:
            cache.set(key, 1)
        assert cache.remove(("workflow", "w1"), exact=True) == 1
        assert cache.get(("workflow", "w1")) is None
        assert cache.get(("workflow", "w1", "versions")) is not None
        assert cache.remove(("workflow", "w1")) == 1
        assert cache.keys() == [("workflow", "w10")]
        assert cache.remove(("workflow", "w1")) == 0


def test_keys_under_prefix(tmp_path: Path) -> None:
    with QueryCache(tmp_path / "c") as cache:
        for key in [("a", 1), ("a", 2, "x"), ("b",), ("ab",)]:
            cache.set(key, None)
        assert sorted(cache.keys(("a",)), key=repr) == [("a", 1), ("a", 2, "x")]
        assert len(cache.keys()) == 4
        assert len(cache) == 4


def test_reads_reflect_calls_before_the_disk_does(tmp_path: Path) -> None:
    with QueryCache(tmp_path / "c") as cache:
        for i in range(2000):
            cache.set(("item", i), {"i": i})
        cache.invalidate(("item",))
        cache.remove(("item", 0))
        # No flush yet: the answers come from memory.
        assert cache.get(("item", 0)) is None
        assert _stale(cache.get(("item", 1999)))
        assert len(cache.keys(("item",))) == 1999
        assert cache.flush(timeout=30)
        assert cache.stats()["queued_writes"] == 0
        rows = _rows(tmp_path / "c")
    assert '["item",0]' not in rows
    assert rows['["item",1999]']["stale"] is True
    assert rows['["item",1999]']["data"] == {"i": 1999}


def test_queued_writes_of_one_key_coalesce(tmp_path: Path) -> None:
    with QueryCache(tmp_path / "c") as cache:
        cache.flush()
        before = cache.stats()["written"]
        for i in range(500):
            cache.set(("counter",), i)
        assert cache.flush(timeout=30)
        written = cache.stats()["written"] - before
        assert 1 <= written < 500
        assert _rows(tmp_path / "c")['["counter"]']["data"] == 499


def test_keys_are_json_text_in_the_database(tmp_path: Path) -> None:
    with QueryCache(tmp_path / "c") as cache:
        cache.set(("workflow", "w1", 3, None, True), {"x": 1})
    con = sqlite3.connect(tmp_path / "c" / "cache.db")
    try:
        rows = con.execute("SELECT key, raw, mode FROM Cache ORDER BY key").fetchall()
    finally:
        con.close()
    assert ('["workflow","w1",3,null,true]', 1, 1) in rows
    assert all(isinstance(key, str) and raw == 1 for key, raw, _ in rows)


def test_entries_and_stale_flags_survive_reopen(tmp_path: Path) -> None:
    with QueryCache(tmp_path / "c") as cache:
        cache.set(("workflow", "w1"), {"id": "w1", "etag": "e1"})
        cache.set(("workflows",), [{"id": "w1"}])
        cache.set(("gone",), 1)
        cache.invalidate(("workflows",))
        cache.remove(("gone",))
    with QueryCache(tmp_path / "c") as cache:
        assert sorted(cache.keys()) == [("workflow", "w1"), ("workflows",)]
        w1 = cache.get(("workflow", "w1"))
        assert isinstance(w1, CacheEntry)
        assert (w1.data, w1.etag, w1.stale) == ({"id": "w1", "etag": "e1"}, "e1", False)
        assert _stale(cache.get(("workflows",)))
        assert cache.stats()["stale"] == 1
        # A loaded entry can be invalidated and re-written like any other.
        cache.invalidate(("workflow",))
    with QueryCache(tmp_path / "c") as cache:
        assert _stale(cache.get(("workflow", "w1")))


def test_buster_discards_a_cache_of_another_version(tmp_path: Path) -> None:
    with QueryCache(tmp_path / "c", buster="v1") as cache:
        cache.set(("k",), 1)
    with QueryCache(tmp_path / "c", buster="v1") as cache:
        assert cache.get(("k",)) is not None
    with QueryCache(tmp_path / "c", buster="v2") as cache:
        assert cache.get(("k",)) is None
        assert cache.stats()["discarded_at_open"] == 1
        cache.set(("k2",), 2)
    with QueryCache(tmp_path / "c", buster="v2") as cache:
        assert cache.keys() == [("k2",)]


def test_max_age_discards_a_cache_written_too_long_ago(tmp_path: Path) -> None:
    with QueryCache(tmp_path / "c") as cache:
        cache.set(("k",), 1)
    with QueryCache(tmp_path / "c", max_age=3600) as cache:
        assert cache.get(("k",)) is not None
    _age_meta(tmp_path / "c", seconds=7200)
    with QueryCache(tmp_path / "c", max_age=3600) as cache:
        assert cache.get(("k",)) is None
        assert cache.stats()["discarded_at_open"] == 1


def test_without_max_age_an_old_cache_is_kept(tmp_path: Path) -> None:
    with QueryCache(tmp_path / "c") as cache:
        cache.set(("k",), 1)
    _age_meta(tmp_path / "c", seconds=10 * 365 * 86400)
    with QueryCache(tmp_path / "c") as cache:
        assert cache.get(("k",)) is not None


def test_closed_cache_refuses_use(tmp_path: Path) -> None:
    cache = QueryCache(tmp_path / "c")
    cache.close()
    cache.close()
    with pytest.raises(CacheClosedError):
        cache.get(("k",))
    with pytest.raises(CacheClosedError):
        cache.set(("k",), 1)
    assert "closed" in repr(cache)


def test_unclosed_cache_still_writes_its_queue_when_collected(tmp_path: Path) -> None:
    cache = QueryCache(tmp_path / "c")
    for i in range(100):
        cache.set(("k", i), i)
    del cache
    import gc

    gc.collect()
    assert len(_rows(tmp_path / "c")) == 101  # 100 entries and the meta row


def _stale(entry: CacheEntry | None) -> bool:
    assert entry is not None
    return entry.stale


def _age_meta(directory: Path, *, seconds: float) -> None:
    """Pretend the cache was last written ``seconds`` ago (edit the meta row directly)."""
    con = sqlite3.connect(directory / "cache.db")
    try:
        (value,) = con.execute("SELECT value FROM Cache WHERE key = 'querysync:meta'").fetchone()
        meta = json.loads(value)
        meta["written_at"] -= seconds
        with con:
            con.execute(
                "UPDATE Cache SET value = ? WHERE key = 'querysync:meta'",
                (json.dumps(meta).encode(),),
            )
    finally:
        con.close()


@pytest.mark.parametrize(
    "data",
    [
        {"a": 1, "data": {"x": ',"data":'}, "s": 'quote " and ,"data": inside'},
        ["\\", ',"data":1}', {"data": None}],
        "plain",
        None,
        {"nested": {"deep": [1.5, -2, True, {"data": [1]}]}, "unicode": "é ☃ \u0000"},
    ],
)
def test_awkward_data_survives_reopen_and_rewrite(tmp_path: Path, data: object) -> None:
    with QueryCache(tmp_path / "c") as cache:
        cache.set(("k",), data, etag='e",1')
    with QueryCache(tmp_path / "c") as cache:
        entry = cache.get(("k",))
        assert entry is not None
        assert (entry.data, entry.etag) == (data, 'e",1')
        cache.invalidate(("k",))  # re-written from the text kept at load
    with QueryCache(tmp_path / "c") as cache:
        entry = cache.get(("k",))
        assert entry is not None
        assert (entry.data, entry.stale) == (data, True)


def test_a_document_in_another_member_order_still_loads(tmp_path: Path) -> None:
    with QueryCache(tmp_path / "c") as cache:
        cache.set(("k",), 0)
    con = sqlite3.connect(tmp_path / "c" / "cache.db")
    with con:
        con.execute(
            "UPDATE Cache SET value = ? WHERE key = '[\"k\"]'",
            (
                b'{"data":{"a":1,"data":2},"etag":"x","stale":true,'
                b'"updated_at":5,"error":"e","more":{"z":0,"data":3}}',
            ),
        )
    con.close()
    with QueryCache(tmp_path / "c") as cache:
        entry = cache.get(("k",))
        assert entry == CacheEntry(("k",), {"a": 1, "data": 2}, "x", True, 5.0, "e")
        cache.set(("k",), {"b": 2})
    with QueryCache(tmp_path / "c") as cache:
        entry = cache.get(("k",))
        assert entry is not None
        assert entry.data == {"b": 2}


async def test_writes_wait_for_a_locked_database_off_the_loop(tmp_path: Path) -> None:
    """Another process holds the write lock: calls still return at once, nothing is lost."""
    import asyncio

    async with QueryCache(tmp_path / "c", timeout=0.05) as cache:
        locker = sqlite3.connect(tmp_path / "c" / "cache.db", isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        try:
            for i in range(50):
                cache.set(("k", i), i)  # would raise diskcache.Timeout if written here
            cache.invalidate(("k",))
            assert cache.stats()["queued_writes"] > 0
            for _ in range(200):
                if cache.stats()["write_errors"]:
                    break
                await asyncio.sleep(0.01)
            assert cache.stats()["write_errors"] >= 1
            assert len(cache.keys(("k",))) == 50
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        await cache.wait_idle()
        assert cache.stats()["lost_writes"] == 0
    rows = _rows(tmp_path / "c")
    assert all(rows[f'["k",{i}]']["stale"] is True for i in range(50))


def test_a_removed_event_never_sees_the_entry_through_a_queued_write(tmp_path: Path) -> None:
    """Subscribers of "removed" (the NATS publisher reads get() there) see no entry.

    The write lock is held elsewhere so that the key's set() stays queued: a removal
    that published before queueing its delete answered get() from that queued write,
    and the shared bucket kept a deleted workflow for good.
    """
    with QueryCache(tmp_path / "c", timeout=0.05) as cache:
        locker = sqlite3.connect(tmp_path / "c" / "cache.db", isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        seen: list[object] = []
        try:
            cache.set(("workflow", "w1"), {"id": "w1"})
            cache.events().subscribe(
                lambda e: seen.append(cache.get(e.key)) if e.kind == "removed" else None
            )
            assert cache.remove(("workflow", "w1")) == 1
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert seen == [None]
        assert cache.get(("workflow", "w1")) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"concurrency": 0},
        {"batch_size": 0},
        {"retries": -1},
        {"retry_delay": -1.0},
        {"timeout": 0.0},
        {"max_age": -5.0},
    ],
)
def test_bad_arguments_are_refused_before_anything_opens(
    tmp_path: Path, kwargs: dict[str, Any]
) -> None:
    import threading

    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(ValueError, match="must"):
        QueryCache(tmp_path / "c", **kwargs)
    assert {t.ident for t in threading.enumerate()} <= before
    assert not (tmp_path / "c").exists()
