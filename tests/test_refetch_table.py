"""The refetch table end to end: each live event type refetches exactly its rows.

Expected keys are written here from nodetool-protocol.md and issues 9.2 and 11.3 (a
user's write never changes the templates; a thread's messages and a workflow's versions
change with their own frames, which name no parent), not read from REFETCH_TABLE. The
embedded server sends frames as the live one does: only id and etag.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _support import obj

from querysync._keys import REFETCH_TABLE
from querysync._sync import Sync, sync
from querysync.server import NodeToolServer
from querysync.sinks import CacheEvent, QueryCache
from querysync.streams import Backoff

FAST = Backoff(initial=0.01, factor=2.0, max_delay=0.05, jitter=0.0)
WORKFLOW = {"name": "w", "access": "private", "graph": {"nodes": [], "edges": []}}
Key = tuple[Any, ...]


@dataclass
class World:
    server: NodeToolServer
    running: Sync
    cache: QueryCache
    ids: dict[str, str]
    fetched: set[Key] = field(default_factory=set)

    async def after(self, write: Callable[[], object]) -> set[Key]:
        """The keys fetched because of ``write``, once everything settled."""
        self.fetched.clear()
        write()
        async with asyncio.timeout(20):
            await self.running.settle(quiet=0.05)
        return set(self.fetched)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    server = NodeToolServer(ping_interval=None, stats_interval=None)
    await server.start()
    ids = {
        "w": server.create("workflow", WORKFLOW)["id"],
        "w2": server.create("workflow", WORKFLOW)["id"],
        "t": server.create("thread", {"title": "t"})["id"],
        "j": server.create("job", {"workflow_id": "x"})["id"],
        "a": server.create("asset", {"name": "a", "content_type": "text/plain"})["id"],
        "s": server.create("workspace", {"name": "s", "path": "/s"})["id"],
    }
    ids["v"] = server.create("workflowversion", {"workflow_id": ids["w"]})["id"]
    ids["m"] = server.create("message", {"thread_id": ids["t"], "content": "hi"})["id"]
    cache = QueryCache(tmp_path / "cache", retries=1, retry_delay=0.01)
    running = await sync(
        server.ws_url, server.api_url, cache, window=0.02, source_options={"backoff": FAST}
    )
    w = World(server, running, cache, ids)

    def on_event(event: CacheEvent) -> None:
        if event.kind == "fetch_started":
            w.fetched.add(event.key)

    events = cache.events().subscribe(on_event)
    try:
        async with asyncio.timeout(20):
            await server.wait_for_connections(1)
            await running.settle(quiet=0.05)
            # Every key the writes below could reach is cached, so a refetch shows.
            for key in [
                ("workflow", ids["w"]),
                ("workflow_versions", ids["w"]),
                ("workflow_versions", ids["w2"]),
                ("thread", ids["t"]),
                ("messages", ids["t"]),
                ("message", ids["m"]),
                ("job", ids["j"]),
                ("asset", ids["a"]),
                ("workspace", ids["s"]),
            ]:
                assert await cache.fetch(key) is not None, key
            await running.settle(quiet=0.05)
        yield w
    finally:
        events.dispose()
        async with asyncio.timeout(20):
            await running.stop()
            await cache.aclose()
            await server.stop()


async def test_each_live_event_type_refetches_exactly_its_rows(world: World) -> None:
    s, i = world.server, world.ids
    # workflow: its list and its detail; never the templates, nor its versions.
    assert await world.after(lambda: s.update("workflow", i["w"], {"name": "n"})) == {
        ("workflows",),
        ("workflow", i["w"]),
    }
    # a known version: only its workflow's version list (found in the cached lists).
    assert await world.after(lambda: s.update("workflowversion", i["v"], {"name": "v"})) == {
        ("workflow_versions", i["w"]),
    }
    # job, asset, workspace: the list and the detail; secret: the list.
    assert await world.after(lambda: s.update("job", i["j"], {"status": "running"})) == {
        ("jobs",),
        ("job", i["j"]),
    }
    assert await world.after(lambda: s.update("asset", i["a"], {"name": "b"})) == {
        ("assets",),
        ("asset", i["a"]),
    }
    assert await world.after(lambda: s.update("workspace", i["s"], {"name": "z"})) == {
        ("workspaces",),
        ("workspace", i["s"]),
    }
    assert await world.after(lambda: s.create("secret", {"key": "K"})) == {("secrets",)}
    # thread: its list and its detail, not its messages.
    assert await world.after(lambda: s.update("thread", i["t"], {"title": "u"})) == {
        ("threads",),
        ("thread", i["t"]),
    }
    # message: its thread's list (and only that) and its own detail.
    assert await world.after(lambda: s.update("message", i["m"], {"content": "x"})) == {
        ("messages", i["t"]),
        ("message", i["m"]),
    }
    created: dict[str, Any] = {}
    fetched = await world.after(
        lambda: created.update(s.create("message", {"thread_id": i["t"], "content": "new"}))
    )
    assert fetched == {("messages", i["t"]), ("message", created["id"])}


async def test_a_new_version_reaches_every_cached_version_list(world: World) -> None:
    # No workflow_id in the frame and a new id no cached list holds: every cached list.
    s, i = world.server, world.ids
    fetched = await world.after(lambda: s.create("workflowversion", {"workflow_id": i["w2"]}))
    assert fetched == {("workflow_versions", i["w"]), ("workflow_versions", i["w2"])}
    entry = world.cache.get(("workflow_versions", i["w2"]))
    assert entry is not None
    assert len(obj(entry.data)["versions"]) == 1


async def test_deleting_a_workflow_removes_its_versions(world: World) -> None:
    s, i, cache = world.server, world.ids, world.cache
    await world.after(lambda: s.delete("workflow", i["w"]))
    assert ("workflow", i["w"]) not in cache
    assert ("workflow_versions", i["w"]) not in cache
    assert ("workflow_versions", i["w2"]) in cache
    listed = cache.get(("workflows",))
    assert listed is not None
    assert i["w"] not in [w["id"] for w in obj(listed.data)["workflows"]]


def test_every_row_of_the_table_is_in_the_docs() -> None:
    text = (Path(__file__).parent.parent / "docs" / "refetch.md").read_text()
    for row in REFETCH_TABLE:
        assert f"| `{row.resource_type}` | `{row.key!r}` |" in text, row
        assert row.why in text, row
