"""Fetch scheduling: fetcher lookup, shared in-flight fetches, refetch-after-invalidation, retry.

Everything here runs on one asyncio loop; nothing touches the disk. When a key may be
fetched (its window), retry backoffs and the per-fetch timeout are timers of
:class:`FetchWindows`, on one scheduler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from querysync._exceptions import ConfigurationError, FetchError, ResourceGone
from querysync._keys import QueryKey

from ._window import FetchWindows

__all__ = ["Fetch", "FetchHost", "FetchScheduler", "FetcherTable", "RetryPolicy"]

log = logging.getLogger("querysync.sinks")

Fetch = Callable[[QueryKey], Awaitable[Any]]
"""A fetcher: ``async (key) -> data``, where data is JSON or a :class:`querysync.Fetched`."""


class FetcherTable:
    """Fetchers by key prefix; the longest registered prefix of a key serves it."""

    __slots__ = ("_by_prefix",)

    def __init__(self) -> None:
        self._by_prefix: dict[QueryKey, Fetch] = {}

    def register(self, prefix: QueryKey, fetch: Fetch) -> None:
        """Serve keys under ``prefix`` with ``fetch``, replacing an earlier one for it."""
        self._by_prefix[prefix] = fetch

    def lookup(self, key: QueryKey) -> Fetch | None:
        """The fetcher of the longest registered prefix of ``key``, if any."""
        # A key has a handful of elements: len(key)+1 dict probes, whatever the table size.
        for end in range(len(key), -1, -1):
            fetch = self._by_prefix.get(key[:end])
            if fetch is not None:
                return fetch
        return None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry timing: ``retries`` more attempts, ``delay * 2**n`` seconds apart, at most ``cap``."""

    retries: int = 3
    delay: float = 1.0
    cap: float = 30.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.delay < 0 or self.cap < 0:
            raise ConfigurationError("retries, retry_delay and retry_cap must not be negative")

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first retry)."""
        return min(self.delay * 2.0**retry, self.cap)


class FetchHost(Protocol):
    """What the scheduler asks of the cache it fetches for."""

    def fetcher_for(self, key: QueryKey) -> Fetch | None: ...

    def fetch_started(self, key: QueryKey) -> None: ...

    def fetch_retry(self, key: QueryKey, error: str) -> None: ...

    def fetched(self, key: QueryKey, data: Any, *, stale: bool) -> None:
        """Store ``data``; raise TypeError/ValueError when it is not JSON."""

    def fetch_failed(self, key: QueryKey, error: str) -> None: ...

    def fetch_gone(self, key: QueryKey, error: str) -> None: ...

    def fetch_discarded(self, key: QueryKey) -> None: ...

    def flight_ended(self, key: QueryKey) -> None: ...


class _Flight:
    """The one running (or held) fetch of a key, and what happened to the key meanwhile."""

    __slots__ = ("again", "cancelled", "discard", "invalidated", "task")

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        # Cancelled by cancel_key: a fetcher that swallows the cancellation and returns
        # anyway must not store its result.
        self.cancelled = False
        # Invalidated after this fetch started: what it returns may predate the change.
        self.invalidated = False
        # ...and a refetch was asked for: fetch once more when this one ends.
        self.again = False
        # Removed since this fetch was started: storing its result would resurrect the entry.
        self.discard = False


class FetchScheduler:
    """Runs fetches on the loop: one in flight per key, bounded concurrency, retries.

    Rules (TanStack Query #8530, RTK Query #2444 are the bugs they avoid):

    - a key has at most one fetch in flight; callers share it;
    - an invalidation during a fetch marks it: its result is stored stale, and when
      a refetch was asked for, the key is fetched exactly once more afterwards, however
      many invalidations arrived (a burst of 1,000 costs at most two fetches);
    - a removal during a fetch makes it drop its result, and a removal before it began
      stops it from beginning; an invalidation that only matches the removed key by
      prefix does not revive it, while a fetch asked for by name (``start``, or an
      invalidation of the key itself with ``revive``) fetches once more afterwards;
    - a failed attempt is retried after ``RetryPolicy.backoff``; the semaphore is not
      held while waiting, so backoffs do not starve other keys;
    - :class:`querysync.ResourceGone` (a 404) is not retried: asking again cannot help;
    - at most one attempt of a key starts per window (``FetchWindows``): a key whose
      window is open waits for it to close, outside the semaphore, and every request
      meanwhile joins that one fetch; a removal meanwhile ends the wait with no fetch;
    - an attempt that runs longer than ``timeout`` seconds is cancelled and counted
      (``timeouts``), frees its slot and is retried like any failure;
    - a fetch cancelled by :meth:`cancel_key` stops wherever it is (fetcher call,
      window hold, backoff) and stores nothing; the next request starts afresh.
    """

    def __init__(
        self,
        host: FetchHost,
        policy: RetryPolicy,
        concurrency: int,
        windows: FetchWindows | None = None,
        timeout: float | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConfigurationError("concurrency must be at least 1")
        if timeout is not None and not timeout > 0:
            raise ConfigurationError(
                f"fetch_timeout must be positive seconds or None, not {timeout!r}"
            )
        self._host = host
        self._policy = policy
        self._concurrency = concurrency
        self._windows = windows if windows is not None else FetchWindows(0.0)
        self._timeout = timeout
        self.timeouts = 0
        """Attempts cancelled because they ran longer than the timeout."""
        self._flights: dict[QueryKey, _Flight] = {}
        # Tasks stopped by cancel_key and not yet unwound: no longer flights of their
        # key, still awaited by wait() and cancel() so none outlives the cache.
        self._stopping: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore: asyncio.Semaphore | None = None

    def __contains__(self, key: QueryKey) -> bool:
        return key in self._flights

    def __len__(self) -> int:
        return len(self._flights)

    @property
    def waiting(self) -> int:
        """Fetches waiting on the clock (a window or a retry's backoff), holding no slot."""
        return self._windows.waiting

    @property
    def running_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop running in this thread, bound on first use; None when no loop runs.

        The cache is bound lazily to the loop it is first used from, so it can be built
        in synchronous code. Once fetches run on one loop, another loop cannot use it.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        if loop is not self._loop:
            if self._flights:
                raise ConfigurationError(
                    "this QueryCache is fetching on another event loop; use one cache per loop"
                )
            self._loop = loop
            self._semaphore = None
        return loop

    def start(self, key: QueryKey) -> asyncio.Task[None] | None:
        """The task fetching ``key``: the running one, else a new one; None without a loop."""
        flight = self._flights.get(key)
        if flight is not None:
            if flight.discard:
                # Asked for by name after a removal: joining a fetch that will drop its
                # result would leave the caller with nothing.
                flight.again = True
            return flight.task
        loop = self.running_loop
        if loop is None:
            return None
        flight = _Flight()
        self._flights[key] = flight
        task = loop.create_task(self._run(key, flight), name=f"querysync fetch {key!r}")
        flight.task = task
        task.add_done_callback(lambda t: self._ended(key, flight, t))
        return task

    def invalidated(self, key: QueryKey, *, refetch: bool, revive: bool = True) -> bool:
        """Tell the fetch of ``key`` (if one runs) that it was invalidated; True if one runs.

        ``refetch`` asks for one more fetch after it. When the key was removed during the
        fetch, only ``revive`` (the key itself was named, or someone watches it) does:
        a prefix that merely covers a removed key must not bring its entry back.
        """
        flight = self._flights.get(key)
        if flight is None:
            return False
        flight.invalidated = True
        if refetch and (revive or not flight.discard):
            flight.again = True
        return True

    def removed(self, key: QueryKey) -> None:
        """Tell the fetch of ``key`` (if one runs) to drop its result and not fetch again."""
        flight = self._flights.get(key)
        if flight is not None:
            flight.discard = True
            flight.again = False
            self._windows.release(key)

    def again(self, key: QueryKey) -> asyncio.Task[None] | None:
        """Ask the fetch of ``key`` (if one runs) to fetch once more; its task, else None.

        A fetch still held for its window has not called the fetcher yet: it just serves
        the request. A fetch whose key was removed meanwhile is left to drop its result
        (None): a prefix covering a removed key does not bring it back.
        """
        flight = self._flights.get(key)
        if flight is None or (flight.discard and not flight.again):
            return None
        flight.again = True
        return flight.task

    def cancel_key(self, key: QueryKey) -> bool:
        """Stop the fetch of ``key`` (running, held or backing off); True if one ran.

        The flight is forgotten at once, not when its task unwinds: a request arriving
        in between must start a new fetch rather than join one that will never end.
        """
        flight = self._flights.get(key)
        if flight is None:
            return False
        flight.cancelled = True
        flight.again = False
        self._unregister(key, flight)
        task = flight.task
        if task is not None and not task.done():
            task.cancel()
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)
        return True

    async def wait(self) -> None:
        """Return once no fetch runs (including fetches that start while waiting)."""
        while self._flights or self._stopping:
            tasks = [f.task for f in self._flights.values() if f.task is not None]
            await asyncio.wait([*tasks, *self._stopping])

    def cancel(self) -> list[asyncio.Task[None]]:
        """Cancel every running fetch (from any thread); the tasks, to await on their loop."""
        tasks = [f.task for f in self._flights.values() if f.task is not None]
        tasks += self._stopping
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        for task in tasks:
            loop = task.get_loop()
            if loop is here:
                task.cancel()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(task.cancel)
        return tasks

    async def _run(self, key: QueryKey, flight: _Flight) -> None:
        try:
            await self._fetch_until_current(key, flight)
        finally:
            # Unregistered as the coroutine ends, not in the done callback: in between,
            # an invalidation would mark (and start() would return) a flight that never
            # runs again, and the key would stay stale for good.
            self._unregister(key, flight)

    async def _fetch_until_current(self, key: QueryKey, flight: _Flight) -> None:
        host = self._host
        windows = self._windows
        while True:
            while True:
                if flight.discard and not flight.again:
                    return  # removed before it began (or while held), not asked for since
                opens = windows.opens_at(key)
                if opens is None:
                    break
                # Held outside the semaphore; what arrives meanwhile joins this fetch.
                await windows.hold(key, opens)
            flight.invalidated = flight.again = flight.discard = False
            fetch = host.fetcher_for(key)
            if fetch is None:
                return
            outcome, result = await self._attempts(key, fetch)
            if flight.cancelled:
                return
            if flight.discard:
                host.fetch_discarded(key)
            elif outcome == "ok":
                try:
                    host.fetched(key, result, stale=flight.invalidated)
                except (TypeError, ValueError) as exc:
                    host.fetch_failed(key, f"fetcher returned data that is not JSON: {exc}")
            elif outcome == "gone":
                host.fetch_gone(key, result)
            else:
                host.fetch_failed(key, result)
            if not flight.again:
                return

    async def _attempts(
        self, key: QueryKey, fetch: Fetch
    ) -> tuple[Literal["ok", "failed", "gone"], Any]:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self._concurrency)
        semaphore = self._semaphore
        retry = 0
        while True:
            async with semaphore:
                self._host.fetch_started(key)
                self._windows.started(key)
                try:
                    return "ok", await self._call(fetch, key)
                except ResourceGone as exc:
                    return "gone", _describe(exc)
                except Exception as exc:
                    error = _describe(exc)
            if retry >= self._policy.retries:
                return "failed", error
            self._host.fetch_retry(key, error)
            await self._windows.sleep(self._policy.backoff(retry))
            retry += 1

    async def _call(self, fetch: Fetch, key: QueryKey) -> Any:
        """``await fetch(key)``, cancelled after the timeout (FetchError) if there is one."""
        timeout = self._timeout
        if timeout is None:
            return await fetch(key)
        # asyncio.timeout's way, on the scheduler's clock: the timer cancels this task
        # and the cancellation it caused becomes the timeout. The fetcher runs in this
        # task rather than one of its own, which would cost two more turns of a loop
        # that may be busy with thousands of invalidations a second.
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = self._windows.after(timeout, expire)
        try:
            return await fetch(key)
        except asyncio.CancelledError:
            if expired and task.uncancel() <= cancelling:
                self.timeouts += 1
                raise FetchError(f"timed out after {timeout:g} s (fetch_timeout)") from None
            raise
        finally:
            timer.dispose()

    def _unregister(self, key: QueryKey, flight: _Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
            self._host.flight_ended(key)

    def _ended(self, key: QueryKey, flight: _Flight, task: asyncio.Task[None]) -> None:
        # A task cancelled before its first step never ran _run's finally.
        self._unregister(key, flight)
        # Nobody may be awaiting this task (prefetch): retrieve its outcome here so a
        # bug can never surface as "Task exception was never retrieved".
        if not task.cancelled() and task.exception() is not None:
            log.error("fetch of %r ended with an internal error", key, exc_info=task.exception())


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
