"""querysync's sources: the world as Observables of decoded messages.

:func:`websocket` keeps one self-healing connection to a NodeTool ``/ws`` endpoint;
:func:`from_iterable` and :func:`from_jsonl` replay frames for notebooks and tests.
Every source may emit a :class:`querysync.Resync` in-band where changes may have been
missed; downstream operators pass it through in order.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Literal

import aiohttp
from reactivex import abc
from yarl import URL

from querysync._token import TokenProvider, TokenSource
from querysync.operators._decode import RejectHandler

from ._backoff import Backoff
from ._replay import Replay, replay_iterable_, replay_jsonl_
from ._state import ConnectionState
from ._websocket import (
    AUTH_CLOSE_CODES,
    DEFAULT_MAX_MSG_SIZE,
    FINAL_CLOSE_CODES,
    Message,
    WebSocketSource,
)

__all__ = [
    "AUTH_CLOSE_CODES",
    "DEFAULT_MAX_MSG_SIZE",
    "FINAL_CLOSE_CODES",
    "Backoff",
    "ConnectionState",
    "Message",
    "Replay",
    "WebSocketSource",
    "from_iterable",
    "from_jsonl",
    "websocket",
]


def websocket(
    url: str | URL,
    *,
    token: TokenSource | TokenProvider | None = None,
    token_in_query: bool = False,
    session: aiohttp.ClientSession | None = None,
    headers: Mapping[str, str] | None = None,
    max_msg_size: int = DEFAULT_MAX_MSG_SIZE,
    silence_timeout: float | None = 45.0,
    connect_timeout: float = 10.0,
    close_timeout: float = 5.0,
    backoff: Backoff | None = None,
    healthy_after: float = 10.0,
    max_attempts: int | None = None,
    heartbeat: float | None = None,
    final_close_codes: Collection[int] = FINAL_CLOSE_CODES,
    on_reject: RejectHandler | None = None,
    mode: Literal["binary", "text"] = "binary",
) -> WebSocketSource:
    """A hot Observable of the messages (dicts) of one NodeTool WebSocket, and resyncs.

    .. marble::
        --m1--m2--X.....--R--m3--|      (X: connection lost, R: Resync)

    Nothing happens until the first subscription, which opens the connection on the
    running asyncio loop; all subscribers share it, and the last one to unsubscribe
    closes it cleanly. Messages are delivered on the loop. A subscriber that raises is
    logged and counted (``counts["subscriber_errors"]``); the others, and the
    connection, go on.

    Frames: MessagePack binary frames and JSON text frames are both decoded (the real
    server switches to text once it receives text). A frame that cannot be decoded,
    is not an object, is not UTF-8 text, or is larger than ``max_msg_size`` bytes
    (default 4 MiB) becomes a :class:`querysync.Rejected` handed to ``on_reject``,
    logged and counted (``rejected``, and ``oversize`` for size); the connection and
    the frames around it go on. aiohttp itself is given a hard limit of
    ``max(4 * max_msg_size, 16 MiB)`` as a memory guard: a frame over that one costs
    the connection (counted as ``oversize_dropped``), which is then reconnected.

    Authentication: ``token`` is sent as ``Authorization: Bearer <token>``, or as the
    ``?api_key=<token>`` query parameter with ``token_in_query=True`` (for servers
    reached through something that drops headers). It is a string, or a
    :data:`querysync.TokenSource` callable (plain, run in a worker thread, or async)
    asked for the current token at every connection attempt; a source that raises
    fails that attempt only (counted as ``token_errors``, then the usual backoff).
    Credentials (the token, URL userinfo such as ``ws://user:pw@host``, ``api_key=``)
    are never logged: every log line, error and repr goes through one redaction.

    Reconnection: a connection that is lost, refused, closed with a code outside
    ``final_close_codes``, or silent for ``silence_timeout`` seconds (no frame at all,
    not even a ping; default 45, ``None`` to never time out; one timer per connection
    looks every quarter of it, so a silent connection is dropped after 1 to 1.25 times
    ``silence_timeout``, and the timeout costs nothing per frame) is reconnected after
    ``backoff.delay(n)`` seconds for the n-th attempt (default :class:`Backoff`:
    1 s * 1.5^(n-1) capped at 30 s, plus jitter). The schedule starts again only after a
    healthy connection, one that delivered frames and stayed up at least
    ``healthy_after`` seconds (default 10): a server that closes right after each
    frame is backed off like one that refuses. After every reconnection (not
    the first connection) a :class:`querysync.Resync` is emitted before any message
    of the new connection, since changes sent in between are lost.

    The end: the stream ends only on one of ``final_close_codes`` (default 1000, 1008,
    1009, 1010, 4000, 4001, 4003), after ``max_attempts`` attempts in a row without a
    connection that delivered a frame (default: never gives up), or by
    :meth:`WebSocketSource.close`. Close code 1000 completes the stream (state
    ``closed``). Codes 1008, 4001 and 4003, or a handshake refused with HTTP 401/403,
    end it with :class:`querysync.AuthenticationError` carrying the server's reason
    when the token is a string. With a token source they lead to one more attempt
    with the source's next answer (``token_refreshes``), at once; only a second
    refusal in a row is final. A connection that delivered frames before its 1008
    had its token accepted (it expired since): it is always worth another attempt
    (after ``backoff.delay(1)``, without growing the backoff). The other
    final codes and giving up end it with :class:`querysync.SourceError` (state
    ``failed``). aiohttp's exceptions never reach ``on_error``.

    Other options: ``session`` (an aiohttp ``ClientSession`` to use and leave open;
    otherwise the source opens and closes its own), ``headers`` (extra handshake
    headers), ``connect_timeout`` (seconds per attempt, default 10), ``close_timeout``
    (seconds to wait for the server's close reply, default 5), ``heartbeat`` (send
    WebSocket pings this often, seconds, and drop the connection when no pong comes;
    default off: the server pings), ``mode`` (``"binary"``: :meth:`~WebSocketSource.send`
    sends MessagePack; ``"text"``: JSON).

    The returned :class:`WebSocketSource` also has ``states`` (an Observable of
    :class:`ConnectionState`), ``state``, ``counts`` (a new ``Counter`` at each read),
    ``send()`` and ``close()``.
    """
    return WebSocketSource(
        url,
        token=token,
        token_in_query=token_in_query,
        session=session,
        headers=headers,
        max_msg_size=max_msg_size,
        silence_timeout=silence_timeout,
        connect_timeout=connect_timeout,
        close_timeout=close_timeout,
        backoff=backoff if backoff is not None else Backoff(),
        healthy_after=healthy_after,
        max_attempts=max_attempts,
        heartbeat=heartbeat,
        final_close_codes=final_close_codes,
        on_reject=on_reject,
        mode=mode,
    )


def from_iterable(
    frames: Iterable[Any],
    *,
    interval: float | None = None,
    scheduler: abc.SchedulerBase | None = None,
) -> Replay:
    """An Observable of ``frames``, unchanged, optionally ``interval`` seconds apart.

    .. marble::
        from_iterable([a, b, c], interval=2)
        a-b-c            (completes together with c)

    Items pass as they are (JSON ``str``, MessagePack ``bytes``, dicts, a
    :class:`querysync.Resync`): pipe through :func:`querysync.operators.decode` or
    ``resource_changes`` to decode them, as for a live source. The first item comes at
    once, item ``i`` at ``i * interval`` seconds after the subscription, on
    ``scheduler``, else the subscription's scheduler, else the running asyncio loop.
    Without ``interval`` the items come at once: on the scheduler if there is one,
    else synchronously during ``subscribe``. A subscriber that raises is logged and
    counted (``counts["subscriber_errors"]``) and the replay goes on.
    """
    return replay_iterable_(frames, interval, scheduler)


def from_jsonl(
    path: str | os.PathLike[str],
    *,
    timing: bool = False,
    speed: float = 1.0,
    scheduler: abc.SchedulerBase | None = None,
    on_reject: RejectHandler | None = None,
) -> Replay:
    """An Observable of the messages recorded in a JSON-lines file, optionally at their pace.

    .. marble::
        from_jsonl(path, timing=True)      (lines a, b, c, d recorded at t=0, 0, 2, 3)
        a-c-d            (b right after a; completes together with d)

    The recording format (what :func:`querysync.sinks.to_jsonl` writes), UTF-8, one
    JSON object per line:

    - ``{"t": <seconds since the recording started>, "frame": <message object>}``;
    - ``{"t": <seconds>, "resync": {"reason": <str>, "attempt": <int>}}``, replayed
      as a :class:`querysync.Resync`;
    - a bare message object (any object that is not one of the two above) is accepted
      too and has no time of its own: it comes right after the line before it
      (at 0 if first). ``"t"`` may also be left out of a record with the same effect.

    Blank lines are skipped. A line that is not JSON, not an object, or whose ``"t"``,
    ``"frame"`` or ``"resync"`` has the wrong type is rejected: counted
    (``counts["rejected"]``), logged and handed to ``on_reject``; the replay goes on.
    Lines are emitted in file order: an offset smaller than the one before it is
    raised to it (``counts["reordered"]``).

    With ``timing=True`` a line recorded at ``t`` is emitted ``t / speed`` seconds after
    the subscription, on ``scheduler``, else the subscription's scheduler, else the
    running asyncio loop (a ``TestScheduler`` makes it a marble test). Without timing
    the lines come at once, on the scheduler if there is one (in batches, so that a
    long file does not hold the loop), else synchronously during ``subscribe``. The
    file is read line by line as the replay goes; an unreadable file ends the stream
    with :class:`querysync.SourceError`.
    """
    return replay_jsonl_(path, timing, speed, scheduler, on_reject)


def _claim_public_classes() -> None:
    # Public classes report this module (help, repr, tracebacks), not the private one.
    from querysync._public import claim

    claim(__name__, globals(), __all__)


_claim_public_classes()
