"""A cache directory tampered with while a sync runs, then reopened through the full pipeline.

tests/test_cache_security.py covers a closed cache: pickled rows and keys, value files
outside the directory, a truncated or foreign database file, loose permissions. Here the
tampering happens under a running ``sync``, and the next ``sync`` on the directory is
what must cope: a planted pickle never runs (a marker file it would create never
appears) and costs a counted miss that the mirror fills again from the server; a
database overwritten behind the cache's back, or a directory opened up to everyone, is
refused with a clear error, and ``sync`` leaves no session open when it refuses.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import pickle
import sqlite3
import stat
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from _support import mirrored_keys, obj

from querysync import CacheCorruptError, CacheSecurityError
from querysync._audit import audit
from querysync._nodetool import LIST_KEYS
from querysync._sync import Sync, sync
from querysync.server import NodeToolServer, Workload
from querysync.sinks import QueryCache
from querysync.streams import Backoff

FAST = Backoff(initial=0.01, factor=2.0, max_delay=0.05, jitter=0.0)
PICKLE_MODE = 4  # diskcache's MODE_PICKLE: "unpickle this value"
META = "querysync:meta"


class Bomb:
    """Unpickling this creates ``path``: proof that a pickle ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (open, (self.path, "w"))


def tamper(db: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Change cache.db behind the cache's back, as anyone with write access could."""
    con = sqlite3.connect(db, timeout=10)
    try:
        with con:
            for sql, args in statements:
                con.execute(sql, args)
    finally:
        con.close()


def row_mode(db: Path, key: str) -> int | None:
    con = sqlite3.connect(db, timeout=10)
    try:
        row = con.execute("SELECT mode FROM Cache WHERE key = ?", (key,)).fetchone()
    finally:
        con.close()
    return None if row is None else int(row[0])


@dataclass
class Backend:
    server: NodeToolServer
    workload: Workload
    directory: Path
    marker: Path

    async def sync(self, *, writes: int = 0) -> Sync:
        """A running sync on the directory, settled after ``writes`` workload writes."""
        running = await sync(
            self.server.ws_url,
            self.server.api_url,
            self.directory,
            window=0.02,
            source_options={"backoff": FAST},
        )
        async with asyncio.timeout(10):
            await self.server.wait_for_connections(1)
        if writes:
            await self.workload.run(seconds=5, rate=5000, max_changes=writes, kind="steady")
        await self.settle(running)
        return running

    async def stop(self, running: Sync) -> None:
        async with asyncio.timeout(20):
            await running.stop()

    async def settle(self, running: Sync) -> None:
        async with asyncio.timeout(20):
            await running.settle(quiet=0.1)


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[Backend]:
    server = NodeToolServer(ping_interval=None, stats_interval=None)
    await server.start()
    try:
        yield Backend(server, Workload(server, seed=8), tmp_path / "cache", tmp_path / "pwned")
    finally:
        await server.stop()


@contextmanager
def no_session_left_open() -> Iterator[None]:
    """Fail if an aiohttp session made inside the block is garbage without being closed."""
    gc.collect()  # what an earlier test left is not this block's doing
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
        gc.collect()
    assert [str(w.message) for w in caught if "Unclosed" in str(w.message)] == []


async def test_pickles_planted_under_a_running_sync_never_run_and_cost_counted_misses(
    backend: Backend,
) -> None:
    db = backend.directory / "cache.db"
    bomb = pickle.dumps(Bomb(str(backend.marker)))
    running = await backend.sync(writes=40)
    try:
        victim, other = sorted(running.cache.keys(("workflow",)))[:2]
        victim_row = json.dumps(list(victim), separators=(",", ":"))
        # An entry's row turned into a pickle, a new pickled row, and a pickled meta row.
        await asyncio.to_thread(
            tamper,
            db,
            ("UPDATE Cache SET mode = ?, value = ? WHERE key = ?", (PICKLE_MODE, bomb, victim_row)),
            (
                "INSERT INTO Cache (key, raw, store_time, access_time, access_count, size,"
                " mode, filename, value) VALUES (?, 1, 0, 0, 0, 0, ?, NULL, ?)",
                ('["workflow","evil"]', PICKLE_MODE, bomb),
            ),
            ("UPDATE Cache SET mode = ?, value = ? WHERE key = ?", (PICKLE_MODE, bomb, META)),
        )
        # The running sync never reads rows back: it goes on from memory, and writes.
        before = running.cache.get(victim)
        backend.server.update("workflow", str(other[1]), {"description": "after tampering"})
        await backend.settle(running)
        assert running.cache.get(victim) == before
        changed = running.cache.get(other)
        assert changed is not None
        assert obj(changed.data)["description"] == "after tampering"
        assert running.error is None
    finally:
        await backend.stop(running)
    assert not backend.marker.exists()
    # The next write put a JSON meta row back; the victim's row was not written again.
    assert row_mode(db, META) != PICKLE_MODE
    assert row_mode(db, victim_row) == PICKLE_MODE

    running = await backend.sync()
    try:
        assert running.cache.stats()["unsafe_rows"] == 2
        assert running.cache.get(("workflow", "evil")) is None
        # A counted miss, filled again from the server: the mirror lists what it lacks.
        refilled = running.cache.get(victim)
        assert refilled is not None
        assert refilled.data == (await running.api.fetch(victim)).data
        async with asyncio.timeout(30):
            agreement = await audit(
                running.cache, running.api, expect=mirrored_keys(backend.server.snapshot())
            )
        assert agreement.ok, agreement.disagreements[:10]
    finally:
        await backend.stop(running)
    with QueryCache(backend.directory) as cache:
        assert cache.stats()["unsafe_rows"] == 1  # the planted row nobody wrote over
        assert ("workflow", "evil") not in cache
        assert victim in cache
    assert not backend.marker.exists()


@pytest.mark.parametrize("damage", ["replaced by garbage while open", "truncated after"])
async def test_a_broken_database_is_refused_clearly_by_the_next_sync(
    backend: Backend, damage: str
) -> None:
    db = backend.directory / "cache.db"
    running = await backend.sync(writes=40)
    await backend.stop(running)  # a first run, written and checkpointed into cache.db
    running = await backend.sync()
    try:
        if damage == "replaced by garbage while open":
            # The open connections keep the old file; the path now names another one.
            size = db.stat().st_size
            garbage = backend.directory / "garbage"
            await asyncio.to_thread(garbage.write_bytes, os.urandom(size))
            os.replace(garbage, db)
        workflow = sorted(running.cache.keys(("workflow",)))[0]
        backend.server.update("workflow", str(workflow[1]), {"description": "still running"})
        await backend.settle(running)
        assert running.error is None
        entry = running.cache.get(workflow)
        assert entry is not None
        assert obj(entry.data)["description"] == "still running"
    finally:
        await backend.stop(running)
    if damage == "truncated after":
        data = db.read_bytes()
        db.write_bytes(data[: len(data) // 2])

    with no_session_left_open(), pytest.raises(CacheCorruptError, match="recover=True"):
        await sync(backend.server.ws_url, backend.server.api_url, backend.directory)

    # The way out the error names: keep the broken files aside, start empty, refill.
    cache = QueryCache(backend.directory, recover=True)
    assert len(cache) == 0
    running = await sync(
        backend.server.ws_url,
        backend.server.api_url,
        cache,
        window=0.02,
        source_options={"backoff": FAST},
    )
    try:
        async with asyncio.timeout(10):
            await backend.server.wait_for_connections(1)
        await backend.settle(running)
        async with asyncio.timeout(30):
            agreement = await audit(cache, running.api, expect=LIST_KEYS)
        assert agreement.ok, agreement.disagreements[:10]
    finally:
        await backend.stop(running)
        async with asyncio.timeout(20):
            await cache.aclose()
    assert any(".corrupt-" in p.name for p in backend.directory.iterdir())


async def test_closing_returns_when_the_disk_can_no_longer_be_written(tmp_path: Path) -> None:
    """Regression: aclose() waited for the write queue to empty, which a database that
    cannot be written never lets happen, so a sync on a broken disk never stopped."""
    directory = tmp_path / "cache"
    with QueryCache(directory) as cache:
        cache.set(("workflow", "w1"), {"id": "w1"})
    cache = QueryCache(directory)  # its writer thread connects at its first write
    db = directory / "cache.db"
    garbage = directory / "garbage"
    garbage.write_bytes(os.urandom(db.stat().st_size))
    os.replace(garbage, db)
    cache.set(("workflow", "w2"), {"id": "w2"})
    async with asyncio.timeout(15):
        await cache.aclose()
    stats = cache.stats()
    assert stats["write_errors"] >= 1
    assert stats["lost_writes"] == 1
    with pytest.raises(CacheCorruptError):
        QueryCache(directory)


async def test_a_directory_opened_up_under_a_running_sync_is_refused_next_time(
    backend: Backend,
) -> None:
    running = await backend.sync()
    try:
        backend.directory.chmod(0o777)
        backend.server.create("workflow", {"name": "w", "access": "private", "graph": {}})
        await backend.settle(running)
        # Checked when opening, not on every write: the running sync goes on.
        assert running.error is None
        assert running.cache.stats()["write_errors"] == 0
        keys = set(running.cache.keys())
    finally:
        await backend.stop(running)

    with no_session_left_open(), pytest.raises(CacheSecurityError, match="writable"):
        await sync(backend.server.ws_url, backend.server.api_url, backend.directory)

    backend.directory.chmod(0o700)
    assert stat.S_IMODE(backend.directory.stat().st_mode) == 0o700
    with QueryCache(backend.directory) as cache:
        assert set(cache.keys()) == keys
        assert cache.stats()["corrupt_rows"] == cache.stats()["unsafe_rows"] == 0
