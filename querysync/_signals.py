"""Values that travel between stages besides updates: invalidations, rejections, resyncs."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._keys import QueryKey
from ._model import ResourceChangeUpdate

__all__ = ["Invalidation", "Rejected", "Resync"]


@dataclass(frozen=True, slots=True)
class Invalidation:
    """An update together with the query keys it makes out of date.

    ``keys`` lists the general keys of the resource type first, then the specific ones.
    ``specific`` names the keys of this one resource; :func:`querysync.operators.expand_keys`
    fills it from the registry. Left as None (an Invalidation built by hand), it is
    derived: the keys that contain the resource's id after their first element.
    """

    update: ResourceChangeUpdate
    keys: tuple[QueryKey, ...]
    specific: tuple[QueryKey, ...] | None = field(default=None, compare=False)

    @property
    def specific_keys(self) -> tuple[QueryKey, ...]:
        """The keys of this one resource, such as ``("workflow", "w1")``.

        These are the entries whose etag can prove them fresh, and the ones a delete
        removes instead of refetching (a refetch would only find a 404).
        """
        if self.specific is not None:
            return self.specific
        rid = self.update.resource.id
        if not rid:
            return ()
        return tuple(k for k in self.keys if rid in k[1:])

    @property
    def general_keys(self) -> tuple[QueryKey, ...]:
        """The keys that do not name this resource's id, such as ``("workflows",)``."""
        specific = set(self.specific_keys)
        return tuple(k for k in self.keys if k not in specific)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A frame that could not become a ``ResourceChangeUpdate``, and why."""

    frame: object
    reason: str
    stage: str = "parse"


@dataclass(frozen=True, slots=True)
class Resync:
    """Changes may have been missed (the WebSocket reconnected): everything is suspect.

    Sources emit it in-band, every operator passes it through unchanged and in order,
    and the cache sink answers it by invalidating every entry.
    """

    reason: str = "reconnected"
    attempt: int = 0
    extra: dict[str, object] = field(default_factory=dict, compare=False)
