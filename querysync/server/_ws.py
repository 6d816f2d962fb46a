"""The /ws endpoint: connections, their framing mode, their send queues and commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

import msgpack
from aiohttp import WSMessage, WSMsgType, web

from querysync.operators._decode import decode_frame

from ._auth import EXPIRED, Credentials, ws_auth_failure, ws_token

__all__ = ["Connection", "Hub", "RawFrame", "WsEndpoint"]

log = logging.getLogger("querysync.server")

Mode = Literal["binary", "text"]
CommandHandler = Callable[["Connection", str, dict[str, Any]], dict[str, Any] | None]

# 1008 is what the live server closes a refused client with; 1013 ("try again later")
# tells a client that fell too far behind to reconnect, and a reconnecting client resyncs.
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013


@dataclass(frozen=True, slots=True)
class RawFrame:
    """Bytes or text sent as they are, whatever the connection's mode (for tests of bad input)."""

    data: str | bytes


class Connection:
    """One /ws client: its framing mode and a bounded queue drained by a writer task.

    Broadcasting only puts a message in the queue, so a slow client never holds up the
    others. When a client's queue is full it has fallen ``queue_size`` messages behind:
    it is closed with 1013 rather than silently skipped, because a skipped
    ``resource_change`` would leave its cache wrong with no way to notice, while a
    reconnecting client resyncs. Messages are encoded when written, in the mode the
    connection is in at that moment.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        *,
        counts: Counter[str],
        queue_size: int,
        close_timeout: float,
    ) -> None:
        self.ws = ws
        self.mode: Mode = "binary"
        self._request = request
        self._counts = counts
        self._queue: asyncio.Queue[dict[str, Any] | RawFrame] = asyncio.Queue(queue_size)
        self._close_timeout = close_timeout
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._closer: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        self._close_request: asyncio.Future[tuple[int, str]] = loop.create_future()
        self._finished = asyncio.Event()

    @property
    def open(self) -> bool:
        """True until the connection is closed, dropped or found too slow."""
        return not self._closing and not self.ws.closed

    def send(self, message: dict[str, Any] | RawFrame) -> bool:
        """Queue a message; False when the connection is closing or was just found too slow."""
        if not self.open:
            return False
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self._closing = True
            self._counts["slow_clients_dropped"] += 1
            log.warning(
                "closing a /ws client %d messages behind (code %d)",
                self._queue.qsize(),
                TRY_AGAIN_LATER,
            )
            self._closer = asyncio.get_running_loop().create_task(
                self.close(TRY_AGAIN_LATER, "Send queue full")
            )
            return False
        return True

    def start(self, *coroutines: Coroutine[Any, Any, None]) -> None:
        """Run the writer and the given per-connection coroutines until the connection ends."""
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._write()))
        self._tasks.extend(loop.create_task(c) for c in coroutines)

    def stop_tasks(self) -> None:
        """Cancel the writer and the periodic tasks; queued messages are dropped."""
        for task in self._tasks:
            task.cancel()

    async def receive(self) -> WSMessage | None:
        """The client's next frame, or None once :meth:`close` has been asked for."""
        if self._close_request.done():
            return None
        receiving = asyncio.ensure_future(self.ws.receive())
        try:
            either: set[asyncio.Future[Any]] = {receiving, self._close_request}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not receiving.done():
                # Cancelling a pending receive() consumes nothing from the stream.
                receiving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await receiving
        if receiving.cancelled():
            return None
        return receiving.result()

    async def close(self, code: int, reason: str) -> None:
        """Close with a code and reason; returns once the connection's handler is done.

        The handler itself sends the close frame and waits (``close_timeout`` seconds)
        for the client's answer: aiohttp closing from another task while the handler
        reads would cut the TCP connection right after the close frame, and the client
        would see 1006 instead of ``code``.
        """
        self._closing = True
        self.stop_tasks()
        if not self._close_request.done():
            self._close_request.set_result((code, reason))
        try:
            await asyncio.wait_for(self._finished.wait(), self._close_timeout + 1.0)
        except TimeoutError:
            self.abort()

    async def finish_close(self) -> None:
        """In the handler: send the close that :meth:`close` asked for, and wait for the answer."""
        code, reason = self._close_request.result()
        if self.ws.closed:
            return
        try:
            await asyncio.wait_for(
                self.ws.close(code=code, message=reason.encode()), self._close_timeout
            )
        except (TimeoutError, OSError):
            # A client that does not answer the close frame in time is cut off.
            self.abort()

    def finished(self) -> None:
        """In the handler, last: the connection is over."""
        self._closing = True
        self.stop_tasks()
        self._finished.set()

    def abort(self) -> None:
        """Cut the TCP connection without a close frame, as a crash or a network failure would."""
        self._closing = True
        self.stop_tasks()
        transport = self._request.transport
        if transport is not None:
            transport.abort()

    async def _write(self) -> None:
        while True:
            message = await self._queue.get()
            try:
                if isinstance(message, RawFrame):
                    frame = message.data
                else:
                    frame = encode(message, self.mode)
            except (TypeError, ValueError, OverflowError) as exc:
                self._counts["unencodable_messages"] += 1
                log.error("dropped a message that cannot be encoded: %s", exc)
                continue
            try:
                if isinstance(frame, bytes):
                    await self.ws.send_bytes(frame)
                    self._counts["binary_frames_sent"] += 1
                else:
                    await self.ws.send_str(frame)
                    self._counts["text_frames_sent"] += 1
            except (ConnectionError, RuntimeError) as exc:
                log.debug("stopped writing to a /ws client: %s", exc)
                self._closing = True
                return
            self._counts["frames_sent"] += 1


def encode(message: dict[str, Any], mode: Mode) -> str | bytes:
    """One frame for ``message``: MessagePack bytes in binary mode, JSON text in text mode."""
    if mode == "text":
        return json.dumps(message)
    packed: bytes = msgpack.packb(message, use_bin_type=True)
    return packed


class Hub:
    """The open /ws connections, and messages to all of them."""

    def __init__(self) -> None:
        self.connections: set[Connection] = set()
        self._changed = asyncio.Event()

    def add(self, connection: Connection) -> None:
        """Register a connection: from now on it receives every broadcast."""
        self.connections.add(connection)
        self._notify()

    def remove(self, connection: Connection) -> None:
        """Forget a connection (no-op if already gone)."""
        self.connections.discard(connection)
        self._notify()

    def broadcast(self, message: dict[str, Any] | RawFrame) -> int:
        """Queue ``message`` on every open connection; returns how many took it."""
        return sum(1 for c in list(self.connections) if c.send(message))

    @property
    def open_count(self) -> int:
        """How many connections are open now."""
        return sum(1 for c in self.connections if c.open)

    async def wait_for(self, count: int) -> None:
        """Return once at least ``count`` connections are open."""
        while self.open_count < count:
            changed = self._changed
            await changed.wait()

    def _notify(self) -> None:
        # Waiters hold the old event; a fresh one is ready for the next change.
        self._changed.set()
        self._changed = asyncio.Event()


def _system_stats() -> dict[str, Any]:
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    cpu = min(100.0, 100.0 * load / (os.cpu_count() or 1))
    total = used = 0.0
    with contextlib.suppress(ValueError, OSError, AttributeError):
        page = os.sysconf("SC_PAGE_SIZE")
        total = os.sysconf("SC_PHYS_PAGES") * page / 2**30
        used = total - os.sysconf("SC_AVPHYS_PAGES") * page / 2**30
    return {
        "cpu_percent": round(cpu, 1),
        "memory_total_gb": round(total, 2),
        "memory_used_gb": round(used, 2),
        "memory_percent": round(100.0 * used / total, 1) if total else 0.0,
        "vram_total_gb": None,
        "vram_used_gb": None,
        "vram_percent": None,
    }


def _invalid(detail: str) -> dict[str, Any]:
    return {"error": "invalid_message", "detail": detail}


class WsEndpoint:
    """The ``/ws`` request handler: auth, framing modes, pings, stats and command dispatch."""

    def __init__(
        self,
        *,
        hub: Hub,
        commands: CommandHandler,
        counts: Counter[str],
        token: str | Credentials | None,
        ping_interval: float | None,
        stats_interval: float | None,
        queue_size: int,
        close_timeout: float,
        max_msg_size: int,
    ) -> None:
        self._hub = hub
        self._commands = commands
        self._counts = counts
        self._token = token
        self._ping_interval = ping_interval
        self._stats_interval = stats_interval
        self._queue_size = queue_size
        self._close_timeout = close_timeout
        self._max_msg_size = max_msg_size
        self._expiring: set[asyncio.Task[None]] = set()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """Serve one WebSocket until either side closes it."""
        ws = web.WebSocketResponse(max_msg_size=self._max_msg_size, timeout=self._close_timeout)
        failure = ws_auth_failure(request, self._token)
        if failure is not None:
            # The live server accepts, then closes: the client sees a close code, not a 403.
            self._counts["auth_rejected"] += 1
            log.info("refused a /ws client: %s", failure)
            await ws.prepare(request)
            await ws.close(code=POLICY_VIOLATION, message=failure.encode())
            return ws
        conn = Connection(
            ws,
            request,
            counts=self._counts,
            queue_size=self._queue_size,
            close_timeout=self._close_timeout,
        )
        # Registered before the handshake completes, so a change made right after the
        # client's connect() returns already reaches it.
        self._hub.add(conn)
        self._counts["connections"] += 1
        try:
            await ws.prepare(request)
            periodic = []
            if self._ping_interval is not None:
                periodic.append(self._every(conn, self._ping_interval, self._ping))
            if self._stats_interval is not None:
                periodic.append(self._every(conn, self._stats_interval, self._stats))
            if isinstance(self._token, Credentials):
                left = self._token.expires_in(ws_token(request))
                if left is not None:
                    periodic.append(self._expire(conn, left))
            conn.start(*periodic)
            while True:
                msg = await conn.receive()
                if msg is None:
                    await conn.finish_close()
                    break
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                self._counts["frames_received"] += 1
                # The frame's kind picks the mode before the answer is written.
                conn.mode = "text" if msg.type is WSMsgType.TEXT else "binary"
                reply = self._respond(conn, msg)
                if reply is not None:
                    conn.send(reply)
        finally:
            self._hub.remove(conn)
            conn.finished()
        return ws

    def _respond(self, conn: Connection, msg: Any) -> dict[str, Any] | None:
        try:
            frame = decode_frame(msg.data)
        except ValueError as exc:
            self._counts["invalid_messages"] += 1
            return _invalid(str(exc))
        if frame.get("type") == "ping":
            return {"type": "pong", "ts": time.time()}
        command = frame.get("command")
        if not isinstance(command, str) or not command:
            self._counts["invalid_messages"] += 1
            return _invalid("a message needs a 'command' (or is {'type': 'ping'})")
        data = frame.get("data", {})
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self._counts["invalid_messages"] += 1
            return _invalid("'data' must be an object")
        self._counts["commands"] += 1
        try:
            return self._commands(conn, command, data)
        except Exception as exc:
            # A command that fails answers with an error; the connection goes on.
            log.exception("command %r failed", command)
            return {"error": "command_failed", "command": command, "detail": str(exc)}

    async def _every(
        self, conn: Connection, interval: float, message: Callable[[], dict[str, Any]]
    ) -> None:
        while conn.open:
            await asyncio.sleep(interval)
            conn.send(message())

    async def _expire(self, conn: Connection, seconds: float) -> None:
        # A server that checks tokens for the life of a connection closes it when its
        # token expires, as it would have refused it then: the client must come back
        # with a new one.
        await asyncio.sleep(max(seconds, 0.0))
        self._counts["tokens_expired"] += 1
        # Not awaited here: close() cancels this connection's tasks, this one included.
        closing = asyncio.get_running_loop().create_task(conn.close(POLICY_VIOLATION, EXPIRED))
        self._expiring.add(closing)
        closing.add_done_callback(self._expiring.discard)

    @staticmethod
    def _ping() -> dict[str, Any]:
        return {"type": "ping", "ts": time.time()}

    @staticmethod
    def _stats() -> dict[str, Any]:
        return {"type": "system_stats", "stats": _system_stats()}
