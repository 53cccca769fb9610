"""Many deadlines of one duration on one timer.

A webhook request waits on two deadlines that almost never fire: the outer cap on its handling
and the wait for its acks.  A loop timer each (``call_later``, then ``cancel``) cost ~3 µs per
request on uvloop (issue 18).  Deadlines of one duration expire in the order they were set, so
one queue per duration and one timer for its head serve them all: setting a deadline is an
append, cancelling one sets a flag, and the timer fires about once per duration.

    deadline = deadlines(30.0).add(callback, arg)   # callback(arg) in 30 s, unless ...
    deadline.cancel()                                # ... cancelled first
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["Deadline", "Deadlines", "deadlines", "wake"]

_COMPACT_AT = 1024
"""Cancelled deadlines behind a live one are dropped once there are this many and they are
most of the queue (one slow request must not keep every later, finished one)."""


class Deadline:
    """One pending ``callback(arg)``; :meth:`cancel` it once it is no longer wanted."""

    __slots__ = ("_owner", "arg", "at", "callback", "fired", "live")

    def __init__(self, owner: Deadlines, at: float, callback: Callable[[Any], object], arg: Any) -> None:
        self._owner = owner
        self.at = at
        self.callback = callback
        self.arg = arg
        self.live = True
        self.fired = False
        """The deadline passed and the callback ran."""

    def cancel(self) -> None:
        """The callback will not run (nothing happens if it already did)."""
        if self.live:
            self.live = False
            self.arg = None  # nothing kept alive by a cancelled deadline waiting in the queue
            self._owner._cancelled()


class Deadlines:
    """The deadlines of one duration on one event loop (see the module docstring)."""

    __slots__ = ("_dead", "_loop", "_queue", "_secs", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, secs: float) -> None:
        self._loop = loop
        self._secs = secs
        self._queue: deque[Deadline] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._dead = 0

    def add(self, callback: Callable[[Any], object], arg: Any) -> Deadline:
        """``callback(arg)`` once the duration has passed, unless cancelled before."""
        queue = self._queue
        while queue and not queue[0].live:  # finished ones at the head: gone at once
            queue.popleft()
            self._dead -= 1
        deadline = Deadline(self, self._loop.time() + self._secs, callback, arg)
        queue.append(deadline)
        if self._timer is None:
            self._timer = self._loop.call_at(queue[0].at, self._fire)
        return deadline

    def _cancelled(self) -> None:
        self._dead += 1
        if self._dead >= _COMPACT_AT and self._dead * 2 > len(self._queue):
            self._queue = deque(d for d in self._queue if d.live)
            self._dead = 0

    def _fire(self) -> None:
        self._timer = None
        now = self._loop.time()
        queue = self._queue
        while queue and (not queue[0].live or queue[0].at <= now):
            deadline = queue.popleft()
            if deadline.live:
                deadline.live = False
                deadline.fired = True
                deadline.callback(deadline.arg)
            else:
                self._dead -= 1
        if queue:
            self._timer = self._loop.call_at(queue[0].at, self._fire)


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, Deadlines]] = weakref.WeakKeyDictionary()


def deadlines(secs: float) -> Deadlines:
    """The running loop's deadlines of ``secs`` seconds."""
    loop = asyncio.get_running_loop()
    by_secs = _per_loop.get(loop)
    if by_secs is None:
        by_secs = _per_loop[loop] = {}
    found = by_secs.get(secs)
    if found is None:
        found = by_secs[secs] = Deadlines(loop, secs)
    return found


def wake(waiter: asyncio.Future[Any]) -> None:
    """Resolve ``waiter`` with None unless it is done (a deadline's usual callback)."""
    if not waiter.done():
        waiter.set_result(None)
