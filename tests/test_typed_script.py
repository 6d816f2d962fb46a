"""The typed user script (tests/typing/user_script.py) runs as written against a real server."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from querysync.server import NodeToolServer

sys.path.insert(0, str(Path(__file__).with_name("typing")))
from user_script import mirror_names

WORKFLOW = {"name": "typed", "access": "private", "graph": {"nodes": [], "edges": []}}


async def test_the_typed_script_reads_entry_data_without_casts(
    server: NodeToolServer, tmp_path: Path
) -> None:
    created = server.create("workflow", WORKFLOW)
    async with asyncio.timeout(20):
        names = await mirror_names(server.ws_url, server.api_url, str(tmp_path / "cache"))
    assert names == {created["id"]: "typed"}
