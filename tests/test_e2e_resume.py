"""A cache persisted by one sync and reopened by the next: changes made in between arrive."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from _support import obj
from reactivex.subject import Subject
from reactivex.testing import TestScheduler

from querysync import audit, build_pipeline, sync
from querysync.server import NodeToolServer
from querysync.testing import change

WORKFLOW: dict[str, Any] = {"name": "w", "access": "private", "graph": {"nodes": [], "edges": []}}


async def test_a_reopened_cache_catches_up_with_changes_made_while_it_was_closed(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "cache"
    async with NodeToolServer(ping_interval=None, stats_interval=None) as server:
        kept = server.create("workflow", dict(WORKFLOW, name="kept"))
        changed = server.create("workflow", dict(WORKFLOW, name="before"))
        gone = server.create("workflow", dict(WORKFLOW, name="gone"))

        first = await sync(server.ws_url, server.api_url, directory, window=0.05)
        async with asyncio.timeout(20):
            await first.settle()
            # Resources created before the first start are discovered through the lists
            # only after a resync; touch them so the first run caches their own keys.
            for wf in (kept, changed, gone):
                server.update("workflow", wf["id"], {"name": wf["name"]})
            await first.settle()
        assert first.cache.get(("workflow", changed["id"])) is not None
        await first.stop()

        # While nobody listens: one update, one delete, one create.
        server.update("workflow", changed["id"], {"name": "after"})
        server.delete("workflow", gone["id"])
        born = server.create("workflow", dict(WORKFLOW, name="born"))

        second = await sync(server.ws_url, server.api_url, directory, window=0.05)
        try:
            async with asyncio.timeout(20):
                await second.settle()
            cache = second.cache
            entry = cache.get(("workflow", changed["id"]))
            assert entry is not None
            assert obj(entry.data)["name"] == "after"
            assert not entry.stale
            assert cache.get(("workflow", gone["id"])) is None
            assert cache.get(("workflow", born["id"])) is not None
            listed = {w["id"] for w in obj(cache.get(("workflows",)).data)["workflows"]}  # type: ignore[union-attr]
            assert listed == {kept["id"], changed["id"], born["id"]}
            agreement = await audit(cache, second.api)
            assert agreement.ok, agreement.disagreements
        finally:
            await second.stop()


def test_pipeline_reports_what_the_throttle_holds() -> None:
    source: Subject[object] = Subject()
    scheduler = TestScheduler()
    pipeline = build_pipeline(source, window=10.0, scheduler=scheduler)
    pipeline.observable.subscribe()
    a = change("updated", "workflow", "a").model_dump()
    source.on_next(a)
    assert pipeline.held() == 0
    source.on_next(a)
    source.on_next(a)
    assert pipeline.held() == 1
    scheduler.advance_by(11.0)
    assert pipeline.held() == 0
