"""to_jsonl: an observer that records messages in the format ``from_jsonl`` replays."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import IO, Any

from pydantic import BaseModel
from reactivex import abc

from querysync._signals import Invalidation, Rejected, Resync
from querysync.operators._decode import RejectHandler, decode_frame, report_rejection

__all__ = ["JsonlRecorder", "to_jsonl"]

log = logging.getLogger("querysync.sinks")

_PREVIEW = 256


class JsonlRecorder(abc.ObserverBase[Any]):
    """An observer writing one ``{"t": seconds, "frame": message}`` line per message.

    ``t`` counts from the first message recorded (so it is ``0.0`` on the first line),
    read from ``scheduler.now`` when a scheduler is given, else from the monotonic
    clock. A :class:`querysync.Resync` is written as ``{"t": ..., "resync": {"reason",
    "attempt"}}``. What it accepts: a message dict; a pydantic model such as
    :class:`querysync.ResourceChangeUpdate` (written as its JSON dump); an
    :class:`querysync.Invalidation` (its update); a JSON ``str`` or MessagePack
    ``bytes`` frame (decoded first). Anything else, or a message JSON cannot hold
    (``bytes`` values, NaN), is rejected: counted, logged and handed to ``on_reject``;
    recording goes on.

    ``on_error`` and ``on_completed`` close the file (a file object passed in is only
    flushed: its owner closes it). ``counts``: ``written``, ``rejected``,
    ``write_errors``, ``after_close``.
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | IO[str],
        *,
        scheduler: abc.SchedulerBase | None = None,
        flush: bool = True,
        on_reject: RejectHandler | None = None,
    ) -> None:
        self.counts: Counter[str] = Counter()
        if isinstance(target, str | os.PathLike):
            self._file: IO[str] = open(target, "w", encoding="utf-8", newline="\n")  # noqa: SIM115
            self._owned = True
            self.name = os.fspath(target)
        else:
            self._file = target
            self._owned = False
            self.name = str(getattr(target, "name", "<file>"))
        self._scheduler = scheduler
        self._flush = flush
        self._on_reject = on_reject
        self._first: float | datetime | None = None
        self._closed = False

    def _now(self) -> float | datetime:
        return self._scheduler.now if self._scheduler is not None else time.monotonic()

    def _offset(self, now: float | datetime) -> float:
        first = self._first
        if first is None:
            return 0.0
        if isinstance(now, datetime) and isinstance(first, datetime):
            seconds = (now - first).total_seconds()
        elif isinstance(now, float) and isinstance(first, float):
            seconds = now - first
        else:  # unreachable: one recorder reads one clock
            seconds = 0.0
        return round(max(seconds, 0.0), 6)

    def _record(self, value: Any) -> dict[str, Any]:
        if isinstance(value, Resync):
            return {"resync": {"reason": value.reason, "attempt": value.attempt}}
        if isinstance(value, Invalidation):
            value = value.update
        if isinstance(value, BaseModel):
            return {"frame": value.model_dump(mode="json")}
        if isinstance(value, str | bytes | bytearray | memoryview):
            return {"frame": decode_frame(value)}
        if isinstance(value, Mapping):
            return {"frame": dict(value)}
        raise ValueError(f"cannot record a {type(value).__name__}")

    def on_next(self, value: Any) -> None:
        """Write one line; never raises (a bad value is rejected, a failed write logged)."""
        if self._closed:
            self.counts["after_close"] += 1
            return
        now = self._now()
        try:
            record = {"t": self._offset(now), **self._record(value)}
            line = json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
            line.encode("utf-8")  # a lone surrogate would fail halfway through the write
        except (ValueError, TypeError, RecursionError) as exc:
            report_rejection(
                Rejected(_preview(value), f"cannot record: {exc}", "to_jsonl"),
                self.counts,
                self._on_reject,
            )
            return
        try:
            self._file.write(line + "\n")
            if self._flush:
                self._file.flush()
        except (OSError, ValueError) as exc:  # ValueError: the file was closed under us
            self.counts["write_errors"] += 1
            log.error("cannot write to %s: %s", self.name, exc)
            return
        if self._first is None:
            self._first = now
        self.counts["written"] += 1

    def on_error(self, error: Exception) -> None:
        """Close the recording; the error is the source's, not the recorder's."""
        log.info("recording to %s ends with the source's error: %s", self.name, error)
        self.close()

    def on_completed(self) -> None:
        """Close the recording."""
        self.close()

    def close(self) -> None:
        """Flush, and close the file if the recorder opened it; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._owned:
                self._file.close()
            else:
                self._file.flush()
        except (OSError, ValueError) as exc:
            self.counts["write_errors"] += 1
            log.error("cannot close %s: %s", self.name, exc)

    def __enter__(self) -> JsonlRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _preview(value: Any) -> Any:
    if isinstance(value, str | bytes | bytearray) and len(value) > _PREVIEW:
        return value[:_PREVIEW]
    return value


def to_jsonl(
    target: str | os.PathLike[str] | IO[str],
    *,
    scheduler: abc.SchedulerBase | None = None,
    flush: bool = True,
    on_reject: RejectHandler | None = None,
) -> JsonlRecorder:
    """A :class:`JsonlRecorder` writing to ``target`` (a path, truncated, or an open text file).

    Use it as the observer of a source or pipeline, for instance
    ``websocket(url).subscribe(to_jsonl("tail.jsonl"))``; the recording replays with
    :func:`querysync.streams.from_jsonl` (``timing=True`` for the recorded pace).
    ``scheduler`` supplies the clock for ``t`` (default: the monotonic clock);
    ``flush`` (default True) flushes after every line, so a crash loses nothing
    already received.
    """
    return JsonlRecorder(target, scheduler=scheduler, flush=flush, on_reject=on_reject)
