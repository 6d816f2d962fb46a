"""A workload generator that drives a :class:`NodeToolServer` through its Python API.

    >>> server = NodeToolServer(ping_interval=None, stats_interval=None)
    >>> async with server:                                        # doctest: +SKIP
    ...     report = await Workload(server, seed=1).run(seconds=5, rate=200, kind="mixed")
    ...     print(report.changes, report.created, report.updated, report.deleted)

Kinds of load (``kind=``):

- ``"steady"``: fills a pool of ``pool_size`` resources, then updates pool members
  picked uniformly at random, one write every ``1/rate`` seconds.
- ``"burst"``: a few hot resources (``hot_resources``) get ``burst_size`` updates at
  once, then nothing for ``burst_size/rate`` seconds: the same ids changing faster
  than any client should refetch them. The average rate is still ``rate``.
- ``"distinct"``: every write creates a new resource; many keys, each touched once.
- ``"mixed"``: creates (25 %), updates (60 %) and deletes (15 %) over all types;
  deleting a thread deletes its messages first, one write each.

Writes go to the types in ``types`` (default: workflow, job, asset, thread, message,
workspace, secret) with ids ``{id_prefix}-{type}-{n:05d}``. A run stops at the first
of: ``max_changes`` writes (default ``ceil(seconds * rate)``), ``seconds`` elapsed,
or :meth:`Workload.stop`. The choice of writes depends only on the seed and on what
the workload did before, never on timing: two workloads with the same seed and
arguments make the same writes, as long as neither run is cut short by time.
A workload keeps its resources between runs; ``run()`` again continues from there.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from querysync._exceptions import ConfigurationError

from ._store import InvalidResource, UnknownResource

__all__ = ["WORKLOAD_KINDS", "ResourceWriter", "Workload", "WorkloadKind", "WorkloadReport"]

log = logging.getLogger("querysync.server")

WorkloadKind = Literal["steady", "burst", "distinct", "mixed"]
WORKLOAD_KINDS: tuple[WorkloadKind, ...] = ("steady", "burst", "distinct", "mixed")
Ending = Literal["count", "time", "stopped"]

DEFAULT_TYPES: tuple[str, ...] = (
    "workflow",
    "job",
    "asset",
    "thread",
    "message",
    "workspace",
    "secret",
)

# The field an update changes, per type; a job's params stand in for its progress.
_UPDATED_FIELD = {
    "workflow": "description",
    "asset": "name",
    "thread": "title",
    "message": "content",
    "workspace": "name",
    "secret": "description",
}

# Behind schedule, writes go back to back; this many at most before yielding to the loop.
_WRITES_PER_YIELD = 64


class ResourceWriter(Protocol):
    """What a workload writes through: :class:`NodeToolServer` or a ``ResourceStore``."""

    def create(
        self, resource_type: str, fields: Mapping[str, Any], *, id: str | None = None
    ) -> dict[str, Any]: ...

    def update(
        self, resource_type: str, resource_id: str, fields: Mapping[str, Any]
    ) -> dict[str, Any]: ...

    def delete(self, resource_type: str, resource_id: str) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class WorkloadReport:
    """What one :meth:`Workload.run` did.

    ``created``, ``updated`` and ``deleted`` count successful writes; ``skipped``
    counts writes refused because someone else had removed or taken the resource.
    ``ended`` says which bound stopped the run: ``"count"``, ``"time"`` or ``"stopped"``.
    ``elapsed`` is in seconds. ``by_type`` counts successful writes per resource type;
    ``touched`` is how many distinct resources were written.
    """

    kind: WorkloadKind
    seed: int
    created: int
    updated: int
    deleted: int
    skipped: int
    ended: Ending
    elapsed: float
    by_type: dict[str, int] = field(default_factory=dict)
    touched: int = 0

    @property
    def changes(self) -> int:
        """Successful writes: ``created + updated + deleted``."""
        return self.created + self.updated + self.deleted


@dataclass(frozen=True, slots=True)
class _Write:
    slot: float
    action: Literal["create", "update", "delete"]
    resource_type: str
    resource_id: str
    fields: dict[str, Any]


class Workload:
    """A seeded, bounded, stoppable stream of writes to a server's resources.

    Args:
        server: what to write through (:class:`ResourceWriter`).
        seed: the seed of every choice (default 0).
        types: resource types to write; ``"message"`` needs ``"thread"`` too.
        pool_size: resources a ``steady`` load spreads its updates over (default 50).
        hot_resources: resources a ``burst`` load hammers (default 3).
        burst_size: updates in one burst (default 50).
        id_prefix: start of every id (default ``"wl{seed}"``).
    """

    def __init__(
        self,
        server: ResourceWriter,
        *,
        seed: int = 0,
        types: Sequence[str] = DEFAULT_TYPES,
        pool_size: int = 50,
        hot_resources: int = 3,
        burst_size: int = 50,
        id_prefix: str | None = None,
    ) -> None:
        unknown = [t for t in types if t not in DEFAULT_TYPES]
        if unknown or not types:
            raise ConfigurationError(
                f"types must be a non-empty subset of {DEFAULT_TYPES}, got {types!r}"
            )
        if "message" in types and "thread" not in types:
            raise ConfigurationError("a workload that writes messages must write threads too")
        if pool_size < 1 or hot_resources < 1 or burst_size < 1:
            raise ConfigurationError("pool_size, hot_resources and burst_size must be at least 1")
        self._server = server
        self._seed = seed
        self._types = tuple(dict.fromkeys(types))
        self._pool_size = pool_size
        self._hot = hot_resources
        self._burst_size = burst_size
        self._prefix = id_prefix if id_prefix is not None else f"wl{seed}"
        self._rng = random.Random(seed)
        # Ids this workload created and believes alive, per type, in creation order.
        self._pool: dict[str, list[str]] = {t: [] for t in self._types}
        self._thread_of: dict[str, str] = {}
        self._serial = 0
        self._revision = 0
        self._stop = asyncio.Event()
        self._running = False

    @property
    def resources(self) -> dict[str, list[str]]:
        """The ids this workload created and has not deleted, per type."""
        return {t: list(ids) for t, ids in self._pool.items()}

    def stop(self) -> None:
        """End the run in progress (or the next one, if none is running) after its current write."""
        self._stop.set()

    async def run(
        self,
        *,
        seconds: float = 5.0,
        rate: float = 200.0,
        kind: WorkloadKind = "mixed",
        max_changes: int | None = None,
    ) -> WorkloadReport:
        """Write at ``rate`` writes per second for at most ``seconds`` and ``max_changes`` writes.

        Returns a :class:`WorkloadReport`. ``max_changes`` counts every attempted write,
        skipped ones included, and defaults to ``ceil(seconds * rate)``.
        """
        if kind not in WORKLOAD_KINDS:
            raise ConfigurationError(f"kind must be one of {WORKLOAD_KINDS}, got {kind!r}")
        if not rate > 0 or not seconds >= 0:
            raise ConfigurationError("rate must be positive and seconds not negative")
        limit = math.ceil(seconds * rate) if max_changes is None else max_changes
        if limit < 0:
            raise ConfigurationError("max_changes must not be negative")
        if self._running:
            raise RuntimeError("this workload is already running")
        self._running = True
        try:
            return await self._run(kind, seconds, rate, limit)
        finally:
            self._running = False
            self._stop.clear()

    async def _run(
        self, kind: WorkloadKind, seconds: float, rate: float, limit: int
    ) -> WorkloadReport:
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + seconds
        done: Counter[str] = Counter()
        by_type: Counter[str] = Counter()
        touched: set[tuple[str, str]] = set()
        ended: Ending = "count"
        for attempted, write in enumerate(self._plan(kind)):
            if attempted >= limit:
                ended = "count"
                break
            if self._stop.is_set():
                ended = "stopped"
                break
            due = start + write.slot / rate
            now = loop.time()
            if due >= deadline or now >= deadline:
                ended = "time"
                break
            if due > now:
                if await self._stopped_within(due - now):
                    ended = "stopped"
                    break
            elif attempted % _WRITES_PER_YIELD == _WRITES_PER_YIELD - 1:
                await asyncio.sleep(0)
            if self._apply(write):
                done[write.action] += 1
                by_type[write.resource_type] += 1
                touched.add((write.resource_type, write.resource_id))
            else:
                done["skipped"] += 1
        report = WorkloadReport(
            kind=kind,
            seed=self._seed,
            created=done["create"],
            updated=done["update"],
            deleted=done["delete"],
            skipped=done["skipped"],
            ended=ended,
            elapsed=loop.time() - start,
            by_type=dict(by_type),
            touched=len(touched),
        )
        log.info(
            "workload %s ended by %s: %d created, %d updated, %d deleted, %d skipped",
            kind, ended, report.created, report.updated, report.deleted, report.skipped,
        )
        return report

    async def _stopped_within(self, delay: float) -> bool:
        try:
            async with asyncio.timeout(delay):
                await self._stop.wait()
        except TimeoutError:
            return False
        return True

    def _apply(self, write: _Write) -> bool:
        rtype, rid = write.resource_type, write.resource_id
        try:
            if write.action == "create":
                self._server.create(rtype, write.fields, id=rid)
                self._pool[rtype].append(rid)
                if rtype == "message":
                    self._thread_of[rid] = write.fields["thread_id"]
            elif write.action == "update":
                self._server.update(rtype, rid, write.fields)
            else:
                self._server.delete(rtype, rid)
                self._forget(rtype, rid)
        except UnknownResource:
            log.info("workload: %s %s is gone; forgetting it", rtype, rid)
            self._forget(rtype, rid)
            return False
        except InvalidResource as exc:
            log.warning("workload: %s of %s %s refused: %s", write.action, rtype, rid, exc)
            return False
        return True

    def _forget(self, resource_type: str, resource_id: str) -> None:
        ids = self._pool.get(resource_type, [])
        if resource_id in ids:
            ids.remove(resource_id)
        if resource_type == "message":
            self._thread_of.pop(resource_id, None)
        elif resource_type == "thread" and "message" in self._pool:
            # The server deletes a thread's messages with it.
            orphans = [m for m, t in self._thread_of.items() if t == resource_id]
            for message_id in orphans:
                self._forget("message", message_id)

    # -- the plan: pure functions of the seed and the pool ---------------------------

    def _plan(self, kind: WorkloadKind) -> Iterator[_Write]:
        if kind == "steady":
            return self._steady()
        if kind == "burst":
            return self._bursts()
        if kind == "distinct":
            return self._distinct()
        return self._mixed()

    def _steady(self) -> Iterator[_Write]:
        slot = 0
        while True:
            if self._size() < self._pool_size:
                yield self._create(slot)
            else:
                yield self._update(slot, self._pick())
            slot += 1

    def _bursts(self) -> Iterator[_Write]:
        slot = 0
        while True:
            if self._size() < self._hot:
                yield self._create(slot)
                slot += 1
                continue
            hot = self._all()[: self._hot]
            for _ in range(self._burst_size):
                yield self._update(slot, self._rng.choice(hot))
            slot += self._burst_size

    def _distinct(self) -> Iterator[_Write]:
        slot = 0
        while True:
            yield self._create(slot)
            slot += 1

    def _mixed(self) -> Iterator[_Write]:
        slot = 0
        while True:
            roll = self._rng.random()
            if self._size() == 0 or roll < 0.25:
                yield self._create(slot)
                slot += 1
            elif roll < 0.85:
                yield self._update(slot, self._pick())
                slot += 1
            else:
                for write in self._delete(slot, self._pick()):
                    yield write
                    slot += 1

    def _size(self) -> int:
        return sum(len(ids) for ids in self._pool.values())

    def _all(self) -> list[tuple[str, str]]:
        return [(t, rid) for t in self._types for rid in self._pool[t]]

    def _pick(self) -> tuple[str, str]:
        candidates = [t for t in self._types if self._pool[t]]
        rtype = self._rng.choice(candidates)
        return rtype, self._rng.choice(self._pool[rtype])

    def _create(self, slot: int) -> _Write:
        rtype = self._rng.choice(self._types)
        if rtype == "message" and not self._pool["thread"]:
            rtype = "thread"
        self._serial += 1
        n = self._serial
        rid = f"{self._prefix}-{rtype}-{n:05d}"
        fields: dict[str, Any]
        if rtype == "workflow":
            fields = {"name": f"Workflow {n}", "access": "private",
                      "graph": {"nodes": [], "edges": []}}
        elif rtype == "job":
            workflows = self._pool.get("workflow") or [""]
            fields = {"workflow_id": self._rng.choice(workflows), "status": "queued"}
        elif rtype == "asset":
            fields = {"name": f"asset-{n}.png", "content_type": "image/png"}
        elif rtype == "thread":
            fields = {"title": f"Thread {n}"}
        elif rtype == "message":
            fields = {"thread_id": self._rng.choice(self._pool["thread"]), "role": "user",
                      "content": f"Message {n}"}
        elif rtype == "workspace":
            fields = {"name": f"Workspace {n}", "path": f"/workspaces/{n}"}
        else:
            fields = {"key": f"SECRET_{n}", "value": f"value-{n}"}
        return _Write(slot, "create", rtype, rid, fields)

    def _update(self, slot: int, target: tuple[str, str]) -> _Write:
        rtype, rid = target
        self._revision += 1
        if rtype == "job":
            fields: dict[str, Any] = {"params": {"revision": self._revision}}
        else:
            fields = {_UPDATED_FIELD[rtype]: f"revision {self._revision}"}
        return _Write(slot, "update", rtype, rid, fields)

    def _delete(self, slot: int, target: tuple[str, str]) -> Iterator[_Write]:
        rtype, rid = target
        if rtype == "thread":
            for message_id in [m for m, t in self._thread_of.items() if t == rid]:
                yield _Write(slot, "delete", "message", message_id, {})
        yield _Write(slot, "delete", rtype, rid, {})
