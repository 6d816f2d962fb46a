"""Run a measurement in a fresh interpreter, so earlier work cannot bend its memory figures."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["in_fresh_process"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def in_fresh_process(fn: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
    """``fn(*args, **kwargs)`` in a new spawned process; its result (picklable) comes back.

    Spawned, not forked: a fork copies this process's heap, threads' locks and event
    loop, which is exactly what a memory or thread count must not inherit.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args, **kwargs).result()
