"""The lease of a shared bucket: who publishes, and how a standby waits for its turn.

How the lease fences every write is explained in ``querysync.sinks._shared_publish``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid

from ._shared_codec import LEASE_KEY
from ._shared_conn import Bucket

__all__ = ["acquire_lease", "lease_document", "new_owner"]

log = logging.getLogger("querysync.share")


def lease_document(owner: str, lease: float, *, released: bool = False) -> bytes:
    """The lease key's value: who holds it, for how long, whether it was given up."""
    doc = {
        "owner": owner,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "lease": lease,
        "renewed_at": time.time(),
        "released": released,
    }
    return json.dumps(doc).encode()


async def acquire_lease(bucket: Bucket, owner: str, *, poll: float | None = None) -> int:
    """Wait until this process holds the lease; the lease key's revision it wrote.

    A missing (or deleted) lease is created; a lease given up (``released``) or whose
    revision has not changed for its ``lease`` seconds, as measured on this process's
    monotonic clock, is taken by a compare-and-set on that revision. ``poll`` (seconds)
    defaults to a quarter of the lease, at most 0.25.
    """
    import nats.errors
    import nats.js.errors

    kv = bucket.kv
    lease = bucket.config.lease
    every = poll if poll is not None else min(lease / 4, 0.25)
    seen: int | None = None
    seen_at = 0.0
    while True:
        try:
            try:
                entry = await kv.get(LEASE_KEY)
            except nats.js.errors.KeyNotFoundError:
                try:
                    return await kv.create(LEASE_KEY, lease_document(owner, lease))
                except nats.js.errors.KeyWrongLastSequenceError:
                    continue
            assert entry.revision is not None
            now = time.monotonic()
            if entry.revision != seen:
                seen, seen_at = entry.revision, now
            held = _lease_of(entry.value)
            if held is None or held[1] or now - seen_at >= max(lease, held[0]):
                try:
                    return await kv.update(
                        LEASE_KEY, lease_document(owner, lease), last=entry.revision
                    )
                except nats.js.errors.KeyWrongLastSequenceError:
                    pass  # someone else renewed or took it first
        except (TimeoutError, nats.errors.Error) as exc:
            log.info("waiting for the lease: %s", exc)
        await asyncio.sleep(every)


def _lease_of(value: bytes | None) -> tuple[float, bool] | None:
    """(lease seconds, released) of a lease value; None when unreadable."""
    try:
        doc = json.loads(value or b"")
        return float(doc["lease"]), bool(doc.get("released"))
    except (ValueError, KeyError, TypeError):
        return None


def new_owner() -> str:
    """A unique name for this publisher (host, pid and a random part)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
