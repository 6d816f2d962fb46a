"""Every code block of the README runs as written.

The Python blocks run one by one, each in a fresh interpreter in an empty folder, against
the embedded NodeTool server that this test starts (the README's ``127.0.0.1:7777`` is
pointed at it), which keeps changing a workflow while the block runs. A block that reads
a NATS bucket (``nats://127.0.0.1:4222``) gets a real nats-server, and a ``sync`` that
publishes the embedded server's data into it. A block fails the test when it raises,
exits non-zero, hangs, or does nothing observable (prints nothing). The shell blocks are
checked for the subcommands they name: each must exist (``querysync NAME --help``).
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _nats_server import NatsServer

import querysync
from querysync.server import NodeToolServer

README = Path(__file__).resolve().parent.parent / "README.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_README_ADDRESS = "127.0.0.1:7777"
_README_NATS = "nats://127.0.0.1:4222"


def _blocks(language: str) -> list[str]:
    return [body for lang, body in _FENCE.findall(README.read_text()) if lang == language]


def test_the_readme_has_python_and_shell_blocks() -> None:
    # Guards the extraction itself: a README whose fences stop matching must not pass
    # by running nothing.
    assert len(_blocks("python")) >= 3
    assert _blocks("bash")


@pytest.fixture
async def live_server() -> AsyncIterator[NodeToolServer]:
    async with NodeToolServer(ping_interval=None, stats_interval=None) as server:
        for n in range(3):
            server.create("workflow", {"name": f"readme {n}", "access": "private", "graph": {}})
        server.create("thread", {"title": "readme"})
        yield server


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
async def test_python_block_runs_as_written(
    index: int, live_server: NodeToolServer, tmp_path: Path
) -> None:
    code = _blocks("python")[index].replace(
        _README_ADDRESS, f"{live_server.host}:{live_server.port}"
    )
    nats: NatsServer | None = None
    publisher: querysync.Sync | None = None
    if _README_NATS in code:
        nats = NatsServer(tmp_path / "nats")
        nats.start()
        code = code.replace(_README_NATS, nats.url)
        publisher = await querysync.sync(
            live_server.ws_url, live_server.api_url, tmp_path / "published", share=nats.url
        )
        await publisher.settle(timeout=20)
    script = tmp_path / "block.py"
    script.write_text(code)
    # The server keeps changing while the block runs, as a live backend would.
    writer = asyncio.create_task(_keep_writing(live_server))
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            async with asyncio.timeout(40):
                out, err = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            pytest.fail(f"README python block {index} hung:\n{code}")
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        if publisher is not None:
            await publisher.stop()
        if nats is not None:
            nats.stop()
    assert proc.returncode == 0, f"block {index} failed:\n{code}\n--- stderr:\n{err.decode()}"
    assert out.strip(), f"block {index} printed nothing (does it do anything?):\n{code}"


async def _keep_writing(server: NodeToolServer) -> None:
    workflow = server.create("workflow", {"name": "busy", "access": "private", "graph": {}})
    n = 0
    while True:
        await asyncio.sleep(0.05)
        n += 1
        server.update("workflow", workflow["id"], {"name": f"busy {n}"})


def _subcommands() -> set[str]:
    named: set[str] = set()
    for block in _blocks("bash"):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line.startswith("querysync "):
                continue
            words = shlex.split(line)
            if len(words) > 1 and not words[1].startswith("-"):
                named.add(words[1])
    return named


def test_the_shell_blocks_name_subcommands() -> None:
    assert _subcommands(), "the README shows no querysync command"


@pytest.mark.parametrize("name", sorted(_subcommands()))
async def test_shell_block_subcommand_exists(name: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "querysync",
        name,
        "--help",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert name in out.decode()
