"""The assembly of the stages: frames -> updates -> throttled -> invalidations -> cache."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from reactivex import Observable, abc
from reactivex import operators as rx_ops

from ._keys import KeyRegistry, nodetool_registry
from ._signals import Invalidation, Resync
from ._types import PipelineStats
from .operators import (
    RejectHandler,
    Stage,
    expand_keys,
    resource_changes,
    throttle_per_resource,
)

if TYPE_CHECKING:
    from .sinks import QueryCache

__all__ = ["Pipeline", "build_pipeline"]

Refetch = Literal["active", "all", "none"]


@dataclass(frozen=True)
class Pipeline:
    """The assembled stream and the stages whose counts it reports."""

    observable: Observable[Invalidation | Resync]
    parse: Stage[Any, Any]
    throttle: Stage[Any, Any] | None
    keys: Stage[Any, Any]
    window: float | None = None

    def stages(self) -> Iterator[Stage[Any, Any]]:
        """The stages in stream order."""
        yield self.parse
        if self.throttle is not None:
            yield self.throttle
        yield self.keys

    def held(self) -> int:
        """Updates the throttle holds now, to emit when their windows close."""
        if self.throttle is None:
            return 0
        t = self.throttle.counts
        # Every update the throttle took either passed at once, replaced a held one,
        # or is held until it comes out as trailing (or flushed on completion).
        passed = t["leading"] + t["coalesced"] + t["trailing"] + t["flushed"]
        return self.parse.counts["resource_changes"] - passed

    def stats(self) -> PipelineStats:
        """What the stages did, under names that say it (:class:`querysync.PipelineStats`)."""
        return cast(PipelineStats, self.counts())

    def counts(self) -> dict[str, int]:
        """:meth:`stats` as a plain dict (the older name, kept)."""
        parse, keys = self.parse.counts, self.keys.counts
        throttle = self.throttle.counts if self.throttle is not None else None
        out = {
            "frames": parse["frames"],
            "other_messages": parse["other_messages"],
            "resource_changes": parse["resource_changes"],
            "rejected": parse["rejected"],
            "invalidations": keys["invalidations"],
            "ignored_types": keys["ignored"],
            "unknown_types": keys["unknown_type"],
        }
        if throttle is not None:
            out["coalesced"] = throttle["coalesced"]
            out["trailing"] = throttle["trailing"] + throttle["flushed"]
        return out


def build_pipeline(
    source: Observable[Any],
    cache: QueryCache | None = None,
    *,
    window: float | None = 0.25,
    registry: KeyRegistry | None = None,
    refetch: Refetch = "active",
    fetch_missing: bool = False,
    on_reject: RejectHandler | None = None,
    scheduler: abc.SchedulerBase | None = None,
    resync_refetch: Refetch | None = None,
) -> Pipeline:
    """The querysync pipeline over ``source`` (frames, dicts and ``Resync`` signals).

    ``window`` is the per-resource throttle in seconds (default 0.25; ``None`` or 0 turns
    the throttle off). ``registry`` defaults to :func:`querysync.nodetool_registry`.
    With a ``cache``, each invalidation is applied to it (see
    :func:`querysync.sinks.apply`) before it is passed on; nothing runs until the
    returned ``observable`` is subscribed. ``resync_refetch`` (default None: ``refetch``)
    is what a :class:`querysync.Resync` refetches (``sync`` passes "active" in mirror
    mode and runs its own resync, which fetches only what the lists cannot prove).
    """
    parse = resource_changes(on_reject=on_reject)
    throttle = throttle_per_resource(window, scheduler=scheduler) if window else None
    keys = expand_keys(registry if registry is not None else nodetool_registry())
    stream: Observable[Any] = source.pipe(parse)
    if throttle is not None:
        stream = stream.pipe(throttle)
    stream = stream.pipe(keys)
    if cache is not None:
        from .sinks import apply

        stage = apply(
            cache, refetch=refetch, fetch_missing=fetch_missing, resync_refetch=resync_refetch
        )
        stream = stream.pipe(stage)
    # One subscription upstream however many observers downstream: the counts and the
    # cache effects happen once per frame, not once per subscriber.
    return Pipeline(stream.pipe(rx_ops.share()), parse, throttle, keys, window or None)
