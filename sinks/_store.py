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

import errno
import json
import logging
import os.path as op
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Final

import diskcache

from querysync._exceptions import ConfigurationError
from querysync._keys import QueryKey

from ._disk import DB_NAME, GEN_KEY, META_KEY
from ._entry import Record, decode_record, encode_data, encode_record
from ._table import CacheTable, RowOp

__all__ = ["DELETE", "FORMAT", "CommitHook", "EntryStore", "Mark", "Op", "ReadOnlyStore"]

log = logging.getLogger("querysync.sinks")


class _Delete:
    """The queued operation that removes a key's row (a sentinel, not a record)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DELETE"


class Mark:
    """The queued operation that marks a key's stored row stale (and records a fetch error).

    Queued when the entry's data is not in memory: the writer reads the row, flips its
    flag and writes it back, so the event loop never reads a row to invalidate it.
    ``error`` None keeps the stored error.
    """

    __slots__ = ("error",)

    def __init__(self, error: str | None = None) -> None:
        self.error = error

    def apply(self, record: Record) -> Record:
        """``record`` with this mark applied."""
        return record.with_stale() if self.error is None else record.with_error(self.error)

    def then(self, newer: Mark) -> Mark:
        """This mark followed by ``newer``, as one."""
        return newer if newer.error is not None or self.error is None else Mark(self.error)

    def __repr__(self) -> str:
        return f"Mark({self.error!r})"


DELETE: Final = _Delete()
FORMAT: Final = 1
"""Version of the row layout; a cache written with another one is discarded at open."""
Op = Record | _Delete | Mark
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
        self._inflight: dict[QueryKey, Op] = {}
        self._generation: int | None = None  # to be written, when the direct write failed
        self._writing = 0
        self.disk_full = False
        """True from a write that failed for want of space until a write succeeds again."""
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

    def mark_many(self, keys: Iterable[QueryKey], error: str | None = None) -> None:
        """Queue marking the stored rows of several keys stale (rows that exist by then)."""
        mark = Mark(error)
        self._queue_many([(key, mark) for key in keys])

    def lookup(self, key: QueryKey) -> Op | None:
        """The newest operation on ``key`` not yet committed, None when there is none."""
        with self._cond:
            op = self._pending.get(key)
            return op if op is not None else self._inflight.get(key)

    def _queue_many(self, ops: list[tuple[QueryKey, Op]]) -> None:
        with self._cond:
            if self._closing:
                raise RuntimeError("the entry store is closed")
            pending = self._pending
            for key, op in ops:
                if isinstance(op, Mark):
                    # A mark applies to whatever is queued before it: the queued record
                    # itself becomes stale; a queued removal stays a removal.
                    queued = pending.get(key)
                    if isinstance(queued, Record):
                        op = op.apply(queued)
                    elif isinstance(queued, Mark):
                        op = queued.then(op)
                    elif queued is DELETE:
                        continue
                pending[key] = op
            self._cond.notify()

    def write_generation_now(self, generation: int) -> None:
        """Store the invalidation generation at once (at least ``generation``), off the queue.

        One row in one short transaction on the calling thread, so that a crash right
        after ``invalidate_all`` still finds every entry stale at the next open. When the
        lock is busy (another process writing) it goes with the writer's next batch.
        """
        try:
            con = sqlite3.connect(
                op.join(self._cache.directory, DB_NAME), timeout=0.02, isolation_level=None
            )
            try:
                con.execute("BEGIN IMMEDIATE")
                try:
                    row = con.execute(
                        "SELECT value FROM Cache WHERE key = ? AND raw = 1", (GEN_KEY,)
                    ).fetchone()
                    stored = _stored_generation(row[0] if row else None)
                    value = _generation_value(max(stored, generation))
                    now = time.time()
                    con.execute(
                        "INSERT INTO Cache(key, raw, store_time, expire_time, access_time,"
                        " access_count, tag, size, mode, filename, value)"
                        " VALUES (?, 1, ?, NULL, ?, 0, NULL, 0, 1, NULL, ?)"
                        " ON CONFLICT(key, raw) DO UPDATE SET value = excluded.value,"
                        " store_time = excluded.store_time, access_time = excluded.access_time",
                        (GEN_KEY, now, now, value),
                    )
                    con.execute("COMMIT")
                except BaseException:
                    if con.in_transaction:
                        con.execute("ROLLBACK")
                    raise
            finally:
                con.close()
        except (sqlite3.Error, OSError) as exc:
            log.warning("invalidation generation queued (direct write failed: %s)", exc)
            with self._cond:
                self._generation = max(self._generation or 0, generation)
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
                    while not self._pending and self._generation is None and not self._closing:
                        self._cond.wait()
                    if not self._pending and self._generation is None:
                        return
                    batch = self._pending
                    self._pending = {}
                    self._inflight = batch
                    self._writing = len(batch)
                    generation, self._generation = self._generation, None
                left, generation_failed = self._write(batch, generation)
                with self._cond:
                    self._inflight = {}
                    self._writing = 0
                    if generation_failed:
                        assert generation is not None
                        self._generation = max(self._generation or 0, generation)
                        failures += not left  # counted below otherwise
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
                if left or generation_failed:
                    delay = min(_FIRST_BACKOFF * 2 ** (failures - 1), _MAX_BACKOFF)
                    with self._cond:
                        self._cond.wait_for(lambda: self._closing, delay)
        finally:
            with self._cond:
                callbacks = self._take_idle_callbacks()
                self._cond.notify_all()
            self._call(callbacks)
            self._table.close()  # its connection belongs to this thread

    def _write(
        self, batch: dict[QueryKey, Op], generation: int | None = None
    ) -> tuple[dict[QueryKey, Op], bool]:
        """Write ``batch`` in transactions; the operations that could not be written, and
        whether ``generation`` (written with the first transaction) failed with them."""
        items = list(batch.items())
        for start in range(0, max(len(items), 1), self._batch_size):
            chunk = items[start : start + self._batch_size]
            try:
                rows: list[RowOp] = []
                for key, op in chunk:
                    value = self._row(key, op)
                    if value is not _SKIP:
                        rows.append((key, value))  # type: ignore[arg-type]
                now = time.time()
                rows.append((META_KEY, self._meta(now)))
                if generation is not None and start == 0:
                    rows.append((GEN_KEY, _generation_value(generation)))
                self._table.write(rows, now)
            except (sqlite3.Error, OSError) as exc:
                self._failed(exc, len(chunk))
                return dict(items[start:]), generation is not None and start == 0
            except Exception:
                self.counts["write_errors"] += 1
                log.exception("cache write of %d rows failed, will retry", len(chunk))
                return dict(items[start:]), generation is not None and start == 0
            if self.disk_full:
                self.disk_full = False
                log.warning("cache writes resumed: the disk has space again")
            self.counts["transactions"] += 1
            self.counts["written"] += len(chunk)
            if self._on_commit is not None:
                # Before the rows stop counting as being written: once flush() returns,
                # the hook has heard of every row it waited for.
                self._committed([key for key, _ in chunk])
            with self._cond:
                self._writing -= len(chunk)
        return {}, False

    def _row(self, key: QueryKey, op: Op) -> object:
        """The bytes to write for ``op`` (None: delete; _SKIP: nothing to write)."""
        if isinstance(op, Record):
            return encode_record(op)
        if isinstance(op, Mark):
            text = self._table.read(key)
            if text is None:
                return _SKIP  # removed meanwhile (or never written): nothing to mark
            try:
                return encode_record(op.apply(decode_record(key, text)))
            except Exception as exc:  # a corrupt or refused row: leave it to the readers
                log.error("cache row %r not marked stale: %s", key, exc)
                return _SKIP
        return None

    def _failed(self, exc: BaseException, rows: int) -> None:
        self.counts["write_errors"] += 1
        if _is_disk_full(exc):
            self.counts["disk_full_errors"] += 1
            if not self.disk_full:
                self.disk_full = True
                log.error(
                    "cache disk full: %d rows wait in memory and are written when space "
                    "comes back (%s)",
                    rows,
                    exc,
                )
            return
        log.warning("cache write of %d rows failed, will retry: %s", rows, exc)

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
        if self._pending or self._writing or self._generation is not None:
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


_SKIP: Final = object()


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "full" in str(exc).lower()


def _generation_value(generation: int) -> bytes:
    return encode_data({"generation": generation}).encode()


def _stored_generation(value: object) -> int:
    if isinstance(value, bytes | str):
        try:
            doc = json.loads(value)
        except ValueError:
            return 0
        gen = doc.get("generation") if isinstance(doc, dict) else None
        if isinstance(gen, int) and not isinstance(gen, bool):
            return gen
    return 0


class ReadOnlyStore:
    """The store of a cache opened read-only: nothing is ever queued or written."""

    disk_full = False

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    queued = 0

    def lookup(self, key: QueryKey) -> Op | None:
        return None

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def when_idle(self, callback: Callable[[], None]) -> None:
        callback()

    def close(self) -> None:
        pass
