"""In-memory bounded buffer with byte and event limits."""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections import deque
from itertools import accumulate, islice, repeat, starmap

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

    async def take(self, max_events: int, max_bytes: int, timeout_secs: float) -> list[Event]:
        loop = asyncio.get_running_loop()
        while True:
            # Wait for a first event, then up to ``timeout_secs`` for the batch to fill.
            while not self._q:
                if self._closed:
                    return []
                self._readable.clear()
                await self._readable.wait()
            deadline = loop.time() + timeout_secs
            while len(self._q) < max_events and self._bytes < max_bytes and not self._closed:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._readable.clear()
                try:
                    await asyncio.wait_for(self._readable.wait(), remaining)
                except TimeoutError:
                    break
            out = self._pop(max_events, max_bytes)
            if out:
                return out
            # Another worker emptied the queue while this one waited: start over.

    def _pop(self, max_events: int, max_bytes: int) -> list[Event]:
        q = self._q
        if len(q) <= max_events and self._bytes <= max_bytes:
            # The usual take: everything buffered fits one batch; no sizes to add up (issue 18).
            out = list(q)
            q.clear()
            if out:
                self._bytes = 0
                self._publish()
                self._room.set()
            return out
        # Running sizes of the head, in C: the batch is the longest prefix within max_bytes
        # (at least one event, however large).
        sizes = list(accumulate(map(len, map(item_of, islice(q, max_events)))))
        n = max(1, bisect_right(sizes, max_bytes)) if sizes else 0
        out = list(starmap(q.popleft, repeat((), n)))  # n popleft() calls, without a Python loop
        if out:
            self._bytes -= sizes[n - 1]
            self._publish()
            self._room.set()
        if q:
            self._readable.set()
        return out

    def close(self) -> None:
        self._closed = True
        self._readable.set()
        self._room.set()

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
