"""Values that travel between stages besides updates: invalidations, rejections, resyncs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ._keys import QueryKey
from ._model import ResourceChangeUpdate

__all__ = ["Invalidation", "Rejected", "Resync", "keys_naming"]


def keys_naming(resource_id: str, keys: Iterable[QueryKey]) -> tuple[QueryKey, ...]:
    """The keys among ``keys`` that hold ``resource_id`` after their first element."""
    if not resource_id:
        return ()
    return tuple(k for k in keys if resource_id in k[1:])


@dataclass(frozen=True, slots=True)
class Invalidation:
    """An update together with the query keys it makes out of date.

    ``keys`` lists the general keys of the resource type first, then the specific ones.
    ``specific`` names the keys of this one resource: :func:`querysync.operators.expand_keys`
    fills it with :func:`keys_naming` over the registry's specific keys. Left as None (an
    Invalidation built by hand), it is :func:`keys_naming` over all of ``keys``.
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
        return keys_naming(self.update.resource.id, self.keys)

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
