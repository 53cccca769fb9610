"""FanOut: one source event to several destinations, its ack the worst of theirs.

Real memory buffers stand in for the destinations' (their workers are not started: the test
takes and resolves the copies as a delivery driver would).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from prometheus_client import generate_latest

from gateway.acks import AckGroup, AckStatus
from gateway.buffer.memory import MemoryBuffer
from gateway.errors import BufferFull
from gateway.event import Event
from gateway.normalize.schema import Schema
from gateway.pipeline import Destination, FanOut
from gateway.pipeline.config import DestinationConfig
from gateway.sources.intake import Admitter, Candidate
from gateway.telemetry.metrics import Metrics
from tests.support.accounting import assert_accounting


def destination(name: str, max_events: int, metrics: Metrics | None = None) -> Destination:
    metrics = metrics or Metrics()
    buf = MemoryBuffer(name, max_events, 1 << 20, metrics)
    return Destination(name, DestinationConfig(), buf, None, Schema.standard(), metrics, 0)  # type: ignore[arg-type]


def events(group: AckGroup, n: int) -> list[Event]:
    return [Event(orjson.dumps({"event": {"message": f"m{i}"}}), group.ack(i), "src", f"id-{i}") for i in range(n)]


async def take(dest: Destination, n: int) -> list[Event]:
    return await dest.buffer.take(n, 1 << 20, 0.01)


def resolve(copies: list[Event], status: AckStatus, detail: Any = None) -> None:
    for e in copies:
        e.ack.resolve(status, detail)


async def test_the_source_ack_waits_for_every_destination_and_takes_the_worst() -> None:
    audit, archive = destination("audit", 10), destination("archive", 10)
    fan = FanOut([audit, archive])
    group = AckGroup(2, keep_results=True)
    await fan.submit(events(group, 2))
    a, b = await take(audit, 2), await take(archive, 2)
    assert [e.dedup_key for e in a] == [e.dedup_key for e in b] == ["id-0", "id-1"]
    resolve(a, AckStatus.DELIVERED, {"hash": "h"})
    assert not group.done  # the archive has not got them yet
    b[0].ack.resolve(AckStatus.DELIVERED, {"offset": 1})
    b[1].ack.resolve(AckStatus.ERRORED, "kafka down")
    assert group.done and group.status == AckStatus.ERRORED
    assert group.results[0] == {"hash": "h"}  # the first destination's detail reaches the sender


async def test_a_submit_refused_part_way_places_the_missing_copies_only_when_resubmitted() -> None:
    audit, archive = destination("audit", 10), destination("archive", 2)
    fan = FanOut([audit, archive])
    await archive.submit(events(AckGroup(2), 2))  # the archive is full
    group = AckGroup(2)
    batch = events(group, 2)
    with pytest.raises(BufferFull):
        await fan.submit(batch)
    assert audit.buffer.events == 2  # the audit log's copies are in
    await take(archive, 2)  # room again
    await fan.submit(batch)  # the source's retry of the same events
    assert audit.buffer.events == 2 and archive.buffer.events == 2  # nothing placed twice
    resolve(await take(audit, 10), AckStatus.DELIVERED)
    resolve(await take(archive, 10), AckStatus.DELIVERED)
    assert group.done and group.status == AckStatus.DELIVERED


async def test_abandoned_events_resolve_errored_once_their_placed_copies_resolve() -> None:
    audit, archive = destination("audit", 10), destination("archive", 1)
    fan = FanOut([audit, archive])
    await archive.submit(events(AckGroup(1), 1))
    group = AckGroup(2)
    batch = events(group, 2)
    with pytest.raises(BufferFull):
        await fan.submit(batch)
    fan.abandon(batch)  # the source gives up on them (shutdown, 429 to the sender)
    resolve(await take(audit, 10), AckStatus.DELIVERED)
    assert group.done and group.status == AckStatus.ERRORED
    assert fan._open == {} and fan._shares == {}  # nothing kept


class _Letters:
    """A dead-letter store that keeps what it is given (no invalid event is expected here)."""

    def __init__(self) -> None:
        self.letters: list[Any] = []

    async def write(self, letters: list[Any]) -> None:
        self.letters.extend(letters)


async def test_a_fan_out_accounts_each_copy_in_its_own_destination_and_refuses_only_the_unplaced_ones() -> None:
    metrics = Metrics()
    audit, archive = destination("audit", 10, metrics), destination("archive", 2, metrics)
    admitter = Admitter("src", FanOut([audit, archive]), metrics, _Letters())  # type: ignore[arg-type]
    valid = [Candidate({"message": f"m{i}"}, f"/{i}", b"{}") for i in range(4)]
    with pytest.raises(BufferFull):  # the archive holds 2: the request is refused (the sender resends it)
        await admitter.admit([*valid, Candidate(None, "/4", b"oops", errors=[{"code": "BadFormat"}])])
    acc = assert_accounting(generate_latest(metrics.registry).decode())
    # Each destination received the 5; the audit kept its 4 copies (in flight), the archive placed none.
    audit_terms = {k: v for k, v in acc[("src", "audit")].items() if v}
    assert audit_terms == {"received": 5, "refused": 1, "in_flight": 4}
    assert acc[("src", "archive")]["received"] == 5 and acc[("src", "archive")]["refused"] == 5
    taken = await take(audit, 10)
    resolve(taken, AckStatus.DELIVERED)
    assert len(taken) == 4
