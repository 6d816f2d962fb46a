"""What the command line accepts: checked argument types, URLs derived from ``--server``.

Every check here runs while the arguments are parsed, so bad input ends the command
with one line and exit status 2 before anything is opened or connected.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Mapping

from yarl import URL

__all__ = [
    "SERVER_ENV",
    "TOKEN_ENV",
    "api_url",
    "number",
    "port",
    "resolve_endpoints",
    "resolve_token",
    "server_url",
    "ws_url",
]

SERVER_ENV = "QUERYSYNC_SERVER"
"""The environment variable read when ``--server`` is not given."""
TOKEN_ENV = "QUERYSYNC_TOKEN"
"""The environment variable read when ``--token`` is not given (``ps`` shows flags, not it)."""

_WS_SCHEMES = ("ws", "wss", "http", "https")
_HTTP_SCHEMES = ("http", "https")


def _url(text: str, schemes: tuple[str, ...], what: str) -> URL:
    try:
        url = URL(text)
        url.port  # noqa: B018 (yarl checks the port only when it is read)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(f"{what} {text!r} is not a valid URL: {exc}") from None
    if url.scheme not in schemes:
        wanted = ", ".join(f"{s}://" for s in schemes)
        raise argparse.ArgumentTypeError(f"{what} {text!r} needs one of {wanted}")
    if not url.host:
        raise argparse.ArgumentTypeError(f"{what} {text!r} names no host")
    return url


def ws_url(text: str) -> str:
    """A WebSocket URL (ws://, wss://, http:// or https://) with a host and a valid port."""
    return str(_url(text, _WS_SCHEMES, "WebSocket URL"))


def api_url(text: str) -> str:
    """A REST base URL (http:// or https://) with a host and a valid port."""
    return str(_url(text, _HTTP_SCHEMES, "REST URL"))


def server_url(text: str) -> str:
    """A server base URL (http(s):// or ws(s)://), from which both endpoints are derived."""
    return str(_url(text, _WS_SCHEMES, "server URL"))


def port(text: str) -> int:
    """A TCP port, 0 to 65535 (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port {text!r} is not a whole number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is not between 0 and 65535")
    return value


def number(*, minimum: float, inclusive: bool = True, unit: str = "") -> Callable[[str], float]:
    """A parser of a finite float ``>= minimum`` (``> minimum`` when not ``inclusive``)."""
    bound = f"at least {minimum:g}" if inclusive else f"greater than {minimum:g}"
    suffix = f" {unit}" if unit else ""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        ok = value >= minimum if inclusive else value > minimum
        if not math.isfinite(value) or not ok:
            raise argparse.ArgumentTypeError(f"{text!r} must be {bound}{suffix}")
        return value

    parse.__name__ = "number"  # argparse names the type in its "invalid ... value" message
    return parse


def _derived(server: str) -> tuple[str, str]:
    """(WebSocket URL, REST base) of a NodeTool server at ``server``: ``/ws`` under its path."""
    url = URL(server).with_query(None).with_fragment(None)
    secure = url.scheme in ("https", "wss")
    base = url.with_scheme("https" if secure else "http")
    ws = url.with_scheme("wss" if secure else "ws")
    path = url.path.rstrip("/")
    return str(ws.with_path(path + "/ws")), str(base.with_path(path or "/")).rstrip("/")


def resolve_endpoints(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    *,
    need_api: bool,
    environ: Mapping[str, str] = os.environ,
) -> None:
    """Fill ``args.ws`` (and ``args.api``) from ``--server`` or ``$QUERYSYNC_SERVER``.

    The explicit ``--ws`` and ``--api`` win over the derived ones; a missing endpoint,
    or a bad ``$QUERYSYNC_SERVER``, is a usage error (exit 2).
    """
    server = args.server
    if server is None and environ.get(SERVER_ENV):
        try:
            server = server_url(environ[SERVER_ENV])
        except argparse.ArgumentTypeError as exc:
            parser.error(f"${SERVER_ENV}: {exc}")
    if server is not None:
        ws, api = _derived(server)
        args.ws = args.ws or ws
        if need_api:
            args.api = args.api or api
    missing = [
        flag
        for flag, value in (("--ws", args.ws), ("--api", getattr(args, "api", "")))
        if not value and (flag == "--ws" or need_api)
    ]
    if missing:
        parser.error(f"{' and '.join(missing)} or --server (or ${SERVER_ENV}) is required")


def resolve_token(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> None:
    """``args.token`` from ``$QUERYSYNC_TOKEN`` when the flag was not given."""
    if getattr(args, "token", None) is None and environ.get(TOKEN_ENV):
        args.token = environ[TOKEN_ENV]
