"""An embedded NodeTool-compatible server: the real backend's /ws and REST behaviour, in memory.

    >>> from querysync.server import NodeToolServer, Workload
    >>> async def main() -> None:                                 # doctest: +SKIP
    ...     async with NodeToolServer(port=0) as server:
    ...         print(server.ws_url, server.api_url)
    ...         server.create("workflow", {"name": "w", "access": "private", "graph": {}})
    ...         await Workload(server, seed=1).run(seconds=5, rate=200, kind="mixed")

What it shares with the live server (see ``shared/nodetool-protocol.md``): MessagePack
frames until a client sends text, ``{"type": "ping"}`` every 25 s and ``system_stats``
every second, ``updated`` then ``created`` on every create, etags as md5 of the
sorted JSON dump (:func:`etag_of` states the exact rule), only ``id`` and ``etag``
in a ``resource_change``, token auth with close code 1008, and the REST paths and
bodies of workflows, jobs, assets, threads, messages, workspaces and secrets.
What it does not do: run real workflows (``run_job`` plays a short scripted run),
paginate (every list is one page), or persist anything.
"""

from __future__ import annotations

from ._app import NodeToolServer, serve
from ._etag import etag_of
from ._store import RESOURCE_TYPES, ChangeListener, InvalidResource, ResourceStore, UnknownResource
from .workload import WORKLOAD_KINDS, ResourceWriter, Workload, WorkloadKind, WorkloadReport

__all__ = [
    "RESOURCE_TYPES",
    "WORKLOAD_KINDS",
    "ChangeListener",
    "InvalidResource",
    "NodeToolServer",
    "ResourceStore",
    "ResourceWriter",
    "UnknownResource",
    "Workload",
    "WorkloadKind",
    "WorkloadReport",
    "etag_of",
    "serve",
]
