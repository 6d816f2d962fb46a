"""WebSocketSource: one shared, self-healing WebSocket connection as an Observable."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import aiohttp
import msgpack
from reactivex import Observable, abc
from reactivex.disposable import Disposable
from yarl import URL

from querysync._exceptions import (
    AuthenticationError,
    ConfigurationError,
    SourceError,
    TokenSourceError,
)
from querysync._redact import redact
from querysync._signals import Rejected, Resync
from querysync._token import TokenProvider, TokenSource
from querysync.operators._decode import RejectHandler, decode_frame, report_rejection

from ._backoff import Backoff
from ._state import ConnectionState, StateCell
from ._watchdog import Watchdog

__all__ = [
    "AUTH_CLOSE_CODES",
    "DEFAULT_MAX_MSG_SIZE",
    "FINAL_CLOSE_CODES",
    "Message",
    "WebSocketSource",
]

log = logging.getLogger("querysync.streams")

Message = dict[str, Any]
_Item = Message | Resync

MIB = 1024 * 1024
DEFAULT_MAX_MSG_SIZE = 4 * MIB
FINAL_CLOSE_CODES: frozenset[int] = frozenset({1000, 1008, 1009, 1010, 4000, 4001, 4003})
"""Close codes after which the reference client never reconnects."""
AUTH_CLOSE_CODES: frozenset[int] = frozenset({1008, 4001, 4003})
"""Final close codes that mean "your credentials were refused" (4001/4003 mirror HTTP 401/403)."""
REFUSED_ATTEMPTS = 3
"""Handshakes in a row answered with a 4xx (not 401, 403, 408 or 429) before giving up."""

_PREVIEW = 256
_BINARY = aiohttp.WSMsgType.BINARY
_TEXT = aiohttp.WSMsgType.TEXT
# Older aiohttp always decodes text frames and drops the connection on invalid UTF-8;
# where it can hand us the bytes, one bad text frame is rejected and the rest go on.
_DECODE_TEXT_KW: dict[str, Any] = (
    {"decode_text": False}
    if "decode_text" in inspect.signature(aiohttp.ClientSession.ws_connect).parameters
    else {}
)


class _Retry(Exception):
    """A connection attempt failed in a way the next attempt may not repeat."""


class _Refused(Exception):
    """The handshake was refused with HTTP 401 or 403: the credentials, not the network."""


@dataclass
class _End:
    """How one connection, or one attempt to connect, ended when it was not on our request."""

    reason: str
    code: int | None = None


@dataclass
class _Run:
    """One life of the shared connection: from the first subscriber to the last."""

    task: asyncio.Task[None] | None = None
    ws: aiohttp.ClientWebSocketResponse | None = None
    stopping: bool = False


def _preview(data: object) -> object:
    if isinstance(data, bytes | bytearray | str) and len(data) > _PREVIEW:
        return data[:_PREVIEW]
    return data


class WebSocketSource(Observable[_Item]):
    """Decoded messages (dicts) and in-band :class:`querysync.Resync` from one WebSocket.

    Build it with :func:`querysync.streams.websocket`. It is hot and ref-counted:
    every subscriber shares one connection, which the first subscription opens (on
    the running asyncio loop) and the last unsubscription closes cleanly. A later
    subscription starts a fresh connection, whose first connect is again not a resync.

    Attributes:
        counts: a snapshot ``Counter`` of what happened (see :attr:`counts`).
        states: an Observable of :class:`ConnectionState`, current state first.
        state: the current :class:`ConnectionState`.
    """

    def __init__(
        self,
        url: str | URL,
        *,
        token: TokenSource | TokenProvider | None,
        token_in_query: bool,
        session: aiohttp.ClientSession | None,
        headers: Mapping[str, str] | None,
        max_msg_size: int,
        silence_timeout: float | None,
        connect_timeout: float,
        close_timeout: float,
        backoff: Backoff,
        healthy_after: float,
        max_attempts: int | None,
        heartbeat: float | None,
        final_close_codes: Collection[int],
        on_reject: RejectHandler | None,
        mode: Literal["binary", "text"],
    ) -> None:
        super().__init__()
        target = URL(url)
        if target.scheme not in ("ws", "wss", "http", "https"):
            raise ConfigurationError(
                f"a WebSocket URL needs ws://, wss://, http:// or https://, got {redact(url)}"
            )
        _check_positive("max_msg_size", max_msg_size)
        _check_positive("connect_timeout", connect_timeout)
        _check_positive("close_timeout", close_timeout)
        if silence_timeout is not None:
            _check_positive("silence_timeout", silence_timeout)
        if heartbeat is not None:
            _check_positive("heartbeat", heartbeat)
        if not healthy_after >= 0:
            raise ConfigurationError(f"healthy_after must be >= 0 seconds, got {healthy_after}")
        if max_attempts is not None and max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be at least 1 or None, got {max_attempts}")
        if mode not in ("binary", "text"):
            raise ConfigurationError(f'mode must be "binary" or "text", got {mode!r}')
        if token_in_query and not token:
            raise ConfigurationError("token_in_query=True needs a token")
        if token and not token_in_query and (target.user or target.password):
            # aiohttp sends URL userinfo as the Authorization header, the token's place.
            raise ConfigurationError(
                "a URL with user:password@ and a Bearer token cannot go together; "
                "use token_in_query=True or drop one"
            )

        self._tokens = token if isinstance(token, TokenProvider) else TokenProvider(token or None)
        self._token_in_query = token_in_query
        # Userinfo (ws://user:password@host) is a credential too: never shown.
        self._display_url = redact(target.with_query(None))
        self._headers = dict(headers or {})
        self._url = target
        self._healthy_after = healthy_after
        self._session = session
        self._max_msg_size = max_msg_size
        # aiohttp's own limit is only a memory guard: a frame over it costs the
        # connection, while one over ours is rejected and the connection goes on.
        self._hard_max_msg_size = max(4 * max_msg_size, 16 * MIB)
        self._silence_timeout = silence_timeout
        self._connect_timeout = connect_timeout
        self._close_timeout = close_timeout
        self._backoff = backoff
        self._max_attempts = max_attempts
        self._heartbeat = heartbeat
        self._final_close_codes = frozenset(final_close_codes)
        self._on_reject = on_reject
        self._mode = mode

        # What happens on every frame is counted in plain ints (a Counter increment
        # costs several times more); the rarer events go to the Counter.
        self._counts: Counter[str] = Counter()
        self._frames = 0
        self._bytes = 0
        self._text = 0
        self._messages = 0
        self._state = StateCell(self._counts, ConnectionState.CLOSED)
        self._observers: dict[int, abc.ObserverBase[_Item]] = {}
        # The only subscriber, when there is exactly one: emitting needs no copy then.
        self._single: abc.ObserverBase[_Item] | None = None
        self._next_token = 0
        self._run: _Run | None = None
        self._stopper: asyncio.Task[None] | None = None
        self._closed = False
        self._refused_in_row = 0  # handshakes refused in a row with a 4xx: see _connect

    def __repr__(self) -> str:
        return f"<WebSocketSource {self._display_url} {self._state.value}>"

    def _redact(self, text: object) -> str:
        return redact(text, self._tokens.secrets)

    @property
    def url(self) -> str:
        """The URL connected to, without its query (which may hold the token)."""
        return self._display_url

    @property
    def counts(self) -> Counter[str]:
        """A new ``Counter`` of what happened so far; later events do not change it.

        ``attempts``, ``connections``, ``reconnects``, ``resyncs``, ``drops``, ``silent``,
        ``frames``, ``bytes``, ``text``, ``binary``, ``pings``, ``pongs``, ``messages``,
        ``rejected``, ``oversize``, ``oversize_dropped``, ``subscriber_errors``,
        ``on_reject_errors``, ``token_errors`` (the token source failed an attempt),
        ``auth_refused`` (credentials refused), ``token_refreshes`` (a refused or
        expired token led to one more try with the source's next answer); a name
        appears once its count is above zero.
        """
        counts = self._counts.copy()
        for name, value in (
            ("frames", self._frames),
            ("bytes", self._bytes),
            ("text", self._text),
            ("binary", self._frames - self._text),
            ("messages", self._messages),
        ):
            if value:
                counts[name] = value
        return counts

    @property
    def state(self) -> ConnectionState:
        """The current connection state."""
        return self._state.value

    @property
    def states(self) -> Observable[ConnectionState]:
        """The connection states: the current one at once, then every change; never completes.

        Subscribing to it does not open the connection.
        """
        return self._state.observable

    @property
    def max_msg_size(self) -> int:
        """The largest frame accepted, bytes; a larger one is rejected and counted."""
        return self._max_msg_size

    # -- subscription: hot and ref-counted -------------------------------------------

    def _subscribe_core(
        self,
        observer: abc.ObserverBase[_Item],
        scheduler: abc.SchedulerBase | None = None,
    ) -> abc.DisposableBase:
        if self._closed:
            observer.on_completed()
            return Disposable()
        if self._run is None:
            self._start()
        token = self._next_token
        self._next_token += 1
        self._observers[token] = observer
        self._observers_changed()
        return Disposable(lambda: self._unsubscribe(token))

    def _observers_changed(self) -> None:
        observers = self._observers
        self._single = next(iter(observers.values())) if len(observers) == 1 else None

    def _start(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ConfigurationError(
                "a WebSocket source connects on the running asyncio loop: subscribe to it "
                "inside a coroutine (or a callback of the loop)"
            ) from None
        run = _Run()
        run.task = loop.create_task(self._main(run, self._stopper), name=f"querysync {self!r}")
        self._run = run

    def _unsubscribe(self, token: int) -> None:
        if self._observers.pop(token, None) is None:
            return
        self._observers_changed()
        if self._observers:
            return
        run, self._run = self._run, None
        if run is not None and run.task is not None:
            self._stopper = run.task.get_loop().create_task(self._stop(run))

    async def _stop(self, run: _Run) -> None:
        run.stopping = True
        assert run.task is not None
        ws = run.ws
        if ws is not None and not ws.closed:
            # Closing from here sends the close frame and wakes the receive loop, which
            # then ends on its own; cancelling it instead would skip the close frame.
            try:
                await ws.close()
            except Exception:
                log.debug("closing %s raised", self._display_url, exc_info=True)
            await asyncio.wait({run.task}, timeout=self._close_timeout)
        if not run.task.done():
            run.task.cancel()
        await asyncio.wait({run.task})

    async def close(self) -> None:
        """Close the connection for good: subscribers complete, later ones complete at once.

        A session passed as ``session=`` stays open; one the source made is closed.
        """
        self._closed = True
        run, self._run = self._run, None
        if run is not None:
            await self._stop(run)
        elif self._stopper is not None:
            await asyncio.wait({self._stopper})
        observers = list(self._observers.values())
        self._observers.clear()
        self._observers_changed()
        self._state.set(ConnectionState.CLOSED)
        for observer in observers:
            self._deliver_end(observer, None)

    async def __aenter__(self) -> WebSocketSource:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def send(self, message: Mapping[str, Any]) -> None:
        """Send one message: MessagePack binary in ``mode="binary"``, JSON text in ``"text"``.

        The real server answers in the kind of frame it last received, so sending text
        switches it to JSON text frames (both kinds are decoded anyway).

        Raises:
            SourceError: not connected, or the connection failed while sending.
            TypeError: the message cannot be encoded.
        """
        run = self._run
        ws = run.ws if run is not None else None
        if ws is None or ws.closed:
            raise SourceError(f"cannot send: not connected to {self._display_url}")
        try:
            if self._mode == "binary":
                await ws.send_bytes(msgpack.packb(dict(message), use_bin_type=True))
            else:
                await ws.send_str(json.dumps(dict(message)))
        except (aiohttp.ClientError, OSError, RuntimeError) as exc:
            raise SourceError(f"cannot send to {self._display_url}: {exc}") from exc

    # -- the connection task -----------------------------------------------------------

    async def _main(self, run: _Run, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            # The last run may still be saying goodbye to the server; one connection at a time.
            await asyncio.wait({previous})
        outcome: Exception | None = None
        session = self._session
        owned = session is None
        try:
            if session is None:
                session = aiohttp.ClientSession()
            await self._connect_loop(run, session)
        except asyncio.CancelledError:
            if not run.stopping:
                raise
        except SourceError as exc:
            outcome = exc
        except Exception as exc:
            log.exception("the WebSocket source for %s failed", self._display_url)
            outcome = SourceError(
                self._redact(f"the WebSocket source for {self._display_url} failed: {exc!r}")
            )
            outcome.__cause__ = exc
        finally:
            if owned and session is not None:
                await session.close()
        if run.stopping:
            if self._run is None:
                self._state.set(ConnectionState.CLOSED)
            return
        self._finish(run, outcome)

    def _finish(self, run: _Run, outcome: Exception | None) -> None:
        if self._run is run:
            self._run = None
        observers = list(self._observers.values())
        self._observers.clear()
        self._observers_changed()
        if outcome is None:
            log.info("WebSocket %s closed by the server", self._display_url)
            self._state.set(ConnectionState.CLOSED)
        else:
            log.error("WebSocket source ended: %s", outcome)
            self._state.set(ConnectionState.FAILED)
        for observer in observers:
            self._deliver_end(observer, outcome)

    async def _connect_loop(self, run: _Run, session: aiohttp.ClientSession) -> None:
        reconnect = 0  # number of the reconnection attempt under way: picks the delay
        failed = 0  # attempts in a row that gave no good connection: for max_attempts
        connected_before = False
        reason = ""
        # The credentials were refused and this attempt carries the source's next
        # answer: a second refusal is final.
        retrying_refused = False
        clock = asyncio.get_running_loop().time
        while not run.stopping:
            self._state.set(
                ConnectionState.RECONNECTING if reconnect else ConnectionState.CONNECTING
            )
            self._counts["attempts"] += 1
            seen_before = self._activity()
            delay: float | None = None
            expired = False
            lasted = 0.0
            try:
                ws = await self._connect(session, first=not (reconnect or connected_before))
            except _Retry as exc:
                end = _End(str(exc))
            except _Refused as exc:
                self._refused(str(exc), retrying_refused)
                retrying_refused = True
                end, delay = _End(str(exc)), 0.0
            else:
                run.ws = ws
                connected_at = clock()
                try:
                    if run.stopping:
                        return
                    self._counts["connections"] += 1
                    self._state.set(ConnectionState.CONNECTED)
                    log.info("WebSocket %s connected", self._display_url)
                    had_connection = connected_before
                    if connected_before:
                        self._counts["reconnects"] += 1
                        self._counts["resyncs"] += 1
                        self._emit(Resync(reason=f"reconnected after {reason}", attempt=reconnect))
                    connected_before = True
                    ended = await self._receive(run, ws)
                finally:
                    run.ws = None
                    await ws.close()
                lasted = clock() - connected_at
                if ended is None:
                    return
                if ended.code in AUTH_CLOSE_CODES and ended.code in self._final_close_codes:
                    if self._activity() > seen_before:
                        # Frames came first, so the token was taken: it has expired or
                        # been revoked since. Worth the source's next answer, without
                        # growing the backoff (a token that lives 3 s is no failure).
                        self._refused(ended.reason, False)
                        retrying_refused = False
                        expired, delay = True, self._backoff.delay(1)
                    else:
                        self._refused(ended.reason, retrying_refused)
                        retrying_refused, delay = True, 0.0
                        # Refused at once: no connection was had, so none to resync after.
                        connected_before = had_connection
                elif self._is_final(ended):
                    return
                else:
                    retrying_refused = False
                end = ended
                self._counts["drops"] += 1
            reason = end.reason
            if self._activity() > seen_before:
                failed = 0
                # Only a connection that stayed up healthy_after seconds starts the
                # schedule again: a server that closes right after one frame would
                # otherwise be reconnected (and resynced in full) about once a second.
                if lasted >= self._healthy_after:
                    reconnect = 0
            else:
                failed += 1
            if self._max_attempts is not None and failed >= self._max_attempts:
                raise SourceError(
                    f"gave up on {self._display_url} after {failed} failed connection "
                    f"attempt(s); last: {reason}"
                )
            # An expiry is no failure: the schedule stays where it was.
            reconnect = max(reconnect, 1) if expired else reconnect + 1
            self._state.set(ConnectionState.RECONNECTING)
            if delay is None:
                delay = self._backoff.delay(reconnect)
            log.warning(
                "WebSocket %s: %s; reconnecting in %.2f s (attempt %d)",
                self._display_url,
                reason,
                delay,
                reconnect,
            )
            await asyncio.sleep(delay)

    def _refused(self, reason: str, retrying: bool) -> None:
        """Count refused credentials; raise unless the token source may give better ones."""
        self._counts["auth_refused"] += 1
        if self._tokens.fixed:
            raise AuthenticationError(
                f"{self._display_url} rejected the credentials ({reason}); not reconnecting"
            )
        if retrying:
            raise AuthenticationError(
                f"{self._display_url} rejected the credentials again after a refresh of "
                f"the token ({reason}); not reconnecting"
            )
        self._counts["token_refreshes"] += 1
        log.warning(
            "WebSocket %s rejected the token (%s); asking the token source again",
            self._display_url,
            reason,
        )

    async def _target(self, first: bool) -> tuple[URL, dict[str, str]]:
        """The URL and handshake headers of one attempt, with the source's current token."""
        try:
            # A source is asked at every attempt: a token file rotated since the last
            # connection is read again, not only after a refusal. The first attempt
            # takes a token just asked for (by REST, or a caller checking the source).
            token = await (self._tokens.current() if first else self._tokens.refresh())
        except TokenSourceError as exc:
            self._counts["token_errors"] += 1
            raise _Retry(str(exc)) from exc
        if not token:
            return self._url, self._headers
        if self._token_in_query:
            return self._url.update_query(api_key=token), self._headers
        return self._url, {**self._headers, "Authorization": f"Bearer {token}"}

    async def _connect(
        self, session: aiohttp.ClientSession, *, first: bool
    ) -> aiohttp.ClientWebSocketResponse:
        url, headers = await self._target(first)
        try:
            async with asyncio.timeout(self._connect_timeout):
                ws: aiohttp.ClientWebSocketResponse = await session.ws_connect(
                    url,
                    headers=headers,
                    max_msg_size=self._hard_max_msg_size,
                    heartbeat=self._heartbeat,
                    # Pings must reach the receive loop: they are frames, and they prove
                    # that a quiet connection is still alive.
                    autoping=False,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=self._close_timeout),
                    **_DECODE_TEXT_KW,
                )
                self._refused_in_row = 0
                return ws
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                raise _Refused(f"HTTP {exc.status}") from exc
            self._give_up_on_refusal(exc)
            raise _Retry(
                self._redact(f"handshake refused with HTTP {exc.status} {exc.message}")
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise _Retry(self._redact(_cannot_connect(exc))) from exc
        except aiohttp.InvalidURL as exc:
            raise SourceError(
                self._redact(f"invalid WebSocket URL {self._display_url}: {exc}")
            ) from exc
        except TimeoutError as exc:
            raise _Retry(f"no connection within {self._connect_timeout} s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise _Retry(self._redact(f"cannot connect: {exc}")) from exc
        except RuntimeError as exc:  # "Session is closed": the caller's session is gone
            raise SourceError(
                self._redact(f"cannot connect to {self._display_url}: {exc}")
            ) from exc

    def _give_up_on_refusal(self, exc: aiohttp.WSServerHandshakeError) -> None:
        """Raise SourceError once a 4xx (a wrong path, say) has answered REFUSED_ATTEMPTS times.

        A client error does not heal by itself, unlike a 5xx or a refused connection;
        408 and 429 do (a slow or busy server) and are retried as those are.
        """
        if not 400 <= exc.status < 500 or exc.status in (408, 429):
            return
        self._refused_in_row += 1
        self._counts["handshake_refused"] += 1
        if self._refused_in_row >= REFUSED_ATTEMPTS:
            raise SourceError(
                f"{self._display_url} answered the WebSocket handshake with HTTP "
                f"{exc.status} {exc.message} {self._refused_in_row} times in a row (is the URL "
                "right?); not reconnecting"
            ) from exc

    async def _receive(self, run: _Run, ws: aiohttp.ClientWebSocketResponse) -> _End | None:
        task = asyncio.current_task()
        assert task is not None  # _main runs as a task
        cancelling = task.cancelling()
        watchdog: Watchdog | None = None
        if self._silence_timeout is not None:
            # One timer for the connection, not one per receive(timeout=...): see Watchdog.
            watchdog = Watchdog(task, self._silence_timeout, self._activity)
        receive = ws.receive
        on_frame = self._on_frame
        try:
            while not run.stopping:
                # receive() must keep being awaited: aiohttp reads pongs only inside it.
                msg = await receive()
                kind = msg.type
                if kind is _BINARY:
                    on_frame(msg.data, False)
                elif kind is _TEXT:
                    on_frame(msg.data, True)
                elif kind is aiohttp.WSMsgType.PING:
                    self._counts["pings"] += 1
                    try:
                        await ws.pong(msg.data)
                    except (aiohttp.ClientError, OSError, RuntimeError):
                        log.debug("pong to %s failed", self._display_url, exc_info=True)
                elif kind is aiohttp.WSMsgType.PONG:
                    self._counts["pongs"] += 1
                elif kind is aiohttp.WSMsgType.CLOSE:
                    code = int(msg.data)
                    detail = f": {self._redact(msg.extra)}" if msg.extra else ""
                    return _End(f"close code {code}{detail}", code=code)
                elif kind is aiohttp.WSMsgType.ERROR:
                    error = msg.data
                    if getattr(error, "code", None) == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
                        self._counts["oversize_dropped"] += 1
                        return _End(
                            f"a frame over the hard limit of {self._hard_max_msg_size} bytes"
                        )
                    return _End(self._redact(f"connection error: {error}"))
                else:  # CLOSING or CLOSED: the connection is gone, or we are closing it
                    if run.stopping:
                        return None
                    return _End("connection lost")
            return None
        except asyncio.CancelledError:
            # The watchdog's cancellation is ours to absorb; any other one goes on (the
            # same rule as asyncio.timeout's).
            if watchdog is None or not watchdog.fired or task.uncancel() > cancelling:
                raise
            self._counts["silent"] += 1
            return _End(f"{self._silence_timeout} s without a frame")
        finally:
            if watchdog is not None:
                watchdog.stop()

    def _activity(self) -> int:
        """Frames of any kind received so far, pings and pongs too: proof of a live connection."""
        return self._frames + self._counts["pings"] + self._counts["pongs"]

    def _is_final(self, end: _End) -> bool:
        """True if the server closed normally; raises for the other final codes.

        The credential codes never get here: :meth:`_refused` decides about them.
        """
        if end.code is None or end.code not in self._final_close_codes:
            return False
        if end.code == aiohttp.WSCloseCode.OK:
            return True
        raise SourceError(
            f"{self._display_url} closed the connection with {end.reason}; not reconnecting"
        )

    def _on_frame(self, data: Any, text: bool) -> None:
        self._frames += 1
        if text:
            self._text += 1
            kind = "text"
            # A str comes only from an aiohttp too old to hand over the text frame's bytes.
            if isinstance(data, str):
                size = len(data.encode("utf-8", "surrogatepass"))
            else:
                size = len(data)
        else:
            kind = "binary"
            size = len(data)
        self._bytes += size
        if size > self._max_msg_size:
            self._counts["oversize"] += 1
            self._reject(
                data, f"{kind} frame of {size} bytes exceeds max_msg_size {self._max_msg_size}"
            )
            return
        if text and not isinstance(data, str):
            try:
                data = bytes(data).decode("utf-8")
            except UnicodeDecodeError as exc:
                self._reject(data, f"text frame is not valid UTF-8: {exc}")
                return
        try:
            message = decode_frame(data)
        except ValueError as exc:
            self._reject(data, str(exc))
            return
        self._messages += 1
        self._emit(message)

    def _reject(self, frame: object, reason: str) -> None:
        report_rejection(
            Rejected(_preview(frame), reason, "websocket"), self._counts, self._on_reject
        )

    # -- delivery: a subscriber's exception stays with that subscriber -------------------

    def _emit(self, item: _Item) -> None:
        single = self._single
        if single is not None:
            try:
                single.on_next(item)
            except Exception:
                self._subscriber_raised()
            return
        # A subscriber may subscribe or unsubscribe others while it is being called: a
        # new one gets the next item, a removed one is not called again.
        observers = self._observers
        for token, observer in list(observers.items()):
            if token not in observers:
                continue
            try:
                observer.on_next(item)
            except Exception:
                self._subscriber_raised()

    def _subscriber_raised(self) -> None:
        self._counts["subscriber_errors"] += 1
        log.exception("a subscriber of %s raised", self._display_url)

    def _deliver_end(self, observer: abc.ObserverBase[_Item], error: Exception | None) -> None:
        try:
            if error is None:
                observer.on_completed()
            else:
                observer.on_error(error)
        except Exception:
            self._subscriber_raised()


def _cannot_connect(exc: aiohttp.ClientConnectorError) -> str:
    """Why a connection failed, without aiohttp's ``ssl:default`` (said of ws:// URLs too)."""
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"cannot connect: {exc}"
    error = exc.os_error
    errno = error.errno
    reason = os.strerror(errno) if isinstance(errno, int) and errno > 0 else error.strerror
    return f"cannot connect to {exc.host}:{exc.port}: {reason or error}"


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigurationError(f"{name} must be greater than zero, got {value}")
