"""QueryCache figures: prefix invalidation, applied invalidations per second, cold start.

Each figure comes with a baseline measured in the same run on the same machine:

- ``invalidate_one_resource``: median time of ``cache.invalidate(("workflow", id))``
  in a cache of 100,000 entries (the prefix trie), against a scan of every key with
  :func:`querysync.key_matches` (what finding matches costs without an index).
- ``applied_invalidations_per_s``: ``apply_invalidation`` of updates to distinct
  workflows (three entries each become stale and are written), until every write is on
  disk, against the same writes as one ``diskcache.Cache.set`` per row (one commit each).
- ``cold_start``: opening a 100,000-entry cache (every entry loaded, trie built),
  against reading the same rows with one ``diskcache.Cache.get`` per key.

As in every querysync benchmark, ``ratio`` is querysync's value divided by the
baseline's and ``target`` says which direction is better. Run
``python -m benchmarks.bench_cache [--small]`` from the repository root.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import diskcache

from querysync import Invalidation, QueryKey, default_registry, key_matches
from querysync.sinks import QueryCache
from querysync.sinks._disk import JsonDisk
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
        loaded = len(cache)
    ours = time.perf_counter() - start
    assert loaded == len(keys)

    sample = keys[:: max(1, len(keys) // 5000)]

    start = time.perf_counter()
    with diskcache.Cache(str(directory), disk=JsonDisk) as raw:
        for key in sample:
            raw.get(key)
    baseline = (time.perf_counter() - start) * len(keys) / len(sample)
    return _figure(f"cold_start ({loaded} entries)", ours, "s", baseline)


def run(*, small: bool = False) -> list[Figure]:
    """The figures; ``small=True`` uses 2,000 entries instead of 100,000 (for a smoke test)."""
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
    return figures


def main() -> None:
    small = "--small" in sys.argv
    for fig in run(small=small):
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
