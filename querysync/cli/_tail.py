"""``querysync tail``: decoded messages as JSON lines, optionally recorded for replay."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from querysync import AuthenticationError, Resync
from querysync.sinks import JsonlRecorder, to_jsonl
from querysync.streams import websocket

from ._signals import stop_on_signals
from ._token_args import token_provider

__all__ = ["run_tail"]


async def run_tail(args: argparse.Namespace) -> int:
    """Print messages until interrupted; 2 on an authentication error, 130 after SIGINT.

    With ``args.record`` the same messages also go to that file as
    :func:`querysync.sinks.to_jsonl` writes them (``{"t": seconds, "frame": ...}``),
    which :func:`querysync.streams.from_jsonl` replays at their pace with ``timing=True``.
    """
    # Opened first: a recording that cannot be written is an error before any connection.
    recorder: JsonlRecorder | None = to_jsonl(args.record) if args.record else None
    source = websocket(args.ws, token=await token_provider(args))
    failed: list[BaseException] = []
    done = asyncio.Event()
    reader_gone = False

    def on_next(message: Any) -> None:
        nonlocal reader_gone
        if isinstance(message, Resync):
            printed: Any = {"type": "resync", "reason": message.reason, "attempt": message.attempt}
        elif not args.all and message.get("type") != "resource_change":
            return
        else:
            printed = message
        if recorder is not None:
            recorder.on_next(message)
        if reader_gone:
            return
        try:
            sys.stdout.write(json.dumps(printed, default=str) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            # `tail | head`: the reader has what it wanted; stop quietly.
            reader_gone = True
            done.set()

    def on_error(error: Exception) -> None:
        failed.append(error)
        done.set()

    try:
        with stop_on_signals() as stop:
            subscription = source.subscribe(on_next, on_error, done.set)
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(done.wait())]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            subscription.dispose()
            await source.close()
    finally:
        if recorder is not None:
            recorder.close()
    if reader_gone:
        raise BrokenPipeError
    if failed:
        print(f"querysync tail: {failed[0]}", file=sys.stderr)
        return 2 if isinstance(failed[0], AuthenticationError) else 1
    return stop.status(0)
