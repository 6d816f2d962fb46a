"""``querysync serve``: the embedded NodeTool-compatible server, until interrupted."""

from __future__ import annotations

import argparse

from querysync.server import NodeToolServer

from ._signals import stop_on_signals

__all__ = ["run_serve"]


async def run_serve(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; 0 on a clean stop."""
    server = NodeToolServer(token=args.token)
    await server.start(host=args.host, port=args.port)
    print(f"NodeTool-compatible server on {server.api_url} (WebSocket {server.ws_url})", flush=True)
    with stop_on_signals() as stop:
        await stop.wait()
    await server.stop()
    return 0
