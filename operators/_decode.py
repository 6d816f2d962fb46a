"""decode: frames (JSON text, MessagePack bytes, or dicts) -> dicts."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import msgpack

from querysync._signals import Rejected, Resync

from ._stage import Stage, item_stage, log

__all__ = ["Frame", "RejectHandler", "decode_", "decode_frame", "report_rejection"]

Frame = str | bytes | bytearray | memoryview | Mapping[str, Any]
RejectHandler = Callable[[Rejected], None]

_LOG_FIRST = 20
_LOG_EVERY = 1000


class _Undecodable(ValueError):
    pass


def decode_frame(frame: object) -> dict[str, Any]:
    """Decode one frame into a message dict, or raise ``ValueError`` saying why not."""
    if isinstance(frame, dict):
        return frame
    try:
        if isinstance(frame, str):
            value = json.loads(frame)
        elif isinstance(frame, bytes | bytearray | memoryview):
            value = msgpack.unpackb(frame, raw=False, strict_map_key=False)
        elif isinstance(frame, Mapping):
            value = dict(frame)
        else:
            raise _Undecodable(f"unsupported frame type {type(frame).__name__}")
    except _Undecodable:
        raise
    except RecursionError as exc:
        raise _Undecodable("frame nests too deeply") from exc
    except Exception as exc:  # json, msgpack and codec errors have no common base
        kind = "JSON" if isinstance(frame, str) else "MessagePack"
        # Some decoder errors carry no message (msgpack's StackError on deep nesting);
        # the class name is then the only readable part.
        detail = str(exc) or type(exc).__name__
        raise _Undecodable(f"undecodable {kind} frame: {detail}") from exc
    if not isinstance(value, dict):
        raise _Undecodable(f"a message must be an object, got {type(value).__name__}")
    return value


def report_rejection(
    rejected: Rejected, counts: Counter[str], on_reject: RejectHandler | None
) -> None:
    """Count, log and hand a rejection to the user's callback; never raise."""
    counts["rejected"] += 1
    n = counts["rejected"]
    # A broken sender repeats itself: the first rejections are logged as warnings, then
    # one in every _LOG_EVERY, so bad input cannot flood the logs (all are counted).
    if n <= _LOG_FIRST or n % _LOG_EVERY == 0:
        log.warning(
            "rejected frame at %s (%d so far): %s", rejected.stage, n, rejected.reason
        )
    else:
        log.debug("rejected frame at %s: %s", rejected.stage, rejected.reason)
    if on_reject is None:
        return
    try:
        on_reject(rejected)
    except Exception:
        # The callback is the user's; its failure must not end the stream.
        counts["on_reject_errors"] += 1
        log.exception("on_reject callback raised")


def decode_(
    on_reject: RejectHandler | None = None,
) -> Stage[Any, dict[str, Any] | Resync]:
    def handle(frame: Any, counts: Counter[str]) -> dict[str, Any] | None:
        counts["frames"] += 1
        try:
            return decode_frame(frame)
        except ValueError as exc:
            report_rejection(Rejected(frame, str(exc), "decode"), counts, on_reject)
            return None

    return item_stage("decode", handle)
