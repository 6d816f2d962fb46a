"""Simulated job runs: what ``run_job`` makes the live server say, in a few milliseconds."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from typing import Any

from ._etag import etag_of
from ._store import ResourceStore, UnknownResource
from ._ws import Connection, Hub

__all__ = ["JobRunner"]

log = logging.getLogger("querysync.server")


class JobRunner:
    """Runs jobs as the live server appears to: a job resource and a trail of messages.

    A run creates the job (``updated`` then ``created``), then for each of ``steps``
    steps announces internal ``runevent`` and ``runnodestate`` changes to everyone and
    sends ``node_update`` and ``job_update`` to the client that asked, and finally
    updates the job to ``completed``. Steps are ``step_seconds`` apart.
    """

    def __init__(
        self,
        store: ResourceStore,
        hub: Hub,
        counts: Counter[str],
        *,
        steps: int = 3,
        step_seconds: float = 0.01,
    ) -> None:
        self._store = store
        self._hub = hub
        self._counts = counts
        self._steps = steps
        self._step_seconds = step_seconds
        self._running: dict[str, asyncio.Task[None]] = {}
        self._cancelled: set[str] = set()

    def start(self, conn: Connection, data: dict[str, Any]) -> dict[str, Any]:
        """Create the job and start its run; the answer to ``run_job``."""
        workflow_id = data.get("workflow_id") or ""
        params = data.get("params") or {}
        job = self._store.create(
            "job",
            {
                "workflow_id": workflow_id,
                "job_type": data.get("job_type") or "workflow",
                "status": "running",
                "params": params,
            },
        )
        task = asyncio.get_running_loop().create_task(self._run(conn, job["id"], workflow_id))
        self._running[job["id"]] = task
        task.add_done_callback(lambda _: self._running.pop(job["id"], None))
        return {"message": "Job started", "job_id": job["id"], "workflow_id": workflow_id}

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Stop a running job (it ends ``cancelled``); the answer to ``cancel_job``."""
        task = self._running.get(job_id)
        if task is None:
            return {"error": "job_not_running", "job_id": job_id}
        self._cancelled.add(job_id)
        task.cancel()
        return {"message": "Job cancelled", "job_id": job_id}

    def status(self, job_id: str | None) -> dict[str, Any]:
        """One job's status, or the running jobs; the answer to ``get_status``."""
        if job_id:
            try:
                job = self._store.get("job", job_id)
            except UnknownResource:
                return {"job_id": job_id, "status": "not_found"}
            return {"job_id": job_id, "workflow_id": job["workflow_id"], "status": job["status"]}
        active = []
        for jid in self._running:
            try:
                job = self._store.get("job", jid)
            except UnknownResource:
                continue
            active.append(
                {"job_id": jid, "workflow_id": job["workflow_id"], "status": job["status"]}
            )
        return {"active_jobs": active}

    async def stop(self) -> None:
        """Cancel every run and wait for them; the jobs stay as they were (as after a crash)."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, conn: Connection, job_id: str, workflow_id: str) -> None:
        ids = {"job_id": job_id, "workflow_id": workflow_id}
        conn.send({"type": "job_update", "status": "running", **ids})
        try:
            for step in range(1, self._steps + 1):
                await asyncio.sleep(self._step_seconds)
                node_id = f"node-{step}"
                self._internal("runevent", {"job_id": job_id, "seq": step, "kind": "node"})
                self._internal("runnodestate", {"job_id": job_id, "node_id": node_id})
                conn.send(
                    {
                        "type": "node_update",
                        "node_id": node_id,
                        "node_name": f"Step {step}",
                        "status": "completed",
                        **ids,
                    }
                )
                conn.send(
                    {
                        "type": "job_update",
                        "status": "running",
                        "message": f"step {step}/{self._steps}",
                        **ids,
                    }
                )
        except asyncio.CancelledError:
            if job_id in self._cancelled:
                self._cancelled.discard(job_id)
                self._finish(conn, job_id, ids, "cancelled")
            raise
        self._finish(conn, job_id, ids, "completed")

    def _finish(self, conn: Connection, job_id: str, ids: dict[str, str], status: str) -> None:
        try:
            self._store.update("job", job_id, {"status": status})
        except UnknownResource:
            log.info("job %s was deleted while it ran", job_id)
        conn.send({"type": "job_update", "status": status, **ids})

    def _internal(self, resource_type: str, state: dict[str, Any]) -> None:
        resource = {"id": uuid.uuid4().hex, **state}
        self._counts["internal_changes"] += 1
        self._hub.broadcast(
            {
                "type": "resource_change",
                "event": "created",
                "resource_type": resource_type,
                "resource": {"id": resource["id"], "etag": etag_of(resource)},
            }
        )
