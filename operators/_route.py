"""routed_to: decoded messages -> the ones addressed to one job, workflow or thread."""

from __future__ import annotations

from collections import Counter
from typing import Any

from querysync._signals import Resync

from ._stage import Stage, item_stage

__all__ = ["ROUTING_FIELDS", "routed_to_"]

ROUTING_FIELDS = ("job_id", "workflow_id", "thread_id")


def routed_to_(key: str) -> Stage[Any, dict[str, Any] | Resync]:
    # A Resync passes (item_stage's rule): a reconnect may have lost this job's messages
    # too, and its consumer needs to hear about it as much as the cache does.
    def handle(message: Any, counts: Counter[str]) -> dict[str, Any] | None:
        # Resource changes only invalidate caches; the seed's router never hands them
        # to job, workflow or thread handlers.
        if not isinstance(message, dict) or message.get("type") == "resource_change":
            return None
        for name in ROUTING_FIELDS:
            if message.get(name) == key:
                counts["routed"] += 1
                return message
        return None

    return item_stage(f"routed_to({key!r})", handle)
