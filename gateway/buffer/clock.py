"""The time a buffer's timings run on (group commit, delete flushes, retakes, probes, log throttling).

:class:`LoopClock` is real time, the event loop's; a test injects a clock whose time passes
only when it says so (``tests/support/clock.py``), so a spool's timings are tested without
waiting, as the dedup window's are (:mod:`gateway.dedup` takes a ``clock``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Clock", "LoopClock", "TimerHandle"]


class TimerHandle(Protocol):
    """What :meth:`Clock.call_later` returns: a call that can be cancelled before it is made."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic time, and waiting on it."""

    def monotonic(self) -> float:
        """Seconds on a monotonic scale (only differences mean anything)."""
        ...

    async def sleep(self, secs: float) -> None:
        """Return once ``secs`` have passed."""
        ...

    async def wait(self, event: asyncio.Event, secs: float) -> bool:
        """Wait until ``event`` is set (True) or ``secs`` have passed (False)."""
        ...

    def call_later(self, secs: float, fn: Callable[..., Any], *args: Any) -> TimerHandle:
        """Call ``fn(*args)`` on the running loop once ``secs`` have passed."""
        ...


class LoopClock:
    """Real time: :func:`time.monotonic` and the running event loop's timers."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, secs: float) -> None:
        await asyncio.sleep(secs)

    async def wait(self, event: asyncio.Event, secs: float) -> bool:
        try:
            await asyncio.wait_for(event.wait(), secs)
        except TimeoutError:
            return False
        return True

    def call_later(self, secs: float, fn: Callable[..., Any], *args: Any) -> TimerHandle:
        return asyncio.get_running_loop().call_later(secs, fn, *args)
