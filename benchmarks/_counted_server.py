"""The embedded NodeTool server in a process of its own, counting the GETs it answers.

``with CountedServer(workflows=1000) as s:`` spawns a process that holds ``workflows``
pre-created workflows (ids ``wf-00000``...), serves them on loopback and takes
commands over a pipe: :meth:`CountedServer.write` makes a scheduled series of workflow
updates there and returns when each was made; :meth:`CountedServer.take_counts`
returns (and resets) the GETs and body bytes it answered per route. Counting is a
middleware the benchmark adds to its own subclass: the server package is unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

from aiohttp import web

from querysync.server import NodeToolServer

__all__ = ["CountedServer", "Counts", "Write", "workflow_id"]

_START_TIMEOUT = 120.0
_WRITES_PER_YIELD = 64

Write = tuple[float, int, int]
"""One update made: (``time.monotonic()`` when made, workflow index, revision)."""


def workflow_id(index: int) -> str:
    """The id of the ``index``-th pre-created workflow."""
    return f"wf-{index:05d}"


@dataclass(frozen=True)
class Counts:
    """GETs and response body bytes per route (``/api/workflows/{id}``...)."""

    gets: dict[str, int]
    bytes: dict[str, int]


class _Counting(NodeToolServer):
    def __init__(self) -> None:
        super().__init__(ping_interval=None, stats_interval=None)
        self.gets: Counter[str] = Counter()
        self.body_bytes: Counter[str] = Counter()

    def make_app(self) -> web.Application:
        app = super().make_app()

        @web.middleware
        async def count(request: web.Request, handler: Any) -> web.StreamResponse:
            response: web.StreamResponse = await handler(request)
            if request.method == "GET" and request.path.startswith("/api/"):
                resource = request.match_info.route.resource
                route = resource.canonical if resource is not None else request.path
                self.gets[route] += 1
                body = response.body if isinstance(response, web.Response) else None
                self.body_bytes[route] += len(body) if isinstance(body, bytes) else 0
            return response

        # Outermost, so it sees the response the client gets (errors included).
        app.middlewares.insert(0, count)
        return app


async def _write(
    server: _Counting, schedule: Sequence[tuple[float, int]], serial: list[int]
) -> list[Write]:
    start = time.monotonic() + 0.05
    made: list[Write] = []
    for n, (offset, index) in enumerate(schedule):
        delay = start + offset - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif n % _WRITES_PER_YIELD == _WRITES_PER_YIELD - 1:
            await asyncio.sleep(0)  # behind schedule: back to back, but let the server answer
        serial[0] += 1
        at = time.monotonic()
        server.update("workflow", workflow_id(index), {"description": f"revision {serial[0]}"})
        made.append((at, index, serial[0]))
    return made


async def _serve(workflows: int, conn: Connection) -> None:
    server = _Counting()
    for i in range(workflows):
        server.create(
            "workflow",
            {"name": f"Workflow {i}", "access": "private", "graph": {"nodes": [], "edges": []}},
            id=workflow_id(i),
        )
    await server.start()
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[Any] = asyncio.Queue()

    def readable() -> None:
        try:
            commands.put_nowait(conn.recv())
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            commands.put_nowait(("stop",))

    loop.add_reader(conn.fileno(), readable)
    conn.send(server.port)
    serial = [0]
    try:
        while True:
            command = await commands.get()
            if command[0] == "stop":
                break
            if command[0] == "counts":
                conn.send(Counts(dict(server.gets), dict(server.body_bytes)))
                server.gets.clear()
                server.body_bytes.clear()
            elif command[0] == "write":
                conn.send(await _write(server, command[1], serial))
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(conn.fileno())
        await server.stop()


def _main(workflows: int, conn: Connection) -> None:
    asyncio.run(_serve(workflows, conn))


class CountedServer:
    """The counting server process; ``api_url``/``ws_url`` once entered."""

    def __init__(self, workflows: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_main, args=(workflows, child), name="querysync-bench-server", daemon=True
        )
        self._child = child
        self.port = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def write(self, schedule: Sequence[tuple[float, int]]) -> list[Write]:
        """Update workflow ``index`` at ``offset`` seconds from now, for each pair; blocks."""
        self._conn.send(("write", list(schedule)))
        made: list[Write] = self._conn.recv()
        return made

    def take_counts(self) -> Counts:
        """What the server answered since the last call."""
        self._conn.send(("counts",))
        counts: Counts = self._conn.recv()
        return counts

    def __enter__(self) -> CountedServer:
        self._process.start()
        self._child.close()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._conn.poll(0.1):
            if not self._process.is_alive() or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError("the benchmark server did not start")
        self.port = int(self._conn.recv())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(("stop",))
        self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
        self._conn.close()
