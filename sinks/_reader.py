"""CacheReader: what reading code needs of a cache, whether a folder or a shared bucket."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

from reactivex import Observable

from querysync._keys import JSONScalar, QueryKey
from querysync._types import JSON

from ._entry import CacheEntry
from ._events import CacheEvent

__all__ = ["CacheReader"]


@runtime_checkable
class CacheReader(Protocol):
    """The read side of a cache: :class:`QueryCache` (a folder) and :class:`SharedCache`
    (a NATS bucket) both are one, so code that reads takes either without asking which.
    """

    def get(self, key: str | Iterable[JSONScalar]) -> CacheEntry | None:
        """The entry of ``key``, or None."""
        ...

    def keys(self, prefix: str | Iterable[JSONScalar] = ()) -> list[QueryKey]:
        """The keys under ``prefix``, in no set order."""
        ...

    def watch(self, key: str | Iterable[JSONScalar]) -> Observable[JSON]:
        """The data of ``key`` now and at every change."""
        ...

    def events(self) -> Observable[CacheEvent]:
        """Every change from now on."""
        ...

    def stats(self) -> Mapping[str, object]:
        """Counts; ``entries`` and ``stale`` at least."""
        ...

    def __len__(self) -> int: ...

    def __contains__(self, key: object) -> bool: ...

    def _repr_html_(self) -> str: ...
