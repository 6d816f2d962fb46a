"""Helpers of the shared-cache tests: child processes (publishers, mirrors) and audits."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
from _support import mirrored_keys

from querysync import Agreement, NodeToolApi, Sync, audit, sync
from querysync.server import NodeToolServer
from querysync.sinks import CacheReader, QueryCache, ShareConfig
from querysync.streams import Backoff

FAST = Backoff(initial=0.02, factor=2.0, max_delay=0.1, jitter=0.0)


async def start_publisher(
    server: NodeToolServer, nats_url: str, directory: Path, *, lease: float = 1.0
) -> Sync:
    """sync(share=...) in this process into bucket "t", with fast retries and reconnects."""
    return await sync(
        server.ws_url,
        server.api_url,
        QueryCache(directory, retry_delay=0.05, retry_cap=0.2),
        window=0.05,
        source_options={"backoff": FAST},
        share=ShareConfig(nats_url, bucket="t", lease=lease),
    )


def describe(agreement: Agreement) -> str:
    return "; ".join(f"{list(d.key)}: {d.problem}" for d in agreement.disagreements[:10])


class Child:
    """A querysync command in a child process; its stderr lines are collected."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            self._changed.set()
        self._changed.set()

    async def wait_line(self, text: str, seconds: float = 15.0) -> None:
        """Return once a stderr line equals ``text`` (or starts with it)."""
        async with asyncio.timeout(seconds):
            while not any(line.startswith(text) for line in self.lines):
                if self.proc.returncode is not None and self._reader.done():
                    raise AssertionError(f"child exited {self.proc.returncode}: {self.lines}")
                self._changed.clear()
                await self._changed.wait()

    def has_line(self, text: str) -> bool:
        return any(line.startswith(text) for line in self.lines)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        self.kill(sig)
        try:
            async with asyncio.timeout(15):
                code = await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        await asyncio.wait({self._reader})
        return code


async def spawn(cwd: Path, *args: str) -> Child:
    """``python -m querysync ARGS`` in a child process (the installed package, not the checkout)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "querysync", *args,
        cwd=cwd, env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    return Child(proc)


async def spawn_publisher(
    cwd: Path, server: NodeToolServer, nats_url: str, cache: Path, *, lease: float = 1.0
) -> Child:
    return await spawn(
        cwd, "sync", "--ws", server.ws_url, "--api", server.api_url, "--cache", str(cache),
        "--window", "0.05", "--no-live", "--share", nats_url, "--bucket", "t",
        "--lease", str(lease),
    )


async def spawn_mirror(cwd: Path, nats_url: str, cache: Path) -> Child:
    return await spawn(cwd, "mirror", f"{nats_url}/t", "--cache", str(cache))


async def agreed(
    reader: CacheReader, server: NodeToolServer, seconds: float = 15.0
) -> Agreement:
    """Audit ``reader`` until it agrees with the server or time runs out; the last audit."""
    async with aiohttp.ClientSession() as session:
        api = NodeToolApi(server.api_url, session)
        last: Agreement | None = None
        try:
            async with asyncio.timeout(seconds):
                while True:
                    last = await audit(reader, api, expect=mirrored_keys(server.snapshot()))
                    if last.ok:
                        return last
                    await asyncio.sleep(0.2)
        except TimeoutError:
            assert last is not None
            return last


async def folder_agreed(
    directory: Path, server: NodeToolServer, seconds: float = 15.0
) -> Agreement:
    """Audit the folder another process keeps, reopening it until it agrees (or time is up)."""
    async with aiohttp.ClientSession() as session:
        api = NodeToolApi(server.api_url, session)
        last: Agreement | None = None
        try:
            async with asyncio.timeout(seconds):
                while True:
                    cache = await asyncio.to_thread(QueryCache, directory)
                    try:
                        last = await audit(cache, api, expect=mirrored_keys(server.snapshot()))
                    finally:
                        await cache.aclose()
                    if last.ok:
                        return last
                    await asyncio.sleep(0.3)
        except TimeoutError:
            assert last is not None
            return last


class Proxy:
    """A TCP relay on loopback to a port, that can be cut (every connection closed, new ones
    refused) and resumed: a network outage between one client and NATS, for real."""

    def __init__(self, target_port: int, port: int) -> None:
        self.target_port = target_port
        self.port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            dst.close()
