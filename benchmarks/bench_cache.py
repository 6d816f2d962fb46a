"""QueryCache figures: prefix invalidation, applied invalidations per second, cold start.

Each figure comes with a baseline measured in the same run on the same machine:

- ``invalidate_one_resource``: median time of ``cache.invalidate(("workflow", id))``
  in a cache of 100,000 entries (the prefix trie), against a scan of every key with
  :func:`querysync.key_matches` (what finding matches costs without an index).
- ``applied_invalidations_per_s``: ``apply_invalidation`` of updates to distinct
  workflows (three entries each become stale and are written), until every write is on
  disk, against the same writes as one ``diskcache.Cache.set`` per row (one commit each).
- ``cold_start``: opening a 100,000-entry cache and reading its key index (keys and
  stale flags, no data), against reading the same rows with one
  ``diskcache.Cache.get`` per key.
- Issue 10, for 10,000 and 100,000 entries of about 1 KB (1,000,000 with
  ``--million``), each figure from a fresh process (best of 3 for times):

  - ``open``: ``QueryCache(directory)`` against plain ``diskcache.Cache`` opening the
    same folder (target: at most 20x);
  - ``index``: :meth:`QueryCache.load_index` (what ``sync()`` does off the loop)
    against one SELECT of every key, each decoded (the least any key index costs);
  - ``RSS per entry``: resident growth from before the open to after the index is
    read, and to after every key is read once minus what emptying the memory tier
    gives back (target: at most 300 B per entry beyond the tier), each beyond what a
    1-entry cache grows by the same steps, against the JSON bytes per entry; and that
    resident size of the tier against ``memory_limit``;
  - ``invalidate_all``: its time on a running event loop against one
    ``diskcache.Cache.set``, and the longest stall of a 1 ms ticker meanwhile against
    the longest stall of the same ticker over an idle second (target: at most 50 ms);
    the same stall while ``load_index`` runs on a worker thread, as at ``sync()``'s start.

- Issue 10.4, the restart of ``sync`` on a correct cache of 10,000 threads (one message
  each; comparable list etags) and of 10,000 workflows (one version each; list etags
  not comparable), 1% of them changed while it was down, the embedded server in a
  process of its own and the restart in a fresh one (200 of each with ``--small``):
  GETs against the pages of every list the mirror holds (the nine top-level lists and
  each resource's own message or version list, which no etag proves) plus the changed
  entries (target for threads: at most 1.1x), and the longest stall of a 1 ms ticker
  from ``sync()`` until it settles (target: at most 50 ms).

As in every querysync benchmark, ``ratio`` is querysync's value divided by the
baseline's and ``target`` says which direction is better. Run
``python -m benchmarks.bench_cache [--small] [--million]`` from the repository root.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import diskcache

from querysync import JSON, Invalidation, QueryKey, default_registry, key_matches, sync
from querysync.sinks import CacheEntry, QueryCache
from querysync.sinks._disk import JsonDisk
from querysync.sinks._entry import Record, encode_record
from querysync.sinks._tier import DEFAULT_MEMORY_LIMIT
from querysync.testing import change

__all__ = ["run"]

Figure = dict[str, object]


def _populate(directory: Path, resources: int) -> list[QueryKey]:
    """A cache of 4 entries per workflow (detail, graph, versions, a job); the keys."""
    keys: list[QueryKey] = []
    with QueryCache(directory, batch_size=1000) as cache:
        for i in range(resources):
            wid = f"w{i}"
            for key, data in (
                (("workflow", wid), {"id": wid, "etag": f"e{i}", "name": f"workflow {i}"}),
                (("workflow", wid, "graph"), {"nodes": [i, i + 1], "edges": []}),
                (("workflow_versions", wid), [{"version": 1, "id": wid}]),
                (("job", f"j{i}"), {"id": f"j{i}", "status": "done"}),
            ):
                cache.set(key, data)
                keys.append(key)
        cache.flush()
    return keys


def _figure(
    name: str,
    value: float,
    unit: str,
    baseline: float,
    *,
    target: str | None = None,
    met: bool | None = None,
) -> Figure:
    return {
        "name": name,
        "value": float(value),
        "unit": unit,
        "baseline": float(baseline),
        "ratio": value / baseline,
        "target": target,
        "met": met,
    }


def _scan(keys: list[QueryKey], prefix: QueryKey) -> list[QueryKey]:
    return [k for k in keys if key_matches(prefix, k)]


def _median_seconds(calls: list[Callable[[], object]]) -> float:
    times = []
    for call in calls:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _invalidate_one_resource(directory: Path, keys: list[QueryKey], resources: int) -> Figure:
    samples = min(2000, resources)
    step = max(1, resources // samples)
    ids = [f"w{i}" for i in range(0, resources, step)][:samples]
    with QueryCache(directory) as cache:
        ours = _median_seconds([partial(cache.invalidate, ("workflow", wid)) for wid in ids])
        cache.flush()
    scans = ids[:: max(1, len(ids) // 50)]
    baseline = _median_seconds([partial(_scan, keys, ("workflow", wid)) for wid in scans])
    return _figure(
        f"invalidate_one_resource ({len(keys)} entries)",
        ours * 1e6,
        "µs",
        baseline * 1e6,
        target="< 1000 µs (well under)",
        met=ours < 1e-3,
    )


def _applied_invalidations(directory: Path, resources: int) -> Figure:
    registry = default_registry()
    count = min(resources, 20_000)
    items = [
        Invalidation(u, tuple(registry.keys_for(u)))
        for u in (change("updated", "workflow", f"w{i}", etag="new") for i in range(count))
    ]
    with QueryCache(directory) as cache:
        cache.flush()
        start = time.perf_counter()
        for item in items:
            cache.apply_invalidation(item, refetch="none")
        cache.flush()
        elapsed = time.perf_counter() - start
        rows = cache.stats()["written"]
    ours = count / elapsed

    # Baseline: the same rows, one diskcache transaction each (no write-behind).
    per_item = max(1, round(rows / count))
    base_count = max(50, min(count, 2000))
    value = b'{"etag":null,"stale":true,"updated_at":0,"error":null,"data":{"x":1}}'
    with tempfile.TemporaryDirectory() as tmp, diskcache.Cache(tmp, eviction_policy="none") as raw:
        start = time.perf_counter()
        for i in range(base_count):
            for j in range(per_item):
                raw.set(f'["workflow","w{i}",{j}]', value)
        base_elapsed = time.perf_counter() - start
    baseline = base_count / base_elapsed
    return _figure(
        f"applied_invalidations_per_s ({per_item} rows each)",
        ours,
        "invalidations/s",
        baseline,
        target="ratio > 1",
        met=ours > baseline,
    )


def _cold_start(directory: Path, keys: list[QueryKey]) -> Figure:
    start = time.perf_counter()
    with QueryCache(directory) as cache:
        loaded = len(cache)  # reads the key index (no entry data)
    ours = time.perf_counter() - start
    assert loaded == len(keys)

    sample = keys[:: max(1, len(keys) // 5000)]

    start = time.perf_counter()
    with diskcache.Cache(str(directory), disk=JsonDisk) as raw:
        for key in sample:
            raw.get(key)
    baseline = (time.perf_counter() - start) * len(keys) / len(sample)
    return _figure(f"cold_start ({loaded} entries)", ours, "s", baseline)


# The 1 ms ticker both measuring children run: each gap between two ticks of the running
# loop is appended to ``stalls`` until ``stop`` is set (the longest is the stall).
_TICKER = textwrap.dedent(
    """
    import asyncio

    def start_ticker(stalls, stop):
        loop = asyncio.get_running_loop()

        async def tick():
            last = loop.time()
            while not stop.is_set():
                await asyncio.sleep(0.001)
                now = loop.time()
                stalls.append(now - last)
                last = now

        return asyncio.create_task(tick())
    """
)

# Each measurement runs in a fresh interpreter, outside the checkout (whose querysync/
# folder would shadow the installed package), and prints one JSON object.
_CHILD = _TICKER + textwrap.dedent(
    """
    import asyncio, json, os, sys, time
    mode, directory = sys.argv[1], sys.argv[2]
    page = os.sysconf("SC_PAGE_SIZE")

    def rss():
        fd = os.open("/proc/self/statm", os.O_RDONLY)
        try:
            return int(os.read(fd, 4096).split()[1]) * page
        finally:
            os.close(fd)

    import diskcache
    from querysync.sinks import QueryCache
    from querysync.sinks._disk import JsonDisk, DISKCACHE_SETTINGS
    out = {}
    if mode == "diskcache-open":
        start = time.perf_counter()
        raw = diskcache.Cache(directory, disk=JsonDisk, **DISKCACHE_SETTINGS)
        out["seconds"] = time.perf_counter() - start
        raw.close()
        # The least any index costs: every key read and decoded (no headers, no trie).
        import sqlite3
        from querysync.sinks._entry import decode_key
        start = time.perf_counter()
        con = sqlite3.connect(os.path.join(directory, "cache.db"))
        keys = [decode_key(k) for (k,) in con.execute("SELECT key FROM Cache") if k[0] == "["]
        out["keys"] = time.perf_counter() - start
        con.close()
    elif mode == "open":
        start = time.perf_counter()
        cache = QueryCache(directory)
        out["seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        cache.load_index()
        out["index"] = time.perf_counter() - start
        out["rows_read"] = cache.stats()["rows_read"]
        cache.close()
    elif mode == "memory":
        before = rss()
        cache = QueryCache(directory)
        cache.load_index()
        out["after_index"] = rss() - before
        for key in cache.keys():
            cache.get(key)
        stats = cache.stats()
        out["after_reads"] = rss() - before
        out["tier"] = stats["memory_bytes"]
        out["entries"] = stats["entries"]
        # What the tier itself occupies, as resident memory: what emptying it gives back
        # (freed heap returned to the system first, as a long-running process would).
        import ctypes, gc
        trim = ctypes.CDLL("libc.so.6").malloc_trim
        trim(0)
        full = rss()
        cache._tier.clear()
        gc.collect()
        trim(0)
        out["tier_resident"] = full - rss()
        cache.close()
    elif mode == "invalidate":
        cache = QueryCache(directory)

        async def measure():
            stalls = []
            stop = asyncio.Event()
            task = start_ticker(stalls, stop)
            await asyncio.sleep(1.0)
            idle = max(stalls)
            stalls.clear()
            # As sync() does at start: the index read on a worker thread.
            await asyncio.to_thread(cache.load_index)
            await asyncio.sleep(0.01)
            out["index_stall"] = max(stalls)
            stalls.clear()
            start = time.perf_counter()
            count = cache.invalidate_all()
            elapsed = time.perf_counter() - start
            await asyncio.sleep(0.2)
            stop.set()
            await task
            return idle, max(stalls), elapsed, count

        idle, stall, elapsed, count = asyncio.run(measure())
        out.update(idle_stall=idle, stall=stall, seconds=elapsed, count=count)
        start = time.perf_counter()
        with diskcache.Cache(directory + "-one", disk=JsonDisk) as one:
            one.set(("k",), b"{}")
            begin = time.perf_counter()
            one.set(("k",), b"{}")
            out["one_set"] = time.perf_counter() - begin
        cache.close()
    print(json.dumps(out))
    """
)


def _child(mode: str, directory: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as cwd:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, mode, str(directory)],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"bench_cache child {mode!r} failed: {done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _large_cache(directory: Path, entries: int) -> int:
    """A cache of ``entries`` rows of about 1 KB of JSON each; the bytes of JSON per entry."""
    with QueryCache(directory) as cache:
        cache.set(("seed",), 0)  # the tables and the meta row, as QueryCache writes them
    now = time.time()
    con = sqlite3.connect(directory / "cache.db")
    size = 0
    step = 50_000
    try:
        for start in range(0, entries, step):
            rows = []
            for i in range(start, min(entries, start + step)):
                etag = f"{i:032x}"
                name = f"workflow {i}"
                data: JSON = {"id": f"w{i}", "etag": etag, "name": name, "pad": "x" * 880}
                entry = CacheEntry(("workflow", f"w{i}"), data, f"{i:032x}", False, now)
                value = encode_record(Record(entry, None))
                size += len(value)
                rows.append((f'["workflow","w{i}"]', now, now, value))
            with con:
                con.executemany(
                    "INSERT INTO Cache (key, raw, store_time, expire_time, access_time,"
                    " access_count, tag, size, mode, filename, value)"
                    " VALUES (?, 1, ?, NULL, ?, 0, NULL, 0, 1, NULL, ?)",
                    rows,
                )
    finally:
        con.close()
    return size // max(1, entries)


def _best(mode: str, directory: Path, field: str, rounds: int = 3) -> float:
    return min(_child(mode, directory)[field] for _ in range(rounds))


def _big_cache_figures(root: Path, entries: int, rounds: int = 3) -> list[Figure]:
    directory = root / f"big-{entries}"
    per_entry_json = _large_cache(directory, entries)
    label = f"{entries:,} entries of ~{per_entry_json} B"
    ours_open = _best("open", directory, "seconds", rounds)
    raw_open = _best("diskcache-open", directory, "seconds", rounds)
    index = _best("open", directory, "index", rounds=1 if entries >= 1_000_000 else rounds)
    keys_only = _best("diskcache-open", directory, "keys", rounds=1)
    memory = _child("memory", directory)
    count = memory["entries"]
    # What opening costs whatever the size (SQLite's page cache, the writer thread,
    # modules imported on first use), measured on a cache of one entry, is not per entry.
    empty = root / "one-entry"
    if not empty.exists():
        _large_cache(empty, 1)
    fixed = _child("memory", empty)
    after_index = max(0.0, memory["after_index"] - fixed["after_index"]) / count
    # Beyond the tier: all growth but what emptying the tier gives back (its resident
    # size, allocator overhead included, reported against its budget) and but what a
    # 1-entry cache grows by reading its one entry (as for the index: not per entry).
    tier_resident = memory["tier_resident"]
    fixed_reads = max(0.0, fixed["after_reads"] - fixed["tier_resident"])
    beyond_tier = max(0.0, memory["after_reads"] - tier_resident - fixed_reads) / count
    inval = _child("invalidate", directory)
    stall_ms, idle_ms = inval["stall"] * 1e3, max(inval["idle_stall"] * 1e3, 1e-3)
    index_stall_ms = inval["index_stall"] * 1e3
    shutil.rmtree(directory, ignore_errors=True)
    return [
        _figure(
            f"open: QueryCache vs diskcache.Cache ({label}, fresh process)",
            ours_open,
            "s",
            raw_open,
            target="ratio <= 20",
            met=ours_open <= 20 * raw_open,
        ),
        _figure(
            f"index read (load_index, off the loop in sync) vs reading the keys alone ({label})",
            index,
            "s",
            keys_only,
        ),
        _figure(
            f"RSS per entry after open + index, beyond a 1-entry cache's ({label}) vs JSON",
            after_index,
            "B",
            per_entry_json,
            target="<= 300 B",
            met=after_index <= 300,
        ),
        _figure(
            f"RSS per entry after reading every key, beyond the tier's resident size and a"
            f" 1-entry cache's ({label})",
            beyond_tier,
            "B",
            per_entry_json,
            target="<= 300 B",
            met=beyond_tier <= 300,
        ),
        _figure(
            f"memory tier's resident size after reading every key ({label}) vs memory_limit",
            tier_resident / 2**20,
            "MiB",
            DEFAULT_MEMORY_LIMIT / 2**20,
            target="ratio <= 1",
            met=tier_resident <= DEFAULT_MEMORY_LIMIT,
        ),
        _figure(
            f"invalidate_all ({label}) vs one diskcache.Cache.set",
            inval["seconds"],
            "s",
            inval["one_set"],
        ),
        _figure(
            f"longest loop stall while load_index runs on a thread ({label}) vs idle loop",
            index_stall_ms,
            "ms",
            idle_ms,
            target="<= 50 ms",
            met=index_stall_ms <= 50,
        ),
        _figure(
            f"longest loop stall during invalidate_all ({label}) vs idle loop",
            stall_ms,
            "ms",
            idle_ms,
            target="<= 50 ms",
            met=stall_ms <= 50,
        ),
    ]


# The embedded server for the restart figures, in a process of its own (its answers must
# not stall the loop being measured): it holds ``n`` threads of one message each, or
# ``n`` workflows of one version each, prints its port, then takes one JSON command a
# line on stdin ("change": update these resources; "gets": the GETs per route since the
# last "gets") and answers each with one JSON line.
_SERVER = textwrap.dedent(
    """
    import asyncio, json, sys
    from collections import Counter
    from querysync.server import NodeToolServer
    kind, n = sys.argv[1], int(sys.argv[2])
    GRAPH = {"nodes": [], "edges": []}

    async def main():
        # Pings keep the client's 45 s watchdog quiet through a long first run.
        server = NodeToolServer(ping_interval=5.0, stats_interval=None)
        for i in range(n):
            if kind == "threads":
                server.create("thread", {"title": f"t{i}"}, id=f"t{i:05d}")
                server.create(
                    "message", {"thread_id": f"t{i:05d}", "content": f"m{i}"}, id=f"m{i:05d}"
                )
            else:
                server.create(
                    "workflow", {"name": f"w{i}", "access": "private", "graph": GRAPH},
                    id=f"w{i:05d}",
                )
                server.create(
                    "workflowversion", {"workflow_id": f"w{i:05d}", "version": 1},
                    id=f"v{i:05d}",
                )
        await server.start()
        print(json.dumps({"port": server.port}), flush=True)
        loop = asyncio.get_running_loop()
        seen = Counter()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            command, arg = json.loads(line)
            if command == "change":
                rtype, field = ("thread", "title") if kind == "threads" else ("workflow", "name")
                for rid in arg:
                    server.update(rtype, rid, {field: "changed while sync was down"})
                print(json.dumps(len(arg)), flush=True)
            elif command == "gets":
                now = Counter({k: v for k, v in server.counts.items() if k.startswith("GET ")})
                delta = now - seen
                seen = now
                print(json.dumps(dict(delta)), flush=True)
        await server.stop()

    asyncio.run(main())
    """
)


class _RestartServer:
    """The server process of the restart figures; commands are blocking calls."""

    def __init__(self, kind: str, n: int, cwd: str) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _SERVER, kind, str(n)],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = int(self._answer()["port"])

    def _answer(self) -> Any:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the restart benchmark's server process ended")
        return json.loads(line)

    def ask(self, command: str, arg: object = None) -> Any:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps([command, arg]) + "\n")
        self._process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            self._process.wait(20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        finally:
            assert self._process.stdout is not None
            self._process.stdout.close()


async def _restart_case(kind: str, n: int, changed: int, directory: Path) -> dict[str, float]:
    """GETs and the longest loop stall of a restart of sync on a correct cache."""

    with tempfile.TemporaryDirectory() as cwd:
        server = _RestartServer(kind, n, cwd)
        try:
            api, ws = f"http://127.0.0.1:{server.port}", f"ws://127.0.0.1:{server.port}/ws"
            # A correct cache: a first run, whose resync (forced: the cache was empty)
            # fetches every listed resource, settled and stopped.
            first = await sync(ws, api, directory, window=0.05)
            await first.settle(quiet=0.2)
            first._start_discovery()
            await first.settle(quiet=0.2)
            await first.stop()
            prefix = "t" if kind == "threads" else "w"
            step = max(1, n // max(1, changed))
            ids = [f"{prefix}{i:05d}" for i in range(0, n, step)][:changed]
            await asyncio.to_thread(server.ask, "change", ids)
            await asyncio.to_thread(server.ask, "gets")
            del first
            # The restart itself in a fresh process, as a restart is.
            result = await asyncio.to_thread(_restart_child, ws, api, directory)
            gets: dict[str, int] = await asyncio.to_thread(server.ask, "gets")
        finally:
            server.close()
    return {
        **result,
        "gets": float(sum(gets.values())),
        "lists": float(
            gets.get("GET /api/messages/", 0) + gets.get("GET /api/workflows/{id}/versions", 0)
        ),
    }


# The restart of the restart figures: sync() on the persisted cache until it settles,
# a 1 ms ticker measuring the longest loop stall meanwhile; prints one JSON object.
_RESTART_CHILD = _TICKER + textwrap.dedent(
    """
    import asyncio, json, sys, time
    from querysync import sync
    # What any process pays once, before its loop serves anything: not the restart's.
    import querysync.sinks, querysync.streams, querysync._resync, querysync._audit
    ws, api, directory = sys.argv[1:4]

    async def main():
        loop = asyncio.get_running_loop()
        stalls = []
        stop = asyncio.Event()
        task = start_ticker(stalls, stop)
        await asyncio.sleep(0.5)
        idle = max(stalls)
        stalls.clear()
        start = time.perf_counter()
        if "--debug" in sys.argv:
            loop.set_debug(True)
            loop.slow_callback_duration = 0.02
        running = await sync(ws, api, directory, window=0.05)
        await running.settle(quiet=0.2)
        elapsed = time.perf_counter() - start
        stop.set()
        await task
        out = {
            "stall": max(stalls), "idle": idle, "seconds": elapsed,
            "stale": running.cache.stats()["stale"],
            "confirmed": running.resyncs["confirmed"],
        }
        await running.stop()
        print(json.dumps(out))

    asyncio.run(main())
    """
)


def _restart_child(ws: str, api: str, directory: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as cwd:
        done = subprocess.run(
            [sys.executable, "-c", _RESTART_CHILD, ws, api, str(directory)],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"bench_cache restart child failed: {done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _restart_figures(root: Path, n: int) -> list[Figure]:
    """Restart of sync on a correct cache of ``n`` threads, then of ``n`` workflows."""
    changed = max(1, n // 100)  # 1% changed while sync was down
    figures: list[Figure] = []
    stalls: list[Figure] = []
    # Pages of every list held: the eight one-page lists, the paged one (threads 10 a
    # page, workflows 100), and one page per resource of its own list (a thread's
    # messages, a workflow's versions), which no etag proves: each must be read.
    cases = (("threads", 10, "comparable"), ("workflows", 100, "not comparable"))
    for kind, per_page, proven in cases:
        result = asyncio.run(_restart_case(kind, n, changed, root / f"restart-{kind}"))
        pages = 8 + -(-n // per_page) + n
        needed = pages + changed
        label = (
            f"{n:,} {kind}, {changed} changed while down ({proven} list etags;"
            f" {int(result['lists']):,} per-resource lists, {int(result['confirmed']):,}"
            f" confirmed without a GET, {int(result['stale'])} left stale)"
        )
        figures.append(
            _figure(
                f"restart GETs on a correct cache of {label} vs pages of every list + changed",
                result["gets"],
                "GETs",
                needed,
                target="ratio <= 1.1" if kind == "threads" else None,
                met=result["gets"] <= 1.1 * needed if kind == "threads" else None,
            )
        )
        stall_ms, idle_ms = result["stall"] * 1e3, max(result["idle"] * 1e3, 1e-3)
        stalls.append(
            _figure(
                f"longest loop stall during the restart ({n:,} {kind}, {result['seconds']:.1f} s)"
                " vs idle loop",
                stall_ms,
                "ms",
                idle_ms,
                target="<= 50 ms",
                met=stall_ms <= 50,
            )
        )
    return figures + stalls


def run(*, small: bool = False, million: bool | None = None) -> list[Figure]:
    """The figures; ``small=True`` uses 2,000 entries instead of 100,000 (for a smoke test).

    ``million=True`` adds the 1,000,000-entry rows of the big-cache figures (minutes);
    by default they run when ``QUERYSYNC_BENCH_MILLION=1`` is set (``./scripts/bench``).
    """
    if million is None:
        million = os.environ.get("QUERYSYNC_BENCH_MILLION") == "1"
    resources = 500 if small else 25_000
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "cache"
        keys = _populate(directory, resources)
        fresh = Path(tmp) / "apply"
        shutil.copytree(directory, fresh)
        figures = [
            _invalidate_one_resource(directory, keys, resources),
            _cold_start(directory, keys),
            _applied_invalidations(fresh, resources),
        ]
        sizes = [2_000] if small else [10_000, 100_000] + ([1_000_000] if million else [])
        for entries in sizes:
            figures += _big_cache_figures(Path(tmp), entries, rounds=1 if small else 3)
        figures += _restart_figures(Path(tmp), 200 if small else 10_000)
    return figures


def main() -> None:
    small = "--small" in sys.argv
    for fig in run(small=small, million=True if "--million" in sys.argv else None):
        base = fig["baseline"]
        print(
            f"{fig['name']:<48} {fig['value']:>12.4g} {fig['unit']:<16}"
            f" baseline {base:>12.4g}  ratio {fig['ratio']:.4g}"
            + (
                f"  target {fig['target']}: {'met' if fig['met'] else 'NOT met'}"
                if fig["target"]
                else ""
            )
        )


if __name__ == "__main__":
    main()
