"""The embedded server's REST API: paths, body shapes, validation, announced writes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import aiohttp
import msgpack
import pytest
from aiohttp import WSMsgType

from querysync.server import NodeToolServer

WORKFLOW = {"name": "w", "access": "private", "graph": {"nodes": [], "edges": []}}

# (resource type, REST base path, fields of a valid create, field to update)
WRITABLE = [
    ("workflow", "/api/workflows", WORKFLOW, {"name": "renamed"}),
    ("job", "/api/jobs", {"workflow_id": "w1"}, {"status": "running"}),
    ("asset", "/api/assets", {"name": "a.png", "content_type": "image/png"}, {"name": "b.png"}),
    ("thread", "/api/threads", {"title": "t"}, {"title": "u"}),
    ("workspace", "/api/workspaces", {"name": "ws", "path": "/w"}, {"name": "ws2"}),
    ("secret", "/api/settings/secrets", {"key": "K", "value": "v"}, {"description": "d"}),
]
WRITABLE_IDS = [w[0] for w in WRITABLE]

# From shared/nodetool-protocol.md: which REST bodies carry an etag at all, which lists
# show items whose etags differ from the detail's, and which types never send "created".
REST_ETAG = {"workflow", "job", "asset", "thread"}
LIST_DIFFERS = {"workflow", "job"}
UPDATED_ONLY = {"job"}


async def get(session: aiohttp.ClientSession, url: str, status: int = 200) -> Any:
    async with session.get(url) as resp:
        assert resp.status == status, await resp.text()
        assert resp.content_type == "application/json"
        assert "ETag" not in resp.headers
        return await resp.json()


async def changes(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[tuple[str, str, str]]:
    out = []
    for _ in range(n):
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.BINARY, msg
        m = msgpack.unpackb(msg.data, raw=False)
        out.append((m["event"], m["resource_type"], m["resource"]["id"]))
    return out


def md5_of_sorted_dump(body: dict[str, Any]) -> str:
    rest = {k: v for k, v in body.items() if k != "etag"}
    return hashlib.md5(json.dumps(rest, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize(
    ("path", "keys", "items"),
    [
        ("/api/workflows/", {"next", "workflows"}, "workflows"),
        ("/api/workflows", {"next", "workflows"}, "workflows"),
        ("/api/jobs/", {"jobs", "next_start_key"}, "jobs"),
        ("/api/assets/", {"next", "assets"}, "assets"),
        ("/api/threads/", {"next", "threads"}, "threads"),
        ("/api/messages/?thread_id=T", {"next", "messages"}, "messages"),
        ("/api/workspaces/", {"workspaces", "next_cursor"}, "workspaces"),
        ("/api/settings/secrets", {"secrets", "next_key"}, "secrets"),
    ],
)
async def test_an_empty_list_has_the_live_shape(
    server: NodeToolServer, session: aiohttp.ClientSession, path: str, keys: set[str], items: str
) -> None:
    body = await get(session, server.api_url + path)
    assert set(body) == keys
    assert body[items] == []
    # "" or null ends the pages; the protocol: workflows say "" on the last page.
    assert all(body[k] in ("", None) for k in keys - {items})
    if items == "workflows":
        assert body["next"] == ""


@pytest.mark.parametrize(("rtype", "path", "fields", "change"), WRITABLE, ids=WRITABLE_IDS)
async def test_post_get_put_delete_round_trip_and_announce(
    server: NodeToolServer,
    session: aiohttp.ClientSession,
    rtype: str,
    path: str,
    fields: dict[str, Any],
    change: dict[str, Any],
) -> None:
    async with session.ws_connect(server.ws_url) as ws:
        async with session.post(server.api_url + path + "/", json=fields) as resp:
            assert resp.status == 200
            created = await resp.json()
        rid = created["id"]
        stored = server.get(rtype, rid)
        assert stored["etag"] == md5_of_sorted_dump(stored)
        if rtype in REST_ETAG:
            assert created == stored
        else:
            assert "etag" not in created
            assert created == {k: v for k, v in stored.items() if k != "etag"}
        frames = (
            [("updated", rtype, rid)]
            if rtype in UPDATED_ONLY
            else [
                ("updated", rtype, rid),
                ("created", rtype, rid),
            ]
        )
        assert await changes(ws, len(frames)) == frames

        assert await get(session, f"{server.api_url}{path}/{rid}") == created
        listing = await get(session, server.api_url + path)
        items = [item for v in listing.values() if isinstance(v, list) for item in v]
        assert [item["id"] for item in items] == [rid]
        if rtype in LIST_DIFFERS:
            # The list reads fewer columns: a subset of the detail, and another etag.
            assert items[0]["etag"] != created["etag"]
            assert items[0]["etag"] == md5_of_sorted_dump(items[0])
            assert set(items[0]) < set(created)
            assert all(created[k] == v for k, v in items[0].items() if k != "etag")
        else:
            assert items == [created]

        async with session.put(f"{server.api_url}{path}/{rid}", json=change) as resp:
            assert resp.status == 200
            updated = await resp.json()
        assert {k: updated[k] for k in change} == change
        now = server.get(rtype, rid)
        assert now["etag"] == md5_of_sorted_dump(now) != stored["etag"]
        assert ("etag" in updated) == (rtype in REST_ETAG)
        assert updated["created_at"] == created["created_at"]
        assert await changes(ws, 1) == [("updated", rtype, rid)]

        async with session.delete(f"{server.api_url}{path}/{rid}") as resp:
            assert resp.status == 200
            assert await resp.json() is None
        assert await changes(ws, 1) == [("deleted", rtype, rid)]
    await get(session, f"{server.api_url}{path}/{rid}", status=404)
    assert server.snapshot()[rtype] == {}


@pytest.mark.parametrize(("rtype", "path", "fields", "change"), WRITABLE, ids=WRITABLE_IDS)
async def test_unknown_ids_are_404_for_get_put_and_delete(
    server: NodeToolServer,
    session: aiohttp.ClientSession,
    rtype: str,
    path: str,
    fields: dict[str, Any],
    change: dict[str, Any],
) -> None:
    url = f"{server.api_url}{path}/nope"
    body = await get(session, url, status=404)
    assert body["detail"].endswith("not found")
    async with session.put(url, json=change) as resp:
        assert resp.status == 404
    async with session.delete(url) as resp:
        assert resp.status == 404
    assert server.counts["resource_changes"] == 0


async def test_messages_belong_to_a_thread(
    server: NodeToolServer, session: aiohttp.ClientSession
) -> None:
    thread = server.create("thread", {"title": "t"})
    other = server.create("thread", {"title": "o"})
    async with session.post(
        f"{server.api_url}/api/messages/", json={"thread_id": thread["id"], "content": "hi"}
    ) as resp:
        assert resp.status == 200
        message = await resp.json()
    server.create("message", {"thread_id": other["id"], "content": "elsewhere"})

    body = await get(session, f"{server.api_url}/api/messages/?thread_id={thread['id']}")
    assert body == {"next": "", "messages": [message]}
    assert "etag" not in message
    assert await get(session, f"{server.api_url}/api/messages/{message['id']}") == message
    missing = await get(session, f"{server.api_url}/api/messages/", status=422)
    assert missing["detail"][0]["loc"] == ["query", "thread_id"]

    for bad in ({"content": "no thread"}, {"thread_id": "nope", "content": "x"}):
        async with session.post(f"{server.api_url}/api/messages/", json=bad) as resp:
            assert resp.status == 422
            assert (await resp.json())["detail"][0]["loc"] == ["body", "thread_id"]

    url = f"{server.api_url}/api/messages/{message['id']}"
    async with session.put(url, json={"thread_id": "nope"}) as resp:
        assert resp.status == 422
    async with session.put(url, json={"content": "edited"}) as resp:
        assert (await resp.json())["content"] == "edited"
    async with session.delete(url) as resp:
        assert resp.status == 200
    await get(session, url, status=404)


async def test_deleting_a_thread_deletes_its_messages_first(
    server: NodeToolServer, session: aiohttp.ClientSession
) -> None:
    thread = server.create("thread", {"title": "t"})
    message = server.create("message", {"thread_id": thread["id"], "content": "hi"})
    async with session.ws_connect(server.ws_url) as ws:
        async with session.delete(f"{server.api_url}/api/threads/{thread['id']}") as resp:
            assert resp.status == 200
        assert await changes(ws, 2) == [
            ("deleted", "message", message["id"]),
            ("deleted", "thread", thread["id"]),
        ]
    assert server.snapshot()["message"] == {}


@pytest.mark.parametrize(
    ("body", "missing"),
    [
        ({}, {"name", "access", "graph"}),
        ({"name": "w"}, {"access", "graph"}),
        ({"name": "w", "access": "private"}, {"graph"}),
    ],
)
async def test_post_workflow_needs_name_access_and_graph(
    server: NodeToolServer, session: aiohttp.ClientSession, body: dict[str, Any], missing: set[str]
) -> None:
    async with session.post(f"{server.api_url}/api/workflows/", json=body) as resp:
        assert resp.status == 422
        detail = (await resp.json())["detail"]
    assert {d["loc"][-1] for d in detail if d["type"] == "missing"} == missing
    assert server.snapshot()["workflow"] == {}


@pytest.mark.parametrize(
    "raw",
    [
        "{not json",
        "",
        "[1, 2]",
        json.dumps({"name": 1, "access": "private", "graph": {}}),
        json.dumps({"name": "w", "access": "private", "graph": "nodes"}),
    ],
    ids=["bad-json", "empty", "array", "name-not-str", "graph-not-object"],
)
async def test_post_workflow_rejects_bad_bodies_with_422(
    server: NodeToolServer, session: aiohttp.ClientSession, raw: str
) -> None:
    async with session.post(
        f"{server.api_url}/api/workflows/",
        data=raw,
        headers={"Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 422
        detail = (await resp.json())["detail"]
    assert detail
    assert all({"type", "loc", "msg"} <= set(d) for d in detail)
    assert server.counts["resource_changes"] == 0


async def test_put_cannot_change_id_etag_or_a_field_type(
    server: NodeToolServer, session: aiohttp.ClientSession
) -> None:
    workflow = server.create("workflow", WORKFLOW)
    url = f"{server.api_url}/api/workflows/{workflow['id']}"
    async with session.put(url, json={"id": "other", "etag": "x", "name": "n"}) as resp:
        body = await resp.json()
    assert (body["id"], body["name"]) == (workflow["id"], "n")
    assert body["etag"] == md5_of_sorted_dump(body)
    async with session.put(url, json={"graph": []}) as resp:
        assert resp.status == 422
    assert server.get("workflow", workflow["id"]) == body


async def test_if_none_match_is_ignored(
    server: NodeToolServer, session: aiohttp.ClientSession
) -> None:
    workflow = server.create("workflow", WORKFLOW)
    url = f"{server.api_url}/api/workflows/{workflow['id']}"
    async with session.get(url, headers={"If-None-Match": workflow["etag"]}) as resp:
        assert resp.status == 200
        assert "ETag" not in resp.headers
        assert await resp.json() == workflow


async def test_workflow_versions(server: NodeToolServer, session: aiohttp.ClientSession) -> None:
    workflow = server.create("workflow", WORKFLOW)
    url = f"{server.api_url}/api/workflows/{workflow['id']}/versions"
    assert await get(session, url) == {"next": "", "versions": []}
    async with session.ws_connect(server.ws_url) as ws:
        async with session.post(url, json={"name": "v1"}) as resp:
            assert resp.status == 200
            version = await resp.json()
        assert await changes(ws, 2) == [
            ("updated", "workflowversion", version["id"]),
            ("created", "workflowversion", version["id"]),
        ]
    assert (version["workflow_id"], version["version"]) == (workflow["id"], 1)
    assert version["graph"] == workflow["graph"]
    assert "etag" not in version
    assert await get(session, url) == {"next": "", "versions": [version]}
    await get(session, f"{server.api_url}/api/workflows/nope/versions", status=404)


async def test_examples_collections_and_models_are_read_only_lists(
    server: NodeToolServer, session: aiohttp.ClientSession
) -> None:
    examples = await get(session, f"{server.api_url}/api/workflows/examples")
    assert set(examples) == {"next", "workflows"}
    assert examples["workflows"]
    for example in examples["workflows"]:
        assert example["etag"] == md5_of_sorted_dump(example)
    collections = await get(session, f"{server.api_url}/api/collections/")
    assert collections["count"] == len(collections["collections"]) > 0
    models = await get(session, f"{server.api_url}/api/models/all")
    assert isinstance(models, list)
    assert all(isinstance(m["id"], str) for m in models)
    async with session.post(f"{server.api_url}/api/models/all", json={}) as resp:
        assert resp.status == 405
        assert "detail" in await resp.json()


async def test_a_secret_value_is_never_returned(
    server: NodeToolServer, session: aiohttp.ClientSession
) -> None:
    async with session.post(
        f"{server.api_url}/api/settings/secrets", json={"key": "API_KEY", "value": "hunter2"}
    ) as resp:
        secret = await resp.json()
    listing = await get(session, f"{server.api_url}/api/settings/secrets")
    assert listing == {"secrets": [secret], "next_key": None}
    assert secret["is_configured"] is True
    assert "hunter2" not in json.dumps(listing)


async def test_lists_keep_creation_order_and_all_items_carry_id_and_etag(
    server: NodeToolServer, session: aiohttp.ClientSession
) -> None:
    ids = [
        server.create("asset", {"name": f"{i}", "content_type": "text/plain"})["id"]
        for i in range(5)
    ]
    body = await get(session, f"{server.api_url}/api/assets/")
    assert [a["id"] for a in body["assets"]] == ids
    assert all(a["etag"] == md5_of_sorted_dump(a) for a in body["assets"])


# Paging, row by row from the protocol table: (resource type, list path, items member,
# cursor parameter, next member, page-size parameter, the live default page size). The
# live defaults the protocol names: workflows 100, assets 10000, threads 10, messages
# 100; jobs, workspaces and secrets name none, and the embedded server uses 100.
PAGING = [
    ("workflow", "/api/workflows/", "workflows", "cursor", "next", "limit", 100),
    ("job", "/api/jobs/", "jobs", "start_key", "next_start_key", "limit", 100),
    ("asset", "/api/assets/", "assets", "cursor", "next", "page_size", 10_000),
    ("thread", "/api/threads/", "threads", "cursor", "next", "limit", 10),
    ("message", "/api/messages/?thread_id={t}", "messages", "cursor", "next", "limit", 100),
    ("workspace", "/api/workspaces/", "workspaces", "cursor", "next_cursor", "limit", 100),
    ("secret", "/api/settings/secrets", "secrets", "key", "next_key", None, 100),
]
FIELDS: dict[str, dict[str, Any]] = {
    "workflow": WORKFLOW,
    "job": {"workflow_id": "w1"},
    "asset": {"name": "a", "content_type": "text/plain"},
    "thread": {"title": "t"},
    "workspace": {"name": "s", "path": "/s"},
    "secret": {"key": "K"},
}


def with_param(url: str, name: str, value: object) -> str:
    return f"{url}{'&' if '?' in url else '?'}{name}={value}"


@pytest.mark.parametrize("row", PAGING, ids=[r[0] for r in PAGING])
async def test_lists_page_with_the_live_names_and_defaults(
    server: NodeToolServer, session: aiohttp.ClientSession, row: tuple[Any, ...]
) -> None:
    rtype, path, items, cursor, nxt, limit, default = row
    thread = server.create("thread", {"title": "holder"})["id"] if rtype == "message" else ""
    fields: dict[str, Any] = (
        {"thread_id": thread, "content": "c"} if rtype == "message" else FIELDS[rtype]
    )
    ids: list[str] = []
    # No page-size parameter (secrets): the live default page size decides.
    small = 3 if limit is not None else default
    ids += [server.create(rtype, fields)["id"] for _ in range(small * 2 + 1)]
    url = server.api_url + path.format(t=thread)

    def page_url(at: str | None) -> str:
        sized = with_param(url, limit, small) if limit is not None else url
        return sized if at is None else with_param(sized, cursor, at)

    first = await get(session, page_url(None))
    got, body, pages = [], first, 1
    while True:
        got += [item["id"] for item in body[items]]
        if body[nxt] in ("", None):
            break
        assert isinstance(body[nxt], str)
        assert len(body[items]) == small
        body = await get(session, page_url(body[nxt]))
        pages += 1
    assert got == ids
    assert pages == 3


async def test_threads_default_to_ten_a_page_and_workflows_to_a_hundred(
    server: NodeToolServer, session: aiohttp.ClientSession
) -> None:
    for i in range(12):
        server.create("thread", {"title": f"t{i}"})
    for _ in range(101):
        server.create("workflow", WORKFLOW)
    threads = await get(session, f"{server.api_url}/api/threads/")
    assert len(threads["threads"]) == 10
    assert threads["next"] not in ("", None)
    rest = await get(session, f"{server.api_url}/api/threads/?cursor={threads['next']}")
    assert len(rest["threads"]) == 2
    assert rest["next"] == ""
    workflows = await get(session, f"{server.api_url}/api/workflows/")
    assert len(workflows["workflows"]) == 100
    last = await get(session, f"{server.api_url}/api/workflows/?cursor={workflows['next']}")
    assert len(last["workflows"]) == 1
    assert last["next"] == ""


async def test_a_cursor_survives_writes_between_pages(
    server: NodeToolServer, session: aiohttp.ClientSession
) -> None:
    ids = [server.create("thread", {"title": f"t{i}"})["id"] for i in range(15)]
    first = await get(session, f"{server.api_url}/api/threads/")
    server.delete("thread", ids[9])  # the last item of the first page
    late = server.create("thread", {"title": "late"})["id"]
    rest = await get(session, f"{server.api_url}/api/threads/?cursor={first['next']}")
    assert [t["id"] for t in rest["threads"]] == [*ids[10:], late]


@pytest.mark.parametrize("bad", ["0", "-1", "x"])
async def test_a_bad_page_size_is_422(
    server: NodeToolServer, session: aiohttp.ClientSession, bad: str
) -> None:
    body = await get(session, f"{server.api_url}/api/threads/?limit={bad}", status=422)
    assert body["detail"][0]["loc"] == ["query", "limit"]


async def test_a_list_request_does_not_copy_the_store(server: NodeToolServer) -> None:
    # Issue 9.4: the list views are made once per write, not per request.
    for _ in range(3):
        server.create("workflow", WORKFLOW)
    first, _ = server.store.page("workflow", limit=10)
    again, _ = server.store.page("workflow", limit=10)
    assert all(a is b for a, b in zip(first, again, strict=True))
    wid = first[0]["id"]
    server.update("workflow", wid, {"name": "changed"})
    changed, _ = server.store.page("workflow", limit=10)
    assert changed[0]["name"] == "changed"
    assert first[0]["name"] == "w"  # a view already handed out is never changed


def test_a_threads_messages_are_paged_from_its_own_children_whatever_moved(
    server: NodeToolServer,
) -> None:
    # The messages of one thread used to be found by looking at every message (10,000
    # threads: 10^8 checks per resync). Pages by thread must still equal a scan, after
    # messages are created, moved to another thread and deleted.
    store = server.store
    threads = [server.create("thread", {"title": f"t{i}"})["id"] for i in range(4)]
    messages = [
        server.create("message", {"thread_id": threads[i % 4], "content": str(i)})["id"]
        for i in range(40)
    ]
    for i in range(0, 40, 3):
        server.update("message", messages[i], {"thread_id": threads[(i + 1) % 4]})
    for i in range(0, 40, 7):
        server.delete("message", messages[i])
    server.delete("thread", threads[3])
    for tid in [*threads, "no-such-thread"]:
        expected = [m["id"] for m in store.select("message", thread_id=tid)]
        for newest_first in (False, True):
            got: list[str] = []
            after = None
            while True:
                page, after = store.page(
                    "message", after=after, limit=3, newest_first=newest_first, thread_id=tid
                )
                got += [m["id"] for m in page]
                if after is None:
                    break
            assert got == (expected[::-1] if newest_first else expected)
    assert store.select("message", thread_id=threads[3]) == []
