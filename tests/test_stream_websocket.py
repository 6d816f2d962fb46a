"""querysync.streams.websocket against real aiohttp servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from aiohttp import web

from querysync import AuthenticationError, ConfigurationError, Rejected, Resync, SourceError
from querysync.sinks._jsonl import to_jsonl
from querysync.streams import Backoff, ConnectionState, WebSocketSource, from_jsonl, websocket

Script = Callable[[web.Request, int], Awaitable[web.StreamResponse]]
Serve = Callable[[Script], Awaitable["Server"]]

FAST = Backoff(initial=0.01, factor=2.0, max_delay=0.05, jitter=0.0)


def packed(message: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb(message, use_bin_type=True)
    return data


@dataclass
class Server:
    """A real aiohttp app on 127.0.0.1 whose /ws handler runs ``script`` per connection."""

    script: Script
    port: int = 0
    requests: list[web.Request] = field(default_factory=list)
    close_codes: list[int | None] = field(default_factory=list)
    sockets: set[web.WebSocketResponse] = field(default_factory=set)
    runner: web.AppRunner | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self._handle)
        app.on_shutdown.append(self._shutdown)
        self.runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _shutdown(self, app: web.Application) -> None:
        for ws in list(self.sockets):
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server restart")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        self.changed.set()
        return await self.script(request, len(self.requests))

    async def accept(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.add(ws)
        return ws

    async def hold(self, ws: web.WebSocketResponse) -> web.WebSocketResponse:
        """Stay silent until the client closes; record the client's close code."""
        async for _ in ws:
            pass
        self.sockets.discard(ws)
        self.close_codes.append(ws.close_code)
        self.changed.set()
        return ws

    async def until(self, predicate: Callable[[], bool], seconds: float = 5.0) -> None:
        async with asyncio.timeout(seconds):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


class Collector:
    """An observer that records everything and lets a test await a condition."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.error: Exception | None = None
        self.completed = False
        self._changed = asyncio.Event()

    def on_next(self, value: Any) -> None:
        self.items.append(value)
        self._changed.set()

    def on_error(self, error: Exception) -> None:
        self.error = error
        self._changed.set()

    def on_completed(self) -> None:
        self.completed = True
        self._changed.set()

    @property
    def ended(self) -> bool:
        return self.completed or self.error is not None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [item for item in self.items if not isinstance(item, Resync)]

    async def until(self, predicate: Callable[[Collector], bool], seconds: float = 5.0) -> None:
        async with asyncio.timeout(seconds):
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

    async def count(self, n: int) -> None:
        await self.until(lambda c: len(c.messages) >= n)


async def serve(script: Script) -> Server:
    server = Server(script)
    await server.start()
    return server


@pytest.fixture
async def servers() -> AsyncIterator[Serve]:
    started: list[Server] = []

    async def make(script: Script) -> Server:
        server = await serve(script)
        started.append(server)
        return server

    yield make
    for server in started:
        await server.stop()


def types(items: list[Any]) -> list[str]:
    return ["RESYNC" if isinstance(i, Resync) else str(i.get("type")) for i in items]


async def watch(source: WebSocketSource) -> tuple[Collector, Any]:
    collector = Collector()
    subscription = source.subscribe(collector.on_next, collector.on_error, collector.on_completed)
    return collector, subscription


# -- frames -----------------------------------------------------------------------------


async def test_binary_and_text_frames_are_both_decoded(servers: Serve) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        await ws.send_bytes(packed({"type": "a", "n": 1}))
        await ws.send_str(json.dumps({"type": "b", "n": 2}))
        return await server.hold(ws)

    server = await servers(script)
    source = websocket(server.url, backoff=FAST)
    seen, _ = await watch(source)
    await seen.count(2)
    assert seen.items == [{"type": "a", "n": 1}, {"type": "b", "n": 2}]
    counts = source.counts
    assert (counts["binary"], counts["text"]) == (1, 1)
    assert (counts["frames"], counts["messages"]) == (2, 2)
    sizes = len(packed({"type": "a", "n": 1})) + len(json.dumps({"type": "b", "n": 2}).encode())
    assert counts["bytes"] == sizes
    await source.close()


async def test_bad_frames_are_rejected_and_their_neighbours_delivered(servers: Serve) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        await ws.send_bytes(packed({"type": "a"}))
        await ws.send_bytes(b"\xc1")  # a byte MessagePack never uses
        await ws.send_str("not json")
        await ws.send_str("[1, 2]")
        await ws.send_frame(b"\xff\xfe{}", aiohttp.WSMsgType.TEXT)  # not UTF-8
        await ws.send_bytes(packed({"type": "b"}))
        await ws.send_bytes(packed([1, 2]))  # type: ignore[arg-type]
        await ws.send_str(json.dumps({"type": "c"}))
        return await server.hold(ws)

    server = await servers(script)
    rejected: list[Rejected] = []
    source = websocket(server.url, backoff=FAST, on_reject=rejected.append)
    seen, _ = await watch(source)
    await seen.count(3)
    assert seen.items == [{"type": "a"}, {"type": "b"}, {"type": "c"}]
    assert len(rejected) == 5
    assert source.counts["rejected"] == 5
    assert all(r.stage == "websocket" for r in rejected)
    assert "UTF-8" in rejected[3].reason
    assert len(server.requests) == 1
    await source.close()


async def test_oversize_frame_is_rejected_and_the_connection_goes_on(servers: Serve) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        await ws.send_bytes(packed({"type": "a"}))
        await ws.send_bytes(packed({"type": "big", "pad": "x" * 2000}))
        await ws.send_str(json.dumps({"type": "big", "pad": "y" * 2000}))
        await ws.send_bytes(packed({"type": "b"}))
        return await server.hold(ws)

    server = await servers(script)
    rejected: list[Rejected] = []
    source = websocket(server.url, max_msg_size=1024, backoff=FAST, on_reject=rejected.append)
    seen, _ = await watch(source)
    await seen.count(2)
    assert seen.items == [{"type": "a"}, {"type": "b"}]
    assert source.counts["oversize"] == 2
    assert ["exceeds max_msg_size 1024" in r.reason for r in rejected] == [True, True]
    assert len(rejected[0].frame) <= 256  # type: ignore[arg-type]
    assert len(server.requests) == 1
    assert source.counts["connections"] == 1
    await source.close()


async def test_frame_over_the_hard_limit_costs_the_connection_then_reconnects(
    servers: Serve,
) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        if n == 1:
            await ws.send_bytes(packed({"type": "a"}))
            with contextlib.suppress(ConnectionError):  # the client hangs up first
                await ws.send_bytes(b"\x00" * (16 * 1024 * 1024 + 1))
            return ws
        else:
            await ws.send_bytes(packed({"type": "b"}))
        return await server.hold(ws)

    server = await servers(script)
    source = websocket(server.url, max_msg_size=1024, backoff=FAST)
    seen, _ = await watch(source)
    await seen.count(2)
    assert types(seen.items) == ["a", "RESYNC", "b"]
    assert source.counts["oversize_dropped"] == 1
    assert source.counts["oversize"] == 0
    await source.close()


# -- reconnection -------------------------------------------------------------------------


async def test_abnormal_drop_reconnects_with_resync_before_new_messages(servers: Serve) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        if n == 1:
            await ws.send_bytes(packed({"type": "a"}))
            await ws.send_bytes(packed({"type": "b"}))
            assert request.transport is not None
            request.transport.close()  # no close frame: an abnormal drop
            return ws
        await ws.send_bytes(packed({"type": "c"}))
        await ws.send_str(json.dumps({"type": "d"}))
        return await server.hold(ws)

    server = await servers(script)
    source = websocket(server.url, backoff=FAST)
    seen, _ = await watch(source)
    await seen.count(4)
    assert types(seen.items) == ["a", "b", "RESYNC", "c", "d"]
    resync = seen.items[2]
    assert resync.attempt == 1
    assert "connection lost" in resync.reason
    assert (source.counts["reconnects"], source.counts["resyncs"]) == (1, 1)
    await source.close()


async def test_server_restart_on_the_same_port(servers: Serve) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        await ws.send_bytes(packed({"type": f"m{n}"}))
        return await server.hold(ws)

    server = await servers(script)
    source = websocket(server.url, backoff=FAST)
    seen, _ = await watch(source)
    await seen.count(1)
    await server.stop()
    await server.start()  # same port: the server object keeps it
    await seen.count(2)
    assert types(seen.items) == ["m1", "RESYNC", "m2"]
    assert "1001" in seen.items[1].reason
    await source.close()


@dataclass(frozen=True)
class RecordingBackoff(Backoff):
    asked: list[int] = field(default_factory=list)

    def delay(self, attempt: int) -> float:
        self.asked.append(attempt)
        return super().delay(attempt)


async def test_backoff_grows_is_capped_and_max_attempts_gives_up(servers: Serve) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=503, text="busy")

    server = await servers(script)
    backoff = RecordingBackoff(initial=0.01, factor=2.0, max_delay=0.04, jitter=0.0)
    source = websocket(server.url, backoff=backoff, max_attempts=5)
    states: list[ConnectionState] = []
    source.states.subscribe(states.append)
    seen, _ = await watch(source)
    await seen.until(lambda c: c.ended)
    assert isinstance(seen.error, SourceError)
    assert not isinstance(seen.error, aiohttp.ClientError)
    assert "5 failed connection attempt" in str(seen.error)
    assert "503" in str(seen.error)
    assert len(server.requests) == 5
    assert backoff.asked == [1, 2, 3, 4]
    assert [backoff.base_delay(n) for n in backoff.asked] == [0.01, 0.02, 0.04, 0.04]
    assert states == ["closed", "connecting", "reconnecting", "failed"]
    assert source.state is ConnectionState.FAILED


@pytest.mark.parametrize("code", [None, 1001, 1011], ids=["cut", "1001", "1011"])
async def test_short_connections_back_off_like_failures(servers: Serve, code: int | None) -> None:
    # Issue 12.10: a server that ends every connection right after one frame used to
    # reset the backoff each time (every delay was the first one), so a client came
    # back, and resynced in full, about once a second for ever.
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        await ws.send_bytes(packed({"type": f"m{n}"}))
        if code is None:
            assert request.transport is not None
            request.transport.close()
        else:
            await ws.close(code=code, message=b"bye")
        return ws

    server = await servers(script)
    backoff = RecordingBackoff(initial=0.01, factor=2.0, max_delay=0.05, jitter=0.0)
    source = websocket(server.url, backoff=backoff, healthy_after=30.0)
    seen, _ = await watch(source)
    await seen.count(5)
    await source.close()
    assert types(seen.items)[:7] == ["m1", "RESYNC", "m2", "RESYNC", "m3", "RESYNC", "m4"]
    assert backoff.asked[:4] == [1, 2, 3, 4]
    assert [r.attempt for r in seen.items if isinstance(r, Resync)][:4] == [1, 2, 3, 4]
    assert source.counts["resyncs"] >= 4


async def test_backoff_starts_again_after_a_healthy_connection(servers: Serve) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        await ws.send_bytes(packed({"type": f"m{n}"}))
        if n % 2 == 0:
            # Every second connection stays up past healthy_after before it drops.
            await asyncio.sleep(0.15)
            await ws.send_bytes(packed({"type": f"m{n}-later"}))
        assert request.transport is not None
        request.transport.close()
        return ws

    server = await servers(script)
    backoff = RecordingBackoff(initial=0.01, factor=2.0, max_delay=0.05, jitter=0.0)
    source = websocket(server.url, backoff=backoff, healthy_after=0.1)
    seen, _ = await watch(source)
    await seen.count(8)
    await source.close()
    # After 1 (short): the first delay. After 2 (healthy): the first again. After 3
    # (short, following a reset): the first grows to the second. And so on.
    assert backoff.asked[:5] == [1, 1, 2, 1, 2]


async def test_connection_refused_ends_with_source_error_not_aiohttp() -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = websocket(f"ws://127.0.0.1:{port}/ws", backoff=FAST, max_attempts=2)
    seen, _ = await watch(source)
    await seen.until(lambda c: c.ended)
    assert type(seen.error) is SourceError
    assert "cannot connect" in str(seen.error)
    assert source.counts["attempts"] == 2


# -- final close codes ------------------------------------------------------------------


async def test_close_1000_completes_without_reconnecting(servers: Serve) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        await ws.send_bytes(packed({"type": "a"}))
        await ws.close(code=aiohttp.WSCloseCode.OK, message=b"bye")
        return ws

    server = await servers(script)
    source = websocket(server.url, backoff=FAST)
    seen, _ = await watch(source)
    await seen.until(lambda c: c.ended)
    assert seen.completed
    assert seen.error is None
    assert seen.items == [{"type": "a"}]
    assert len(server.requests) == 1
    assert source.state is ConnectionState.CLOSED


async def test_1008_ends_with_authentication_error_after_one_attempt(servers: Serve) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        if request.headers.get("Authorization") != "Bearer right":
            await ws.close(
                code=aiohttp.WSCloseCode.POLICY_VIOLATION, message=b"Invalid authentication"
            )
            return ws
        return await server.hold(ws)

    server = await servers(script)
    source = websocket(server.url, token="wrong", backoff=FAST)
    seen, _ = await watch(source)
    await seen.until(lambda c: c.ended)
    assert isinstance(seen.error, AuthenticationError)
    assert "Invalid authentication" in str(seen.error)
    assert "wrong" not in str(seen.error)
    assert source.state is ConnectionState.FAILED
    assert len(server.requests) == 1
    assert source.counts["attempts"] == 1


@pytest.mark.parametrize(
    ("code", "error"),
    [(4000, SourceError), (4001, AuthenticationError), (1011, None)],
)
async def test_other_close_codes(servers: Serve, code: int, error: type[Exception] | None) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        if n == 1:
            await ws.close(code=code, message=b"because")
            return ws
        await ws.send_bytes(packed({"type": "again"}))
        return await server.hold(ws)

    server = await servers(script)
    source = websocket(server.url, backoff=FAST)
    seen, _ = await watch(source)
    await seen.until(lambda c: c.ended or len(c.messages) == 1)
    if error is None:  # not a final code: reconnected
        assert types(seen.items) == ["RESYNC", "again"]
        await source.close()
    else:
        assert type(seen.error) is error
        assert str(code) in str(seen.error)
        assert "because" in str(seen.error)
        assert len(server.requests) == 1


async def test_handshake_refused_with_401_is_an_authentication_error(servers: Serve) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=401, text="no")

    server = await servers(script)
    source = websocket(server.url, backoff=FAST)
    seen, _ = await watch(source)
    await seen.until(lambda c: c.ended)
    assert isinstance(seen.error, AuthenticationError)
    assert len(server.requests) == 1


# -- authentication ---------------------------------------------------------------------


async def test_token_is_sent_as_bearer_header(servers: Serve) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        await ws.send_bytes(packed({"type": "hello"}))
        return await server.hold(ws)

    server = await servers(script)
    source = websocket(server.url, token="s3cret", backoff=FAST)
    seen, _ = await watch(source)
    await seen.count(1)
    request = server.requests[0]
    assert request.headers["Authorization"] == "Bearer s3cret"
    assert "api_key" not in request.query
    assert "s3cret" not in source.url
    await source.close()


async def test_token_in_query_is_sent_as_api_key(servers: Serve) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        await ws.send_bytes(packed({"type": "hello"}))
        return await server.hold(ws)

    server = await servers(script)
    source = websocket(server.url + "?client=x", token="s3cret", token_in_query=True)
    seen, _ = await watch(source)
    await seen.count(1)
    request = server.requests[0]
    assert request.query["api_key"] == "s3cret"
    assert request.query["client"] == "x"
    assert "Authorization" not in request.headers
    assert "s3cret" not in source.url
    assert "s3cret" not in repr(source)
    await source.close()


def bearer(request: web.Request) -> str:
    return request.headers.get("Authorization", "").removeprefix("Bearer ")


class Tokens:
    """A token source that hands out the given answers in turn (the last one for ever)."""

    def __init__(self, *answers: str | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def __call__(self) -> str:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_a_refused_token_from_a_source_is_refreshed_once_and_the_feed_goes_on(
    servers: Serve,
) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        if bearer(request) != "fresh-token-2":
            await ws.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION, message=b"Token expired")
            return ws
        await ws.send_bytes(packed({"type": "hello"}))
        return await server.hold(ws)

    server = await servers(script)
    tokens = Tokens("stale-token-1", "fresh-token-2")
    source = websocket(server.url, token=tokens, backoff=FAST)
    seen, _ = await watch(source)
    await seen.until(lambda c: c.ended or len(c.messages) == 1)
    assert seen.error is None
    # A refused connection was never had: nothing was missed, so no resync.
    assert seen.items == [{"type": "hello"}]
    assert [bearer(r) for r in server.requests] == ["stale-token-1", "fresh-token-2"]
    counts = source.counts
    assert (counts["auth_refused"], counts["token_refreshes"], tokens.calls) == (1, 1, 2)
    await source.close()


async def test_a_second_refusal_after_a_refresh_is_final(servers: Serve) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        await ws.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION, message=b"Token expired")
        return ws

    server = await servers(script)
    tokens = Tokens("expired-token-x")
    source = websocket(server.url, token=tokens, backoff=FAST)
    seen, _ = await watch(source)
    await seen.until(lambda c: c.ended)
    assert isinstance(seen.error, AuthenticationError)
    assert "again after a refresh" in str(seen.error)
    assert "expired-token-x" not in str(seen.error)
    assert len(server.requests) == 2
    assert (tokens.calls, source.counts["token_refreshes"]) == (2, 1)
    assert source.state is ConnectionState.FAILED


async def test_a_handshake_401_with_a_source_is_refreshed_once(servers: Serve) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        if bearer(request) != "new-token":
            return web.Response(status=401, text="no")
        ws = await server.accept(request)
        await ws.send_bytes(packed({"type": "in"}))
        return await server.hold(ws)

    server = await servers(script)
    tokens = Tokens("old-token", "new-token")
    source = websocket(server.url, token=tokens, backoff=FAST)
    seen, _ = await watch(source)
    await seen.count(1)
    assert source.counts["token_refreshes"] == 1
    await source.close()


async def test_a_1008_after_frames_is_an_expiry_and_every_expiry_gets_the_next_token(
    servers: Serve,
) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        if bearer(request) != f"token-{n}":
            await ws.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION, message=b"Invalid")
            return ws
        await ws.send_bytes(packed({"type": f"m{n}"}))
        if n < 4:  # the token expires while the connection is open
            await ws.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION, message=b"Token expired")
            return ws
        return await server.hold(ws)

    server = await servers(script)
    tokens = Tokens("token-1", "token-2", "token-3", "token-4")
    source = websocket(server.url, token=tokens, backoff=FAST)
    seen, _ = await watch(source)
    await seen.until(lambda c: c.ended or len(c.messages) == 4)
    assert seen.error is None
    assert types(seen.items) == ["m1", "RESYNC", "m2", "RESYNC", "m3", "RESYNC", "m4"]
    assert source.counts["token_refreshes"] == 3
    await source.close()


async def test_a_failing_token_source_fails_the_attempt_not_the_stream(servers: Serve) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        await ws.send_bytes(packed({"type": "hello"}))
        return await server.hold(ws)

    server = await servers(script)
    tokens = Tokens(RuntimeError("vault sealed"), OSError("no network"), "finally-a-token")
    source = websocket(server.url, token=tokens, backoff=FAST)
    seen, _ = await watch(source)
    await seen.until(lambda c: c.ended or len(c.messages) == 1)
    assert seen.error is None
    assert source.counts["token_errors"] == 2
    assert [bearer(r) for r in server.requests] == ["finally-a-token"]
    await source.close()


async def test_a_password_in_the_url_never_reaches_the_logs(
    servers: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 12.6: ws://user:SECRET@host/ws was printed in every reconnect warning.
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        await ws.send_bytes(packed({"type": f"m{n}"}))
        assert request.transport is not None
        request.transport.close()
        return ws

    server = await servers(script)
    url = server.url.replace("ws://", "ws://user:PASSW0RD-xyz@")
    caplog.set_level("DEBUG", logger="querysync")
    source = websocket(url, backoff=FAST, token=Tokens("TOKEN-abc-123"), token_in_query=True)
    seen, _ = await watch(source)
    await seen.count(3)
    assert source.counts["drops"] >= 2
    assert "reconnecting" in caplog.text
    await source.close()
    shown = caplog.text + repr(source) + source.url + "".join(
        r.reason for r in seen.items if isinstance(r, Resync)
    )
    assert "PASSW0RD" not in shown
    assert "TOKEN-abc" not in shown
    assert "127.0.0.1" in caplog.text  # the host is still there to read


# -- silence ------------------------------------------------------------------------------


async def test_silent_connection_is_reconnected(servers: Serve) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        await ws.send_bytes(packed({"type": f"m{n}"}))
        return await server.hold(ws)  # then nothing, not even a ping

    server = await servers(script)
    source = websocket(server.url, silence_timeout=0.1, backoff=FAST)
    seen, _ = await watch(source)
    await seen.count(2)
    await source.close()
    assert types(seen.items)[:3] == ["m1", "RESYNC", "m2"]
    assert "without a frame" in seen.items[1].reason
    assert source.counts["silent"] >= 1


async def test_pings_keep_a_quiet_connection_alive(servers: Serve) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        for _ in range(20):  # 0.4 s of pings only, twice the silence timeout
            await ws.ping(b"p")
            await asyncio.sleep(0.02)
        await ws.send_bytes(packed({"type": "after"}))
        return await server.hold(ws)

    server = await servers(script)
    source = websocket(server.url, silence_timeout=0.2, backoff=FAST)
    seen, _ = await watch(source)
    await seen.count(1)
    assert seen.items == [{"type": "after"}]
    assert source.counts["silent"] == 0
    assert source.counts["pings"] == 20
    await source.close()


async def test_heartbeat_pongs_keep_a_quiet_connection_alive(servers: Serve) -> None:
    async def answering(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        holding = asyncio.create_task(server.hold(ws))  # receive() answers our pings
        await ws.send_bytes(packed({"type": "first"}))
        await asyncio.sleep(0.4)  # no data: only our pings and the server's pongs
        await ws.send_bytes(packed({"type": "second"}))
        return await holding

    server = await servers(answering)
    source = websocket(server.url, silence_timeout=0.2, heartbeat=0.02, backoff=FAST)
    seen, _ = await watch(source)
    await seen.count(2)
    assert seen.items == [{"type": "first"}, {"type": "second"}]
    assert source.counts["pongs"] >= 1
    assert source.counts["silent"] == 0
    await source.close()


# -- states, sharing, subscribers ---------------------------------------------------------


async def test_states_follow_the_connection(servers: Serve) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        await ws.send_bytes(packed({"type": f"m{n}"}))
        if n == 1:
            assert request.transport is not None
            request.transport.close()
        else:
            await ws.close(code=aiohttp.WSCloseCode.OK)
        return ws

    server = await servers(script)
    source = websocket(server.url, backoff=FAST)
    states: list[str] = []
    source.states.subscribe(states.append)
    assert source.state is ConnectionState.CLOSED
    seen, _ = await watch(source)
    await seen.until(lambda c: c.ended)
    assert seen.completed
    assert states == ["closed", "connecting", "connected", "reconnecting", "connected", "closed"]
    late: list[str] = []
    source.states.subscribe(late.append)
    assert late == ["closed"]


async def test_subscribers_share_one_connection_closed_after_the_last_leaves(
    servers: Serve,
) -> None:
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)

        async def pump() -> None:
            while True:
                await ws.send_bytes(packed(await outbox.get()))

        pumping = asyncio.create_task(pump())
        try:
            return await server.hold(ws)
        finally:
            pumping.cancel()

    server = await servers(script)
    source = websocket(server.url, backoff=FAST)
    first, sub1 = await watch(source)
    second, sub2 = await watch(source)
    await outbox.put({"type": "a"})
    await first.count(1)
    await second.count(1)
    sub1.dispose()
    await outbox.put({"type": "b"})
    await second.count(2)
    assert first.items == [{"type": "a"}]
    assert second.items == [{"type": "a"}, {"type": "b"}]
    assert len(server.requests) == 1
    assert server.close_codes == []
    sub2.dispose()
    await server.until(lambda: len(server.close_codes) == 1)
    assert server.close_codes == [aiohttp.WSCloseCode.OK]  # a clean close, by us
    await source.close()
    assert source.state is ConnectionState.CLOSED
    assert not first.ended
    assert not second.ended


async def test_a_new_subscription_after_the_last_left_connects_again(servers: Serve) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        await ws.send_bytes(packed({"type": f"m{n}"}))
        return await server.hold(ws)

    server = await servers(script)
    source = websocket(server.url, backoff=FAST)
    first, sub1 = await watch(source)
    await first.count(1)
    sub1.dispose()
    second, _ = await watch(source)
    await second.count(1)
    assert second.items == [{"type": "m2"}]  # a fresh run: no Resync on its first connect
    await server.until(lambda: len(server.close_codes) == 1)
    await source.close()


async def test_a_raising_subscriber_does_not_stop_the_others(servers: Serve) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        for i in range(3):
            await ws.send_bytes(packed({"type": "m", "i": i}))
        return await server.hold(ws)

    def explode(value: Any) -> None:
        raise RuntimeError("subscriber bug")

    server = await servers(script)
    source = websocket(server.url, backoff=FAST)
    source.subscribe(explode)
    seen, _ = await watch(source)
    await seen.count(3)
    assert [m["i"] for m in seen.messages] == [0, 1, 2]
    assert source.counts["subscriber_errors"] == 3
    assert source.state is ConnectionState.CONNECTED
    assert len(server.requests) == 1
    await source.close()


async def test_a_lone_raising_subscriber_keeps_the_connection(servers: Serve) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        for i in range(3):
            await ws.send_bytes(packed({"type": "m", "i": i}))
        return await server.hold(ws)

    got: list[int] = []
    arrived = asyncio.Event()

    def flaky(value: Any) -> None:
        got.append(value["i"])
        if len(got) == 3:
            arrived.set()
        if value["i"] == 0:
            raise RuntimeError("subscriber bug")

    server = await servers(script)
    source = websocket(server.url, backoff=FAST)
    source.subscribe(flaky)
    async with asyncio.timeout(5):
        await arrived.wait()
    assert got == [0, 1, 2]
    assert source.counts["subscriber_errors"] == 1
    assert source.state is ConnectionState.CONNECTED
    assert len(server.requests) == 1
    await source.close()


async def test_subscribers_changed_during_emission(servers: Serve) -> None:
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)

        async def pump() -> None:
            while True:
                await ws.send_bytes(packed(await outbox.get()))

        pumping = asyncio.create_task(pump())
        try:
            return await server.hold(ws)
        finally:
            pumping.cancel()

    server = await servers(script)
    source = websocket(server.url, backoff=FAST)
    late = Collector()
    subscriptions: dict[str, Any] = {}

    def first(value: Any) -> None:
        # On "a": drop the second subscriber before it is called, add a third one.
        if value["type"] == "a":
            subscriptions["second"].dispose()
            subscriptions["late"] = source.subscribe(late.on_next)

    subscriptions["first"] = source.subscribe(first)
    second, subscriptions["second"] = await watch(source)
    await outbox.put({"type": "a"})
    await outbox.put({"type": "b"})
    await late.count(1)
    assert second.items == []  # removed by the first before its turn on "a"
    assert late.items == [{"type": "b"}]  # came in during "a": gets what follows
    subscriptions["first"].dispose()
    await outbox.put({"type": "c"})  # one subscriber left
    await late.count(2)
    assert late.items == [{"type": "b"}, {"type": "c"}]
    assert len(server.requests) == 1
    await source.close()


async def test_counts_is_a_snapshot(servers: Serve) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        await ws.send_bytes(packed({"type": "a"}))
        await ws.send_bytes(packed({"type": "b"}))
        return await server.hold(ws)

    server = await servers(script)
    source = websocket(server.url, backoff=FAST)
    before = source.counts
    seen, _ = await watch(source)
    await seen.count(2)
    after = source.counts
    assert before == Counter()
    assert (after["frames"], after["messages"], after["connections"]) == (2, 2, 1)
    after["frames"] += 10  # the caller's copy; the source's own counts stay as they were
    assert source.counts["frames"] == 2
    await source.close()


# -- send, close, configuration -----------------------------------------------------------


@pytest.mark.parametrize("mode", ["binary", "text"])
async def test_send_uses_the_mode_frame_kind(servers: Serve, mode: str) -> None:
    received: list[aiohttp.WSMessage] = []

    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        await ws.send_bytes(packed({"type": "ready"}))
        async for msg in ws:
            received.append(msg)
            server.changed.set()
        return ws

    server = await servers(script)
    source = websocket(server.url, backoff=FAST, mode=mode)  # type: ignore[arg-type]
    seen, _ = await watch(source)
    await seen.count(1)
    await source.send({"type": "ping"})
    await server.until(lambda: len(received) == 1)
    msg = received[0]
    if mode == "binary":
        assert msg.type is aiohttp.WSMsgType.BINARY
        assert msgpack.unpackb(msg.data) == {"type": "ping"}
    else:
        assert msg.type is aiohttp.WSMsgType.TEXT
        assert json.loads(msg.data) == {"type": "ping"}
    await source.close()


async def test_send_without_a_connection_is_a_source_error() -> None:
    source = websocket("ws://127.0.0.1:9/ws")
    with pytest.raises(SourceError, match="not connected"):
        await source.send({"type": "ping"})


async def test_close_completes_subscribers_and_leaves_a_given_session_open(
    servers: Serve,
) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        await ws.send_bytes(packed({"type": "a"}))
        return await server.hold(ws)

    server = await servers(script)
    async with aiohttp.ClientSession() as session:
        source = websocket(server.url, session=session, backoff=FAST)
        seen, _ = await watch(source)
        await seen.count(1)
        await source.close()
        assert seen.completed
        assert not session.closed
        assert source.state is ConnectionState.CLOSED
        await server.until(lambda: len(server.close_codes) == 1)
        after, _ = await watch(source)
        assert after.completed
        assert after.items == []
        assert len(server.requests) == 1


def test_subscribing_outside_a_running_loop_is_a_configuration_error() -> None:
    errors: list[Exception] = []
    websocket("ws://127.0.0.1:9/ws").subscribe(on_error=errors.append)
    assert len(errors) == 1
    assert isinstance(errors[0], ConfigurationError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": "ftp://example.org/ws"},
        {"max_msg_size": 0},
        {"silence_timeout": 0},
        {"max_attempts": 0},
        {"mode": "json"},
        {"token_in_query": True},
    ],
)
def test_bad_configuration_is_refused_at_the_call(kwargs: dict[str, Any]) -> None:
    url = kwargs.pop("url", "ws://127.0.0.1:9/ws")
    with pytest.raises(ConfigurationError):
        websocket(url, **kwargs)


async def test_a_live_recording_replays_as_received(servers: Serve, tmp_path: Path) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        ws = await server.accept(request)
        await ws.send_bytes(
            packed(
                {
                    "type": "resource_change",
                    "event": "updated",
                    "resource_type": "workflow",
                    "resource": {"id": "w1"},
                }
            )
        )
        await ws.send_str(json.dumps({"type": "system_stats", "stats": {"cpu": 1.5}}))
        await ws.close(code=aiohttp.WSCloseCode.OK)
        return ws

    server = await servers(script)
    source = websocket(server.url, backoff=FAST)
    seen, _ = await watch(source)
    recorder = to_jsonl(tmp_path / "tail.jsonl")
    source.subscribe(recorder)
    await seen.until(lambda c: c.ended)
    replayed: list[Any] = []
    from_jsonl(tmp_path / "tail.jsonl").subscribe(replayed.append)
    assert replayed == seen.items
    assert len(replayed) == 2


def test_a_bad_url_error_hides_its_credentials() -> None:
    with pytest.raises(ConfigurationError) as raised:
        websocket("ftp://user:PASSW0RD@host/ws?api_key=K3Y-secret")
    assert "PASSW0RD" not in str(raised.value)
    assert "K3Y-secret" not in str(raised.value)
