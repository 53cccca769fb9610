"""In-memory bounded buffer with byte and event limits."""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections import deque
from itertools import accumulate, islice, repeat, starmap

from gateway.deadlines import deadlines, wake
from gateway.errors import BufferFull, Draining
from gateway.event import Event, item_of
from gateway.telemetry.metrics import Metrics


class MemoryBuffer:
    """A deque of events bounded by count and bytes; see :class:`gateway.buffer.base.Buffer`."""

    def __init__(
        self, destination: str, max_events: int, max_bytes: int, metrics: Metrics, retry_after_secs: float = 1.0
    ) -> None:
        self.destination = destination
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._q: deque[Event] = deque()
        self._bytes = 0
        self._closed = False
        self._readable = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._retry_after = retry_after_secs
        self._take_lock = asyncio.Lock()
        self._filled: asyncio.Future[None] | None = None
        """Set while a taker waits for its batch to fill: done once it is full (see :meth:`_fill`)."""
        self._fill_events = 0
        self._fill_bytes = 0
        self._m_events = metrics.buffer_events.labels(destination)
        self._m_bytes = metrics.buffer_bytes.labels(destination)
        metrics.buffer_max_events.labels(destination).set(max_events)

    @property
    def events(self) -> int:
        return len(self._q)

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def fill_ratio(self) -> float:
        return max(len(self._q) / self.max_events, self._bytes / self.max_bytes)

    def _fits(self, n: int, size: int) -> bool:
        # An empty buffer takes any single request that fits the limits at all, so one huge
        # request is not refused forever.
        return len(self._q) + n <= self.max_events and (self._bytes + size <= self.max_bytes or not self._q)

    async def put(self, events: list[Event], *, wait: bool = False) -> None:
        if self._closed:
            raise Draining("the gateway is shutting down", retry_after_secs=self._retry_after)
        size = sum(map(len, map(item_of, events)))
        while not self._fits(len(events), size):
            if not wait:
                raise BufferFull(
                    f"buffer for destination {self.destination!r} is full", retry_after_secs=self._retry_after
                )
            self._room.clear()
            await self._room.wait()
            if self._closed:
                raise Draining("the gateway is shutting down", retry_after_secs=self._retry_after)
        self._q.extend(events)
        self._bytes += size
        self._publish()
        self._readable.set()
        filled = self._filled
        if filled is not None and (len(self._q) >= self._fill_events or self._bytes >= self._fill_bytes):
            wake(filled)

    async def take(self, max_events: int, max_bytes: int, timeout_secs: float) -> list[Event]:
        # One taker forms a batch at a time; the other delivery workers wait their turn on the
        # lock, not on the buffer: a put wakes one taker, and only once its batch is full (or
        # its deadline came), where every put used to wake every worker, each then waiting
        # again through a new wait_for (issue 18: most of a request's CPU below saturation).
        async with self._take_lock:
            while not self._q:
                if self._closed:
                    return []
                self._readable.clear()
                await self._readable.wait()
            if len(self._q) < max_events and self._bytes < max_bytes and not self._closed and timeout_secs > 0:
                await self._fill(max_events, max_bytes, timeout_secs)
            return self._pop(max_events, max_bytes)

    async def _fill(self, max_events: int, max_bytes: int, timeout_secs: float) -> None:
        """Wait until ``max_events`` or ``max_bytes`` are buffered (or closed), ``timeout_secs`` at most."""
        filled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._filled = filled
        self._fill_events, self._fill_bytes = max_events, max_bytes
        deadline = deadlines(timeout_secs).add(wake, filled)
        try:
            await filled
        finally:
            deadline.cancel()
            self._filled = None

    def _pop(self, max_events: int, max_bytes: int) -> list[Event]:
        q = self._q
        if len(q) <= max_events and self._bytes <= max_bytes:
            # The usual take: everything buffered fits one batch; no sizes to add up (issue 18).
            out = list(q)
            q.clear()
            size = self._bytes
        elif self._bytes <= max_bytes:
            # Every prefix fits max_bytes: the batch is the first max_events, sized in one pass.
            out = list(starmap(q.popleft, repeat((), max_events)))
            size = sum(map(len, map(item_of, out)))
        else:
            # Running sizes of the head, in C: the batch is the longest prefix within max_bytes
            # (at least one event, however large).
            sizes = list(accumulate(map(len, map(item_of, islice(q, max_events)))))
            n = max(1, bisect_right(sizes, max_bytes)) if sizes else 0
            out = list(starmap(q.popleft, repeat((), n)))  # n popleft() calls, without a Python loop
            size = sizes[n - 1] if out else 0
        if out:
            self._bytes -= size
            self._publish()
            self._room.set()
        if q:
            self._readable.set()
        return out

    def close(self) -> None:
        self._closed = True
        self._readable.set()
        self._room.set()
        if self._filled is not None:
            wake(self._filled)

    def drain_nowait(self) -> list[Event]:
        out = list(self._q)
        self._q.clear()
        self._bytes = 0
        self._publish()
        self._room.set()
        return out

    def _publish(self) -> None:
        self._m_events.set(len(self._q))
        self._m_bytes.set(self._bytes)
