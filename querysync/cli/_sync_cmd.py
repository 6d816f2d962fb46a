"""``querysync sync``: mirror a NodeTool server into a cache until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import sys

from rich.console import Console
from rich.live import Live

from querysync import AuthenticationError
from querysync._sync import sync

from ._signals import stop_on_signals
from ._token_args import token_provider
from ._view import counters_table

__all__ = ["run_sync"]

log = logging.getLogger("querysync.cli")


async def run_sync(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM or a final error; the cache is flushed and closed either way."""
    console = Console(stderr=True)
    tokens = await token_provider(args)
    running = await sync(args.ws, args.api, args.cache, token=tokens, window=args.window)
    # The cache is loaded: about four long-lived objects per entry, which every full
    # garbage collection would walk again (about 180 ms for 100,000 entries, holding the
    # GIL, so the event loop and the cache's writer thread both stall). Freezing moves
    # them out of the collector's sight for the life of the process. It is process-wide,
    # so this command decides it for itself; the library never does.
    gc.freeze()
    try:
        with stop_on_signals() as stop:
            ended = asyncio.ensure_future(running.wait_closed())
            stopped = asyncio.ensure_future(stop.wait())
            live = (
                contextlib.nullcontext()
                if args.no_live or not console.is_terminal
                else Live(console=console, refresh_per_second=4)
            )
            with live as view:
                while not (ended.done() or stopped.done()):
                    await asyncio.wait({ended, stopped}, timeout=0.25)
                    if view is not None:
                        view.update(
                            counters_table(
                                running.counts(),
                                title=f"querysync sync → {args.cache}",
                                state=str(running.source.state),
                            )
                        )
            ended.cancel()
            stopped.cancel()
    finally:
        await running.stop()
    if running.error is not None:
        print(f"querysync sync: {running.error}", file=sys.stderr)
        return 2 if isinstance(running.error, AuthenticationError) else 1
    return 0
