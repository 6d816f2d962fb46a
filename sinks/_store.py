"""EntryStore: write-behind of cache entries through one thread, in diskcache transactions.

Why write-behind: diskcache is synchronous SQLite. A commit costs from tens of
microseconds to milliseconds (longer when another process holds the lock), and an
invalidation burst touches many keys; doing that on the event loop would stall every
fetch and every socket. So the loop only updates memory and queues the operation;
one thread drains the queue. Queued operations coalesce per key (only the newest state
of a key matters), and a drained batch is written in transactions of ``batch_size``
rows, one commit per transaction instead of one per row, each in a handful of
statements (:class:`CacheTable`) rather than three per row.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Final

import diskcache

from querysync._exceptions import ConfigurationError
from querysync._keys import QueryKey

from ._disk import META_KEY
from ._entry import Record, encode_data, encode_record
from ._table import CacheTable, RowOp

__all__ = ["DELETE", "FORMAT", "CommitHook", "EntryStore", "Op"]

log = logging.getLogger("querysync.sinks")


class _Delete:
    """The queued operation that removes a key's row (a sentinel, not a record)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DELETE"


DELETE: Final = _Delete()
FORMAT: Final = 1
"""Version of the row layout; a cache written with another one is discarded at open."""
Op = Record | _Delete
CommitHook = Callable[[Sequence[QueryKey]], None]

_FIRST_BACKOFF = 0.05  # seconds before retrying a failed transaction, doubling
_MAX_BACKOFF = 2.0
_ATTEMPTS_WHEN_CLOSING = 3


class EntryStore:
    """Queues entry writes and applies them on a background thread.

    ``put``/``delete_many``/``queued`` may be called from any thread; the writes happen in
    the order the batches are drained, and for one key the last queued operation wins.
    A transaction that fails (lock timeout, full disk) is retried with backoff; on
    close, after three failed attempts the remaining operations are logged as lost.
    ``on_commit`` is called on the writer thread after each committed transaction with
    the keys it wrote or deleted.
    """

    def __init__(
        self,
        cache: diskcache.Cache,
        *,
        buster: str,
        batch_size: int,
        on_commit: CommitHook | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigurationError("batch_size must be at least 1")
        self._cache = cache
        self._table = CacheTable(cache)
        self._on_commit = on_commit
        self._buster = buster
        self._batch_size = batch_size
        self._cond = threading.Condition()
        self._pending: dict[QueryKey, Op] = {}
        self._writing = 0
        self._closing = False
        self._idle_callbacks: list[Callable[[], None]] = []
        self.counts: Counter[str] = Counter()
        self._thread = threading.Thread(
            target=self._run, name="querysync-cache-writer", daemon=True
        )
        self._thread.start()

    # -- producer side ------------------------------------------------------------

    def put(self, key: QueryKey, record: Record) -> None:
        """Queue writing ``record`` as the row of ``key``."""
        record.json()  # encoded here, on the caller's thread, so the writer never reads data
        self._queue_many([(key, record)])

    def put_many(self, items: Iterable[tuple[QueryKey, Record]]) -> None:
        """Queue writing several records under one lock (an invalidation burst)."""
        ops: list[tuple[QueryKey, Op]] = []
        for key, record in items:
            record.json()
            ops.append((key, record))
        self._queue_many(ops)

    def delete_many(self, keys: Iterable[QueryKey]) -> None:
        """Queue removing the rows of several keys."""
        self._queue_many([(key, DELETE) for key in keys])

    def _queue_many(self, ops: list[tuple[QueryKey, Op]]) -> None:
        with self._cond:
            if self._closing:
                raise RuntimeError("the entry store is closed")
            self._pending.update(ops)
            self._cond.notify()

    @property
    def queued(self) -> int:
        """Operations queued or being written right now."""
        with self._cond:
            return len(self._pending) + self._writing

    def when_idle(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once nothing is queued or being written (now, if so already).

        The callback may run on the writer thread; it must be quick and thread-safe
        (``loop.call_soon_threadsafe`` is).
        """
        with self._cond:
            if self._pending or self._writing:
                self._idle_callbacks.append(callback)
                return
        callback()

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every queued operation is written; False on timeout (seconds)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not (self._pending or self._writing) or not self._thread.is_alive(),
                timeout,
            )

    def write_meta_now(self) -> None:
        """Write the meta row at once, on the calling thread (used while opening).

        Best effort: if another process holds the lock, the row is written with the
        next batch anyway (every transaction carries it).
        """
        try:
            with self._cache.transact(retry=False):
                self._cache.set(META_KEY, self._meta(time.time()))
        except (diskcache.Timeout, sqlite3.Error, OSError) as exc:
            log.warning("could not write the cache's meta row at open: %s", exc)

    def close(self) -> None:
        """Write what is queued, stop the thread and close its connections. Idempotent."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()

    # -- writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._closing:
                        self._cond.wait()
                    if not self._pending:
                        return
                    batch = self._pending
                    self._pending = {}
                    self._writing = len(batch)
                left = self._write(batch)
                with self._cond:
                    self._writing = 0
                    if left:
                        failures += 1
                        if self._closing and failures >= _ATTEMPTS_WHEN_CLOSING:
                            self.counts["lost_writes"] += len(left)
                            log.error("cache closed with %d unsaved writes", len(left))
                        else:
                            # Newer operations queued meanwhile win over the failed ones.
                            for key, op in left.items():
                                self._pending.setdefault(key, op)
                    else:
                        failures = 0
                    callbacks = self._take_idle_callbacks()
                    self._cond.notify_all()
                self._call(callbacks)
                if left:
                    delay = min(_FIRST_BACKOFF * 2 ** (failures - 1), _MAX_BACKOFF)
                    with self._cond:
                        self._cond.wait_for(lambda: self._closing, delay)
        finally:
            with self._cond:
                callbacks = self._take_idle_callbacks()
                self._cond.notify_all()
            self._call(callbacks)
            self._table.close()  # its connection belongs to this thread

    def _write(self, batch: dict[QueryKey, Op]) -> dict[QueryKey, Op]:
        """Write ``batch`` in transactions; the operations that could not be written."""
        items = list(batch.items())
        for start in range(0, len(items), self._batch_size):
            chunk = items[start : start + self._batch_size]
            rows: list[RowOp] = [
                (key, encode_record(op) if isinstance(op, Record) else None) for key, op in chunk
            ]
            now = time.time()
            rows.append((META_KEY, self._meta(now)))
            try:
                self._table.write(rows, now)
            except (sqlite3.Error, OSError) as exc:
                self.counts["write_errors"] += 1
                log.warning("cache write of %d rows failed, will retry: %s", len(chunk), exc)
                return dict(items[start:])
            except Exception:
                self.counts["write_errors"] += 1
                log.exception("cache write of %d rows failed, will retry", len(chunk))
                return dict(items[start:])
            self.counts["transactions"] += 1
            self.counts["written"] += len(chunk)
            if self._on_commit is not None:
                # Before the rows stop counting as being written: once flush() returns,
                # the hook has heard of every row it waited for.
                self._committed([key for key, _ in chunk])
            with self._cond:
                self._writing -= len(chunk)
        return {}

    def _committed(self, keys: list[QueryKey]) -> None:
        assert self._on_commit is not None
        try:
            self._on_commit(keys)
        except Exception:
            # The rows are on disk either way; a failing hook must not make them retried.
            self.counts["on_commit_errors"] += 1
            log.exception("the cache's on_commit callback raised")

    def _meta(self, now: float) -> bytes:
        return encode_data({"format": FORMAT, "buster": self._buster, "written_at": now}).encode()

    def _take_idle_callbacks(self) -> list[Callable[[], None]]:
        if self._pending or self._writing:
            return []
        callbacks, self._idle_callbacks = self._idle_callbacks, []
        return callbacks

    @staticmethod
    def _call(callbacks: list[Callable[[], None]]) -> None:
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("cache idle callback raised")
