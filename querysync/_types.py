"""The types of what querysync hands out: JSON data, and the stats snapshots.

One spelling for counters: ``stats()`` is a method returning a typed snapshot
(:meth:`QueryCache.stats`, :meth:`Pipeline.stats`, :meth:`Sync.stats`); ``counts`` is
the raw, live ``Counter`` of one stage or source (``stage.counts``,
``source.counts``). ``Sync.counts()`` and ``Pipeline.counts()``, the older flat forms,
still work.

The stats TypedDicts are ``total=False`` so that a new counter is one more key here
(add it with a line saying what it counts) and no caller breaks; every key listed is
present in what the methods return unless its docstring says otherwise.
"""

from __future__ import annotations

from typing import TypeAlias, TypedDict, Union

__all__ = ["JSON", "CacheStats", "PipelineStats", "SourceStats", "SyncStats"]

# Union rather than "|": the alias refers to itself, and "|" cannot join a string
# forward reference at run time.
JSON: TypeAlias = Union[dict[str, "JSON"], list["JSON"], str, int, float, bool, None]  # noqa: UP007
"""A JSON value as ``json.loads`` returns it: what a cache entry's ``data`` holds.

Narrow it with ``isinstance`` (``if isinstance(data, dict): data.get("workflows")``);
no cast is needed.
"""


class CacheStats(TypedDict, total=False):
    """:meth:`querysync.sinks.QueryCache.stats`: one count per event kind, then the state."""

    # one per CacheEventKind
    set: int
    invalidated: int
    skipped_fresh: int
    removed: int
    resync: int
    fetch_started: int
    fetch_retry: int
    fetched: int
    fetch_failed: int
    fetch_gone: int
    fetch_discarded: int
    fetch_cancelled: int  # fetches stopped by QueryCache.cancel
    # what is, and the writer's and loader's counts
    entries: int
    stale: int
    active: int
    in_flight: int
    waiting: int
    fetch_timeouts: int
    memory_entries: int
    memory_bytes: int
    evictions: int
    rows_read: int
    generation: int
    disk_full: int
    disk_full_errors: int
    queued_writes: int
    written: int
    transactions: int
    write_errors: int
    lost_writes: int
    on_commit_errors: int
    corrupt_rows: int
    unsafe_rows: int
    discarded_at_open: int
    subscriber_errors: int
    apply_errors: int


class PipelineStats(TypedDict, total=False):
    """:meth:`querysync.Pipeline.stats`; ``coalesced`` and ``trailing`` only with a throttle."""

    frames: int
    other_messages: int
    resource_changes: int
    rejected: int
    invalidations: int
    ignored_types: int
    unknown_types: int
    coalesced: int
    trailing: int


class SourceStats(TypedDict, total=False):
    """A WebSocket source's counters (``source.counts``); a name appears once above zero."""

    attempts: int
    connections: int
    reconnects: int
    resyncs: int
    drops: int
    silent: int
    frames: int
    bytes: int
    text: int
    binary: int
    pings: int
    pongs: int
    messages: int
    rejected: int
    oversize: int
    oversize_dropped: int
    subscriber_errors: int
    on_reject_errors: int
    handshake_refused: int


class SyncStats(TypedDict):
    """:meth:`querysync.Sync.stats`: the source's, the pipeline's and the cache's, apart."""

    source: SourceStats
    pipeline: PipelineStats
    cache: CacheStats
