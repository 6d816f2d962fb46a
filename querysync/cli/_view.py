"""The live terminal view: what the pipeline and the cache have done so far."""

from __future__ import annotations

from collections.abc import Mapping

from rich.table import Table

__all__ = ["LINE", "ROWS", "counters_line", "counters_table"]

# (label, counter name) in the order a reader follows a frame through the stages.
ROWS: tuple[tuple[str, str], ...] = (
    ("frames received", "source.frames"),
    ("rejected frames", "rejected"),
    ("resource changes", "resource_changes"),
    ("coalesced by throttle", "coalesced"),
    ("invalidations", "invalidations"),
    ("ignored (internal types)", "ignored_types"),
    ("entries invalidated", "cache.invalidated"),
    ("skipped, already fresh", "cache.skipped_fresh"),
    ("entries removed", "cache.removed"),
    ("refetched", "cache.fetched"),
    ("fetch failures", "cache.fetch_failed"),
    ("gone on refetch (404)", "cache.fetch_gone"),
    ("resyncs", "source.resyncs"),
    ("cache entries", "cache.entries"),
    ("stale entries", "cache.stale"),
)


def counters_table(counts: Mapping[str, int], *, title: str, state: str = "") -> Table:
    """A two-column table of the counters that matter, in stream order."""
    table = Table(title=title, caption=f"connection: {state}" if state else None)
    table.add_column("stage")
    table.add_column("count", justify="right")
    for label, name in ROWS:
        table.add_row(label, f"{counts.get(name, 0):,}")
    return table


# The few counters a one-line status keeps, (short label, counter name).
LINE: tuple[tuple[str, str], ...] = (
    ("frames", "source.frames"),
    ("changes", "resource_changes"),
    ("refetched", "cache.fetched"),
    ("failures", "cache.fetch_failed"),
    ("rejected", "rejected"),
    ("resyncs", "source.resyncs"),
    ("entries", "cache.entries"),
    ("stale", "cache.stale"),
)


def counters_line(counts: Mapping[str, int], *, state: str = "") -> str:
    """One line of the counters that matter, for logs and terminals without a live view."""
    parts = [f"{label} {counts.get(name, 0):,}" for label, name in LINE]
    return (f"{state}: " if state else "") + ", ".join(parts)
