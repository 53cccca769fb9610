"""Per-destination batches: events taken from the buffer, their acks merged."""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter

from gateway.acks import AckStatus, BatchAck
from gateway.event import Event

_ack_of = attrgetter("ack")


@dataclass(slots=True, eq=False)
class Batch:
    """Up to 1000 events for one destination, and their merged acks."""

    destination: str
    events: list[Event]
    ack: BatchAck = field(init=False)

    def __post_init__(self) -> None:
        self.ack = BatchAck(map(_ack_of, self.events))

    def __len__(self) -> int:
        return len(self.events)

    def resolve_all(self, status: AckStatus, detail: object = None) -> None:
        self.ack.resolve(status, [detail] * len(self.events) if detail is not None else None)
