"""The ``querysync`` command: demo, sync, tail, inspect, mirror and serve.

Exit statuses: 0 success; 1 a runtime failure (a server that cannot be reached for
good, a port in use, a cache that cannot be opened); 2 bad usage (a malformed URL, a
port out of range, a missing option) or credentials the server refused; 130 after
SIGINT. SIGTERM is a clean stop (0). Errors are one line on stderr; ``-vv`` adds
tracebacks.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from rich.console import Console

from querysync._exceptions import QuerySyncError

from ._args import (
    SERVER_ENV,
    TOKEN_ENV,
    api_url,
    number,
    port,
    resolve_endpoints,
    resolve_token,
    server_url,
    ws_url,
)
from ._console import setup_logging
from ._signals import INTERRUPTED

__all__ = ["main"]

log = logging.getLogger("querysync.cli")

USAGE = 2
FAILURE = 1


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help; descriptions and examples kept as written.

    Only defaults that say something: not for flags, options without a default, or
    help that already names where the default comes from.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            default in (None, False, argparse.SUPPRESS)
            or "default" in text
            or action.option_strings == []
            or isinstance(action, argparse._CountAction)
        ):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (usage stays in ``--help``)."""

    commands: dict[str, _Parser]

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _version() -> str:
    from querysync import __version__

    return __version__


def _sub(
    sub: argparse._SubParsersAction[_Parser], name: str, summary: str, text: str, example: str
) -> _Parser:
    return sub.add_parser(
        name,
        help=summary,
        description=f"{summary[0].upper()}{summary[1:]}.\n\n{text}",
        epilog=f"example:\n  {example}",
        formatter_class=_Formatter,
    )


def _add_server(p: argparse.ArgumentParser, *, api: bool) -> None:
    p.add_argument(
        "--server",
        type=server_url,
        default=None,
        metavar="URL",
        help=f"the NodeTool server, e.g. http://127.0.0.1:7777; the WebSocket URL (URL/ws)"
        f"{' and the REST base' if api else ''} are derived from it (default: ${SERVER_ENV})",
    )
    p.add_argument(
        "--ws", type=ws_url, default=None, metavar="URL", help="WebSocket URL; wins over --server"
    )
    if api:
        p.add_argument(
            "--api", type=api_url, default=None, metavar="URL", help="REST base; wins over --server"
        )


def _add_token(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--token",
        default=None,
        help=f"{what} (default: ${TOKEN_ENV}, which ps does not show)",
    )


def _parser() -> _Parser:
    parser = _Parser(
        prog="querysync",
        description="Keep a disk-backed query cache in step with a NodeTool backend's feed.",
        epilog="examples:\n  querysync demo\n  querysync sync --server http://127.0.0.1:7777 "
        "--cache ./cache\n  querysync inspect ./cache\n\n"
        "exit status: 0 done (SIGTERM is a clean stop), 1 a runtime failure, 2 bad usage\n"
        "or refused credentials, 130 interrupted (Ctrl-C).",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"querysync {_version()}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.commands = sub.choices

    demo = _sub(
        sub,
        "demo",
        "run an embedded server, a workload and a synced cache",
        "Starts a NodeTool-compatible server, writes to it for --seconds at --rate\n"
        "changes per second, keeps a cache in a temporary folder in step, then checks\n"
        "every cached entry against the server. Exit status 0 when they agree.",
        "querysync demo --seconds 10 --rate 300",
    )
    demo.add_argument(
        "--seconds",
        type=number(minimum=0, unit="s"),
        default=6.0,
        metavar="S",
        help="workload duration, s",
    )
    demo.add_argument(
        "--rate",
        type=number(minimum=0, inclusive=False),
        default=150.0,
        metavar="N",
        help="changes per second",
    )
    demo.add_argument(
        "--window",
        type=number(minimum=0, unit="s"),
        default=0.25,
        metavar="S",
        help="throttle window, s (0: no throttle)",
    )
    demo.add_argument("--seed", type=int, default=1, metavar="N", help="workload seed")
    demo.add_argument(
        "--no-live", action="store_true", help="progress lines instead of a live view"
    )
    demo.add_argument(
        "--every",
        type=number(minimum=0, inclusive=False, unit="s"),
        default=2.0,
        metavar="S",
        help="seconds between progress lines without a live view",
    )

    syn = _sub(
        sub,
        "sync",
        "mirror a NodeTool server into a cache until interrupted",
        "Keeps every list and every changed resource of the server cached in --cache,\n"
        "from its resource_change feed. Stops cleanly (cache flushed) on SIGTERM or\n"
        "Ctrl-C. Without a terminal, or with --no-live, one line of counters is\n"
        "printed every --every seconds instead of the live view.",
        "querysync sync --server http://127.0.0.1:7777 --cache ./cache",
    )
    _add_server(syn, api=True)
    syn.add_argument("--cache", required=True, metavar="DIR", help="cache directory (created 0700)")
    _add_token(syn, "API token, sent as Authorization: Bearer")
    syn.add_argument(
        "--window",
        type=number(minimum=0, unit="s"),
        default=0.25,
        metavar="S",
        help="throttle window, s (0: no throttle)",
    )
    syn.add_argument(
        "--no-live",
        action="store_true",
        help="a line of counters every few seconds instead of a live view",
    )
    syn.add_argument(
        "--every",
        type=number(minimum=0, inclusive=False, unit="s"),
        default=5.0,
        metavar="S",
        help="seconds between counter lines without a live view",
    )
    from ._mirror import add_mirror_options, add_share_options

    add_share_options(syn)

    tail = _sub(
        sub,
        "tail",
        "print decoded messages, one JSON line each",
        "Prints each resource_change message of the feed (every message with --all)\n"
        "as one JSON line; --record also writes them, with their times, in the format\n"
        "querysync.streams.from_jsonl(path, timing=True) replays.",
        "querysync tail --server http://127.0.0.1:7777 --record feed.jsonl",
    )
    _add_server(tail, api=False)
    _add_token(tail, "API token")
    tail.add_argument("--all", action="store_true", help="every message, not only resource changes")
    tail.add_argument(
        "--record",
        default=None,
        metavar="FILE",
        help="also write the messages to FILE (JSON lines with times)",
    )

    insp = _sub(
        sub,
        "inspect",
        "list a cache's entries, or print one entry's data",
        "Without KEY, lists every entry (key, fresh or stale, etag, age, last error),\n"
        "or those under --prefix. With KEY (its elements as words, or one JSON array),\n"
        "prints that entry's data as JSON. The age is since the last fetch or set; the\n"
        "error is the last failed fetch's (cleared by a success). Whether a key is being\n"
        "fetched, and its failure count, only the fetching process knows\n"
        "(QueryCache.status): rows do not hold them.",
        "querysync inspect ./cache workflow 3f2a9c   # or: --prefix workflow",
    )
    insp.add_argument("directory", help="cache directory, or nats://HOST:PORT/BUCKET")
    insp.add_argument(
        "key", nargs="*", metavar="KEY", help="a query key: words (workflow 3f2a9c) or a JSON array"
    )
    insp.add_argument(
        "--prefix",
        nargs="+",
        default=None,
        metavar="KEY",
        help="list only the entries under this key prefix (words or a JSON array)",
    )
    insp.add_argument("--json", action="store_true", help="one JSON object per line")
    insp.add_argument(
        "--buster",
        default="",
        help="the buster your code opens the cache with: inspect says whether it would "
        "discard what is stored (inspect itself never changes the cache)",
    )
    add_mirror_options(
        _sub(
            sub,
            "mirror",
            "keep a local cache folder live from a NATS bucket",
            "Keeps --cache true to a bucket that one `querysync sync --share` process\n"
            "publishes into, until SIGTERM or Ctrl-C: existing code that opens a folder\n"
            "keeps working on other machines. Needs the extra: pip install 'querysync[nats]'.",
            "querysync mirror nats://127.0.0.1:4222/querysync --cache ./mirror",
        )
    )

    serve = _sub(
        sub,
        "serve",
        "run the embedded NodeTool-compatible server",
        "Serves the NodeTool REST API and /ws feed from memory until SIGTERM or Ctrl-C.",
        "querysync serve --port 7777",
    )
    serve.add_argument("--host", default="127.0.0.1", help="bind address")
    serve.add_argument("--port", type=port, default=7777, help="port (0: any free port)")
    _add_token(serve, "require this token")
    # The token flags live in one module (and one hunk here) so that they merge easily.
    from ._token_args import add_serve_token_args, add_token_args

    add_token_args(syn)
    add_token_args(tail)
    add_serve_token_args(serve)
    return parser


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command in ("sync", "tail"):
        command = parser.commands[args.command]
        resolve_endpoints(args, command, need_api=args.command == "sync")
    resolve_token(args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    try:
        args = _parse(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else USAGE
    console = Console(stderr=True)
    handler = setup_logging(args.verbose, console)
    try:
        return _run(args, console)
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except (QuerySyncError, OSError) as exc:
        # Bad input (a URL, a port in use, a cache directory): what went wrong in one
        # line, not a traceback; -vv shows the traceback too.
        log.debug("querysync %s failed", args.command, exc_info=True)
        # TimeoutError is an OSError too, and says nothing of itself.
        print(f"querysync {args.command}: {str(exc) or exc.__class__.__name__}", file=sys.stderr)
        return FAILURE
    finally:
        logging.getLogger().removeHandler(handler)


def _run(args: argparse.Namespace, console: Console) -> int:
    if args.command == "demo":
        from ._demo import run_demo

        return asyncio.run(run_demo(args, console))
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

        return asyncio.run(run_sync(args, console))
    if args.command == "tail":
        from ._tail import run_tail

        return asyncio.run(run_tail(args))
    if args.command == "inspect":
        from ._inspect import run_inspect

        return run_inspect(args)
    from ._serve import run_serve

    return asyncio.run(run_serve(args))


def _quiet_stdout() -> None:
    """Point stdout at /dev/null: the reader went away (``| head``), and flushing the
    rest at exit would raise again, as "Exception ignored ... BrokenPipeError"."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a real file (captured by a test)
        pass


if __name__ == "__main__":
    sys.exit(main())
