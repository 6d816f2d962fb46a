"""Does the cache agree with the server? Compare every entry with a fresh REST answer."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._exceptions import FetchError, ResourceGone
from ._keys import QueryKey
from ._nodetool import NodeToolApi

if TYPE_CHECKING:
    from .sinks import CacheReader

__all__ = ["Agreement", "Disagreement", "audit"]


@dataclass(frozen=True, slots=True)
class Disagreement:
    """One key where the cache and the server differ, and how."""

    key: QueryKey
    problem: str


@dataclass(frozen=True)
class Agreement:
    """The result of :func:`audit`: how many entries were checked and which disagree."""

    checked: int
    disagreements: tuple[Disagreement, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when every checked entry matches the server."""
        return not self.disagreements


async def audit(
    cache: CacheReader, api: NodeToolApi, *, expect: Iterable[QueryKey] = ()
) -> Agreement:
    """Compare every cached entry with what ``api`` serves now.

    An entry agrees when it is fresh and its data equals the server's answer. A cached
    entry for a resource the server no longer has (404) disagrees. Every key in
    ``expect`` must be cached (mirror mode's promise for lists and changed resources).
    """
    problems: list[Disagreement] = []
    keys = set(cache.keys())
    for key in expect:
        if key not in keys:
            problems.append(Disagreement(key, "missing from the cache"))
    checked = 0
    for key in sorted(keys, key=repr):
        entry = cache.get(key)
        if entry is None:
            continue
        checked += 1
        try:
            truth = (await api.fetch(key)).data
        except ResourceGone:
            problems.append(Disagreement(key, "cached, but the server has no such resource"))
            continue
        except FetchError as exc:
            problems.append(Disagreement(key, f"server could not answer: {exc}"))
            continue
        if entry.stale:
            problems.append(Disagreement(key, "still stale"))
        elif entry.data != truth:
            problems.append(Disagreement(key, "data differs from the server"))
    return Agreement(checked, tuple(problems))
