"""``querysync tail --ws URL``: decoded messages as JSON lines."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from querysync import AuthenticationError, Resync
from querysync.streams import websocket

from ._signals import stop_on_signals
from ._token_args import token_provider

__all__ = ["run_tail"]


async def run_tail(args: argparse.Namespace) -> int:
    """Print messages until interrupted; 2 on an authentication error."""
    source = websocket(args.ws, token=await token_provider(args))
    failed: list[BaseException] = []
    done = asyncio.Event()

    def on_next(message: Any) -> None:
        if isinstance(message, Resync):
            message = {"type": "resync", "reason": message.reason, "attempt": message.attempt}
        elif not args.all and message.get("type") != "resource_change":
            return
        sys.stdout.write(json.dumps(message, default=str) + "\n")
        sys.stdout.flush()

    def on_error(error: Exception) -> None:
        failed.append(error)
        done.set()

    with stop_on_signals() as stop:
        subscription = source.subscribe(on_next, on_error, done.set)
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(done.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
        subscription.dispose()
        await source.close()
    if failed:
        print(f"querysync tail: {failed[0]}", file=sys.stderr)
        return 2 if isinstance(failed[0], AuthenticationError) else 1
    return 0
