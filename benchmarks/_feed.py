"""A loopback WebSocket server, in its own process, that pushes pre-encoded resource_change frames.

The frames (MessagePack or JSON) are built and framed as raw WebSocket frames before the
server listens; on a connection it writes them straight to the socket in large chunks
(or paced at a given rate), then closes with 1000. So the sender costs almost nothing
and runs on the other core: what is measured is the receiving side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import random
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, Literal

import msgpack
from aiohttp import web

__all__ = ["Feed", "FeedServer", "feed_messages", "resource_ids"]

Encoding = Literal["msgpack", "json"]

TYPES = ("workflow", "job", "asset", "thread", "workspace")
"""Resource types the feed mixes: each has detail keys in ``nodetool_registry``."""

_CHUNK_BYTES = 1 << 20
_HIGH_WATER = 4 << 20  # bytes buffered in the kernel and transport before we wait
_START_TIMEOUT = 60.0


@dataclass(frozen=True)
class Feed:
    """What the server sends on one connection.

    ``count`` messages; ids drawn at random (``seed``) from ``resources`` resources, or,
    with ``resources=None``, every message a resource of its own. ``rate`` is messages
    per second (None: as fast as the socket takes them).
    """

    encoding: Encoding
    count: int
    resources: int | None = 1_000
    rate: float | None = None
    seed: int = 0


def resource_ids(index: int) -> tuple[str, str]:
    """The ``(resource_type, id)`` of resource number ``index``."""
    resource_type = TYPES[index % len(TYPES)]
    return resource_type, f"{resource_type}-{index:07d}"


def feed_messages(feed: Feed) -> list[dict[str, Any]]:
    """The messages of ``feed``, in sending order."""
    rng = random.Random(feed.seed)
    out = []
    for n in range(feed.count):
        index = n if feed.resources is None else rng.randrange(feed.resources)
        resource_type, rid = resource_ids(index)
        out.append(
            {
                "type": "resource_change",
                "event": "updated",
                "resource_type": resource_type,
                "resource": {"id": rid, "etag": f"{n:032x}"},
            }
        )
    return out


def _frame(payload: bytes, opcode: int) -> bytes:
    # Server-to-client frames are never masked (RFC 6455 5.1): FIN, opcode, length, data.
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return header + payload


def _encode(feed: Feed) -> list[bytes]:
    frames = []
    for message in feed_messages(feed):
        if feed.encoding == "msgpack":
            frames.append(_frame(msgpack.packb(message, use_bin_type=True), 0x2))
        else:
            frames.append(_frame(json.dumps(message).encode(), 0x1))
    return frames


async def _write_all(transport: asyncio.Transport, frames: list[bytes]) -> None:
    blob = b"".join(frames)
    for start in range(0, len(blob), _CHUNK_BYTES):
        transport.write(blob[start : start + _CHUNK_BYTES])
        while transport.get_write_buffer_size() > _HIGH_WATER:
            if transport.is_closing():
                return
            await asyncio.sleep(0.0005)


async def _write_paced(transport: asyncio.Transport, frames: list[bytes], rate: float) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    while sent < len(frames) and not transport.is_closing():
        due = min(len(frames), int((loop.time() - start) * rate) + 1)
        if due > sent:
            transport.write(b"".join(frames[sent:due]))
            sent = due
        await asyncio.sleep(0.0005)


async def _serve(feeds: Mapping[str, Feed], conn: Connection) -> None:
    encoded = {name: _encode(feed) for name, feed in feeds.items()}

    async def handle(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in encoded:
            raise web.HTTPNotFound()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        transport = request.transport
        assert transport is not None
        # Raw frames go to the socket beside aiohttp's writer, which sends nothing
        # until the close below; the order on the wire is the order of the writes.
        feed = feeds[name]
        if feed.rate is None:
            await _write_all(transport, encoded[name])
        else:
            await _write_paced(transport, encoded[name], feed.rate)
        await ws.close(code=1000)
        return ws

    app = web.Application()
    app.router.add_get("/{name}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(conn.fileno(), stop.set)
    conn.send(port)
    try:
        await stop.wait()
    finally:
        loop.remove_reader(conn.fileno())
        await runner.cleanup()


def _main(feeds: dict[str, Feed], conn: Connection) -> None:
    asyncio.run(_serve(feeds, conn))


class FeedServer:
    """The feed server process: ``with FeedServer({"name": Feed(...)}) as s: s.url("name")``."""

    def __init__(self, feeds: Mapping[str, Feed]) -> None:
        self._feeds = dict(feeds)
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_main, args=(self._feeds, child), name="querysync-bench-feed", daemon=True
        )
        self._child = child
        self.port = 0

    def url(self, name: str) -> str:
        """The ws:// URL of the feed called ``name``."""
        return f"ws://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> FeedServer:
        self._process.start()
        self._child.close()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._conn.poll(0.1):
            if not self._process.is_alive() or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError("the feed server did not start")
        try:
            self.port = int(self._conn.recv())
        except EOFError:
            self.__exit__(None, None, None)
            raise RuntimeError("the feed server exited before it listened") from None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(OSError):
            self._conn.send("stop")
        self._process.join(5)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
        self._conn.close()
