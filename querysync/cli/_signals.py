"""SIGINT and SIGTERM as an asyncio.Event, so commands stop cleanly instead of dying.

Exit statuses after a signal (every command): SIGINT (Ctrl-C) gives 130, as a shell
reports an interrupted command, so that ``querysync ... && next`` does not go on;
SIGTERM gives 0, since it is how service managers (systemd, docker stop) ask for the
clean stop that the command then completes (the cache flushed, connections closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

__all__ = ["INTERRUPTED", "Stop", "stop_on_signals"]

INTERRUPTED = 128 + signal.SIGINT
"""The exit status after SIGINT: 130."""


class Stop(asyncio.Event):
    """An event set by the first SIGINT or SIGTERM; ``received`` says which."""

    def __init__(self) -> None:
        super().__init__()
        self.received: signal.Signals | None = None

    def _on(self, sig: signal.Signals) -> None:
        if self.received is None:
            self.received = sig
        self.set()

    def status(self, otherwise: int) -> int:
        """The exit status: 130 after SIGINT, else ``otherwise`` (SIGTERM is a clean stop)."""
        return INTERRUPTED if self.received is signal.SIGINT else otherwise


@contextlib.contextmanager
def stop_on_signals() -> Iterator[Stop]:
    """A :class:`Stop` event set by SIGINT or SIGTERM while the block runs."""
    loop = asyncio.get_running_loop()
    stop = Stop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop._on, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            pass
    try:
        yield stop
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
