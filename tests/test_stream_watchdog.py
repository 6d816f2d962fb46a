"""The silence watchdog of the WebSocket source, on the running asyncio loop."""

from __future__ import annotations

import asyncio

import pytest

from querysync.streams._watchdog import Watchdog

TIMEOUT = 0.05


class Activity:
    """A frame counter like the source's, moved on by a ticker task."""

    def __init__(self) -> None:
        self.frames = 0

    def __call__(self) -> int:
        return self.frames

    async def tick(self, every: float, times: int) -> None:
        for _ in range(times):
            await asyncio.sleep(every)
            self.frames += 1


async def receive_until_cancelled(watchdogs: list[Watchdog]) -> str:
    """What the source's receive loop does: absorb the watchdog's cancellation only."""
    task = asyncio.current_task()
    assert task is not None
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        if watchdogs[0].fired and task.uncancel() == 0:
            return "silent"
        raise
    finally:
        watchdogs[0].stop()
    return "never"


async def guarded(
    activity: Activity, silence: float = TIMEOUT
) -> tuple[asyncio.Task[str], Watchdog]:
    watchdogs: list[Watchdog] = []
    task = asyncio.create_task(receive_until_cancelled(watchdogs))
    watchdogs.append(Watchdog(task, silence, activity))
    return task, watchdogs[0]


async def test_a_silent_task_is_cancelled() -> None:
    task, watchdog = await guarded(Activity())
    async with asyncio.timeout(5):
        assert await task == "silent"
    assert watchdog.fired


async def test_activity_keeps_it_quiet_until_it_stops() -> None:
    activity = Activity()
    # Frames every tenth of the timeout for three timeouts: never silent for a whole one
    # (unless the machine stalls the loop for a whole timeout).
    task, watchdog = await guarded(activity, silence=0.1)
    await activity.tick(0.01, 30)
    assert not task.done()
    assert not watchdog.fired
    async with asyncio.timeout(5):
        assert await task == "silent"  # then nothing more comes
    assert activity.frames == 30


async def test_stop_disarms_it() -> None:
    activity = Activity()
    task, watchdog = await guarded(activity)
    watchdog.stop()
    await asyncio.sleep(3 * TIMEOUT)
    assert not task.done()
    assert not watchdog.fired
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_another_cancellation_is_not_absorbed() -> None:
    task, watchdog = await guarded(Activity())

    def cancel_too() -> None:
        # Someone else (the source's close()) cancels the task in the same turn.
        if watchdog.fired:
            task.cancel()
        else:
            asyncio.get_running_loop().call_soon(cancel_too)

    asyncio.get_running_loop().call_soon(cancel_too)
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await task
    assert watchdog.fired
