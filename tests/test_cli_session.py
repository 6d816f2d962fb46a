"""The commands as a user runs them, with --server, the environment and signals.

Guards: SIGINT ended sync with 0 (issue 12 item 11); the token could only be given as a
flag, which ps shows; --no-live printed nothing without -v; an authentication failure
was printed three times; tail recorded nothing replayable (issue 13 items 3 and 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from reactivex.notification import OnNext
from reactivex.testing import TestScheduler
from test_cli_commands import ENV, QUERYSYNC, START, WORKFLOW, Command, assert_clean, free_port

from querysync.server import NodeToolServer
from querysync.streams import from_jsonl


@contextlib.asynccontextmanager
async def command_with(env: dict[str, str], *args: str) -> AsyncIterator[Command]:
    proc = await asyncio.create_subprocess_exec(
        str(QUERYSYNC),
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        yield Command(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()


async def stderr_line(cmd: Command, seconds: float = START) -> str:
    assert cmd.proc.stderr is not None
    async with asyncio.timeout(seconds):
        raw = await cmd.proc.stderr.readline()
    assert raw, "the command closed its stderr"
    return raw.decode()


async def test_sync_from_the_environment_prints_counter_lines_and_exits_130_on_sigint(
    tmp_path: Path,
) -> None:
    async with NodeToolServer(token="env-t0ken", ping_interval=None, stats_interval=None) as s:
        env = {**ENV, "QUERYSYNC_SERVER": s.api_url, "QUERYSYNC_TOKEN": "env-t0ken"}
        argv = ("sync", "--cache", str(tmp_path / "c"), "--no-live", "--every", "0.2")
        async with command_with(env, *argv) as cmd:
            async with asyncio.timeout(START):
                await s.wait_for_connections(1)
            # Without -v: one line of counters every --every seconds, entries growing
            # as the lists come in over the REST URL derived from the server's.
            line = await stderr_line(cmd)
            while "entries 0," in line or "entries" not in line:
                line = await stderr_line(cmd)
            assert line.startswith("connected: frames ")
            status, _, stderr = await cmd.stop(signal.SIGINT)
    assert status == 130, stderr
    assert_clean(stderr)
    assert s.counts["auth_rejected"] == 0


async def test_an_authentication_failure_is_printed_once(tmp_path: Path) -> None:
    async with NodeToolServer(token="right-t0ken", ping_interval=None, stats_interval=None) as s:
        env = {**ENV, "QUERYSYNC_TOKEN": "wrong-t0ken"}
        argv = ("sync", "--server", s.api_url, "--cache", str(tmp_path / "c"), "--no-live")
        async with command_with(env, *argv) as cmd:
            status, stdout, stderr = await cmd.finish(START)
    assert status == 2, stderr
    assert stderr.count("Invalid authentication") == 1, stderr
    assert stderr.startswith("querysync sync: ")
    assert "t0ken" not in stdout + stderr


async def test_tail_records_a_file_that_from_jsonl_replays_at_its_pace(tmp_path: Path) -> None:
    record = tmp_path / "feed.jsonl"
    async with NodeToolServer(ping_interval=None, stats_interval=None) as s:
        env = {**ENV, "QUERYSYNC_SERVER": s.api_url}
        async with command_with(env, "tail", "--record", str(record)) as cmd:
            async with asyncio.timeout(START):
                await s.wait_for_connections(1)
            first = s.create("workflow", WORKFLOW)
            for _ in range(2):
                await cmd.line()
            await asyncio.sleep(0.5)
            second = s.create("workflow", WORKFLOW)
            for _ in range(2):
                await cmd.line()
            status, _, stderr = await cmd.stop(signal.SIGTERM)
    assert status == 0, stderr
    assert_clean(stderr)

    scheduler = TestScheduler()
    result = scheduler.start(lambda: from_jsonl(record, timing=True))
    frames: list[tuple[float, dict[str, Any]]] = [
        (m.time, m.value.value) for m in result.messages if isinstance(m.value, OnNext)
    ]
    ids = [f["resource"]["id"] for _, f in frames]
    assert ids == [first["id"], first["id"], second["id"], second["id"]]
    # Replayed at the recorded pace: the second pair comes at least the 0.5 s slept later
    # (virtual time: the subscription is at 200).
    assert frames[0][0] == 200.0
    assert frames[2][0] - frames[1][0] >= 0.5
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert all(set(line) == {"t", "frame"} for line in lines)


def test_the_demo_without_a_live_view_prints_its_progress_and_time_left() -> None:
    done = subprocess.run(
        [str(QUERYSYNC), "demo", "--seconds", "1.5", "--no-live", "--every", "0.3"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=45,  # a hang guard below pytest's 60 s, not a speed requirement
        check=False,
    )
    assert done.returncode == 0, done.stderr
    progress = re.findall(r"^workload ([\d.]+)/1\.5 s, ([\d.]+) s left; ", done.stderr, re.M)
    assert progress, done.stderr
    for elapsed, left in progress:
        assert float(elapsed) + float(left) == pytest.approx(1.5, abs=0.11)  # each rounded
    assert_clean(done.stderr)


async def test_serve_and_tail_take_the_token_from_the_environment() -> None:
    port = free_port()
    env = {**ENV, "QUERYSYNC_TOKEN": "env-t0ken", "QUERYSYNC_SERVER": f"http://127.0.0.1:{port}"}
    async with command_with(env, "serve", "--port", str(port)) as serve:
        assert f"127.0.0.1:{port}" in await serve.line()
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/api/workflows/") as response:
                assert response.status == 401  # serve requires the environment's token
            async with command_with(env, "tail") as tail:
                bearer = {"Authorization": "Bearer env-t0ken"}
                created: list[str] = []
                change: dict[str, Any] | None = None
                async with asyncio.timeout(START):
                    # tail connects in its own time: write until it shows a change.
                    while change is None:
                        async with session.post(
                            f"http://127.0.0.1:{port}/api/workflows/", json=WORKFLOW, headers=bearer
                        ) as response:
                            assert response.status == 200
                            created.append((await response.json())["id"])
                        with contextlib.suppress(TimeoutError):
                            change = json.loads(await tail.line(0.5))
                assert change["resource"]["id"] in created
                status, _, stderr = await tail.stop(signal.SIGTERM)
        assert status == 0, stderr
        assert_clean(stderr)
        await serve.stop(signal.SIGTERM)


async def test_sync_on_a_wrong_path_ends_with_a_clear_error() -> None:
    async with NodeToolServer(ping_interval=None, stats_interval=None) as s:
        argv = ("tail", "--ws", f"{s.api_url}/no-such-path")
        async with command_with(ENV, *argv) as cmd:
            status, _, stderr = await cmd.finish(START)
    assert status == 1, stderr
    lines = stderr.splitlines()
    # Each refused try is one warning; the last line says why it gave up.
    assert lines[-1].startswith("querysync tail: ")
    assert "HTTP 404" in lines[-1]
    assert "is the URL right?" in lines[-1]
    assert_clean(stderr)
