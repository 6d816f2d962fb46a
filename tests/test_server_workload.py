"""The workload generator: its shapes, its determinism and its bounds."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import msgpack
import pytest
from aiohttp import WSMsgType

from querysync.server import NodeToolServer, Workload, WorkloadReport

FAST = 1_000_000.0  # writes per second: never waits, so only max_changes bounds the run

TIMESTAMPS = {"created_at", "updated_at", "etag"}


def quiet_server() -> NodeToolServer:
    # The workload writes through the Python API; no listening socket is needed for that.
    return NodeToolServer(ping_interval=None, stats_interval=None)


def content(server: NodeToolServer) -> dict[str, dict[str, dict[str, Any]]]:
    """The snapshot without what depends on the clock (timestamps and the etags over them)."""
    return {
        rtype: {rid: {k: v for k, v in r.items() if k not in TIMESTAMPS} for rid, r in rs.items()}
        for rtype, rs in server.snapshot().items()
    }


def counts_of(report: WorkloadReport) -> tuple[Any, ...]:
    return (report.created, report.updated, report.deleted, report.skipped, report.ended,
            report.by_type, report.touched)


@pytest.mark.parametrize("kind", ["steady", "burst", "distinct", "mixed"])
async def test_the_same_seed_makes_the_same_writes(kind: Any) -> None:
    a, b, c = quiet_server(), quiet_server(), quiet_server()
    ra = await Workload(a, seed=7).run(seconds=10, rate=FAST, kind=kind, max_changes=300)
    rb = await Workload(b, seed=7).run(seconds=10, rate=FAST, kind=kind, max_changes=300)
    await Workload(c, seed=8, id_prefix="wl7").run(
        seconds=10, rate=FAST, kind=kind, max_changes=300
    )
    assert counts_of(ra) == counts_of(rb)
    assert content(a) == content(b)
    assert content(a) != content(c)
    assert ra.ended == "count"
    assert ra.changes + ra.skipped == 300


async def test_steady_spreads_updates_over_its_pool() -> None:
    server = quiet_server()
    report = await Workload(server, seed=1, pool_size=20).run(
        seconds=10, rate=FAST, kind="steady", max_changes=400
    )
    assert (report.created, report.updated, report.deleted) == (20, 380, 0)
    assert report.touched == 20
    assert sum(len(rs) for rs in server.snapshot().values()) == 20


async def test_bursts_hammer_a_few_resources() -> None:
    server = quiet_server()
    report = await Workload(server, seed=1, hot_resources=2, burst_size=25).run(
        seconds=10, rate=FAST, kind="burst", max_changes=202
    )
    assert (report.created, report.updated) == (2, 200)
    assert report.touched == 2


async def test_distinct_creates_a_new_resource_every_time() -> None:
    server = quiet_server()
    report = await Workload(server, seed=1).run(
        seconds=10, rate=FAST, kind="distinct", max_changes=150
    )
    assert report.created == report.changes == report.touched == 150
    assert sum(len(rs) for rs in server.snapshot().values()) == 150


async def test_mixed_creates_updates_and_deletes_and_keeps_messages_with_their_threads() -> None:
    server = quiet_server()
    workload = Workload(server, seed=3)
    seen: list[tuple[str, str, str]] = []
    server.store.subscribe(lambda event, rtype, r: seen.append((event, rtype, r["id"])))
    report = await workload.run(seconds=10, rate=FAST, kind="mixed", max_changes=500)
    assert report.created > 0
    assert report.updated > 0
    assert report.deleted > 0
    assert report.skipped == 0
    snapshot = server.snapshot()
    assert {t: sorted(ids) for t, ids in workload.resources.items()} == {
        t: sorted(snapshot[t]) for t in workload.resources
    }
    assert all(m["thread_id"] in snapshot["thread"] for m in snapshot["message"].values())
    # Messages are deleted one by one before their thread: no change is implied. A
    # create is announced twice (updated, created), except a job's: only "updated".
    jobs_created = len({rid for _, rtype, rid in seen if rtype == "job"})
    assert jobs_created > 0
    assert not [c for c in seen if c[:2] == ("created", "job")]
    assert server.counts["resource_changes"] == 2 * report.created - jobs_created + (
        report.updated + report.deleted
    )


async def test_a_client_that_applies_every_change_agrees_with_the_server(
    session: aiohttp.ClientSession,
) -> None:
    async with quiet_server() as server, session.ws_connect(server.ws_url) as ws:
        report = await Workload(server, seed=5).run(
            seconds=10, rate=FAST, kind="mixed", max_changes=300
        )
        last: dict[tuple[str, str], tuple[str, str]] = {}
        for _ in range(server.counts["resource_changes"]):
            msg = await ws.receive(timeout=5)
            assert msg.type is WSMsgType.BINARY
            change = msgpack.unpackb(msg.data, raw=False)
            key = (change["resource_type"], change["resource"]["id"])
            last[key] = (change["event"], change["resource"]["etag"])
    snapshot = server.snapshot()
    alive = {(t, rid): r["etag"] for t, rs in snapshot.items() for rid, r in rs.items()}
    assert {k: etag for k, (event, etag) in last.items() if event != "deleted"} == alive
    assert report.changes == 300


async def test_a_run_is_bounded_by_time() -> None:
    server = quiet_server()
    report = await Workload(server, seed=1).run(
        seconds=0.2, rate=100, kind="steady", max_changes=1_000_000
    )
    assert report.ended == "time"
    # Write n is due at n/rate seconds, so no more than seconds * rate fit in.
    assert 0 < report.changes <= 20


async def test_the_default_count_bound_is_seconds_times_rate() -> None:
    server = quiet_server()
    report = await Workload(server, seed=1).run(seconds=0.05, rate=200, kind="distinct")
    assert report.changes <= 10
    assert report.ended in ("count", "time")


async def test_stop_ends_a_run_early() -> None:
    server = quiet_server()
    workload = Workload(server, seed=1)
    written = asyncio.Event()
    server.store.subscribe(lambda *_: written.set())
    running = asyncio.ensure_future(workload.run(seconds=60, rate=50, kind="steady"))
    async with asyncio.timeout(5):
        await written.wait()
    workload.stop()
    async with asyncio.timeout(5):
        report = await running
    assert report.ended == "stopped"
    assert 0 < report.changes < 3000


async def test_a_resource_removed_behind_its_back_is_skipped_and_forgotten() -> None:
    server = quiet_server()
    workload = Workload(server, seed=1, types=["workflow"], pool_size=1)
    first = await workload.run(seconds=10, rate=FAST, kind="steady", max_changes=1)
    assert first.created == 1
    (gone,) = workload.resources["workflow"]
    server.delete("workflow", gone)
    second = await workload.run(seconds=10, rate=FAST, kind="steady", max_changes=3)
    assert (second.skipped, second.created, second.updated) == (1, 1, 1)
    assert gone not in workload.resources["workflow"]


async def test_a_workload_runs_one_at_a_time_and_checks_its_arguments() -> None:
    server = quiet_server()
    workload = Workload(server, seed=1)
    running = asyncio.ensure_future(workload.run(seconds=60, rate=10, kind="steady"))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await workload.run(seconds=1)
    workload.stop()
    await running
    with pytest.raises(ValueError, match="kind"):
        await workload.run(kind="chaos")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rate"):
        await workload.run(rate=0)
    with pytest.raises(ValueError, match="types"):
        Workload(server, types=["gizmo"])
    with pytest.raises(ValueError, match="thread"):
        Workload(server, types=["message"])
