"""Time that passes only when a test says so, for the timings of a spool (``gateway.buffer.clock.Clock``).

``await clock.advance(secs)`` moves it on and runs what was waiting for that moment; nothing
else moves it, so a test of "deletes are flushed after DELETE_FLUSH_SECS" or "failures are
logged once per FAILED_LOG_SECS" neither waits nor depends on how fast the machine is.
:func:`eventually` waits (with a deadline) for real work to finish: a commit running on the
spool's thread, a file written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


class _Timer:
    def __init__(self, due: float, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.due = due
        self.fn = fn
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A :class:`gateway.buffer.clock.Clock` whose time moves only with :meth:`advance`."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self._timers: list[_Timer] = []

    def monotonic(self) -> float:
        return self.now

    def call_later(self, secs: float, fn: Callable[..., Any], *args: Any) -> _Timer:
        timer = _Timer(self.now + secs, fn, args)
        self._timers.append(timer)
        return timer

    async def sleep(self, secs: float) -> None:
        if secs <= 0:
            await asyncio.sleep(0)
            return
        done = asyncio.get_running_loop().create_future()
        timer = self.call_later(secs, _set_result, done)
        try:
            await done
        finally:
            timer.cancel()

    async def wait(self, event: asyncio.Event, secs: float) -> bool:
        if event.is_set():
            return True
        waiter = asyncio.ensure_future(event.wait())
        timeout = asyncio.ensure_future(self.sleep(secs))
        try:
            await asyncio.wait((waiter, timeout), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            timeout.cancel()
            await asyncio.gather(waiter, timeout, return_exceptions=True)
        return event.is_set()

    @property
    def waiting(self) -> int:
        """How many sleeps and timers wait for time to pass."""
        return sum(not t.cancelled for t in self._timers)

    async def advance(self, secs: float) -> None:
        """Let ``secs`` pass: run every timer due by then, in order, and let their waiters run."""
        self.now += secs
        while True:
            due = sorted((t for t in self._timers if not t.cancelled and t.due <= self.now), key=lambda t: t.due)
            if not due:
                break
            for t in due:
                t.cancelled = True
                t.fn(*t.args)
            for _ in range(5):  # the woken tasks run up to their next wait
                await asyncio.sleep(0)
        self._timers = [t for t in self._timers if not t.cancelled]

    async def when_waiting(self, timeout: float = 5.0) -> None:
        """Return once something waits for time to pass (a task got to its sleep)."""
        await eventually(lambda: self.waiting > 0, "nothing waits on the clock", timeout)

    async def run_until(self, predicate: Callable[[], bool], step: float, what: str, timeout: float = 10.0) -> None:
        """Let time pass ``step`` by ``step`` until ``predicate()`` holds (each step's work, on
        other threads too, given a moment to finish); fails with ``what`` after ``timeout`` real seconds."""
        end = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < end, what
            await self.advance(step)
            await asyncio.sleep(0.005)


def _set_result(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds (real work finishing: a commit on another thread, I/O);
    fails with ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, what
        await asyncio.sleep(0.005)
