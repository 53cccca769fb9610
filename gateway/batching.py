"""Per-destination batches: events taken from the buffer, their acks merged."""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter

import orjson

from gateway.acks import AckStatus, BatchAck
from gateway.event import Event, item_of

_ack_of = attrgetter("ack")


@dataclass(slots=True, eq=False)
class Batch:
    """Up to 1000 events for one destination, and their merged acks."""

    destination: str
    events: list[Event]
    credential: str | None = None
    """Every event's :attr:`~gateway.event.Event.credential` (batches are formed per credential)."""
    ack: BatchAck = field(init=False)

    def __post_init__(self) -> None:
        self.ack = BatchAck(map(_ack_of, self.events))

    def __len__(self) -> int:
        return len(self.events)

    def body(self, config_id: str | None, *, verbose: bool = False, events: list[Event] | None = None) -> bytes:
        """The /v2/log body, built by joining the events' bytes (never re-serialized).

        ``events`` is a subset of the batch's, when only some are to be sent (what is left
        after the upstream rejected some); by default, all of them.
        """
        items = list(map(item_of, self.events if events is None else events))
        head = b'{"events":['
        tail = b"]"
        if config_id is not None:
            tail += b',"config_id":' + orjson.dumps(config_id)
        if verbose:
            tail += b',"verbose":true'
        return head + b",".join(items) + tail + b"}"

    @staticmethod
    def split(destination: str, events: list[Event]) -> list[Batch]:
        """``events`` as batches of one credential each (one batch, in the common case)."""
        first = events[0].credential
        if all(e.credential == first and e.v1_members is None for e in events):
            return [Batch(destination, events, first)]
        groups: dict[str | None, list[Event]] = {}
        alone: list[Batch] = []  # /v1/log calls: one event each
        for e in events:
            if e.v1_members is not None:
                alone.append(Batch(destination, [e], e.credential))
            else:
                groups.setdefault(e.credential, []).append(e)
        return [Batch(destination, group, cred) for cred, group in groups.items()] + alone

    def v1_body(self, config_id: str | None) -> bytes | None:
        """The ``/v1/log`` body of a batch of one event with ``v1_members``; None for others."""
        tail = self.events[0].v1_members if len(self.events) == 1 else None
        if tail is None:
            return None
        if config_id is not None:
            tail += b',"config_id":' + orjson.dumps(config_id)
        return self.events[0].item[:-1] + tail + b"}"

    def resolve_all(self, status: AckStatus, detail: object = None) -> None:
        self.ack.resolve(status, [detail] * len(self.events) if detail is not None else None)
