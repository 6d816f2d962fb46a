"""``querysync sync``: mirror a NodeTool server into a cache until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time

from rich.console import Console
from rich.live import Live

from querysync import AuthenticationError
from querysync._sync import sync

from ._signals import stop_on_signals
from ._token_args import token_provider
from ._view import counters_line, counters_table

__all__ = ["run_sync"]

log = logging.getLogger("querysync.cli")

_TICK = 0.25  # seconds between redraws of the live view


async def run_sync(args: argparse.Namespace, console: Console) -> int:
    """Run until SIGINT/SIGTERM or a final error; the cache is flushed and closed either way.

    On a terminal (and without ``--no-live``) a live table of counters is drawn on
    ``console``; otherwise one line of counters goes to it every ``args.every`` seconds.
    """
    tokens = await token_provider(args)
    running = await sync(args.ws, args.api, args.cache, token=tokens, window=args.window)
    # sync() froze the modules and the key index out of the collector's sight (its
    # gc_freeze); this command is a long-running process, which is what that is for.
    live_view = not args.no_live and console.is_terminal
    try:
        with stop_on_signals() as stop:
            ended = asyncio.ensure_future(running.wait_closed())
            stopped = asyncio.ensure_future(stop.wait())
            live = (
                Live(console=console, refresh_per_second=4)
                if live_view
                else contextlib.nullcontext()
            )
            next_line = time.monotonic() + args.every
            with live as view:
                while not (ended.done() or stopped.done()):
                    await asyncio.wait({ended, stopped}, timeout=_TICK)
                    state = str(running.source.state)
                    if view is not None:
                        view.update(
                            counters_table(
                                running.counts(),
                                title=f"querysync sync → {args.cache}",
                                state=state,
                            )
                        )
                    elif time.monotonic() >= next_line:
                        next_line = time.monotonic() + args.every
                        console.print(
                            counters_line(running.counts(), state=state),
                            markup=False,
                            highlight=False,
                            soft_wrap=True,
                        )
            ended.cancel()
            stopped.cancel()
    finally:
        await running.stop()
    if running.error is not None:
        print(f"querysync sync: {running.error}", file=sys.stderr)
        return 2 if isinstance(running.error, AuthenticationError) else 1
    return stop.status(0)
