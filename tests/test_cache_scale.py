"""Big caches: opening reads no entry, memory is bounded, invalidate_all rewrites no row."""

from __future__ import annotations

import gc
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from _support import obj

from querysync.sinks import CacheEntry, QueryCache
from querysync.sinks._entry import Record, encode_record
from querysync.sinks._tier import MemoryTier

_LARGE = 20_000


def _fill_rows(directory: Path, count: int) -> None:
    """``count`` entries of about 1 KB, written as QueryCache writes them (fast, one commit)."""
    with QueryCache(directory) as cache:
        cache.set(("seed",), 0)  # the meta row and the tables
    now = time.time()
    rows = []
    for i in range(count):
        entry = CacheEntry(("item", f"i{i}"), {"i": i, "pad": "x" * 1000}, f"e{i}", False, now)
        rows.append((f'["item","i{i}"]', now, now, encode_record(Record(entry, None))))
    con = sqlite3.connect(directory / "cache.db")
    with con:
        con.executemany(
            "INSERT INTO Cache (key, raw, store_time, expire_time, access_time,"
            " access_count, tag, size, mode, filename, value)"
            " VALUES (?, 1, ?, NULL, ?, 0, NULL, 0, 1, NULL, ?)",
            rows,
        )
    con.close()


def test_open_of_a_large_cache_reads_no_entry_data(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    _fill_rows(directory, _LARGE)
    with QueryCache(directory) as cache:
        stats = cache.stats()  # reads the index: keys and headers, never data
        assert stats["entries"] == _LARGE + 1
        assert stats["rows_read"] == 0
        assert stats["memory_entries"] == 0
        assert cache._reader.heads_read == _LARGE + 1
        entry = cache.get(("item", "i7"))
        assert entry is not None
        assert entry.data == {"i": 7, "pad": "x" * 1000}
        assert cache.stats()["rows_read"] == 1
    with QueryCache(directory) as cache:
        # A read before the index exists reads that one row and nothing else.
        assert cache.get(("item", "i9")) is not None
        assert cache._reader.heads_read == 0
        assert cache.stats()["rows_read"] == 1


def test_a_cold_get_gives_the_entry_stored_before_the_restart(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    with QueryCache(directory) as cache:
        cache.set(("workflow", "w1"), {"id": "w1", "etag": "e1", "nodes": [1, 2.5, None]})
        cache.set(("job", "j1"), [1, "two"], etag="x")
        cache.set(("big",), {"blob": "b" * 40_000})  # kept in a value file
        cache.invalidate(("job",))
        before = {k: cache.get(k) for k in cache}
    with QueryCache(directory) as cache:
        after = {k: cache.get(k) for k in before}
    assert after == before
    assert before[("job", "j1")] is not None
    assert before[("job", "j1")].stale


async def test_aget_reads_the_row_off_the_loop_and_sees_newer_memory(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    with QueryCache(directory) as cache:
        cache.set(("k",), {"v": 1})
    async with QueryCache(directory) as cache:
        entry = await cache.aget(("k",))
        assert entry is not None
        assert entry.data == {"v": 1}
        assert cache.stats()["rows_read"] == 1
        cache.set(("k",), {"v": 2})
        entry = await cache.aget(("k",))
        assert entry is not None
        assert entry.data == {"v": 2}
        assert await cache.aget(("missing",)) is None


def test_the_memory_tier_evicts_and_rereads(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    with QueryCache(directory, memory_limit=5_000) as cache:
        for i in range(100):
            cache.set(("item", i), {"i": i, "pad": "p" * 1000})
        stats = cache.stats()
        assert stats["memory_bytes"] <= 5_000
        # Each entry's text alone is over 1,000 bytes: at most four fit.
        assert stats["evictions"] >= 96
        # Before the writes are on disk, an evicted entry comes from the write queue...
        first = cache.get(("item", 0))
        assert first is not None
        assert obj(first.data)["i"] == 0
        cache.flush()
        # ...after, from its row.
        read_before = cache.stats()["rows_read"]
        for i in (1, 2, 3):
            entry = cache.get(("item", i))
            assert entry is not None
            assert entry.data == {"i": i, "pad": "p" * 1000}
        assert cache.stats()["rows_read"] == read_before + 3
        again = cache.get(("item", 3))  # now held: no read
        assert again is not None
        assert cache.stats()["rows_read"] == read_before + 3


def test_the_tier_holds_entries_the_garbage_collector_never_walks() -> None:
    """Every full collection walks each tracked container, on whichever thread starts
    it: a tier of parsed JSON (and an object or two per entry) made 80-100 ms loop
    stalls during a 10,000-thread restart. Held as text in tuples of scalars, the
    entries add only the few records most recently used."""
    tier = MemoryTier()
    records = [
        Record(CacheEntry(("thread", f"t{i}"), {"id": f"t{i}", "items": [{"n": i}]}), None)
        for i in range(3000)
    ]
    gc.collect()
    before = len(gc.get_objects())
    for record in records:
        tier.put(record.head[0], record)
    del records, record
    gc.collect()
    grown = len(gc.get_objects()) - before
    assert len(tier) == 3000
    assert grown < 3 * 256 + 50  # the recent records (each with its data), and no more
    entry = tier.get(("thread", "t5"))
    assert entry is not None
    assert entry.entry.data == {"id": "t5", "items": [{"n": 5}]}


def test_tier_pins_stay_whatever_the_budget() -> None:
    tier = MemoryTier(limit=0)
    entry = CacheEntry(("a",), {"x": 1})
    record = Record(entry, None)
    tier.put(("b",), record)
    assert tier.get(("b",)) is None  # over the budget: not held
    tier.pin(("a",), record)
    assert tier.get(("a",)) is record
    tier.unpin(("a",))
    assert tier.get(("a",)) is None


async def test_a_watched_key_answers_from_memory_with_a_zero_budget(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    with QueryCache(directory) as cache:
        cache.set(("w",), {"v": 1})
    async with QueryCache(directory, memory_limit=0) as cache:
        seen: list[Any] = []
        sub = cache.watch(("w",)).subscribe(seen.append)
        await cache.wait_idle()
        assert seen == [{"v": 1}]
        read = cache.stats()["rows_read"]
        for _ in range(3):
            entry = cache.get(("w",))
            assert entry is not None
            assert entry.data == {"v": 1}
        assert cache.stats()["rows_read"] == read
        sub.dispose()


def test_invalidate_all_rewrites_no_row(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    with QueryCache(directory) as cache:
        for i in range(300):
            cache.set(("item", i), i)
        cache.flush()
        written = cache.stats()["written"]
        assert cache.invalidate_all() == 300
        cache.flush()
        stats = cache.stats()
        assert stats["written"] == written
        assert stats["stale"] == 300
        entry = cache.get(("item", 5))
        assert entry is not None
        assert entry.stale
        cache.set(("item", 5), 55)  # stored after: fresh
        assert cache.stats()["stale"] == 299
    with QueryCache(directory) as cache:
        assert cache.stats()["stale"] == 299
        fresh = cache.get(("item", 5))
        assert fresh is not None
        assert not fresh.stale


_INVALIDATE_THEN_DIE = textwrap.dedent(
    """
    import os, signal, sys
    from querysync.sinks import QueryCache

    cache = QueryCache(sys.argv[1])
    cache.load_index()
    cache.invalidate_all()
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_invalidate_all_then_sigkill_reopens_with_every_entry_stale(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    with QueryCache(directory) as cache:
        for i in range(2000):
            cache.set(("item", i), {"i": i})
    child = subprocess.run(
        [sys.executable, "-c", _INVALIDATE_THEN_DIE, str(directory)],
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL
    with QueryCache(directory) as cache:
        assert cache.stats()["stale"] == 2000
        entry = cache.get(("item", 1999))
        assert entry is not None
        assert entry.stale


async def test_a_watch_on_a_cold_key_reads_its_row_off_the_loop(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    with QueryCache(directory) as cache:
        cache.set(("cold",), {"v": 1})
        cache.invalidate(("cold",))
    calls: list[object] = []

    async def fetch(key: object) -> Any:
        calls.append(key)
        return {"v": 2}

    async with QueryCache(directory) as cache:
        cache.register_fetcher((), fetch)
        seen: list[Any] = []
        cache.watch(("cold",)).subscribe(seen.append)
        assert seen == []  # the row is read on a worker thread, not in subscribe
        assert await cache.wait_idle(timeout=10)
        assert seen == [{"v": 1}, {"v": 2}]
        assert calls == [("cold",)]


def test_rows_written_before_generations_read_as_before(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    _fill_rows(directory, 3)
    con = sqlite3.connect(directory / "cache.db")
    with con:  # rows as the earlier layout wrote them: no "gen" member
        con.execute(
            "UPDATE Cache SET value = CAST(replace(CAST(value AS TEXT), ',\"gen\":0', '') AS BLOB)"
        )
    con.close()
    with QueryCache(directory) as cache:
        entry = cache.get(("item", "i1"))
        assert entry is not None
        assert not entry.stale
        assert cache.stats()["stale"] == 0


async def test_invalidate_all_marks_the_write_queue_too(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    async with QueryCache(directory) as cache:
        cache.set(("queued",), 1)  # perhaps not on disk yet
        cache.invalidate_all()
        assert await cache.wait_idle(timeout=10)
    with QueryCache(directory) as cache:
        entry = cache.get(("queued",))
        assert entry is not None
        assert entry.stale
