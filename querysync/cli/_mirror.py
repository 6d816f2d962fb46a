"""The shared-cache commands: ``sync --share``, ``mirror`` and ``inspect nats://``.

nats-py is imported only when one of them runs (querysync.sinks imports it lazily).
A NATS server that refuses the first connection ends the command with exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from querysync.sinks import ShareConfig

from ._args import number

__all__ = [
    "add_mirror_options",
    "add_share_options",
    "is_bucket_url",
    "run_inspect_bucket",
    "run_mirror",
    "run_shared_sync",
]

log = logging.getLogger("querysync.cli")


def is_bucket_url(text: str) -> bool:
    """Whether ``text`` names a NATS bucket rather than a directory."""
    return text.startswith(("nats://", "tls://"))


def _add_credentials(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nats-creds", default=None, help="NATS .creds file (else $QUERYSYNC_NATS_CREDS)"
    )
    parser.add_argument(
        "--nats-user", default=None, help="NATS user (else $QUERYSYNC_NATS_USER; password "
        "from $QUERYSYNC_NATS_PASSWORD; a token from $QUERYSYNC_NATS_TOKEN)"
    )


def add_share_options(parser: argparse.ArgumentParser) -> None:
    """The ``--share`` options of ``sync``."""
    parser.add_argument(
        "--share", default=None, metavar="URL",
        help="also publish into a NATS JetStream bucket, e.g. nats://127.0.0.1:4222",
    )
    parser.add_argument("--bucket", default=None, help="bucket name (default querysync)")
    parser.add_argument(
        "--lease",
        type=number(minimum=0, inclusive=False, unit="s"),
        default=5.0,
        help="publisher lease, s (default 5)",
    )
    parser.add_argument(
        "--replicas", type=_count, default=1, help="bucket replicas (default 1)"
    )
    parser.add_argument(
        "--history", type=_count, default=1, help="revisions kept per key (default 1)"
    )
    _add_credentials(parser)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_mirror_options(mirror: argparse.ArgumentParser) -> None:
    """The arguments of the ``mirror`` subcommand."""
    mirror.add_argument("bucket_url", help="nats://HOST:PORT/BUCKET")
    mirror.add_argument("--cache", required=True, help="cache directory (created 0700)")
    _add_credentials(mirror)


def _config(url: str, args: argparse.Namespace, **more: Any) -> ShareConfig:
    from querysync.sinks import ShareConfig

    config = ShareConfig.of(url, getattr(args, "bucket", None))
    return replace(
        config,
        creds=getattr(args, "nats_creds", None),
        user=getattr(args, "nats_user", None),
        **more,
    )


async def run_shared_sync(args: argparse.Namespace) -> int:
    """``sync --share``: standby until holding the lease, then active; back to standby if lost."""
    from querysync import AuthenticationError, QuerySyncError
    from querysync._sync import sync
    from querysync.sinks import LeaseLostError, ShareConnectionError

    from ._signals import stop_on_signals
    from ._token_args import token_provider

    try:
        tokens = await token_provider(args)
        config = _config(
            args.share, args, lease=args.lease, replicas=args.replicas, history=args.history
        )
    except QuerySyncError as exc:
        print(f"querysync sync: {exc}", file=sys.stderr)
        return 2
    with stop_on_signals() as stop:
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while True:
                log.warning("standby: waiting for the lease of bucket %r", config.bucket)
                print("standby", file=sys.stderr, flush=True)
                starting = asyncio.ensure_future(
                    sync(args.ws, args.api, args.cache, token=tokens, window=args.window,
                         share=config)
                )
                await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not starting.done():
                    # Again until it ends: nats-py's connect can swallow one cancellation.
                    while not starting.done():
                        starting.cancel()
                        await asyncio.wait({starting}, timeout=0.5)
                    return stop.status(0)
                try:
                    running = starting.result()
                except ShareConnectionError as exc:
                    print(f"querysync sync: {exc}", file=sys.stderr)
                    return 2
                log.warning("active: publishing into bucket %r", config.bucket)
                print("active", file=sys.stderr, flush=True)
                ended = asyncio.ensure_future(running.wait_closed())
                await asyncio.wait({ended, stopped}, return_when=asyncio.FIRST_COMPLETED)
                ended.cancel()
                await running.stop()
                if stopped.done():
                    return stop.status(0)
                if isinstance(running.error, LeaseLostError):
                    log.warning("%s; standby again", running.error)
                    continue
                if running.error is not None:
                    print(f"querysync sync: {running.error}", file=sys.stderr)
                    return 2 if isinstance(running.error, AuthenticationError) else 1
                return 0
        finally:
            stopped.cancel()


async def run_mirror(args: argparse.Namespace) -> int:
    """``mirror nats://HOST:PORT/BUCKET --cache DIR``: keep DIR true to the bucket until stopped."""
    from querysync import QuerySyncError
    from querysync.sinks import ShareConnectionError, SharedCache

    from ._signals import stop_on_signals

    try:
        config = _config(args.bucket_url, args)
        cache = SharedCache(config, local=args.cache)
        with stop_on_signals() as stop:
            async with cache:
                print(f"mirroring {len(cache)} entries", file=sys.stderr, flush=True)
                await stop.wait()
    except ShareConnectionError as exc:
        print(f"querysync mirror: {exc}", file=sys.stderr)
        return 2
    except QuerySyncError as exc:
        print(f"querysync mirror: {exc}", file=sys.stderr)
        return 2
    return stop.status(0)


async def run_inspect_bucket(args: argparse.Namespace) -> int:
    """``inspect nats://HOST:PORT/BUCKET``: the bucket's entries, as ``inspect DIR`` prints them."""
    from querysync import QuerySyncError
    from querysync.sinks import ShareConnectionError
    from querysync.sinks._shared_cache import read_bucket

    try:
        config = _config(args.directory, args)
        held = await read_bucket(config)
    except ShareConnectionError as exc:
        print(f"querysync inspect: {exc}", file=sys.stderr)
        return 2
    except QuerySyncError as exc:
        print(f"querysync inspect: {exc}", file=sys.stderr)
        return 2
    now = time.time()
    entries = [held[k] for k in sorted(held, key=repr)]
    if args.json:
        for e in entries:
            print(
                json.dumps(
                    {
                        "key": list(e.key),
                        "stale": e.stale,
                        "etag": e.etag,
                        "age": round(now - e.updated_at, 3),
                        "error": e.error,
                    }
                )
            )
        return 0
    table = Table(title=f"{args.directory}: {len(entries)} entries")
    for column in ("key", "stale", "etag", "age (s)", "error"):
        table.add_column(column)
    for e in entries:
        table.add_row(
            json.dumps(list(e.key)),
            "stale" if e.stale else "fresh",
            e.etag or "",
            f"{now - e.updated_at:.1f}",
            e.error or "",
        )
    Console().print(table)
    return 0
