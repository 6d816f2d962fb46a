"""Shared fixtures: nothing here replaces aiohttp, diskcache or the event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from querysync.server import NodeToolServer


@pytest.fixture
async def server() -> AsyncIterator[NodeToolServer]:
    """The embedded NodeTool server on loopback, without pings or stats frames."""
    async with NodeToolServer(ping_interval=None, stats_interval=None) as s:
        yield s


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A real aiohttp client session, closed at teardown."""
    async with aiohttp.ClientSession() as s:
        yield s
