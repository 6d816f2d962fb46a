"""A handshake answered with a 4xx gives up after a few tries; warnings read right for ws://.

Before, a wrong path (404) was retried for ever, and every reconnect warning for a
ws:// URL said "ssl:default" (aiohttp's wording of its connection key); issue 13 item 4.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from querysync import AuthenticationError, SourceError
from querysync.streams import Backoff, websocket
from querysync.streams._websocket import REFUSED_ATTEMPTS

FAST = Backoff(initial=0.01, factor=2.0, max_delay=0.02, jitter=0.0)


@pytest.fixture
async def answering() -> AsyncIterator[tuple[str, list[int]]]:
    """A server that answers GET /status/<code> with that code; (base URL, codes answered)."""
    answered: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        answered.append(code)
        return web.Response(status=code, text="no WebSocket here")

    app = web.Application()
    app.router.add_get("/status/{code}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"ws://127.0.0.1:{port}", answered
    finally:
        await runner.cleanup()


async def _outcome(url: str, **options: object) -> Exception | None:
    source = websocket(url, backoff=FAST, **options)  # type: ignore[arg-type]
    ended: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
    source.subscribe(
        on_error=lambda e: ended.set_result(e), on_completed=lambda: ended.set_result(None)
    )
    try:
        async with asyncio.timeout(10):
            return await ended
    finally:
        await source.close()


async def test_a_404_handshake_ends_the_source_after_a_bounded_number_of_tries(
    answering: tuple[str, list[int]],
) -> None:
    base, answered = answering
    error = await _outcome(f"{base}/status/404")
    assert isinstance(error, SourceError)
    assert not isinstance(error, AuthenticationError)
    assert "HTTP 404" in str(error)
    assert "is the URL right?" in str(error)
    assert answered == [404] * REFUSED_ATTEMPTS


@pytest.mark.parametrize("code", [503, 429])
async def test_a_server_error_or_too_many_requests_is_still_retried(
    code: int, answering: tuple[str, list[int]]
) -> None:
    base, answered = answering
    error = await _outcome(f"{base}/status/{code}", max_attempts=REFUSED_ATTEMPTS + 2)
    assert isinstance(error, SourceError)
    assert "gave up" in str(error)
    assert answered == [code] * (REFUSED_ATTEMPTS + 2)


async def test_a_refused_ws_connection_is_worded_without_ssl(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with caplog.at_level(logging.WARNING, logger="querysync.streams"):
        error = await _outcome(f"ws://127.0.0.1:{port}/ws", max_attempts=2)
    assert isinstance(error, SourceError)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings
    for text in [*warnings, str(error)]:
        assert "ssl" not in text.lower(), text
        assert f"cannot connect to 127.0.0.1:{port}: Connection refused" in text, text
