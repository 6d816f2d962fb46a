"""The embedded server's /ws endpoint, seen by a real aiohttp client over loopback."""

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


async def recv(ws: aiohttp.ClientWebSocketResponse) -> tuple[WSMsgType, dict[str, Any]]:
    """The next frame's kind and its decoded message; fails on anything but a data frame."""
    msg = await ws.receive(timeout=5)
    if msg.type is WSMsgType.BINARY:
        return msg.type, msgpack.unpackb(msg.data, raw=False)
    if msg.type is WSMsgType.TEXT:
        return msg.type, json.loads(msg.data)
    raise AssertionError(f"expected a data frame, got {msg!r}")


async def recv_until(
    ws: aiohttp.ClientWebSocketResponse, done: Any, limit: int = 200
) -> list[dict[str, Any]]:
    """Messages up to and including the first for which ``done(message)`` is true."""
    seen = []
    for _ in range(limit):
        _, message = await recv(ws)
        seen.append(message)
        if done(message):
            return seen
    raise AssertionError(f"no matching message in {limit}: {seen[-5:]!r}")


def md5_of_sorted_dump(body: dict[str, Any]) -> str:
    rest = {k: v for k, v in body.items() if k != "etag"}
    return hashlib.md5(json.dumps(rest, sort_keys=True).encode()).hexdigest()


async def test_frames_are_messagepack_until_the_client_speaks(
    server: NodeToolServer, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(server.ws_url) as ws:
        created = server.create("workflow", WORKFLOW)
        kind, message = await recv(ws)
        assert kind is WSMsgType.BINARY
        assert message["type"] == "resource_change"
        assert message["resource"]["id"] == created["id"]


async def test_a_text_frame_switches_to_json_and_a_binary_frame_back(
    server: NodeToolServer, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(server.ws_url) as ws:
        await ws.send_str(json.dumps({"type": "ping"}))
        kind, pong = await recv(ws)
        assert (kind, pong["type"]) == (WSMsgType.TEXT, "pong")
        server.create("workflow", WORKFLOW)
        assert [(await recv(ws))[0] for _ in range(2)] == [WSMsgType.TEXT, WSMsgType.TEXT]

        await ws.send_bytes(msgpack.packb({"type": "ping"}, use_bin_type=True))
        kind, pong = await recv(ws)
        assert (kind, pong["type"]) == (WSMsgType.BINARY, "pong")
        server.create("workflow", WORKFLOW)
        assert [(await recv(ws))[0] for _ in range(2)] == [WSMsgType.BINARY, WSMsgType.BINARY]


async def test_set_mode_switches_even_against_the_frame_kind(
    server: NodeToolServer, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(server.ws_url) as ws:
        set_text = {"command": "set_mode", "data": {"mode": "text"}}
        await ws.send_bytes(msgpack.packb(set_text, use_bin_type=True))
        kind, reply = await recv(ws)
        assert kind is WSMsgType.TEXT
        assert "text" in reply["message"]
        server.create("workflow", WORKFLOW)
        assert [(await recv(ws))[0] for _ in range(2)] == [WSMsgType.TEXT, WSMsgType.TEXT]

        await ws.send_str(json.dumps({"command": "set_mode", "data": {"mode": "binary"}}))
        kind, _ = await recv(ws)
        assert kind is WSMsgType.BINARY

        await ws.send_str(json.dumps({"command": "set_mode", "data": {"mode": "loud"}}))
        _, reply = await recv(ws)
        assert reply["error"] == "invalid_mode"


async def test_ping_is_answered_with_pong_and_a_timestamp(
    server: NodeToolServer, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(server.ws_url) as ws:
        await ws.send_bytes(msgpack.packb({"type": "ping"}, use_bin_type=True))
        _, pong = await recv(ws)
        assert pong["type"] == "pong"
        assert isinstance(pong["ts"], float)
        assert pong["ts"] > 1.6e9


@pytest.mark.parametrize(
    "frame",
    [
        json.dumps({"data": {"mode": "text"}}),
        json.dumps({"type": "pong"}),
        json.dumps({"command": ""}),
        json.dumps([1, 2, 3]),
        json.dumps({"command": "run_job", "data": [1]}),
        "{not json",
        b"\xc1\xc1",
    ],
    ids=["no-command", "pong", "empty-command", "array", "data-not-object", "bad-json", "bad-mp"],
)
async def test_a_frame_without_a_command_is_an_invalid_message_and_the_connection_goes_on(
    server: NodeToolServer, session: aiohttp.ClientSession, frame: str | bytes
) -> None:
    async with session.ws_connect(server.ws_url) as ws:
        if isinstance(frame, str):
            await ws.send_str(frame)
        else:
            await ws.send_bytes(frame)
        _, reply = await recv(ws)
        assert reply["error"] == "invalid_message"
        assert reply["detail"]
        await ws.send_str(json.dumps({"type": "ping"}))
        _, pong = await recv(ws)
        assert pong["type"] == "pong"
    assert server.counts["invalid_messages"] == 1


async def test_unknown_commands_get_an_error_and_known_ones_an_acknowledgement(
    server: NodeToolServer, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(server.ws_url) as ws:
        await ws.send_str(json.dumps({"command": "dance", "data": {}}))
        _, reply = await recv(ws)
        assert reply["error"] == "unknown_command"
        for command in ("reconnect_job", "resume_job", "stream_input", "end_input_stream"):
            await ws.send_str(json.dumps({"command": command, "data": {"job_id": "j1"}}))
            _, reply = await recv(ws)
            assert "error" not in reply
            assert reply["job_id"] == "j1"
        await ws.send_str(json.dumps({"command": "clear_models"}))
        _, reply = await recv(ws)
        assert "error" not in reply


async def test_a_create_sends_updated_then_created_with_the_etag_of_the_rest_body(
    server: NodeToolServer, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(server.ws_url) as ws:
        async with session.post(f"{server.api_url}/api/workflows/", json=WORKFLOW) as resp:
            body = await resp.json()
        first, second = (await recv(ws))[1], (await recv(ws))[1]
    assert [first["event"], second["event"]] == ["updated", "created"]
    assert first["resource_type"] == second["resource_type"] == "workflow"
    assert first["resource"] == second["resource"] == {"id": body["id"], "etag": body["etag"]}
    assert body["etag"] == md5_of_sorted_dump(body)


async def test_an_update_sends_updated_with_the_new_etag(
    server: NodeToolServer, session: aiohttp.ClientSession
) -> None:
    created = server.create("workflow", WORKFLOW)
    async with session.ws_connect(server.ws_url) as ws:
        updated = server.update("workflow", created["id"], {"name": "renamed"})
        _, message = await recv(ws)
    assert message["event"] == "updated"
    assert message["resource"] == {"id": created["id"], "etag": updated["etag"]}
    assert updated["etag"] != created["etag"]
    assert updated["etag"] == md5_of_sorted_dump(updated)


async def test_a_delete_carries_the_etag_of_the_last_state(
    server: NodeToolServer, session: aiohttp.ClientSession
) -> None:
    created = server.create("asset", {"name": "a.png", "content_type": "image/png"})
    last = server.update("asset", created["id"], {"name": "b.png"})
    async with session.ws_connect(server.ws_url) as ws:
        server.delete("asset", created["id"])
        _, message = await recv(ws)
    assert message == {
        "type": "resource_change",
        "event": "deleted",
        "resource_type": "asset",
        "resource": {"id": created["id"], "etag": last["etag"]},
    }


async def test_every_connection_receives_every_change(
    server: NodeToolServer, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(server.ws_url) as a, session.ws_connect(server.ws_url) as b:
        await a.send_str(json.dumps({"type": "ping"}))
        await recv(a)
        thread = server.create("thread", {"title": "t"})
        for ws in (a, b):
            events = [(await recv(ws))[1] for _ in range(2)]
            assert [e["resource"]["id"] for e in events] == [thread["id"]] * 2
    assert server.counts["resource_changes"] == 2


async def test_full_resources_puts_every_field_in_the_message(
    session: aiohttp.ClientSession,
) -> None:
    server = NodeToolServer(ping_interval=None, stats_interval=None, full_resources=True)
    async with server, session.ws_connect(server.ws_url) as ws:
        created = server.create("workflow", WORKFLOW)
        _, message = await recv(ws)
    assert message["resource"] == created


async def test_run_job_creates_the_job_emits_internal_changes_and_completes_it(
    server: NodeToolServer, session: aiohttp.ClientSession
) -> None:
    workflow = server.create("workflow", WORKFLOW)
    async with session.ws_connect(server.ws_url) as ws:
        command = {"command": "run_job", "data": {"workflow_id": workflow["id"]}}
        await ws.send_bytes(msgpack.packb(command, use_bin_type=True))
        seen = await recv_until(
            ws, lambda m: m.get("type") == "job_update" and m.get("status") == "completed"
        )
    changes = [m for m in seen if m.get("type") == "resource_change"]
    job_changes = [m for m in changes if m["resource_type"] == "job"]
    # The live server announces jobs only with "updated", never "created".
    assert [m["event"] for m in job_changes] == ["updated", "updated"]
    assert job_changes[0]["resource"]["id"] == job_changes[1]["resource"]["id"]
    assert job_changes[0]["resource"]["etag"] != job_changes[1]["resource"]["etag"]
    job_id = job_changes[0]["resource"]["id"]
    internal = {m["resource_type"] for m in changes} - {"job"}
    assert {"runevent", "runnodestate"} <= internal
    updates = [m for m in seen if m.get("type") == "job_update"]
    assert len(updates) >= 2
    assert all(u["job_id"] == job_id and u["workflow_id"] == workflow["id"] for u in updates)
    ack = next(m for m in seen if "message" in m and "type" not in m)
    assert ack["job_id"] == job_id
    job = server.get("job", job_id)
    assert job["status"] == "completed"
    assert job["etag"] == job_changes[-1]["resource"]["etag"]
    assert job["id"] not in {m["resource"]["id"] for m in changes if m["resource_type"] != "job"}


async def test_get_status_lists_a_running_job_and_cancel_job_ends_it(
    session: aiohttp.ClientSession,
) -> None:
    server = NodeToolServer(ping_interval=None, stats_interval=None, job_step_seconds=30)
    async with server, session.ws_connect(server.ws_url) as ws:
        await ws.send_str(json.dumps({"command": "run_job", "data": {"workflow_id": "w"}}))
        ack = (await recv_until(ws, lambda m: m.get("message") == "Job started"))[-1]
        await ws.send_str(json.dumps({"command": "get_status"}))
        status = (await recv_until(ws, lambda m: "active_jobs" in m))[-1]
        assert status["active_jobs"] == [
            {"job_id": ack["job_id"], "workflow_id": "w", "status": "running"}
        ]
        await ws.send_str(
            json.dumps({"command": "cancel_job", "data": {"job_id": ack["job_id"]}})
        )
        await recv_until(ws, lambda m: m.get("status") == "cancelled")
        assert server.get("job", ack["job_id"])["status"] == "cancelled"
        await ws.send_str(
            json.dumps({"command": "get_status", "data": {"job_id": ack["job_id"]}})
        )
        one = (await recv_until(ws, lambda m: "status" in m and "type" not in m))[-1]
        assert one["status"] == "cancelled"


async def test_chat_message_stores_the_message_in_a_new_thread(
    server: NodeToolServer, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(server.ws_url) as ws:
        await ws.send_str(json.dumps({"command": "chat_message", "data": {"content": "hi"}}))
        seen = await recv_until(ws, lambda m: "message_id" in m)
    types = [m["resource_type"] for m in seen if m.get("type") == "resource_change"]
    assert types == ["thread", "thread", "message", "message"]
    message = server.get("message", seen[-1]["message_id"])
    assert message["thread_id"] == seen[-1]["thread_id"]
    assert message["content"] == "hi"


async def test_periodic_ping_and_system_stats(session: aiohttp.ClientSession) -> None:
    server = NodeToolServer(ping_interval=0.05, stats_interval=0.02)
    async with server, session.ws_connect(server.ws_url) as ws:
        seen = await recv_until(ws, lambda m: m["type"] == "ping", limit=100)
    assert isinstance(seen[-1]["ts"], float)
    stats = [m for m in seen if m["type"] == "system_stats"]
    assert stats, seen
    assert isinstance(stats[0]["stats"], dict)
    assert "cpu_percent" in stats[0]["stats"]


async def test_broadcast_follows_each_mode_and_broadcast_raw_does_not(
    server: NodeToolServer, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(server.ws_url) as text, session.ws_connect(server.ws_url) as b:
        await text.send_str(json.dumps({"type": "ping"}))
        await recv(text)
        assert server.broadcast({"type": "notification", "content": "x"}) == 2
        assert await recv(text) == (WSMsgType.TEXT, {"type": "notification", "content": "x"})
        assert await recv(b) == (WSMsgType.BINARY, {"type": "notification", "content": "x"})
        server.broadcast_raw(b"\xc1")
        raw = await b.receive(timeout=5)
        assert (raw.type, raw.data) == (WSMsgType.BINARY, b"\xc1")
        raw = await text.receive(timeout=5)
        assert (raw.type, raw.data) == (WSMsgType.BINARY, b"\xc1")


async def test_a_client_too_far_behind_is_closed_with_1013(
    session: aiohttp.ClientSession,
) -> None:
    async with NodeToolServer(ping_interval=None, stats_interval=None, send_queue_size=3) as s:
        async with session.ws_connect(s.ws_url) as ws:
            # No await between the writes: the writer cannot drain, so the queue overflows.
            for _ in range(3):
                s.create("workspace", {"name": "n", "path": "/p"})
            closing = None
            for _ in range(10):
                msg = await ws.receive(timeout=5)
                if msg.type is WSMsgType.CLOSE:
                    closing = msg
                    break
        assert closing is not None
        assert closing.data == 1013
        assert s.counts["slow_clients_dropped"] == 1
        assert s.connections == 0
