"""``querysync serve``: the embedded NodeTool-compatible server, until interrupted."""

from __future__ import annotations

import argparse

from querysync.server import NodeToolServer

from ._signals import stop_on_signals
from ._token_args import serve_token_options

__all__ = ["run_serve"]


async def run_serve(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; 0 after SIGTERM, 130 after SIGINT."""
    server = NodeToolServer(token=args.token, **serve_token_options(args))
    # The handlers go in before the ready line: whoever waits for that line may signal
    # at once, and a signal before them would kill the process instead of stopping it.
    with stop_on_signals() as stop:
        await server.start(host=args.host, port=args.port)
        try:
            print(
                f"NodeTool-compatible server on {server.api_url} (WebSocket {server.ws_url})",
                flush=True,
            )
            await stop.wait()
        finally:
            await server.stop()
    return stop.status(0)
