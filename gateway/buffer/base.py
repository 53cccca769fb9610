"""The buffer contract between intake and the batcher."""

from __future__ import annotations

from typing import Protocol

from gateway.event import Event


class Buffer(Protocol):
    """A bounded queue of events for one destination.

    ``put`` is all-or-nothing: it raises :class:`~gateway.errors.BufferFull` rather than
    accept part of a request (or, with ``wait=True``, waits for room — Kafka's choice once
    its partitions are paused).  ``take`` hands the batcher up to ``max_events`` /
    ``max_bytes``, waiting at most ``timeout_secs`` for a batch to fill.
    """

    @property
    def events(self) -> int: ...

    @property
    def bytes(self) -> int: ...

    @property
    def fill_ratio(self) -> float:
        """max(events/max_events, bytes/max_bytes); 1.0 means full."""
        ...

    async def put(self, events: list[Event], *, wait: bool = False) -> None: ...

    async def take(self, max_events: int, max_bytes: int, timeout_secs: float) -> list[Event]:
        """Returns [] only when the buffer is closed and empty."""
        ...

    def close(self) -> None:
        """No more puts; ``take`` drains what is left, then returns []."""
        ...

    def drain_nowait(self) -> list[Event]:
        """Remove and return everything still buffered (shutdown deadline, to resolve their acks)."""
        ...
