"""``sync(..., share=URL)``: one active publisher of a QueryCache into a NATS bucket.

The process first waits, as a standby, until it holds the bucket's lease (no WebSocket,
no fetch meanwhile). Then it makes its cache folder equal to the bucket (the last active
publisher's state: entries it lacks are added, entries the bucket lacks are removed),
subscribes the fenced publisher to the cache's events, and starts an ordinary
:func:`querysync.sync` on that folder. Since the folder is not empty the sync treats it as
resumed: everything is invalidated at the first connection and refetched, so the bucket
ends true to the server even for changes made while no publisher listened. How the lease
fences the writes is explained in ``querysync.sinks._shared_publish``.

If the lease is lost (another publisher took it after this one could not renew it in
time), the publisher's writes are refused by the server, and the Sync stops with
:class:`querysync.sinks.LeaseLostError` as its ``error``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._sync import Sync
    from .sinks import QueryCache
    from .sinks._shared_conn import ShareConfig

__all__ = ["shared_sync"]

log = logging.getLogger("querysync.share")


async def shared_sync(
    ws_url: str,
    api_url: str,
    cache: QueryCache | str | os.PathLike[str],
    *,
    share: str | ShareConfig,
    bucket: str | None,
    **options: Any,
) -> Sync:
    """Wait for the lease, then a running Sync whose cache is published into the bucket."""
    from ._sync import open_for_sync, sync
    from .sinks import QueryCache
    from .sinks._shared_cache import read_bucket
    from .sinks._shared_conn import LeaseLostError, ShareConfig, connect_bucket, redact
    from .sinks._shared_lease import acquire_lease, new_owner
    from .sinks._shared_publish import Publisher

    config = ShareConfig.of(share, bucket)
    owns_cache = not isinstance(cache, QueryCache)
    conn = await connect_bucket(config)
    qc: QueryCache | None = None
    publisher: Publisher | None = None
    try:
        owner = new_owner()
        log.info("standby for bucket %r at %s", config.bucket, redact(config.url))
        revision = await acquire_lease(conn, owner)
        log.info("holding the lease of bucket %r (revision %d)", config.bucket, revision)
        publisher = Publisher(conn, revision, owner)
        # Renewing from now on: opening the folder and reading the bucket can take longer
        # than the lease on a busy machine, and a lapsed lease is a standby's to take.
        publisher.start()
        # Opened as sync() opens its own (fetch window, index read off the loop): _seed
        # walks every key, and without the window a shared sync made 1.8 times the GETs.
        qc = await open_for_sync(cache, options.get("window", 0.25))
        held = await read_bucket(config)
        if held:  # else a first publisher: its folder's entries are published as they are
            _seed(qc, held)
        publisher.attach(qc)
        running = await sync(ws_url, api_url, qc, **options)
    except BaseException:
        if publisher is not None:
            await publisher.stop()
        if owns_cache and qc is not None:
            await qc.aclose()
        await conn.close()
        raise

    pub = publisher

    def lost() -> None:
        running.error = LeaseLostError(f"lost the lease of bucket {config.bucket!r}")
        asyncio.get_running_loop().create_task(running.stop())

    async def closing() -> None:
        if owns_cache:
            await running.cache.aclose()
        await pub.stop()
        await conn.close()

    pub.on_lost = lost
    running.on_stop.append(closing)
    running.share = pub
    return running


def _seed(cache: QueryCache, held: dict[Any, Any]) -> None:
    """Make ``cache`` hold exactly the bucket's entries (data, etag, stale flag)."""
    for key in [k for k in cache if k not in held]:
        cache.remove(key, exact=True)
    for key, entry in held.items():
        mine = cache.get(key)
        if mine is None or mine.data != entry.data or mine.etag != entry.etag:
            cache.set(key, entry.data, etag=entry.etag)
        if entry.stale:
            cache.invalidate(key, exact=True, refetch="none")
