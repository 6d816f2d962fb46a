"""Pipelined JetStream publishes whose acknowledgements (or refusals) are futures."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ._shared_conn import Bucket

__all__ = ["Acks", "Refused"]


class Acks:
    """Pipelined JetStream publishes: each gets a future of its stream sequence.

    nats-py's own ``publish_async`` never resolves the future of a refused publish (its
    reply handler raises instead of setting the exception), and a refused publish is
    exactly what fencing produces; hence this small replacement on one inbox.
    """

    def __init__(self, bucket: Bucket) -> None:
        self._nc = bucket.nc
        self._prefix = bucket.nc.new_inbox()
        self._futures: dict[str, asyncio.Future[int]] = {}
        self._serial = 0

    async def start(self) -> None:
        await self._nc.subscribe(f"{self._prefix}.*", cb=self._on_reply)

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str]
    ) -> asyncio.Future[int]:
        self._serial += 1
        token = str(self._serial)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._futures[token] = future
        await self._nc.publish(subject, payload, reply=f"{self._prefix}.{token}", headers=headers)
        return future

    def forget(self, futures: list[asyncio.Future[int]]) -> None:
        for future in futures:
            if not future.done():
                future.cancel()
        done = set(map(id, futures))
        for token in [t for t, f in self._futures.items() if id(f) in done]:
            del self._futures[token]

    async def _on_reply(self, msg: Any) -> None:
        future = self._futures.pop(msg.subject.rsplit(".", 1)[-1], None)
        if future is None or future.done():
            return
        try:
            doc = json.loads(msg.data) if msg.data else {}
            if "error" in doc:
                error = doc["error"]
                future.set_exception(
                    Refused(int(error.get("err_code", 0)), str(error.get("description", "")))
                )
            elif "seq" in doc:
                future.set_result(int(doc["seq"]))
            else:  # a status message: no stream answers (503)
                future.set_exception(Refused(0, f"no acknowledgement: {msg.headers}"))
        except (ValueError, TypeError, AttributeError) as exc:
            future.set_exception(Refused(0, f"unreadable acknowledgement: {exc}"))


class Refused(Exception):
    """JetStream refused a publish (``err_code`` 10071: the fence, a wrong last sequence)."""

    def __init__(self, err_code: int, description: str) -> None:
        super().__init__(f"err_code={err_code} {description}")
        self.err_code = err_code
