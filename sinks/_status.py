"""QueryStatus, and the failures of the keys that have some (all a status cannot derive)."""

from __future__ import annotations

from dataclasses import dataclass

from querysync._keys import QueryKey

__all__ = ["Failures", "QueryStatus"]


@dataclass(frozen=True, slots=True)
class QueryStatus:
    """Where one key stands in this process, as TanStack Query's query state.

    - ``fetching``: a fetch of the key is under way: running, held for its key's
      ``fetch_window`` or waiting out a retry's backoff;
    - ``failure_count``: failed attempts in a row (each retry counts), reset by a
      successful fetch or a :meth:`QueryCache.set`; counted in this process only;
    - ``error``: the message of the last failed attempt, None after a success (an
      entry read from disk keeps the error of the fetch that last failed for it);
    - ``fetched_at``: when the data was last stored by a fetch or a set (epoch
      seconds), None without an entry;
    - ``stale``: the entry was invalidated since; True without an entry, as in
      TanStack Query (no data is never fresh);
    - ``has_data``: the key has an entry.
    """

    fetching: bool = False
    failure_count: int = 0
    error: str | None = None
    fetched_at: float | None = None
    stale: bool = True
    has_data: bool = False


class Failures:
    """Failed attempts in a row and the last error, held only for keys that have some.

    Everything else in a status is derived (the entry, the scheduler), so a million
    healthy entries cost nothing here.
    """

    __slots__ = ("_by_key",)

    def __init__(self) -> None:
        self._by_key: dict[QueryKey, tuple[int, str]] = {}

    def failed(self, key: QueryKey, error: str) -> None:
        """One more failed attempt of ``key``, with its message."""
        count, _ = self._by_key.get(key, (0, ""))
        self._by_key[key] = (count + 1, error)

    def clear(self, key: QueryKey) -> None:
        """``key`` succeeded (or is gone): no failures."""
        self._by_key.pop(key, None)

    def of(self, key: QueryKey) -> tuple[int, str | None]:
        """The failures in a row of ``key`` and the last error (0 and None: none)."""
        held = self._by_key.get(key)
        return (0, None) if held is None else held

    def __len__(self) -> int:
        return len(self._by_key)
