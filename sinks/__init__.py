"""querysync's sinks: where invalidations take effect.

:class:`QueryCache` is a disk-backed store of query results (JSON only, never
unpickled) that invalidation, removal and refetch keep true to the backend;
:func:`apply` is the stage that feeds a pipeline's invalidations into it;
:func:`to_jsonl` records a stream in the format ``querysync.streams.from_jsonl`` replays;
:class:`SharedCache` reads a cache that ``sync(share=...)`` publishes into NATS JetStream,
and :class:`CacheReader` is what it and QueryCache have in common.
"""

from __future__ import annotations

# The share errors live in querysync's one exception tree; importable here as well.
from querysync._exceptions import LeaseLostError as LeaseLostError
from querysync._exceptions import ShareConnectionError as ShareConnectionError
from querysync._exceptions import ShareError as ShareError
from querysync._signals import Invalidation, Resync
from querysync.operators import Stage

from ._apply import apply_
from ._cache import QueryCache, RefetchType
from ._entry import CacheEntry
from ._events import CacheEvent, CacheEventKind
from ._fetch import Fetch
from ._jsonl import JsonlRecorder, to_jsonl
from ._reader import CacheReader
from ._shared_cache import SharedCache
from ._shared_conn import ShareConfig
from ._status import QueryStatus

__all__ = [
    "CacheEntry",
    "CacheEvent",
    "CacheEventKind",
    "CacheReader",
    "Fetch",
    "JsonlRecorder",
    "QueryCache",
    "QueryStatus",
    "RefetchType",
    "ShareConfig",
    "SharedCache",
    "apply",
    "to_jsonl",
]


def apply(
    cache: QueryCache,
    *,
    refetch: RefetchType = "active",
    fetch_missing: bool = False,
    resync_refetch: RefetchType | None = None,
) -> Stage[Invalidation | Resync, Invalidation | Resync]:
    """Invalidations -> the same invalidations, each applied to ``cache`` on the way.

    .. marble::
        ---i---d---r---|
        [  apply(cache)  ]
        ---i---d---r---|    (i: keys invalidated, d: specific entries removed,
                             r: a Resync, every entry invalidated)

    It is an operator rather than a subscriber so that a pipeline can go on after it
    (count, log, or show what was applied) and so it can be marble-tested like any
    other stage; subscribe to the result to make the effects happen. Each item goes
    through :meth:`QueryCache.apply_invalidation` (see there for the rules, including
    the etag check that leaves fresh entries alone), with ``refetch`` deciding what is
    fetched again and ``fetch_missing=True`` (the mirror mode) also fetching specific
    keys that have a fetcher but no entry yet. ``resync_refetch`` (default None: as
    ``refetch``) is what a Resync refetches.

    An exception from the cache (closed, bad item) is logged and counted (``errors`` in
    the returned stage's ``counts`` and ``apply_errors`` in ``cache.stats()``); the item
    still passes on and the stream goes on. So does an exception raised by a subscriber
    further down (``downstream_errors``). Refetches run on the running asyncio loop; on
    virtual time with no loop, entries are only marked stale.
    """
    return apply_(cache, refetch, fetch_missing, resync_refetch)


def _claim_public_classes() -> None:
    # Public classes report this module (help, repr, tracebacks), not the private one.
    from querysync._public import claim

    claim(__name__, globals(), __all__)


_claim_public_classes()
