"""The token flags: --token-file and --token-command for clients, --token-ttl for serve."""

from __future__ import annotations

import argparse
import math
import os
from typing import Any

from querysync._exceptions import ConfigurationError
from querysync._token import TokenCommand, TokenFile, TokenProvider

__all__ = ["add_serve_token_args", "add_token_args", "serve_token_options", "token_provider"]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be positive seconds, got {text}")
    return value


def add_token_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--token-file`` and ``--token-command`` beside the parser's ``--token``."""
    parser.add_argument(
        "--token-file",
        metavar="PATH",
        default=None,
        help="read the token from this file at each connection and after a 401 "
        "(a rotated file is picked up without a restart)",
    )
    parser.add_argument(
        "--token-command",
        metavar="CMD",
        default=None,
        help="run this shell command for a token (its trimmed output) at each "
        "connection and after a 401",
    )
    parser.add_argument(
        "--token-timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="how long --token-command may take (default 10)",
    )


def add_serve_token_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--token-ttl`` and ``--token-file`` to ``serve``."""
    parser.add_argument(
        "--token-ttl",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="issued tokens expire after this long (1008 / 401); new ones from "
        "POST /api/auth/token (Bearer --token) or --token-file",
    )
    parser.add_argument(
        "--token-file",
        metavar="PATH",
        default=None,
        help="with --token-ttl: keep a valid token in this file (0600), rewritten "
        "every ttl/2 seconds",
    )


def serve_token_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``NodeToolServer`` keywords of ``serve``'s token flags.

    Raises:
        ConfigurationError: ``--token-file`` without ``--token-ttl``.
    """
    if args.token_file and args.token_ttl is None:
        raise ConfigurationError("--token-file needs --token-ttl: it holds the issued tokens")
    return {"token_ttl": args.token_ttl, "token_file": args.token_file}


async def token_provider(args: argparse.Namespace) -> TokenProvider:
    """The token provider the flags ask for, asked once now so a broken source fails early.

    ``--token``, ``--token-file`` and ``--token-command`` exclude each other; a token from
    ``QUERYSYNC_TOKEN`` yields to either of the other two.

    Raises:
        ConfigurationError: more than one was given.
        TokenSourceError: the file or command gives no token now.
    """
    token = getattr(args, "token", None)
    # A token taken from the environment yields to a file or command on the line.
    from_env = token is not None and token == os.environ.get("QUERYSYNC_TOKEN")
    if from_env and (args.token_file or args.token_command):
        token = None
    given = [
        name
        for name, value in (
            ("--token", token),
            ("--token-file", args.token_file),
            ("--token-command", args.token_command),
        )
        if value
    ]
    if len(given) > 1:
        raise ConfigurationError(f"give only one of {', '.join(given)}")
    if args.token_file:
        provider = TokenProvider(TokenFile(args.token_file))
    elif args.token_command:
        command = TokenCommand(args.token_command, timeout=args.token_timeout)
        provider = TokenProvider(command, timeout=args.token_timeout + 1.0)
    else:
        provider = TokenProvider(token or None)
    await provider.current()
    return provider
