"""The lease and the fenced publisher: one QueryCache written into a shared bucket.

One active publisher, by construction. Every write of the active publisher, entries,
removals, chunks and lease renewals alike, carries ``Nats-Expected-Last-Sequence``:
the stream sequence it expects to be the bucket's last one. The publisher starts its
chain at the sequence of its own successful lease compare-and-set and adds one per
message it sends (so it can pipeline thousands of writes without awaiting each ack).
JetStream refuses any message whose expectation is wrong. A standby takes over only by a
compare-and-set on the lease key (``kv.update(revision)``), which is itself a message in
the bucket: from that moment the old publisher's chain is broken, and every write it
sends afterwards, already in flight or not, is refused by the server. It then re-bases
only through another compare-and-set on the lease revision it last wrote, which fails
once the lease is another's: it learns it lost the lease and stops
(:class:`LeaseLostError`). Two publishers can therefore never both get writes in, however
the clocks, pauses or partitions fall; timing decides only *when* a standby takes over
(its own monotonic clock sees the lease revision unchanged for ``lease`` seconds), never
*whether* two write at once.

Order per key: the active publisher's messages come from one connection, which JetStream
stores in the order sent; a key's latest state is captured when the cache changes it, and
a batch refused half way is sent again whole (its newest states), after the ones that
landed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from reactivex import abc

from querysync._keys import QueryKey

from ._entry import CacheEntry
from ._events import CacheEvent
from ._shared_acks import Acks
from ._shared_codec import LEASE_KEY, bucket_key, chunk_key, encode_entry, manifest_document
from ._shared_conn import Bucket, LeaseLostError
from ._shared_lease import lease_document

if TYPE_CHECKING:
    from ._cache import QueryCache

__all__ = ["Publisher"]

log = logging.getLogger("querysync.share")

_EXPECTED_LAST = "Nats-Expected-Last-Sequence"
_EXPECTED_SUBJECT = "Nats-Expected-Last-Subject-Sequence"
_KV_OP = "KV-Operation"
# Room left in a message for headers (the fencing sequence, the KV operation).
_HEADER_ROOM = 1024
# Event kinds after which a key's entry may differ from what was published.
_CHANGING = frozenset(("set", "invalidated", "removed", "fetched", "fetch_failed", "fetch_gone"))

Message = tuple[str, bytes, dict[str, str]]


class Publisher:
    """Writes every change of a QueryCache into the bucket, fenced by the lease.

    ``attach(cache)`` subscribes to the cache's events: each change captures the key's
    entry at once (``cache.get``, on the loop) and marks it for the next batch, so that a
    burst of changes to one key costs one write. ``start()`` runs the pump;
    ``stop()`` writes what is pending and gives the lease up. ``on_lost`` runs once when
    the lease turns out to be another's.
    """

    def __init__(self, bucket: Bucket, lease_revision: int, owner: str) -> None:
        self._bucket = bucket
        self._owner = owner
        self._lease_rev = lease_revision
        self._head = lease_revision
        self._pending: dict[QueryKey, CacheEntry | None] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._subscription: abc.DisposableBase | None = None
        self._cache: QueryCache | None = None
        self._chunked: dict[str, int] = {}
        self._acks: Acks | None = None
        self._stopping = False
        self.lost = False
        self.on_lost: Callable[[], None] | None = None
        self.counts: dict[str, int] = {"published": 0, "removed": 0, "batches": 0, "rebases": 0}
        self.committed_at: dict[QueryKey, float] = {}

    @property
    def bucket(self) -> Bucket:
        """The connection and bucket written to."""
        return self._bucket

    # -- wiring ----------------------------------------------------------------------

    def attach(self, cache: QueryCache) -> None:
        """Publish every change ``cache`` makes from now on."""
        self._cache = cache
        self._subscription = cache.events().subscribe(on_next=self._on_event)

    def publish_all(self) -> None:
        """Queue the current entry of every key of the attached cache."""
        assert self._cache is not None
        for key in self._cache:
            self._pending[key] = self._cache.get(key)
        self._wake.set()

    def remove_keys(self, keys: list[QueryKey]) -> None:
        """Queue removing ``keys`` from the bucket."""
        for key in keys:
            self._pending[key] = None
        self._wake.set()

    def _on_event(self, event: CacheEvent) -> None:
        if event.kind not in _CHANGING or self._cache is None:
            return
        if not event.key:
            # invalidate_all() (a resync) is one event for every key: rewriting each entry
            # only to flip its stale flag would read the whole cache on the loop. The
            # refetches that follow publish each key's new state.
            return
        self._pending[event.key] = self._cache.get(event.key)
        self._wake.set()

    def start(self) -> None:
        """Run the pump on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._pump())

    async def stop(self, *, release: bool = True) -> None:
        """Write what is pending (unless the lease is lost), give the lease up, stop."""
        if self._subscription is not None:
            self._subscription.dispose()
            self._subscription = None
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                async with asyncio.timeout(self._bucket.config.ack_timeout * 2):
                    await asyncio.wait({self._task})
            except TimeoutError:
                self._task.cancel()
                await asyncio.wait({self._task})
            self._task = None
        if release and not self.lost:
            try:
                await self._send([(LEASE_KEY, self._lease_value(True), self._lease_cas())])
            except Exception as exc:
                log.info("could not give the lease up (it expires by itself): %s", exc)

    # -- the pump ----------------------------------------------------------------------

    async def _pump(self) -> None:
        every = self._bucket.config.lease / 3
        renew_at = time.monotonic() + every
        try:
            while True:
                wait = max(0.0, renew_at - time.monotonic())
                if not self._pending and not self._stopping:
                    try:
                        async with asyncio.timeout(wait):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                self._wake.clear()
                renew = time.monotonic() >= renew_at
                if not self._pending and not renew:
                    if self._stopping:
                        return
                    continue
                batch, self._pending = self._pending, {}
                try:
                    await self._write(batch, renew)
                    if renew:
                        renew_at = time.monotonic() + every
                except Exception as exc:
                    # Newer states captured meanwhile win over the batch's. Anything but a
                    # refused or unanswered write is a bug; it must not end the pump.
                    self._pending = {**batch, **self._pending}
                    if isinstance(exc, _ChainBroken):
                        log.info("a fenced write was refused (%s); re-basing on the lease", exc)
                    else:
                        log.exception("publishing a batch failed; re-basing on the lease")
                        await asyncio.sleep(0.1)
                    await self._rebase()
                    renew_at = time.monotonic() + every
                if self._stopping and not self._pending:
                    return
        except LeaseLostError:
            self.lost = True
            log.warning("the lease is another publisher's now: this one stops publishing")
            if self.on_lost is not None:
                self.on_lost()

    async def _write(self, batch: dict[QueryKey, CacheEntry | None], renew: bool) -> None:
        messages: list[Message] = []
        lease_at = -1
        if renew:
            messages.append((LEASE_KEY, self._lease_value(False), self._lease_cas()))
            lease_at = 0
        removed = 0
        for key, entry in batch.items():
            name = bucket_key(key)
            if entry is None:
                removed += 1
                messages.append((name, b"", {_KV_OP: "DEL"}))
                messages.extend(self._drop_chunks(name, 0))
            else:
                messages.extend(self._entry_messages(name, entry, self._head + len(messages)))
        seqs = await self._send(messages)
        if lease_at >= 0:
            self._lease_rev = seqs[lease_at]
        now = time.time()
        for key in batch:
            self.committed_at[key] = now
        self.counts["published"] += len(batch) - removed
        self.counts["removed"] += removed
        self.counts["batches"] += 1

    def _entry_messages(self, name: str, entry: CacheEntry, before: int) -> list[Message]:
        """The messages that store ``entry`` under ``name``, the first getting ``before + 1``."""
        doc = encode_entry(entry)
        room = self._bucket.max_payload - _HEADER_ROOM
        if len(doc) <= room:
            return [(name, doc, {}), *self._drop_chunks(name, 0)]
        parts = [doc[i : i + room] for i in range(0, len(doc), room)]
        out: list[Message] = [(chunk_key(name, i), p, {}) for i, p in enumerate(parts)]
        seqs = list(range(before + 1, before + 1 + len(parts)))
        out.append((name, manifest_document(entry.key, seqs, len(doc)), {}))
        out.extend(self._drop_chunks(name, len(parts)))
        self._chunked[name] = len(parts)
        return out

    def _drop_chunks(self, name: str, keep: int) -> list[Message]:
        """Purge the chunks past ``keep`` that an earlier, larger version of ``name`` left."""
        had = self._chunked.pop(name, 0)
        if keep:
            self._chunked[name] = keep
        return [
            (chunk_key(name, i), b"", {_KV_OP: "PURGE", "Nats-Rollup": "sub"})
            for i in range(keep, had)
        ]

    async def _send(self, messages: list[Message]) -> list[int]:
        """Send every message fenced on the chain; their stream sequences.

        Raises _ChainBroken when any is refused or unacknowledged in time; the chain
        head is then unknown until :meth:`_rebase`.
        """
        import nats.errors

        if not messages:
            return []
        if self._acks is None:
            self._acks = Acks(self._bucket)
            await self._acks.start()
        acks = self._acks
        prefix = self._bucket.prefix
        futures: list[asyncio.Future[int]] = []
        first = self._head + 1
        try:
            try:
                for subject, payload, headers in messages:
                    fenced = {**headers, _EXPECTED_LAST: str(self._head)}
                    futures.append(await acks.publish(prefix + subject, payload, fenced))
                    self._head += 1
            except (nats.errors.Error, OSError) as exc:
                raise _ChainBroken(f"{type(exc).__name__}: {exc}") from exc
            try:
                async with asyncio.timeout(self._bucket.config.ack_timeout):
                    results = await asyncio.gather(*futures, return_exceptions=True)
            except TimeoutError as exc:
                raise _ChainBroken("no acknowledgement in time") from exc
        finally:
            acks.forget(futures)
        seqs: list[int] = []
        for n, seq in enumerate(results):
            if isinstance(seq, BaseException):
                raise _ChainBroken(f"{type(seq).__name__}: {seq}")
            if seq != first + n:  # another writer's message in between: never ours
                raise _ChainBroken(f"sequence {seq}, expected {first + n}")
            seqs.append(seq)
        return seqs

    async def _rebase(self) -> None:
        """Restart the chain after the lease's compare-and-set; LeaseLostError when not ours."""
        import nats.errors
        import nats.js.errors

        self.counts["rebases"] += 1
        delay = 0.05
        while True:
            try:
                try:
                    rev = await self._bucket.kv.update(
                        LEASE_KEY, self._lease_value(False), last=self._lease_rev
                    )
                except nats.js.errors.KeyWrongLastSequenceError:
                    # Our own renewal may have landed unacknowledged: the lease is still
                    # ours when it names this owner, and only a compare-and-set changes that.
                    current = await self._lease_owner()
                    if current is None or current[0] != self._owner:
                        raise LeaseLostError(
                            "the lease was taken by another publisher"
                        ) from None
                    self._lease_rev = current[1]
                    continue
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                log.info("re-basing on the lease failed, retrying: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            self._lease_rev = rev
            self._head = rev
            return

    async def _lease_owner(self) -> tuple[str, int] | None:
        """The owner named by the lease key and its revision; None when there is no lease."""
        import nats.js.errors

        try:
            entry = await self._bucket.kv.get(LEASE_KEY)
        except nats.js.errors.KeyNotFoundError:
            return None
        try:
            owner = str(json.loads(entry.value or b"")["owner"])
        except (ValueError, KeyError, TypeError):
            return None
        assert entry.revision is not None
        return owner, entry.revision

    def _lease_value(self, released: bool) -> bytes:
        return lease_document(self._owner, self._bucket.config.lease, released=released)

    def _lease_cas(self) -> dict[str, str]:
        return {_EXPECTED_SUBJECT: str(self._lease_rev)}


class _ChainBroken(Exception):
    """A fenced write was refused or not acknowledged: the chain must be re-based."""
