"""Shared fixtures: nothing here replaces aiohttp, diskcache or the event loop."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from _nats_server import NatsServer

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


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real nats-server with JetStream on a free loopback port, its store under tmp_path."""
    s = NatsServer(tmp_path / "nats")
    s.start()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _unfrozen_heap() -> Iterator[None]:
    """Give the collector back what a test's sync() froze (its gc_freeze, default on).

    A long-running process freezes once; a test process runs hundreds of syncs, and the
    garbage cycles of earlier tests frozen with them would never be freed.
    """
    yield
    gc.unfreeze()
