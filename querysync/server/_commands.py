"""Answers to the client commands of the /ws protocol."""

from __future__ import annotations

from typing import Any

from ._jobs import JobRunner
from ._store import ResourceStore
from ._ws import Connection

__all__ = ["Commands"]


class Commands:
    """The command table: ``run_job``, ``get_status`` and ``set_mode`` act; the rest acknowledge.

    ``chat_message`` also stores the message (creating a thread when it names none or
    an unknown one), so it produces the ``resource_change`` frames the live server would.
    """

    def __init__(self, store: ResourceStore, jobs: JobRunner) -> None:
        self._store = store
        self._jobs = jobs

    def __call__(self, conn: Connection, command: str, data: dict[str, Any]) -> dict[str, Any]:
        """The reply to one command (an ``{"error": ...}`` dict for a bad one)."""
        job_id = data.get("job_id")
        if command == "set_mode":
            mode = data.get("mode")
            if mode == "text" or mode == "binary":
                conn.mode = mode
                return {"message": f"Mode set to {mode}"}
            return {"error": "invalid_mode", "detail": "mode must be 'text' or 'binary'"}
        if command == "run_job":
            return self._jobs.start(conn, data)
        if command == "get_status":
            return self._jobs.status(job_id if isinstance(job_id, str) else None)
        if command == "cancel_job":
            return self._jobs.cancel(str(job_id or ""))
        if command == "reconnect_job":
            return {"message": f"Reconnecting to job {job_id}", "job_id": job_id}
        if command == "resume_job":
            return {"message": f"Resumed job {job_id}", "job_id": job_id}
        if command == "clear_models":
            return {"message": "Models cleared"}
        if command == "stream_input":
            return {"message": "Input received", "job_id": job_id}
        if command == "end_input_stream":
            return {"message": "Input stream ended", "job_id": job_id}
        if command == "stop":
            return {"type": "generation_stopped", "thread_id": data.get("thread_id")}
        if command == "chat_message":
            return self._chat(data)
        return {"error": "unknown_command", "detail": f"Unknown command: {command}"}

    def _chat(self, data: dict[str, Any]) -> dict[str, Any]:
        thread_id = data.get("thread_id")
        if not isinstance(thread_id, str) or not self._store.exists("thread", thread_id):
            thread_id = self._store.create("thread", {"title": "New Thread"})["id"]
        message = self._store.create(
            "message",
            {"thread_id": thread_id, "role": "user", "content": data.get("content")},
        )
        return {"message": "Chat message received", "thread_id": thread_id,
                "message_id": message["id"]}
