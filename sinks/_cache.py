"""QueryCache: query entries in memory and on disk, invalidation, removal and refetch."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sqlite3
import sys
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Set as AbstractSet
from functools import partial
from itertools import islice
from typing import Any, Final, Literal, cast, overload

import reactivex
from reactivex import Observable, abc

from querysync._exceptions import CacheClosedError, CacheError, ConfigurationError
from querysync._fetched import Fetched
from querysync._keys import JSONScalar, QueryKey
from querysync._model import ResourceChangeUpdate
from querysync._signals import Invalidation, Resync
from querysync._types import JSON, CacheStats

from ._disk import corrupt_error
from ._entry import CacheEntry, Record, as_query_key, encode_data, etag_of, parse_json
from ._events import EVENT_KINDS, Broadcast, CacheEvent, CacheEventKind
from ._fetch import Fetch, FetcherTable, FetchScheduler, RetryPolicy
from ._index import KeyTrie
from ._load import bulk_allocation, open_cache
from ._rows import RowReader
from ._status import Failures, QueryStatus
from ._store import DELETE, CommitHook, EntryStore, Mark, ReadOnlyStore
from ._tier import DEFAULT_MEMORY_LIMIT, MemoryTier
from ._window import FetchWindows

__all__ = ["QueryCache", "RefetchType"]

log = logging.getLogger("querysync.sinks")

RefetchType = Literal["active", "all", "none"]
"""Which invalidated keys are fetched again, as TanStack Query's ``refetchType``.

``"active"``: keys with an open :meth:`QueryCache.watch` subscription (and keys being
fetched right now); ``"all"``: every matched key that has a fetcher; ``"none"``: none.
"""
_REFETCH: frozenset[str] = frozenset(("active", "all", "none"))

KeyLike = str | Iterable[JSONScalar]

_FREEZE_AT = 50_000
"""Index size from which load_index freezes the objects alive then out of the collector's way."""

_STALE: Final = -1
"""The index mark of a stale entry; a fresh one is marked with the generation it is fresh at."""


class _Unknown:
    """What memory says of a key whose row must be read from disk to answer."""

    __slots__ = ()


_UNKNOWN: Final = _Unknown()


class _Watch:
    """The subscribers of one key and the data (as JSON) they saw last."""

    __slots__ = ("broadcast", "seen")

    def __init__(self, counts: Counter[str]) -> None:
        self.broadcast: Broadcast[Any] = Broadcast(counts)
        self.seen: str | None = None


class QueryCache:
    """A disk-backed store of query results that invalidation keeps honest.

    ``directory`` is created with mode 0700 if missing. An existing directory (or its
    ``cache.db``) that is group- or world-writable, or owned by another user, is
    refused with :class:`querysync.CacheSecurityError`: whoever can write there can
    plant rows. Rows are JSON only; a row asking to be unpickled is never loaded (it is
    skipped, logged and counted in ``stats()["unsafe_rows"]``, and reads as a miss).

    Opening reads no entry: it takes about as long as diskcache's own open, whatever
    the size. Memory holds an index (each key and its stale flag, read once, when first
    needed: :meth:`load_index`; ``sync()`` reads it off the event loop) and the data of
    recently used entries within ``memory_limit``; the rest is read from disk when asked
    for (:meth:`get` reads on the calling thread, :meth:`aget` on a worker thread).
    ``get`` and ``keys`` reflect every call that has returned even while disk writes
    are queued. A file that is not a readable SQLite database raises
    :class:`querysync.CacheCorruptError`; with ``recover=True`` the broken files are
    renamed to ``cache.db*.corrupt-<epoch>`` and the cache starts empty instead.

    Parameters (times in seconds):

    - ``buster``: a version string, default ``""``. A cache written with another
      buster is discarded at open, as by TanStack Query's persister.
    - ``max_age``: default None (no limit). A cache last written longer ago than this
      is discarded at open.
    - ``retries`` (default 3), ``retry_delay`` (default 1.0), ``retry_cap`` (default
      30.0): a failed fetch is retried ``retries`` times after ``retry_delay`` doubling,
      each wait at most ``retry_cap``. A fetcher raising :class:`querysync.ResourceGone`
      (a 404) is not retried: the key's entry is removed (``fetch_gone`` and
      ``removed`` events), since the resource no longer exists.
    - ``concurrency``: at most this many fetcher calls at once, default 8.
    - ``fetch_window``: default 0 (none). At most one fetch of each key starts per window:
      a key not fetched in the last ``fetch_window`` seconds is fetched at once, and
      every invalidation inside the window is held and served by one fetch when it
      closes (leading and trailing, per key). A held key holds no concurrency slot; a
      removal cancels its held fetch. ``sync()`` passes its throttle window.
    - ``fetch_timeout``: default 30.0; None for no limit. A fetcher call (any fetcher,
      yours included) running longer is cancelled, counted in
      ``stats()["fetch_timeouts"]`` and retried like any failure; its slot is freed.
    - ``scheduler``: the reactivex scheduler that windows, retry backoffs and fetch
      timeouts read time from; default the running asyncio loop's clock. Tests pass a
      ``TestScheduler`` to drive them on virtual time.
    - ``batch_size``: at most this many rows per disk transaction, default 500.
    - ``timeout``: SQLite lock timeout, default 10.0. Another process holding the
      write lock longer makes a batch retry later; nothing is lost.
    - ``memory_limit``: bytes of entry data kept in memory, default 64 MiB, counted as
      each entry's JSON text and etag plus 450 bytes (entries are held as text, which
      the garbage collector never walks, and decoded on read; the 256 most recently
      used stay decoded). Least recently used entries beyond it are dropped from memory
      (never from disk). Watched keys stay in memory, decoded, whatever the limit.
    - ``read_only``: default False. Creates, discards and writes nothing, ever: a
      mismatched buster or max_age is only reported (:attr:`discard_reason`), the
      entries stay readable, and every method that would change the cache raises
      :class:`querysync.CacheError`.
    - ``on_commit``: default None. Called with the keys of each transaction once it has
      committed (the rows written or deleted, in no set order; coalesced writes of one
      key appear once); by the time :meth:`flush` or :meth:`wait_idle` returns, it has
      been called for every write they waited for. It runs **on the writer thread**,
      not on the event loop: keep it quick, touch no asyncio object except through
      ``loop.call_soon_threadsafe``, and do not call the cache from it. An exception it
      raises is logged and counted (``stats()["on_commit_errors"]``); the rows stay
      written.

    Several processes may open one directory: each key is its own row, so their writes
    never overwrite each other's other keys. Each process sees the others' entries at
    its next open (a row read from disk, not held in memory, may show one sooner).
    The cache is not thread-safe: use it from one thread (the event loop's, when
    fetching). Fetches run on the asyncio loop the cache is first used
    from; disk writes run on one background thread, never on the loop (and a second
    thread copies SQLite's write-ahead log into the database file after writes).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        buster: str = "",
        max_age: float | None = None,
        retries: int = 3,
        retry_delay: float = 1.0,
        retry_cap: float = 30.0,
        concurrency: int = 8,
        batch_size: int = 500,
        timeout: float = 10.0,
        recover: bool = False,
        on_commit: CommitHook | None = None,
        fetch_window: float = 0.0,
        fetch_timeout: float | None = 30.0,
        scheduler: abc.SchedulerBase | None = None,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        read_only: bool = False,
    ) -> None:
        self._directory = os.fspath(directory)
        # Every argument is checked before anything is opened, so a bad one leaves no
        # connection or thread behind.
        policy = RetryPolicy(retries, retry_delay, retry_cap)
        if concurrency < 1 or batch_size < 1:
            raise ConfigurationError("concurrency and batch_size must be at least 1")
        if timeout <= 0 or (max_age is not None and max_age < 0):
            raise ConfigurationError("timeout must be positive and max_age not negative")
        windows = FetchWindows(fetch_window, scheduler)
        if fetch_timeout is not None and not fetch_timeout > 0:  # `not >` catches NaN
            raise ConfigurationError(
                f"fetch_timeout must be positive seconds or None: {fetch_timeout!r}"
            )
        self._tier = MemoryTier(memory_limit)
        opened = open_cache(
            self._directory,
            buster=buster,
            max_age=max_age,
            timeout=timeout,
            recover=recover,
            read_only=read_only,
        )
        self._read_only = read_only
        self._reader: RowReader = opened.reader
        self._problems = opened.problems
        self._meta = opened.meta
        self._discard_reason = opened.discard_reason
        self._gen = opened.generation
        self._store: EntryStore | ReadOnlyStore
        if opened.cache is None:
            self._store = ReadOnlyStore()
            self._finalizer = weakref.finalize(self, self._reader.close)
        else:
            self._store = EntryStore(
                opened.cache, buster=buster, batch_size=batch_size, on_commit=on_commit
            )
            # The store's thread must stop (after writing what is queued) even if the
            # cache is never closed; the finalizer holds the store, never the cache.
            self._finalizer = weakref.finalize(self, partial(_shut, self._store, self._reader))
            if opened.needs_meta:
                self._store.write_meta_now()
            # Opening was the only use of diskcache's own connection, which belongs to
            # this thread (the writer has its own): closed now, while blocking is
            # expected, it leaves neither close path a connection to find elsewhere.
            opened.cache.close()
        self._disk = opened.reader.disk

        # The index: every key with its mark, read at the first call that needs it.
        # Until then, changes made here are noted in _touched (key -> mark, None when
        # removed) and laid over what is read.
        self._index: KeyTrie | None = None
        self._touched: dict[QueryKey, int | None] = {}
        self._fresh = 0  # entries marked fresh at the current generation
        self._entries_at_open = opened.entries
        self._counts: Counter[str] = Counter(discarded_at_open=opened.discarded)
        # Keys that are watched or being fetched: an invalidation must reach them even
        # when they have no entry yet (a first fetch in flight).
        self._live = KeyTrie()
        self._watches: dict[QueryKey, _Watch] = {}
        self._events: Broadcast[CacheEvent] = Broadcast(self._counts)
        self._fetchers = FetcherTable()
        self._failures = Failures()
        self._scheduler = FetchScheduler(
            _Host(self), policy, concurrency, windows, fetch_timeout
        )
        self._closed = False
        self._greeting: set[asyncio.Task[None]] = set()  # watchers waiting for a disk read

    # -- the index and the tier ----------------------------------------------------

    def load_index(self) -> None:
        """Read every key and stale flag now, if not done yet (blocking; no data is read).

        Calls that need every key (``keys``, ``len``, ``invalidate*``, ``remove``,
        ``stats``) do this on first use; at a million entries it takes seconds, so async
        code runs it first with ``await asyncio.to_thread(cache.load_index)`` (as
        ``sync()`` does) while nothing else uses the cache. From 50,000 entries it ends
        with :func:`gc.freeze` (the collector then skips every object alive at that
        moment, so full collections stop walking the index).
        """
        if self._index is not None:
            return
        with bulk_allocation():
            self._read_index()

    def _read_index(self) -> None:
        """Build the index from the rows and the changes made meanwhile (collector paused)."""
        gen = self._gen
        trie = KeyTrie()
        fresh = 0
        # One string per resource type, not one per key (a million copies of "workflow").
        firsts: dict[Any, Any] = {}
        try:
            for key, _etag, stale, row_gen in self._reader.heads():
                first = key[0]
                if type(first) is str:
                    first = firsts.setdefault(first, sys.intern(first))
                    key = (first, *key[1:])
                if stale or row_gen < gen:
                    trie.add(key, _STALE)
                else:
                    trie.add(key, gen)
                    fresh += 1
        except sqlite3.OperationalError as exc:  # locked, or gone: not the file's fault
            raise CacheError(f"cannot read the cache in {self._directory!r}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise corrupt_error(self._directory, exc) from exc
        for key, mark in self._touched.items():
            old = trie.mark_of(key)
            if mark is None:
                trie.discard(key)
            else:
                trie.add(key, mark)
            fresh += (mark == gen) - (old == gen)
        self._touched = {}
        self._fresh = fresh
        self._index = trie
        if len(trie) >= _FREEZE_AT:
            # The index's key tuples are untracked by the collector at the first young
            # collection they survive, but none ran while it was paused: the first one
            # after it is switched back on would walk a million of them at once, on
            # whichever thread triggers it, the event loop's included (measured with
            # the earlier node-per-key index: a 290 ms loop stall at 1M). Frozen while
            # it is still off, the collector skips everything alive now.
            gc.freeze()

    async def aget(self, key: KeyLike) -> CacheEntry | None:
        """The entry of ``key``, or None; a row not in memory is read on a worker thread."""
        self._check_open()
        k = as_query_key(key)
        record = self._held(k)
        if record is _UNKNOWN:
            loaded = await asyncio.to_thread(self._reader.read, k)
            record = self._held(k)  # memory may have changed meanwhile: it wins
            if record is _UNKNOWN:
                record = self._adopt(k, loaded)
        assert not isinstance(record, _Unknown)
        return None if record is None else self._entry_of(k, record)

    def _index_now(self) -> KeyTrie:
        if self._index is None:
            self.load_index()
        assert self._index is not None
        return self._index

    def _mark_of(self, key: QueryKey) -> int | _Unknown | None:
        if self._index is not None:
            return self._index.mark_of(key)
        return self._touched.get(key, _UNKNOWN)

    def _set_mark(self, key: QueryKey, mark: int | None) -> None:
        index = self._index
        if index is None:
            self._touched[key] = mark
            return
        old = index.mark_of(key)
        if mark is None:
            index.discard(key)
        else:
            index.add(key, mark)
        gen = self._gen
        self._fresh += (mark == gen) - (old == gen)

    def _held(self, key: QueryKey) -> Record | _Unknown | None:
        """The record of ``key`` from memory (tier, write queue, index); _UNKNOWN: on disk."""
        record = self._tier.get(key)
        if record is not None:
            return record
        op = self._store.lookup(key)
        if isinstance(op, Record):
            return op
        if op is DELETE or self._mark_of(key) is None:
            return None
        return _UNKNOWN

    def _current(self, key: QueryKey) -> Record | None:
        """The record of ``key``, read from disk (on this thread) when memory lacks it."""
        record = self._held(key)
        if record is _UNKNOWN:
            return self._adopt(key, self._reader.read(key))
        assert not isinstance(record, _Unknown)
        return record

    def _adopt(self, key: QueryKey, loaded: Record | None) -> Record | None:
        """A record read from disk, with the mark still queued for it, now held in the tier."""
        if loaded is None:
            return None
        op = self._store.lookup(key)
        if isinstance(op, Mark):
            loaded = op.apply(loaded)
        self._tier.put(key, loaded)
        return loaded

    def _entry_of(self, key: QueryKey, record: Record) -> CacheEntry:
        """The entry as it reads now: stale when marked so, or older than the generation."""
        mark = self._mark_of(key)
        if (mark == _STALE or record.gen < self._gen) and not record.stale:
            return record.with_stale().entry
        return record.entry

    def _is_fresh(self, key: QueryKey) -> bool | None:
        """Whether the entry of ``key`` is fresh; None when it has none. May read disk."""
        mark = self._mark_of(key)
        if mark is None:
            return None
        if not isinstance(mark, _Unknown):
            return mark == self._gen
        record = self._current(key)
        return None if record is None else not self._entry_of(key, record).stale

    # -- reading -------------------------------------------------------------------

    @property
    def directory(self) -> str:
        """The cache directory."""
        return self._directory

    @property
    def read_only(self) -> bool:
        """Whether the cache was opened with ``read_only=True``."""
        return self._read_only

    @property
    def stored_buster(self) -> str | None:
        """The buster the stored entries were written with (None: no meta row)."""
        buster = self._meta.get("buster") if self._meta else None
        return buster if isinstance(buster, str) else None

    @property
    def written_at(self) -> float | None:
        """When the cache was last written (epoch seconds, from its meta row), if known."""
        at = self._meta.get("written_at") if self._meta else None
        return float(at) if isinstance(at, int | float) and not isinstance(at, bool) else None

    @property
    def discard_reason(self) -> str | None:
        """Why opening discarded the stored entries (read-only: would discard them), or None."""
        return self._discard_reason

    @property
    def disk_full(self) -> bool:
        """True while writes fail for want of disk space (they are kept and retried)."""
        return self._store.disk_full

    def __len__(self) -> int:
        return len(self._index_now())

    def __iter__(self) -> Iterator[QueryKey]:
        return iter(self.keys())

    def __contains__(self, key: object) -> bool:
        try:
            k = as_query_key(key)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
        return self._is_fresh(k) is not None

    def __repr__(self) -> str:
        if self._closed:
            state = "closed"
        elif self._index is None:
            state = "index not read yet"
        else:
            state = f"entries={len(self._index)} stale={len(self._index) - self._fresh}"
        return f"<QueryCache {self._directory!r} {state}>"

    def _repr_html_(self) -> str:
        """The entries as an HTML table (key, stale, etag, age), for Jupyter."""
        from querysync.display import cache_html

        return cache_html(self)

    def get(self, key: KeyLike) -> CacheEntry | None:
        """The entry of ``key``, or None when there is none.

        An entry not held in memory is read from disk on the calling thread (async code
        that must not block uses :meth:`aget`).
        """
        self._check_open()
        k = as_query_key(key)
        record = self._current(k)
        return None if record is None else self._entry_of(k, record)

    def keys(self, prefix: KeyLike = ()) -> list[QueryKey]:
        """The keys of the entries under ``prefix`` (element by element), in no set order."""
        self._check_open()
        return self._index_now().matching(as_query_key(prefix, allow_empty=True))

    # -- writing -------------------------------------------------------------------

    @overload
    def set(
        self, key: KeyLike, data: Callable[[JSON], Any], *, etag: str | None = None
    ) -> CacheEntry: ...

    @overload
    def set(self, key: KeyLike, data: Any, *, etag: str | None = None) -> CacheEntry: ...

    def set(self, key: KeyLike, data: Any, *, etag: str | None = None) -> CacheEntry:
        """Store ``data`` (JSON) as the fresh entry of ``key``; the new entry.

        ``data`` may also be an updater, as TanStack Query's ``setQueryData``: a function
        called with the current data (None when the key has no entry; stale data too)
        whose result is stored. It gets a copy: changing it in place, then raising,
        leaves the entry as it was. An exception it raises reaches the caller and stores
        nothing. (JSON is never callable, so a callable is always an updater.)

        ``etag`` defaults to ``data["etag"]`` when data is a mapping holding a string
        there. The data is copied through JSON: later changes to the caller's object do
        not reach the cache, and what ``get`` returns is what a reopen would load.
        Raises TypeError when data is not JSON (NaN and infinities included). A set
        counts as a success: the key's failure count and error are cleared.
        An entry not held in memory is read from disk for an updater, on this thread.
        """
        self._check_writable()
        k = as_query_key(key)
        if callable(data):
            old = self._current(k)
            data = data(None if old is None else parse_json(old.json()))
        record = _record(k, data, etag)
        self._commit(record)
        self._failures.clear(k)
        self._publish("set", k)
        return record.entry

    def invalidate(
        self, key: KeyLike, *, exact: bool = False, refetch: RefetchType = "active"
    ) -> int:
        """Mark stale every entry whose key starts with ``key``; how many matched.

        ``("workflow", "w1")`` matches ``("workflow", "w1", "versions")`` but not
        ``("workflow", "w10")``; ``exact=True`` matches the key alone. Entries that were
        stale already count too. Then ``refetch`` decides what is fetched again (see
        :data:`RefetchType`); a key being fetched right now is fetched once more after
        that fetch unless ``refetch="none"``, in which case its result is stored stale.
        Without a running event loop nothing is fetched; entries are only marked.
        """
        self._check_writable()
        _check_refetch(refetch)
        return self._invalidate(
            as_query_key(key, allow_empty=True), exact, refetch, None, frozenset()
        )

    def invalidate_all(self, *, refetch: RefetchType = "active") -> int:
        """Mark every entry stale (after missed changes); how many there are.

        Rewrites no row: the cache's generation moves on (one row, written at once, so a
        crash right after still finds every entry stale), and every entry stored before
        it reads as stale. One ``invalidated`` event with the empty key ``()`` stands for
        all of them (``stats()["invalidated"]`` counts each entry).
        """
        self._check_writable()
        _check_refetch(refetch)
        return self._invalidate_everything(refetch)

    def remove(self, key: KeyLike, *, exact: bool = False) -> int:
        """Remove every entry whose key starts with ``key`` (or equals it); how many matched.

        A fetch of a removed key that is in flight drops its result. Watchers of a
        removed key receive nothing until the key gets data again.
        """
        self._check_writable()
        return self._remove(as_query_key(key, allow_empty=True), exact, None)

    def apply_invalidation(
        self,
        item: Invalidation | Resync,
        *,
        refetch: RefetchType = "active",
        fetch_missing: bool = False,
    ) -> None:
        """Apply one pipeline item to the cache, publishing and counting each effect.

        - ``created``/``updated``: every key is invalidated, except that the entry of a
          specific key (:attr:`querysync.Invalidation.specific_keys`) that is fresh and
          holds the update's etag already shows that state: it stays fresh
          (``skipped_fresh``). Keys below it are still invalidated.
        - ``deleted``: entries under the specific keys are removed (a refetch would only
          find a 404); the general keys are invalidated.
        - :class:`querysync.Resync`: every entry is invalidated.

        ``fetch_missing=True`` also fetches, on created/updated, the specific keys that
        have a fetcher but no entry yet (a mirror of everything the feed mentions).
        """
        self._check_writable()
        _check_refetch(refetch)
        if isinstance(item, Resync):
            self._publish("resync", ())
            self._invalidate_everything(refetch)
            return
        if not isinstance(item, Invalidation):
            raise TypeError(f"expected an Invalidation or a Resync, not {type(item).__name__}")
        update = item.update
        specific = [as_query_key(k) for k in item.specific_keys]
        general = [as_query_key(k) for k in item.general_keys]
        if update.event == "deleted":
            for k in specific:
                self._remove(k, False, update)
            for k in general:
                self._invalidate(k, False, refetch, update, frozenset())
            return
        keep = self._proven_fresh(specific, update)
        changed: list[tuple[QueryKey, Record | None]] = []
        for k in general + specific:
            self._invalidate(k, False, refetch, update, keep, changed)
        self._queue_stale(changed)
        if fetch_missing:
            index = self._index_now()
            for k in specific:
                if k not in index:
                    self._start_fetch(k)

    # -- fetching ------------------------------------------------------------------

    def register_fetcher(self, prefix: KeyLike, fetch: Fetch) -> None:
        """Fetch keys under ``prefix`` with ``fetch`` (``async (key) -> data``).

        ``data`` is JSON, copied by the cache; or a :class:`querysync.Fetched` (the data
        and its JSON text, as :class:`querysync.NodeToolApi` returns), stored as it is.

        The fetcher of the longest registered prefix of a key serves it; ``()`` serves
        every key no longer prefix claims. Registering a prefix again replaces its fetcher.
        """
        self._check_open()
        self._fetchers.register(as_query_key(prefix, allow_empty=True), fetch)

    def watch(self, key: KeyLike) -> Observable[JSON]:
        """An Observable of the data of ``key``: the current data, then every new value.

        On subscription it emits the current data, if there is any, and starts a fetch
        when the entry is missing or stale (and a fetcher and a running loop exist).
        Then it emits each value that differs from the last one emitted. While at least
        one subscription is open the key is *active*: invalidations refetch it. Failed
        fetches emit nothing (see :meth:`get` for the recorded error); close() completes it.
        """
        k = as_query_key(key)

        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            self._check_open()
            watch = self._watch_of(k)
            return watch.broadcast.observable(lambda obs: self._greet(k, watch, obs)).subscribe(
                observer, scheduler=scheduler
            )

        return Observable(subscribe)

    async def fetch(self, key: KeyLike) -> CacheEntry | None:
        """Fetch ``key`` now (joining a fetch in flight) and return its entry afterwards.

        Inside the key's ``fetch_window`` "now" is when the window closes: the request
        joins the one fetch held for then.

        The entry is None when the key has no data (its first fetch failed, or it was
        removed meanwhile). Raises ConfigurationError when no fetcher serves the key.
        """
        self._check_writable()
        k = as_query_key(key)
        task = self._start_fetch(k, required=True)
        assert task is not None
        # asyncio.wait, not the task itself: a caller that gives up must not cancel a
        # fetch others share, and a fetch stopped by cancel() is no error of the caller's.
        await asyncio.wait((task,))
        return await self.aget(k)

    def prefetch(self, key: KeyLike) -> None:
        """Start fetching ``key`` in the background when it is missing or stale.

        Raises ConfigurationError when no fetcher serves the key or no loop is running.
        """
        self._check_writable()
        k = as_query_key(key)
        mark = self._mark_of(k)
        if mark == self._gen:  # fresh; unknown (index not read yet) just fetches
            return
        self._start_fetch(k, required=True)

    async def refetch(self, prefix: KeyLike = (), *, exact: bool = False) -> int:
        """Fetch again now every key under ``prefix`` that has a fetcher; how many.

        TanStack Query's ``refetchQueries``: the keys are those with an entry and
        those being fetched or watched, stale or fresh alike; ``exact=True`` takes the
        key alone. A key being fetched is fetched once more after that fetch (its
        result might predate the call); one fetched inside its ``fetch_window`` gets
        the window's trailing fetch; at most ``concurrency`` fetcher calls run at once.
        Returns once every one of those fetches has ended (stored, failed or
        cancelled); cancelling the caller does not cancel them. Without a fetcher for
        any of them, it returns 0 at once. Reads the index (see :meth:`load_index`).
        """
        self._check_writable()
        k = as_query_key(prefix, allow_empty=True)
        keys = set(self._index_now().matching(k, exact=exact))
        keys.update(self._live.matching(k, exact=exact))
        tasks: set[asyncio.Task[None]] = set()
        for key in keys:
            if self._fetchers.lookup(key) is None:
                continue
            running = key in self._scheduler
            task = self._scheduler.again(key) if running else self._start_fetch(key)
            if task is not None:
                tasks.add(task)
        if tasks:
            # asyncio.wait, not gather: a cancelled fetch is an outcome here, not an
            # error, and the caller giving up leaves the fetches others share alone.
            await asyncio.wait(tasks)
        return len(tasks)

    def cancel(self, prefix: KeyLike = (), *, exact: bool = False) -> int:
        """Stop the fetches of the keys under ``prefix``; how many were stopped.

        TanStack Query's ``cancelQueries``: a running fetcher call is cancelled, a fetch
        held for its window or waiting out a retry's backoff is dropped, and a refetch
        asked for after it is forgotten. Entries stay exactly as they were (data, stale
        flag, error); each stopped fetch is counted (``fetch_cancelled``). The next
        fetch (an invalidation, :meth:`refetch`, :meth:`fetch`) starts afresh.
        :meth:`fetch` calls waiting on a stopped fetch return the entry as it is.
        """
        self._check_open()
        k = as_query_key(prefix, allow_empty=True)
        stopped = 0
        for key in self._live.matching(k, exact=exact):
            if self._scheduler.cancel_key(key):
                stopped += 1
                self._publish("fetch_cancelled", key)
        return stopped

    def status(self, key: KeyLike) -> QueryStatus:
        """Where ``key`` stands in this process (:class:`QueryStatus`), for any key.

        An entry not held in memory is read from disk on the calling thread, as by
        :meth:`get`. The entry itself (``get``) carries the last error and
        ``updated_at`` (``fetched_at`` here); fetching and the failure count are here.
        """
        self._check_open()
        k = as_query_key(key)
        record = self._current(k)
        entry = None if record is None else self._entry_of(k, record)
        failures, error = self._failures.of(k)
        if entry is None:
            return QueryStatus(k in self._scheduler, failures, error, None, True, False)
        if error is None:
            error = entry.error
        return QueryStatus(
            k in self._scheduler, failures, error, entry.updated_at, entry.stale, True
        )

    def fetching(self, key: KeyLike) -> bool:
        """True while a fetch of ``key`` runs, waits to retry or is held for its window."""
        return as_query_key(key) in self._scheduler

    def marked_fresh(self, key: KeyLike) -> bool:
        """True when the key index marks the entry of ``key`` fresh; reads no row."""
        return self._mark_of(as_query_key(key)) == self._gen

    async def confirm(self, key: KeyLike, etag: str) -> bool:
        """Mark the stale entry of ``key`` fresh, without a fetch, when it holds ``etag``.

        True when the entry is fresh afterwards (it was already, or its stored etag is
        ``etag``); False when it is missing or holds another state. See :meth:`confirm_many`.
        """
        k = as_query_key(key)
        return k in await self.confirm_many([(k, partial(_has_etag, etag))])

    async def confirm_many(
        self,
        proofs: Iterable[tuple[KeyLike, Callable[[CacheEntry], bool]]],
        *,
        batch: int = 500,
    ) -> frozenset[QueryKey]:
        """The keys among ``proofs`` whose entries are fresh once the proofs are applied.

        Each proof is a key and a test of its stored entry (its etag equals a list's,
        its data equals a list item): a stale entry that passes is marked fresh again
        as a fetch would, its data unchanged and its error cleared, with no request
        (a ``skipped_fresh`` event); an entry already fresh counts as fresh untested.
        Rows not held in memory are read on a worker thread, ``batch`` (default 500) at
        a time, and the loop is given back between batches: a million proofs never
        hold it for long.
        """
        self._check_writable()
        fresh: dict[QueryKey, None] = {}
        # Taken ``batch`` at a time: a caller's generator then never has more than that
        # many tests alive (each a closure: two objects more for the collector to walk).
        pending = iter(proofs)
        while chunk := [(as_query_key(k), test) for k, test in islice(pending, batch)]:
            cold = [k for k, _ in chunk if self._held(k) is _UNKNOWN]
            loaded = await asyncio.to_thread(_read_all, self._reader, cold) if cold else {}
            self._check_writable()
            for k, test in chunk:
                mark = self._mark_of(k)
                if mark is None:
                    continue
                if mark == self._gen:
                    fresh[k] = None
                    continue
                record = self._held(k)
                on_disk = record is _UNKNOWN
                if on_disk:
                    found = loaded.get(k)
                    op = self._store.lookup(k)
                    record = op.apply(found) if found and isinstance(op, Mark) else found
                if not isinstance(record, Record):
                    continue
                e = record.entry
                if not test(e):
                    continue
                # As text, its parsed data dropped: 10,000 confirmed rows waiting in the
                # write queue with their data were as many objects more for every full
                # collection to walk (on the loop).
                confirmed = Record.of_text((k, e.etag, False, e.updated_at, None), record.json(), 0)
                if on_disk:
                    # Written, not kept in the tier: the rows were not there before.
                    confirmed.gen = self._gen
                    self._set_mark(k, self._gen)
                    assert isinstance(self._store, EntryStore)
                    self._store.put(k, confirmed)
                else:
                    self._commit(confirmed)
                self._publish("skipped_fresh", k)
                fresh[k] = None
            await asyncio.sleep(0)
        return frozenset(fresh)

    # A timeout argument (not only asyncio.timeout around it): issue 12.10 asks for one,
    # and it returns False rather than raising, for callers that poll.
    async def wait_idle(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until nothing is fetching, waiting to retry or waiting to be written.

        True once idle; False when ``timeout`` (seconds, default None: no limit) passed
        first, e.g. while a full disk holds the writes back (see :attr:`disk_full`).
        """
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if self._greeting:
                        await asyncio.wait(set(self._greeting))
                    await self._scheduler.wait()
                    if self._store.queued:
                        await self._writes_done()
                    if not (len(self._scheduler) or self._store.queued or self._greeting):
                        return True
        except TimeoutError:
            return False

    def flush(self, timeout: float | None = None) -> bool:
        """Block until queued disk writes are done; False on timeout (seconds, default None).

        Blocking: meant for synchronous code. Async code awaits :meth:`wait_idle`.
        """
        return self._store.flush(timeout)

    # -- observing -----------------------------------------------------------------

    def events(self) -> Observable[CacheEvent]:
        """An Observable of every :class:`CacheEvent` from now on; completes at close().

        A subscriber that raises is logged and counted (``subscriber_errors``); the
        cache and the other subscribers are not affected.
        """
        if self._closed:
            return reactivex.empty()
        return self._events.observable()

    def stats(self) -> CacheStats:
        """Counts of what happened and what is (:class:`querysync.CacheStats`).

        One count per :data:`CacheEventKind`, plus: ``entries``, ``stale``, ``active``
        (watched keys), ``in_flight`` (fetches running, waiting to retry or held for
        their key's window), ``waiting`` (those of them waiting on the clock: a window
        or a retry's backoff), ``fetch_timeouts`` (fetcher calls cancelled at the
        ``fetch_timeout``),
        ``queued_writes``, ``written`` (rows), ``transactions`` (committed write
        transactions), ``write_errors`` (failed transactions, retried), ``lost_writes``
        (given up at close), ``on_commit_errors``, ``corrupt_rows`` and
        ``unsafe_rows`` (rows refused: pickles, files outside the folder),
        ``discarded_at_open`` (buster/max_age), ``subscriber_errors`` and
        ``apply_errors``; ``memory_entries`` and ``memory_bytes`` (entries whose data is
        held in memory, and its estimated size), ``evictions`` (from memory),
        ``rows_read`` (entries read from disk), ``generation`` (invalidate_all's),
        ``disk_full`` (1 while writes fail for want of space) and ``disk_full_errors``.
        """
        out: dict[str, int] = {kind: self._counts[kind] for kind in EVENT_KINDS}
        store = self._store.counts
        if self._index is None and self._closed:
            entries, stale = self._entries_at_open, 0  # closed before the index was read
        else:
            entries = len(self._index_now())
            stale = entries - self._fresh
        out.update(
            entries=entries,
            stale=stale,
            active=len(self._watches),
            in_flight=len(self._scheduler),
            waiting=self._scheduler.waiting,
            fetch_timeouts=self._scheduler.timeouts,
            queued_writes=self._store.queued,
            written=store["written"],
            transactions=store["transactions"],
            write_errors=store["write_errors"],
            lost_writes=store["lost_writes"],
            on_commit_errors=store["on_commit_errors"],
            corrupt_rows=self._problems.corrupt,
            unsafe_rows=self._problems.unsafe + int(getattr(self._disk, "unsafe_files", 0)),
            discarded_at_open=self._counts["discarded_at_open"],
            subscriber_errors=self._counts["subscriber_errors"],
            apply_errors=self._counts["apply_errors"],
            memory_entries=len(self._tier),
            memory_bytes=self._tier.size,
            evictions=self._tier.evictions,
            rows_read=self._reader.rows_read,
            generation=self._gen,
            disk_full=int(self._store.disk_full),
            disk_full_errors=store["disk_full_errors"],
        )
        return cast(CacheStats, out)  # the keys above are CacheStats's

    # -- closing -------------------------------------------------------------------

    def close(self) -> None:
        """Cancel running fetches, write what is queued and close. Idempotent.

        Blocks while the queued writes are saved; async code prefers :meth:`aclose`.
        """
        if self._begin_close():
            self._finalizer()
            self._complete_subscribers()

    async def aclose(self) -> None:
        """Cancel and await running fetches, save queued writes off the loop, then close.

        As with :meth:`close`, writes that keep failing (a broken or locked disk) are
        given up after three attempts and counted in ``stats()["lost_writes"]``.
        """
        if self._closed:
            return
        tasks = self._scheduler.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if not self._begin_close():  # closed while the fetches wound down
            return
        # The writer thread saves the queue or gives up on it; waiting on the loop for
        # the queue to empty instead never ended on a disk that can no longer be written.
        await asyncio.to_thread(self._finalizer)
        self._complete_subscribers()

    def _begin_close(self) -> bool:
        """Mark the cache closed and cancel its fetches; False when it was closed already."""
        if self._closed:
            return False
        self._closed = True
        self._scheduler.cancel()
        return True

    def _complete_subscribers(self) -> None:
        self._events.complete()
        for watch in list(self._watches.values()):
            watch.broadcast.complete()
        self._watches.clear()

    def __enter__(self) -> QueryCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> QueryCache:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- internals -----------------------------------------------------------------------

    def _on_fetched(self, key: QueryKey, data: Any, stale: bool) -> None:
        if self._closed:
            return
        if isinstance(data, Fetched):
            record = _record(key, data.data, None, text=data.text)
        else:
            record = _record(key, data, None)
        if stale:
            record = record.with_stale()
        self._commit(record)
        self._publish("fetched", key)

    def _on_failed(self, key: QueryKey, error: str) -> None:
        if self._closed:
            return
        record = self._held(key)
        if isinstance(record, Record):
            self._commit(record.with_error(error))
        elif record is _UNKNOWN:
            # On disk only: the writer marks the row, the loop reads nothing.
            self._set_mark(key, _STALE)
            assert isinstance(self._store, EntryStore)
            self._store.mark_many([key], error)
        self._publish("fetch_failed", key, error=error)

    def _on_gone(self, key: QueryKey, error: str) -> None:
        if self._closed:
            return
        self._publish("fetch_gone", key, error=error)
        self._remove(key, True, None)

    def _on_flight_ended(self, key: QueryKey) -> None:
        if key not in self._watches:
            self._live.discard(key)

    def _check_open(self) -> None:
        if self._closed:
            raise CacheClosedError(f"the cache in {self._directory!r} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._read_only:
            raise CacheError(f"the cache in {self._directory!r} is open read-only")

    def _commit(self, record: Record) -> None:
        """Make ``record`` the entry of its key: memory, index, write queue, watchers."""
        key = record.head[0]
        record.gen = self._gen
        self._set_mark(key, _STALE if record.stale else self._gen)
        self._tier.put(key, record)
        assert isinstance(self._store, EntryStore)
        self._store.put(key, record)
        watch = self._watches.get(key)
        if watch is not None and watch.seen != record.json():
            watch.seen = record.json()
            watch.broadcast.emit(record.entry.data)

    def _invalidate(
        self,
        prefix: QueryKey,
        exact: bool,
        refetch: str,
        update: ResourceChangeUpdate | None,
        kept: AbstractSet[QueryKey],
        changed: list[tuple[QueryKey, Record | None]] | None = None,
    ) -> int:
        """Mark the matches stale, publish, refetch; how many matched (kept ones aside).

        The newly stale records are queued for the disk at the end, or appended to
        ``changed`` for the caller to queue (one write-queue hand-off per pipeline item).
        An entry whose data is not in memory is queued as None: the writer marks its row.
        """
        index = self._index_now()
        matched = index.matching(prefix, exact=exact)
        mine: list[tuple[QueryKey, Record | None]] = [] if changed is None else changed
        first = len(mine)
        skipped = 0
        gen = self._gen
        tier = self._tier
        for key in matched:
            if key in kept:
                skipped += 1
                continue
            if index.set_mark(key, _STALE) == gen:
                held = tier.get(key)
                if held is None:
                    op = self._store.lookup(key)
                    held = op if isinstance(op, Record) else None
                new = None if held is None else held.with_stale()
                if new is not None:
                    tier.put(key, new)
                mine.append((key, new))
            self._publish("invalidated", key, update=update)
        self._fresh -= len(mine) - first
        if changed is None:
            self._queue_stale(mine)
        self._refetch(prefix, exact, refetch, matched, kept)
        return len(matched) - skipped

    def _queue_stale(self, changed: list[tuple[QueryKey, Record | None]]) -> None:
        # A subscriber of an "invalidated" event may have set or removed the key since;
        # its own write is queued already and must not be overwritten by the stale one.
        index = self._index_now()
        tier = self._tier
        records: list[tuple[QueryKey, Record]] = []
        marks: list[QueryKey] = []
        for key, new in changed:
            if index.mark_of(key) != _STALE:
                continue
            if new is None:
                marks.append(key)
            elif tier.holds(key, new):
                records.append((key, new))
        assert isinstance(self._store, EntryStore)
        if records:
            self._store.put_many(records)
        if marks:
            self._store.mark_many(marks)

    def _invalidate_everything(self, refetch: str) -> int:
        """invalidate_all in O(1) writes: the generation moves on; how many entries."""
        index = self._index_now()
        assert isinstance(self._store, EntryStore)
        self._gen += 1
        self._store.write_generation_now(self._gen)
        self._fresh = 0
        count = len(index)
        self._counts["invalidated"] += count
        if self._events:
            self._events.emit(CacheEvent("invalidated", (), time.time(), None, None))
        matched = index.matching(()) if refetch == "all" else []
        self._refetch((), False, refetch, matched, frozenset())
        return count

    def _refetch(
        self,
        prefix: QueryKey,
        exact: bool,
        refetch: str,
        matched: list[QueryKey],
        kept: AbstractSet[QueryKey],
    ) -> None:
        again = refetch != "none"
        for key in self._live.matching(prefix, exact=exact):
            if key in kept:
                continue
            revive = key == prefix or key in self._watches
            if self._scheduler.invalidated(key, refetch=again, revive=revive):
                continue
            if again and key in self._watches:
                self._start_fetch(key)
        if refetch == "all" and self._scheduler.running_loop is not None:
            for key in matched:
                if key not in kept and key not in self._scheduler:
                    self._start_fetch(key)

    def _remove(self, prefix: QueryKey, exact: bool, update: ResourceChangeUpdate | None) -> int:
        matched = self._index_now().matching(prefix, exact=exact)
        for key in matched:
            self._set_mark(key, None)
            self._tier.discard(key)
            watch = self._watches.get(key)
            if watch is not None:
                watch.seen = None
            self._failures.clear(key)
        if matched:
            assert isinstance(self._store, EntryStore)
            # Queued before anyone hears of the removal: until then a write still queued
            # for the key would answer get() with the entry being removed.
            self._store.delete_many(matched)
        for key in matched:
            self._publish("removed", key, update=update)
        for key in self._live.matching(prefix, exact=exact):
            self._scheduler.removed(key)
        return len(matched)

    def _proven_fresh(
        self, specific: list[QueryKey], update: ResourceChangeUpdate
    ) -> frozenset[QueryKey]:
        """The specific keys whose fresh entry already holds the update's etag."""
        etag = update.resource.etag
        if not etag:
            return frozenset()
        fresh: list[QueryKey] = []
        gen = self._gen
        for key in specific:
            if self._mark_of(key) != gen:
                continue
            # Only an entry held in memory can prove it: reading its row here would put
            # a disk read on the event loop. One not held is invalidated and refetched.
            record = self._held(key)
            if isinstance(record, Record) and record.etag == etag:
                fresh.append(key)
                self._publish("skipped_fresh", key, update=update)
        return frozenset(fresh)

    def _start_fetch(self, key: QueryKey, *, required: bool = False) -> asyncio.Task[None] | None:
        if self._read_only:
            return None  # a fetch would write its result
        if self._fetchers.lookup(key) is None:
            if required:
                raise ConfigurationError(f"no fetcher registered for {key!r} or a prefix of it")
            return None
        task = self._scheduler.start(key)
        if task is None:
            if required:
                raise ConfigurationError("fetching needs a running asyncio event loop")
            return None
        self._live.add(key)
        return task

    def _greet(self, key: QueryKey, watch: _Watch, observer: abc.ObserverBase[Any]) -> None:
        record = self._held(key)
        if record is _UNKNOWN:
            loop = self._scheduler.running_loop
            if loop is not None:
                # On disk only: read it off the loop, then greet (the key is pinned by now).
                task = loop.create_task(self._greet_from_disk(key, watch, observer))
                self._greeting.add(task)
                task.add_done_callback(self._greeting.discard)
                return
            record = self._current(key)  # no loop: synchronous code may read here
        assert not isinstance(record, _Unknown)
        self._greet_with(key, watch, observer, record)

    def _greet_with(
        self,
        key: QueryKey,
        watch: _Watch,
        observer: abc.ObserverBase[Any],
        record: Record | None,
    ) -> None:
        entry = None if record is None else self._entry_of(key, record)
        if record is not None and entry is not None:
            self._tier.pin(key, record)
            watch.seen = record.json()
            watch.broadcast.send(observer, entry.data)
        if entry is None or entry.stale:
            self._start_fetch(key)

    async def _greet_from_disk(
        self, key: QueryKey, watch: _Watch, observer: abc.ObserverBase[Any]
    ) -> None:
        try:
            loaded = await asyncio.to_thread(self._reader.read, key)
        except sqlite3.Error:
            if self._closed:
                return  # closed while reading: nothing to greet
            raise
        if self._closed or self._watches.get(key) is not watch:
            return
        record = self._held(key)
        if record is _UNKNOWN:
            record = self._adopt(key, loaded)
        assert not isinstance(record, _Unknown)
        if record is not None and watch.seen == record.json():
            return  # a newer value reached the watchers meanwhile
        self._greet_with(key, watch, observer, record)

    def _watch_of(self, key: QueryKey) -> _Watch:
        watch = self._watches.get(key)
        if watch is None:
            watch = self._watches[key] = _Watch(self._counts)
            self._live.add(key)
            self._tier.pin(key, None)
            watch.broadcast.on_last = lambda: self._unwatch(key, watch)
        return watch

    def _unwatch(self, key: QueryKey, watch: _Watch) -> None:
        if self._watches.get(key) is watch:
            del self._watches[key]
            self._tier.unpin(key)
            if key not in self._scheduler:
                self._live.discard(key)

    async def _writes_done(self) -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def wake() -> None:
            if not done.done():
                done.set_result(None)

        def on_idle() -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(wake)

        self._store.when_idle(on_idle)
        await done

    def _publish(
        self,
        kind: CacheEventKind,
        key: QueryKey,
        *,
        error: str | None = None,
        update: ResourceChangeUpdate | None = None,
    ) -> None:
        self._counts[kind] += 1
        if self._events:
            self._events.emit(CacheEvent(kind, key, time.time(), error, update))

    def _note_apply_error(self) -> None:
        self._counts["apply_errors"] += 1


class _Host:
    """The cache as its fetch scheduler sees it; keeps these hooks out of the public API."""

    __slots__ = ("_cache",)

    def __init__(self, cache: QueryCache) -> None:
        self._cache = cache

    def fetcher_for(self, key: QueryKey) -> Fetch | None:
        return self._cache._fetchers.lookup(key)

    def fetch_started(self, key: QueryKey) -> None:
        self._cache._publish("fetch_started", key)

    def fetch_retry(self, key: QueryKey, error: str) -> None:
        log.info("fetch of %r failed, retrying: %s", key, error)
        self._cache._failures.failed(key, error)
        self._cache._publish("fetch_retry", key, error=error)

    def fetched(self, key: QueryKey, data: Any, *, stale: bool) -> None:
        self._cache._on_fetched(key, data, stale)  # raises for data that is not JSON
        self._cache._failures.clear(key)

    def fetch_failed(self, key: QueryKey, error: str) -> None:
        log.warning("fetch of %r failed: %s", key, error)
        self._cache._failures.failed(key, error)
        self._cache._on_failed(key, error)

    def fetch_gone(self, key: QueryKey, error: str) -> None:
        log.info("fetch of %r: the resource is gone (%s); entry removed", key, error)
        self._cache._failures.clear(key)  # a 404 is an answer, not a failure
        self._cache._on_gone(key, error)

    def fetch_discarded(self, key: QueryKey) -> None:
        self._cache._publish("fetch_discarded", key)

    def flight_ended(self, key: QueryKey) -> None:
        self._cache._on_flight_ended(key)


def _shut(store: EntryStore, reader: RowReader) -> None:
    """Write what is queued and close the store and the reader (the finalizer's job)."""
    store.close()
    reader.close()


def _record(key: QueryKey, data: Any, etag: str | None, *, text: str | None = None) -> Record:
    """The fresh record of ``data``; with its JSON ``text``, ``data`` is taken as it is.

    Without the text, the data is encoded once and the entry holds a copy decoded from
    that text, so later changes to the caller's object never reach the cache.
    """
    if text is None:
        try:
            text = encode_data(data)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"data for {key!r} is not JSON: {exc}") from exc
        data = parse_json(text)
    entry = CacheEntry(key, data, etag_of(data, etag), False, time.time(), None)
    return Record(entry, text)


def _has_etag(etag: str, entry: CacheEntry) -> bool:
    return entry.etag == etag


def _read_all(reader: RowReader, keys: list[QueryKey]) -> dict[QueryKey, Record | None]:
    """The stored records of ``keys`` (a worker thread's job: it reads disk)."""
    return {key: reader.read(key) for key in keys}


def _check_refetch(refetch: str) -> None:
    if refetch not in _REFETCH:
        raise ConfigurationError(f"refetch must be 'active', 'all' or 'none', not {refetch!r}")
