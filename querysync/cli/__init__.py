"""The ``querysync`` command: demo, sync, tail, inspect, mirror and serve."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from querysync._exceptions import QuerySyncError

__all__ = ["main"]

log = logging.getLogger("querysync.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="querysync",
        description="Keep a disk-backed query cache in step with a NodeTool backend's feed.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run an embedded server, a workload and a synced cache")
    demo.add_argument("--seconds", type=float, default=6.0, help="workload duration (default 6)")
    demo.add_argument("--rate", type=float, default=150.0, help="changes per second (default 150)")
    demo.add_argument("--window", type=float, default=0.25, help="throttle window, s")
    demo.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")
    demo.add_argument("--no-live", action="store_true", help="no live view, summary only")

    syn = sub.add_parser("sync", help="mirror a NodeTool server into a cache until interrupted")
    syn.add_argument("--ws", required=True, help="WebSocket URL, e.g. ws://127.0.0.1:7777/ws")
    syn.add_argument("--api", required=True, help="REST base URL, e.g. http://127.0.0.1:7777")
    syn.add_argument("--cache", required=True, help="cache directory (created 0700)")
    syn.add_argument("--token", default=None, help="API token (Authorization: Bearer)")
    syn.add_argument("--window", type=float, default=0.25, help="throttle window, s")
    syn.add_argument("--no-live", action="store_true", help="log lines instead of a live view")
    from ._mirror import add_mirror_parser, add_share_options

    add_share_options(syn)

    tail = sub.add_parser("tail", help="print decoded messages, one JSON line each")
    tail.add_argument("--ws", required=True, help="WebSocket URL")
    tail.add_argument("--token", default=None, help="API token")
    tail.add_argument("--all", action="store_true", help="every message, not only resource changes")

    insp = sub.add_parser("inspect", help="list a cache's entries")
    insp.add_argument("directory", help="cache directory, or nats://HOST:PORT/BUCKET")
    insp.add_argument("--json", action="store_true", help="one JSON object per line")
    add_mirror_parser(sub)

    serve = sub.add_parser("serve", help="run the embedded NodeTool-compatible server")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=7777, help="port (default 7777)")
    serve.add_argument("--token", default=None, help="require this token")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO
    if args.verbose > 1:
        level = logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.command == "demo":
            from ._demo import run_demo

            return asyncio.run(run_demo(args))
        if args.command == "sync" and args.share:
            from ._mirror import run_shared_sync

            return asyncio.run(run_shared_sync(args))
        if args.command == "mirror":
            from ._mirror import run_mirror

            return asyncio.run(run_mirror(args))
        if args.command == "inspect" and args.directory.startswith(("nats://", "tls://")):
            from ._mirror import run_inspect_bucket

            return asyncio.run(run_inspect_bucket(args))
        if args.command == "sync":
            from ._sync_cmd import run_sync

            return asyncio.run(run_sync(args))
        if args.command == "tail":
            from ._tail import run_tail

            return asyncio.run(run_tail(args))
        if args.command == "inspect":
            from ._inspect import run_inspect

            return run_inspect(args)
        from ._serve import run_serve

        return asyncio.run(run_serve(args))
    except KeyboardInterrupt:
        return 130
    except (QuerySyncError, OSError) as exc:
        # Bad input (a URL, a port in use, a cache directory): what went wrong in one
        # line, not a traceback; -vv shows the traceback too.
        log.debug("querysync %s failed", args.command, exc_info=True)
        # TimeoutError is an OSError too, and says nothing of itself.
        print(f"querysync {args.command}: {str(exc) or exc.__class__.__name__}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
