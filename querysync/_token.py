"""Token sources: a fixed token, or a callable asked again when the token may have expired."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from ._exceptions import ConfigurationError, TokenSourceError
from ._redact import redact

__all__ = ["TokenCommand", "TokenFile", "TokenProvider", "TokenSource"]

log = logging.getLogger("querysync.auth")

TokenSource = str | Callable[[], str | Awaitable[str]]
"""A token: a string used as it is, or a callable (plain or async) returning the current one."""

# Tokens kept for redaction after they were replaced: an old token in a late log line
# must not leak either, and a few is enough (they rotate about hourly).
_REMEMBERED = 8
_STDERR_PREVIEW = 200


class TokenProvider:
    """The current token of a :data:`TokenSource`, cached until :meth:`refresh`.

    A string source is returned as it is and never refreshed. A callable is called on
    the first :meth:`current` and on every :meth:`refresh`; a plain callable runs in a
    worker thread (it may read a file or a keyring), an async one on the loop. Either
    is bounded by ``timeout`` seconds (default 30). What it raises, a timeout, or an
    answer that is not a non-empty string becomes :class:`querysync.TokenSourceError`
    (counted as ``errors``); the cached token is kept. Concurrent refreshes share one
    call of the source. ``counts``: ``asks`` (calls of the source), ``errors``.
    """

    def __init__(self, source: TokenSource | None, *, timeout: float = 30.0) -> None:
        if source is not None and not isinstance(source, str) and not callable(source):
            raise ConfigurationError(
                f"a token is a string or a callable returning one, got {type(source).__name__}"
            )
        if not timeout > 0:
            raise ConfigurationError(f"the token timeout must be positive seconds, got {timeout}")
        self._source = source
        self._timeout = timeout
        self._token: str | None = source if isinstance(source, str) and source else None
        self._asking: asyncio.Task[str] | None = None
        self._seen: list[str] = [self._token] if self._token else []
        self.counts: Counter[str] = Counter()

    def __repr__(self) -> str:
        kind = "none" if self._source is None else "fixed" if self.fixed else "refreshable"
        return f"<TokenProvider {kind}>"

    @property
    def source(self) -> TokenSource | None:
        """What tokens come from: a fixed string, a callable, or None (no token)."""
        return self._source

    @property
    def fixed(self) -> bool:
        """True when there is no callable to ask: refreshing cannot give another token."""
        return not callable(self._source)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The tokens handed out lately, for :func:`querysync._redact.redact`."""
        return tuple(self._seen)

    async def current(self) -> str | None:
        """The cached token; the source is asked only if it never answered yet."""
        if self._token is not None or self.fixed:
            return self._token
        return await self.refresh()

    async def refresh(self, rejected: str | None = None) -> str | None:
        """Ask the source again and cache its answer.

        With ``rejected`` (the token a server just refused), a token that already
        replaced it is returned without asking again: after an expiry every fetch in
        flight answers 401 at once, and one call of the source serves them all.

        Raises:
            TokenSourceError: the source failed; the last good token stays cached.
        """
        if self.fixed:
            return self._token
        if rejected is not None and self._token is not None and self._token != rejected:
            return self._token
        if self._asking is None:
            self._asking = asyncio.get_running_loop().create_task(self._ask_and_cache())
            self._asking.add_done_callback(self._asked)
        # Shielded: a caller cancelled while waiting must not cancel the others' answer.
        return await asyncio.shield(self._asking)

    async def _ask_and_cache(self) -> str:
        try:
            token = await self._ask()
        except TokenSourceError as exc:
            self.counts["errors"] += 1
            # The caller reports it (a reconnect warning, a FetchError): once is enough.
            log.debug("%s", exc)
            raise
        self._remember(token)
        return token

    def _asked(self, task: asyncio.Future[str]) -> None:
        self._asking = None
        if not task.cancelled():
            task.exception()  # retrieved here, so that nobody waiting is not a warning

    def _remember(self, token: str) -> None:
        self._token = token
        if token not in self._seen:
            self._seen.append(token)
            del self._seen[:-_REMEMBERED]

    async def _ask(self) -> str:
        source = self._source
        assert callable(source)
        self.counts["asks"] += 1
        try:
            async with asyncio.timeout(self._timeout):
                if inspect.iscoroutinefunction(source) or inspect.iscoroutinefunction(
                    getattr(source, "__call__", None)  # noqa: B004 - an async __call__
                ):
                    answer: object = await source()  # type: ignore[misc]
                else:
                    # A plain callable may block (a file, a keyring): not on the loop.
                    answer = await asyncio.to_thread(source)
                    if inspect.isawaitable(answer):
                        answer = await answer
        except TokenSourceError:
            raise
        except TimeoutError:
            raise TokenSourceError(
                f"the token source gave no token within {self._timeout} s"
            ) from None
        except Exception as exc:
            detail = redact(exc, self._seen) or type(exc).__name__
            raise TokenSourceError(f"the token source failed: {detail}") from exc
        if not isinstance(answer, str) or not answer.strip():
            raise TokenSourceError(
                f"the token source must return a non-empty string, got {type(answer).__name__}"
                + (" (empty)" if isinstance(answer, str) else "")
            )
        return answer.strip()


class TokenFile:
    """A token source that reads a file at each call: a rotated file is picked up at once.

    Surrounding white space is trimmed; an empty or unreadable file is a
    :class:`querysync.TokenSourceError`. Called in a worker thread by
    :class:`TokenProvider`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"TokenFile({str(self.path)!r})"

    def __call__(self) -> str:
        try:
            token = self.path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenSourceError(f"cannot read the token file {self.path}: {exc}") from exc
        if not token:
            raise TokenSourceError(f"the token file {self.path} is empty")
        return token


async def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    await process.wait()


class TokenCommand:
    """A token source that runs a shell command; its standard output, trimmed, is the token.

    A non-zero exit, no output, or no answer within ``timeout`` seconds (default 10;
    the command is then killed) is a :class:`querysync.TokenSourceError` naming the
    command's exit status and the last line of its standard error (redacted), never
    its output.
    """

    def __init__(self, command: str, *, timeout: float = 10.0) -> None:
        if not command.strip():
            raise ConfigurationError("the token command is empty")
        if not timeout > 0:
            raise ConfigurationError(f"the token command timeout must be positive, got {timeout}")
        self.command = command
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"TokenCommand({redact(self.command)!r})"

    async def __call__(self) -> str:
        shown = redact(self.command)
        try:
            process = await asyncio.create_subprocess_shell(
                self.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                # Its own process group: a timeout kills the shell's children too, which
                # would otherwise hold the pipes (and this call) open until they end.
                start_new_session=True,
            )
        except OSError as exc:
            raise TokenSourceError(f"cannot run the token command {shown!r}: {exc}") from exc
        try:
            async with asyncio.timeout(self.timeout):
                out, err = await process.communicate()
        except TimeoutError:
            await _kill(process)
            raise TokenSourceError(
                f"the token command {shown!r} gave no token within {self.timeout} s"
            ) from None
        except asyncio.CancelledError:
            await _kill(process)
            raise
        token = out.decode("utf-8", "replace").strip()
        if process.returncode != 0:
            lines = err.decode("utf-8", "replace").strip().splitlines()
            last = redact(lines[-1][:_STDERR_PREVIEW], [token]) if lines else "no message"
            raise TokenSourceError(
                f"the token command {shown!r} exited with status {process.returncode}: {last}"
            )
        if not token:
            raise TokenSourceError(f"the token command {shown!r} printed no token")
        return token
