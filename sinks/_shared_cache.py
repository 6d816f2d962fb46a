"""SharedCache: the read side of a QueryCache, kept live from a NATS JetStream bucket.

One watcher per SharedCache (a JetStream consumer on the server): it first receives the
latest value of every entry key, then every change, and fans them out inside the
process to ``get``, ``keys``, ``watch(key)`` and ``events()``. After every reconnection
(a network cut, a NATS restart) the watcher is started again: its first pass is the
bucket as it is now, and every key it does not name is removed, so a reader that was
away converges with no key left at an old state and no removed key left behind. A key's
state is applied only when its revision is newer than the one held.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import reactivex
from reactivex import Observable, abc

from querysync._exceptions import CacheClosedError
from querysync._keys import JSONScalar, QueryKey
from querysync._types import JSON

from ._entry import CacheEntry, as_query_key
from ._events import Broadcast, CacheEvent, CacheEventKind
from ._shared_codec import ENTRY_FILTER, Manifest, decode_document, key_of_bucket_key
from ._shared_conn import Bucket, ShareConfig, connect_bucket

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

    from ._cache import QueryCache

__all__ = ["SharedCache", "read_bucket"]

log = logging.getLogger("querysync.share")

KeyLike = str | Iterable[JSONScalar]


class _Watch:
    __slots__ = ("broadcast", "seen")

    def __init__(self, counts: Counter[str]) -> None:
        self.broadcast: Broadcast[Any] = Broadcast(counts)
        self.seen: Any = _NOTHING


_NOTHING: Any = object()


class SharedCache:
    """The entries of a shared bucket, live: ``get``, ``keys``, ``watch``, ``events``.

    ``url`` is ``nats://HOST:PORT`` (or ``tls://``, or a :class:`ShareConfig`);
    ``bucket`` defaults to ``"querysync"`` (or the URL's path). ``local`` (a directory,
    default None) also keeps a :class:`QueryCache` folder true to the bucket (data,
    etag and stale flag; ``updated_at`` there is when the entry reached it), so code
    that opens a folder works on any machine and a restart reads at once.

    Use it as ``async with SharedCache(url) as cache:``; entering returns once the
    bucket's current entries are in. Reads are of memory, on the loop; the cache is not
    thread-safe. ``events()`` emits ``set`` for a new state of a key, ``invalidated``
    when only its stale flag turned on, ``removed``, and ``resync`` (key ``()``) after
    each reconnection's first pass.
    """

    def __init__(
        self,
        url: str | ShareConfig,
        *,
        bucket: str | None = None,
        local: str | os.PathLike[str] | None = None,
    ) -> None:
        self._config = ShareConfig.of(url, bucket)
        self._local_dir = local
        self._local: QueryCache | None = None
        self._bucket: Bucket | None = None
        self._entries: dict[QueryKey, CacheEntry] = {}
        self._names: dict[str, QueryKey] = {}
        self._revisions: dict[str, int] = {}
        self._counts: Counter[str] = Counter()
        self._events: Broadcast[CacheEvent] = Broadcast(self._counts)
        self._watches: dict[QueryKey, _Watch] = {}
        self._task: asyncio.Task[None] | None = None
        self._watcher: KeyValue.KeyWatcher | None = None
        self._generation = 0
        self._ready: asyncio.Future[None] | None = None
        self._closed = False
        self._opened = False
        self.applied_at: dict[QueryKey, float] = {}

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> SharedCache:
        """Connect, start the watcher, and return once the bucket's entries are in."""
        from ._cache import QueryCache

        if self._opened:
            return self
        self._opened = True
        if self._local_dir is not None:
            self._local = await asyncio.to_thread(QueryCache, self._local_dir)
        try:
            self._bucket = await connect_bucket(self._config)
            self._bucket.on_reconnect.append(self._on_reconnect)
            self._ready = asyncio.get_running_loop().create_future()
            self._task = asyncio.get_running_loop().create_task(self._follow())
            await asyncio.wait({self._ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
            if self._task.done():
                self._task.result()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def aclose(self) -> None:
        """Stop the watcher, close the connection and the local folder. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
        if self._bucket is not None:
            await self._bucket.close()
        if self._local is not None:
            await self._local.aclose()
        self._events.complete()
        for watch in list(self._watches.values()):
            watch.broadcast.complete()
        self._watches.clear()

    async def __aenter__(self) -> SharedCache:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- reading -----------------------------------------------------------------------

    @property
    def bucket(self) -> str:
        """The bucket's name."""
        return self._config.bucket

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[QueryKey]:
        return iter(self.keys())

    def __contains__(self, key: object) -> bool:
        try:
            return as_query_key(key) in self._entries  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"entries={len(self._entries)}"
        return f"<SharedCache {self._config.bucket!r} {state}>"

    def _repr_html_(self) -> str:
        """The entries as an HTML table (key, stale, etag, age), for Jupyter."""
        from querysync.display import cache_html

        return cache_html(self)

    def get(self, key: KeyLike) -> CacheEntry | None:
        """The entry of ``key``, or None when there is none."""
        self._check_open()
        return self._entries.get(as_query_key(key))

    def keys(self, prefix: KeyLike = ()) -> list[QueryKey]:
        """The keys of the entries under ``prefix`` (element by element), in no set order."""
        self._check_open()
        p = as_query_key(prefix, allow_empty=True)
        if not p:
            return list(self._entries)
        n = len(p)
        return [k for k in self._entries if k[:n] == p]

    def stats(self) -> dict[str, int]:
        """``entries``, ``stale``, and counts of what the watcher did.

        ``set``, ``invalidated``, ``removed``, ``resync`` (passes after a reconnection),
        ``rejected`` (values that are no entry, skipped), ``chunks_missing`` (a chunked
        entry already overwritten: its newer state follows), ``subscriber_errors``.
        """
        out = {
            "entries": len(self._entries),
            "stale": sum(1 for e in self._entries.values() if e.stale),
        }
        for name in ("set", "invalidated", "removed", "resync", "rejected", "chunks_missing"):
            out[name] = self._counts[name]
        out["subscriber_errors"] = self._counts["subscriber_errors"]
        return out

    def watch(self, key: KeyLike) -> Observable[JSON]:
        """An Observable of the data of ``key``: the current data, then every new value.

        Values equal to the last one emitted are not emitted again; a removed key emits
        nothing until it has data again. aclose() completes it.
        """
        k = as_query_key(key)

        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            self._check_open()
            watch = self._watches.get(k)
            if watch is None:
                watch = self._watches[k] = _Watch(self._counts)
                w = watch
                watch.broadcast.on_last = lambda: self._unwatch(k, w)

            def greet(obs: abc.ObserverBase[Any]) -> None:
                entry = self._entries.get(k)
                if entry is not None:
                    watch.seen = entry.data
                    watch.broadcast.send(obs, entry.data)

            return watch.broadcast.observable(greet).subscribe(observer, scheduler=scheduler)

        return Observable(subscribe)

    def events(self) -> Observable[CacheEvent]:
        """An Observable of every :class:`CacheEvent` from now on; completes at aclose()."""
        if self._closed:
            return reactivex.empty()
        return self._events.observable()

    def _unwatch(self, key: QueryKey, watch: _Watch) -> None:
        if self._watches.get(key) is watch:
            del self._watches[key]

    def _check_open(self) -> None:
        if self._closed:
            raise CacheClosedError(f"the shared cache {self._config.bucket!r} is closed")

    # -- following the bucket -----------------------------------------------------------

    async def _on_reconnect(self) -> None:
        # Ending the watcher ends the pass; the next one starts from the bucket as it is.
        self._generation += 1
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            try:
                await watcher.stop()  # type: ignore[no-untyped-call]
            except Exception as exc:
                log.debug("stopping a watcher: %s", exc)

    async def _follow(self) -> None:
        import nats.errors

        assert self._bucket is not None
        first = True
        while True:
            try:
                await self._one_pass(self._bucket.kv, first)
                first = False
            except asyncio.CancelledError:
                raise
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                log.info("the bucket watcher stopped (%s); starting it again", exc)
                await asyncio.sleep(0.2)

    async def _one_pass(self, kv: KeyValue, first: bool) -> None:
        """Watch until a reconnection asks for a new pass."""
        generation = self._generation
        watcher = await kv.watch(ENTRY_FILTER)
        self._watcher = watcher
        if generation != self._generation:  # reconnected while it was being made
            return
        # A pass starts from the bucket as it is: its first values are the newest of
        # each key, even where a recreated bucket numbers them lower than before.
        self._revisions = {}
        seen: set[str] | None = set()
        try:
            async for update in watcher:
                if update is None:
                    if seen is not None:
                        self._end_of_pass(seen, first)
                        seen = None
                    continue
                if seen is not None:
                    seen.add(update.key)
                await self._apply(update.key, update.value, update.revision, update.operation)
        finally:
            if self._watcher is watcher:
                self._watcher = None
                try:
                    await watcher.stop()  # type: ignore[no-untyped-call]
                except Exception as exc:  # a closed connection: nothing left to stop
                    log.debug("stopping a watcher: %s", exc)

    def _end_of_pass(self, seen: set[str], first: bool) -> None:
        for name in [n for n in self._names if n not in seen]:
            self._forget(name)
        if self._local is not None:
            held = self._entries
            gone = [k for k in self._local if k not in held]
            for key in gone:
                self._local.remove(key, exact=True)
        if not first:
            self._counts["resync"] += 1
            self._emit("resync", ())
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    async def _apply(
        self, name: str, value: bytes | None, revision: int | None, op: str | None
    ) -> None:
        rev = revision or 0
        if rev and rev <= self._revisions.get(name, 0):
            return
        if op in ("DEL", "PURGE"):
            self._revisions.pop(name, None)
            self._forget(name)
            return
        try:
            doc = decode_document(value or b"")
            if isinstance(doc, Manifest):
                entry = await self._assemble(doc)
                if entry is None:
                    return
            else:
                entry = doc
            named = key_of_bucket_key(name)
            if named is not None and named != entry.key:
                raise ValueError("the value names another key than its bucket key")
        except ValueError as exc:
            self._counts["rejected"] += 1
            log.warning("bucket value %s skipped: %s", name, exc)
            return
        self._revisions[name] = rev
        old_name_key = self._names.get(name)
        if old_name_key is not None and old_name_key != entry.key:
            self._forget(name)
        self._names[name] = entry.key
        self._store(entry)

    async def _assemble(self, manifest: Manifest) -> CacheEntry | None:
        import nats.js.errors

        assert self._bucket is not None
        parts: list[bytes] = []
        for seq in manifest.chunks:
            try:
                msg = await self._bucket.js.get_msg(self._bucket.stream, seq=seq)
            except nats.js.errors.NotFoundError:
                self._counts["chunks_missing"] += 1
                return None
            parts.append(msg.data or b"")
        whole = b"".join(parts)
        if len(whole) != manifest.size:
            raise ValueError("chunks do not add up to the manifest's size")
        doc = decode_document(whole)
        if not isinstance(doc, CacheEntry) or doc.key != manifest.key:
            raise ValueError("chunks hold no entry of the manifest's key")
        return doc

    def _store(self, entry: CacheEntry) -> None:
        key = entry.key
        old = self._entries.get(key)
        if old == entry:
            return
        self._entries[key] = entry
        self.applied_at[key] = time.time()
        only_stale = (
            old is not None and entry.stale and not old.stale and old.data == entry.data
        )
        kind: CacheEventKind = "invalidated" if only_stale else "set"
        self._counts[kind] += 1
        if self._local is not None:
            self._local.set(key, entry.data, etag=entry.etag)
            if entry.stale:
                self._local.invalidate(key, exact=True, refetch="none")
        self._emit(kind, key)
        watch = self._watches.get(key)
        if watch is not None and (watch.seen is _NOTHING or watch.seen != entry.data):
            watch.seen = entry.data
            watch.broadcast.emit(entry.data)

    def _forget(self, name: str) -> None:
        key = self._names.pop(name, None)
        if key is None or key not in self._entries:
            return
        del self._entries[key]
        self._counts["removed"] += 1
        if self._local is not None:
            self._local.remove(key, exact=True)
        watch = self._watches.get(key)
        if watch is not None:
            watch.seen = _NOTHING
        self._emit("removed", key)

    def _emit(self, kind: CacheEventKind, key: QueryKey) -> None:
        if self._events:
            self._events.emit(CacheEvent(kind, key, time.time()))


async def read_bucket(config: ShareConfig) -> dict[QueryKey, CacheEntry]:
    """The bucket's entries as they are now (one pass of a watcher, then closed)."""
    cache = SharedCache(config)
    async with cache:
        return {k: e for k in cache if (e := cache.get(k)) is not None}
