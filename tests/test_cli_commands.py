"""The ``querysync`` command: demo, serve, sync, inspect and tail, run as a user runs them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from _support import mirrored_keys, obj, until

from querysync import (
    LIST_KEYS,
    NodeToolApi,
    QueryKey,
    audit,
    sync,
)
from querysync.cli import main
from querysync.server import NodeToolServer, Workload
from querysync.sinks import CacheEntry, QueryCache

QUERYSYNC = Path(sys.executable).with_name("querysync")
# Wide enough that rich never wraps a key or an etag; unclosed resources show on stderr.
ENV = {**os.environ, "COLUMNS": "250", "PYTHONWARNINGS": "default::ResourceWarning"}
WORKFLOW: dict[str, Any] = {"name": "w", "access": "private", "graph": {"nodes": [], "edges": []}}
START = 20.0  # seconds a command may take to start on a busy machine
STOP = 15.0  # seconds it may take to stop after a signal


@dataclass
class Command:
    """A running ``querysync`` process whose stdout is read line by line."""

    proc: asyncio.subprocess.Process

    async def line(self, seconds: float = START) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(seconds):
            raw = await self.proc.stdout.readline()
        assert raw, "the command closed its stdout"
        return raw.decode()

    async def finish(self, seconds: float = STOP) -> tuple[int, str, str]:
        """Wait for the exit; (status, rest of stdout, stderr)."""
        async with asyncio.timeout(seconds):
            out, err = await self.proc.communicate()
        assert self.proc.returncode is not None
        return self.proc.returncode, out.decode(), err.decode()

    async def stop(self, sig: int, seconds: float = STOP) -> tuple[int, str, str]:
        self.proc.send_signal(sig)
        return await self.finish(seconds)


@contextlib.asynccontextmanager
async def command(*args: str) -> AsyncIterator[Command]:
    proc = await asyncio.create_subprocess_exec(
        str(QUERYSYNC),
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    try:
        yield Command(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()


def assert_clean(stderr: str) -> None:
    for sign in ("Traceback", "Unclosed", "ResourceWarning", "Task was destroyed", "never awaited"):
        assert sign not in stderr, stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def read_disk(directory: Path) -> dict[QueryKey, CacheEntry]:
    """What a fresh open of ``directory`` finds (blocking: run it in a thread)."""
    with QueryCache(directory) as cache:
        return {key: entry for key in cache if (entry := cache.get(key)) is not None}


# -- demo ------------------------------------------------------------------------------


def test_demo_agrees_and_exits_0() -> None:
    done = subprocess.run(
        [str(QUERYSYNC), "demo", "--seconds", "2", "--no-live", "--window", "0.05"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=45,  # a hang guard below pytest's 60 s, not a speed requirement
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"cache vs server\W+AGREE\b", done.stdout), done.stdout
    assert re.search(r"disagreements\W+0\b", done.stdout), done.stdout
    checked = re.search(r"checked against the server\W+([\d,]+)", done.stdout)
    assert checked is not None
    assert int(checked.group(1).replace(",", "")) > len(LIST_KEYS)
    assert_clean(done.stderr)


# -- serve -----------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_serve_answers_and_stops_cleanly_on(
    sig: signal.Signals, session: aiohttp.ClientSession
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with command("serve", "--port", str(port)) as cmd:
        assert base in await cmd.line()
        async with session.get(f"{base}/api/workflows/") as response:
            assert response.status == 200
            assert await response.json() == {"next": "", "workflows": []}
        async with session.ws_connect(f"ws://127.0.0.1:{port}/ws") as ws:
            async with session.post(f"{base}/api/workflows/", json=WORKFLOW) as response:
                assert response.status == 200
                created = await response.json()
            async with asyncio.timeout(5):
                frames = [msgpack.unpackb(await ws.receive_bytes()) for _ in range(2)]
            assert [f["event"] for f in frames] == ["updated", "created"]
            assert {f["resource"]["id"] for f in frames} == {created["id"]}
            async with session.get(f"{base}/api/workflows/{created['id']}") as response:
                assert await response.json() == created

            # Read while it stops, so that the close handshake is answered at once.
            receiving = asyncio.ensure_future(ws.receive())
            status, _, stderr = await cmd.stop(sig)
            async with asyncio.timeout(5):
                closing = await receiving
    # Ctrl-C reports the interruption as a shell does; SIGTERM is the clean stop asked for.
    assert status == (130 if sig == signal.SIGINT else 0), stderr
    assert closing.type is aiohttp.WSMsgType.CLOSE
    assert closing.data == 1001
    assert_clean(stderr)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with session.get(f"{base}/api/workflows/"):
            pass


# -- sync, then inspect ----------------------------------------------------------------


async def test_sync_mirrors_to_disk_stops_on_sigterm_and_inspect_lists_it(
    tmp_path: Path,
    session: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    directory = tmp_path / "cache"
    async with NodeToolServer(ping_interval=None, stats_interval=None) as server:
        api = server.api_url
        args = ("--ws", server.ws_url, "--api", api, "--cache", str(directory))
        async with command("sync", *args, "--no-live", "--window", "0.05") as cmd:
            async with asyncio.timeout(START):
                await server.wait_for_connections(1)
            async with session.post(f"{api}/api/workflows/", json=WORKFLOW) as response:
                kept = await response.json()
            async with session.post(f"{api}/api/workflows/", json=WORKFLOW) as response:
                gone = await response.json()
            renamed = {**WORKFLOW, "name": "renamed"}
            async with session.put(f"{api}/api/workflows/{kept['id']}", json=renamed) as response:
                kept = await response.json()
            async with session.delete(f"{api}/api/workflows/{gone['id']}") as response:
                assert response.status == 200

            on_disk: dict[QueryKey, CacheEntry] = {}

            def mirrored() -> bool:
                entry = on_disk.get(("workflow", kept["id"]))
                listed = on_disk.get(("workflows",))
                return (
                    entry is not None
                    and entry.etag == kept["etag"]
                    and ("workflow", gone["id"]) not in on_disk
                    and listed is not None
                    and [w["id"] for w in obj(listed.data)["workflows"]] == [kept["id"]]
                )

            async with asyncio.timeout(START):
                while not mirrored():
                    await asyncio.sleep(0.05)
                    on_disk = await asyncio.to_thread(read_disk, directory)
            status, _, stderr = await cmd.stop(signal.SIGTERM)
        assert status == 0, stderr
        assert_clean(stderr)

        # What the stopped command left on disk agrees with the server.
        with QueryCache(directory) as cache:
            agreement = await audit(
                cache, NodeToolApi(api, session), expect=mirrored_keys(server.snapshot())
            )
        assert agreement.ok, agreement.disagreements

    assert main(["inspect", str(directory), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_key = {tuple(row["key"]): row for row in rows}
    assert len(by_key) == len(rows) == agreement.checked
    assert by_key[("workflow", kept["id"])]["etag"] == kept["etag"]
    assert by_key[("workflow", kept["id"])]["stale"] is False
    assert ("workflow", gone["id"]) not in by_key
    assert set(LIST_KEYS) <= set(by_key)
    for row in rows:
        assert isinstance(row["stale"], bool)
        assert row["etag"] is None or isinstance(row["etag"], str)
        assert isinstance(row["age"], int | float)
        assert row["age"] >= 0

    monkeypatch.setenv("COLUMNS", ENV["COLUMNS"])
    assert main(["inspect", str(directory)]) == 0
    table = capsys.readouterr().out
    assert f"{len(rows)} entries" in table
    kept_row = next(line for line in table.splitlines() if kept["id"] in line)
    assert kept["etag"] in kept_row
    assert "fresh" in kept_row


async def test_sync_stopped_mid_workload_leaves_a_cache_the_next_sync_completes(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "cache"
    async with NodeToolServer(ping_interval=None, stats_interval=None) as server:
        args = ("--ws", server.ws_url, "--api", server.api_url, "--cache", str(directory))
        workload = Workload(server, seed=11)
        async with command("sync", *args, "--no-live", "--window", "0.05") as cmd:
            async with asyncio.timeout(START):
                await server.wait_for_connections(1)
            writing = asyncio.ensure_future(workload.run(seconds=5, rate=300, kind="mixed"))
            try:
                await until(lambda: server.counts["resource_changes"] >= 150, START)
                # Fetches are in flight and writes queued when the signal comes.
                status, _, stderr = await cmd.stop(signal.SIGTERM)
            finally:
                workload.stop()
                await asyncio.wait({writing})
        assert status == 0, stderr
        assert_clean(stderr)

        on_disk = await asyncio.to_thread(read_disk, directory)
        assert len(on_disk) > len(LIST_KEYS)
        running = await sync(server.ws_url, server.api_url, directory, window=0.05)
        try:
            async with asyncio.timeout(START):
                await server.wait_for_connections(1)
                await running.settle()
            assert running.cache.stats()["corrupt_rows"] == 0
            agreement = await audit(
                running.cache, running.api, expect=mirrored_keys(server.snapshot())
            )
        finally:
            await running.stop()
    assert agreement.ok, agreement.disagreements


async def test_sync_with_a_wrong_token_exits_2_without_retrying(tmp_path: Path) -> None:
    async with NodeToolServer(
        token="right-t0ken", ping_interval=None, stats_interval=None
    ) as server:
        args = ("--ws", server.ws_url, "--api", server.api_url, "--cache", str(tmp_path / "c"))
        async with command("sync", *args, "--token", "wrong-t0ken", "--no-live") as cmd:
            status, stdout, stderr = await cmd.finish(START)
        assert status == 2, stderr
        assert "querysync sync:" in stderr
        assert "Invalid authentication" in stderr
        assert server.counts["auth_rejected"] == 1
        assert "t0ken" not in stdout + stderr
        assert_clean(stderr)


# -- tail ------------------------------------------------------------------------------


@pytest.mark.parametrize("everything", [False, True], ids=["changes", "all"])
async def test_tail_prints_json_lines_and_stops_on_sigint(everything: bool) -> None:
    async with NodeToolServer(ping_interval=None, stats_interval=0.02) as server:
        flags = ["--all"] if everything else []
        async with command("tail", "--ws", server.ws_url, *flags) as cmd:
            async with asyncio.timeout(START):
                await server.wait_for_connections(1)
            # Stats go out before the change, on the same connection, so they would be
            # printed before it if tail let them through.
            sent = server.counts["frames_sent"]
            await until(lambda: server.counts["frames_sent"] >= sent + 3, START)
            created = server.create("workflow", WORKFLOW)
            lines: list[dict[str, Any]] = []
            while sum(1 for m in lines if m.get("type") == "resource_change") < 2:
                lines.append(json.loads(await cmd.line()))
            status, rest, stderr = await cmd.stop(signal.SIGINT)
    assert status == 130, stderr
    assert_clean(stderr)
    lines.extend(json.loads(line) for line in rest.splitlines())
    changes = [m for m in lines if m["type"] == "resource_change"]
    assert [(m["event"], m["resource_type"]) for m in changes] == [
        ("updated", "workflow"),
        ("created", "workflow"),
    ]
    assert all(m["resource"] == {"id": created["id"], "etag": created["etag"]} for m in changes)
    others = {m["type"] for m in lines} - {"resource_change"}
    if everything:
        assert "system_stats" in others
        assert lines[0]["type"] == "system_stats"
    else:
        assert others == set()


# -- bad input: one line on stderr, exit status 1 ------------------------------------------


def test_inspect_refuses_a_directory_without_a_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing"
    empty = tmp_path / "empty"
    empty.mkdir()
    for directory in (missing, empty):
        assert main(["inspect", str(directory)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("querysync inspect: ")
        assert str(directory) in err
    # Looking must not create what it looks at.
    assert not missing.exists()
    assert list(empty.iterdir()) == []


def test_a_websocket_url_that_is_not_one_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A usage error since the arguments are checked up front (see test_cli_input.py).
    assert main(["tail", "--ws", "not-a-url"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("querysync tail: ")
    assert "not-a-url" in err
    assert err.count("\n") == 1


def test_serve_on_a_port_in_use_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("querysync serve: ")
    assert str(port) in err
    assert err.count("\n") == 1


def test_sync_into_a_cache_that_cannot_be_made_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = str(blocker / "cache")
    ws, api = "ws://127.0.0.1:9/ws", "http://127.0.0.1:9"
    assert main(["sync", "--ws", ws, "--api", api, "--cache", target]) == 1
    err = capsys.readouterr().err
    assert err.startswith("querysync sync: ")
    assert target in err
    assert err.count("\n") == 1
