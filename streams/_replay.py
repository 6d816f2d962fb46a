"""Replay: literal or recorded frames as an Observable, spaced on a scheduler's clock."""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import Disposable, SerialDisposable

from querysync._exceptions import ConfigurationError, SourceError
from querysync._signals import Rejected, Resync
from querysync.operators._decode import RejectHandler, report_rejection
from querysync.operators._scheduling import resolve_scheduler

__all__ = ["Replay", "replay_iterable_", "replay_jsonl_"]

log = logging.getLogger("querysync.streams")

_Entry = tuple[float, Any]  # (offset from the subscription in seconds, value)
_END: Any = object()
# Frames emitted in one scheduled action before yielding: a long untimed replay on
# the asyncio loop must not hold the loop for the whole file.
_BATCH = 512
_PREVIEW = 256


class Replay(Observable[Any]):
    """Replayed frames (see :func:`querysync.streams.from_iterable` and ``from_jsonl``).

    ``counts`` is a ``Counter`` shared by every subscription: ``frames`` emitted,
    ``lines`` read, ``rejected`` lines, ``reordered`` offsets that went back in time,
    ``subscriber_errors``, ``on_reject_errors``.
    """

    def __init__(
        self,
        entries: Callable[[Counter[str]], Iterator[_Entry]],
        *,
        timed: bool,
        scheduler: abc.SchedulerBase | None,
    ) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self._entries = entries
        self._timed = timed
        self._scheduler = scheduler

    def _subscribe_core(
        self,
        observer: abc.ObserverBase[Any],
        scheduler: abc.SchedulerBase | None = None,
    ) -> abc.DisposableBase:
        sched = self._scheduler or scheduler
        if sched is None and self._timed:
            sched = resolve_scheduler(None, None)
        entries = self._entries(self.counts)
        if sched is None:
            return self._run_now(observer, entries)
        return self._run_scheduled(observer, entries, sched)

    def _deliver(self, observer: abc.ObserverBase[Any], value: Any) -> None:
        self.counts["frames"] += 1
        try:
            observer.on_next(value)
        except Exception:
            self.counts["subscriber_errors"] += 1
            log.exception("a subscriber of a replay raised")

    def _run_now(
        self, observer: abc.ObserverBase[Any], entries: Iterator[_Entry]
    ) -> abc.DisposableBase:
        try:
            for _offset, value in entries:
                self._deliver(observer, value)
        except SourceError as exc:
            observer.on_error(exc)
            return Disposable()
        observer.on_completed()
        return Disposable()

    def _run_scheduled(
        self,
        observer: abc.ObserverBase[Any],
        entries: Iterator[_Entry],
        sched: abc.SchedulerBase,
    ) -> abc.DisposableBase:
        start = sched.now
        timer = SerialDisposable()
        stopped = False
        pending: Any = _END

        def advance() -> bool:
            nonlocal pending, stopped
            try:
                pending = next(entries, _END)
            except SourceError as exc:
                stopped = True
                observer.on_error(exc)
                return False
            return True

        def action(_: abc.SchedulerBase, __: Any = None) -> None:
            nonlocal stopped
            emitted = 0
            while not stopped and pending is not _END:
                offset, value = pending
                self._deliver(observer, value)
                emitted += 1
                if not advance():
                    return
                if pending is _END:
                    break
                if pending[0] > offset or emitted >= _BATCH:
                    arm()
                    return
            if not stopped:
                stopped = True
                observer.on_completed()

        def arm() -> None:
            due = sched.now if pending is _END else start + timedelta(seconds=pending[0])
            timer.disposable = sched.schedule_absolute(due, action)

        def dispose() -> None:
            nonlocal stopped
            stopped = True
            timer.dispose()
            close = getattr(entries, "close", None)
            if close is not None:
                close()

        if advance():
            arm()
        return Disposable(dispose)


def replay_iterable_(
    frames: Iterable[Any],
    interval: float | None,
    scheduler: abc.SchedulerBase | None,
) -> Replay:
    if interval is not None and not (math.isfinite(interval) and interval >= 0):
        raise ConfigurationError(f"interval must be a finite number >= 0, got {interval}")
    step = interval or 0.0

    def entries(counts: Counter[str]) -> Iterator[_Entry]:
        for index, frame in enumerate(frames):
            yield (index * step, frame)

    return Replay(entries, timed=interval is not None, scheduler=scheduler)


def replay_jsonl_(
    path: str | os.PathLike[str],
    timing: bool,
    speed: float,
    scheduler: abc.SchedulerBase | None,
    on_reject: RejectHandler | None,
) -> Replay:
    if not (math.isfinite(speed) and speed > 0):
        raise ConfigurationError(f"speed must be a finite number > 0, got {speed}")

    def entries(counts: Counter[str]) -> Iterator[_Entry]:
        for offset, value in _read_jsonl(path, counts, on_reject):
            yield (offset / speed if timing else 0.0, value)

    return Replay(entries, timed=timing, scheduler=scheduler)


def _read_jsonl(
    path: str | os.PathLike[str], counts: Counter[str], on_reject: RejectHandler | None
) -> Iterator[_Entry]:
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed by the with below, also on dispose
    except OSError as exc:
        raise SourceError(f"cannot read the recording {os.fspath(path)!r}: {exc}") from exc
    previous = 0.0
    with file:
        number = 0
        while True:
            try:
                line = file.readline()
            except OSError as exc:
                raise SourceError(
                    f"cannot read the recording {os.fspath(path)!r} after line {number}: {exc}"
                ) from exc
            if not line:
                return
            number += 1
            if not line.strip():
                continue
            counts["lines"] += 1
            try:
                offset, value = parse_line(line)
            except ValueError as exc:
                preview = line[:_PREVIEW].decode("utf-8", "replace").rstrip("\n")
                report_rejection(
                    Rejected(preview, f"line {number}: {exc}", "replay"), counts, on_reject
                )
                continue
            if offset is None:
                offset = previous
            elif offset < previous:
                # Replaying never reorders: a frame is not emitted before one recorded above it.
                counts["reordered"] += 1
                offset = previous
            previous = offset
            yield (offset, value)


def parse_line(line: str | bytes) -> tuple[float | None, Any]:
    """One recording line -> ``(offset or None, message dict or Resync)``; ``ValueError`` if bad."""
    try:
        record = json.loads(line)
    except RecursionError as exc:
        raise ValueError("the line nests too deeply") from exc
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise ValueError(f"a line must hold a JSON object, got {type(record).__name__}")
    keys = record.keys()
    if "frame" in record and keys <= {"t", "frame"}:
        frame = record["frame"]
        if not isinstance(frame, dict):
            raise ValueError(f'"frame" must be an object, got {type(frame).__name__}')
        return _offset(record), frame
    if "resync" in record and keys <= {"t", "resync"}:
        return _offset(record), _resync(record["resync"])
    return None, record


def _offset(record: dict[str, Any]) -> float | None:
    if "t" not in record:
        return None
    t = record["t"]
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
        raise ValueError(f'"t" must be a finite number of seconds >= 0, got {t!r}')
    return float(t)


def _resync(value: object) -> Resync:
    if not isinstance(value, dict):
        raise ValueError(f'"resync" must be an object, got {type(value).__name__}')
    reason = value.get("reason", "reconnected")
    attempt = value.get("attempt", 0)
    if not isinstance(reason, str) or isinstance(attempt, bool) or not isinstance(attempt, int):
        raise ValueError('"resync" needs a string "reason" and an integer "attempt"')
    return Resync(reason=reason, attempt=attempt)
