"""The buffer contract, run against every buffer: memory, the disk spool, and Kafka (whose
Kafka-sourced events are held locally; intake events go to the topic, see its own tests).

* what is put comes out of ``take`` in order, and a closed buffer's ``take`` drains it, then ends;
* a put that does not fit is refused whole (all or nothing), with a 429 the sender retries;
* a closed buffer refuses puts with a 503 ``Draining`` (a stopping gateway is not a busy one);
* at shutdown every event put is either durably kept (its ack resolved: the disk spool) or
  handed back by ``drain_nowait`` (to resolve its ack): none is left waiting for ever.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.acks import AckGroup
from gateway.buffer.config import BufferConfig
from gateway.buffer.disk import DiskBuffer
from gateway.buffer.kafka import KafkaBuffer
from gateway.buffer.memory import MemoryBuffer
from gateway.errors import BufferFull, Draining
from gateway.event import Event
from gateway.telemetry.metrics import Metrics
from tests.support.procs import free_port

SOURCE = "app"  # for the Kafka buffer: a Kafka source's events, held locally

MakeBuffer = Callable[[int], Any]


@pytest.fixture(params=["memory", "disk", "kafka"])
async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeBuffer]:
    made: list[Any] = []

    def factory(max_events: int) -> Any:
        metrics = Metrics()
        buf: Any
        if request.param == "memory":
            buf = MemoryBuffer("default", max_events, 1 << 20, metrics)
        elif request.param == "disk":
            cfg = BufferConfig.model_validate({"type": "disk", "max_events": max_events})
            buf = DiskBuffer("default", tmp_path / f"spool-{len(made)}", cfg, metrics)
        else:
            # The brokers are never needed for Kafka-sourced events: nothing listens there.
            cfg = BufferConfig.model_validate(
                {
                    "type": "kafka",
                    "topic": "t",
                    "bootstrap_servers": f"127.0.0.1:{free_port()}",
                    "max_events": max_events,
                }
            )
            buf = KafkaBuffer("default", cfg, metrics, local_sources=[SOURCE])
        made.append(buf)
        return buf

    yield factory
    for b in made:
        aclose = getattr(b, "aclose", None)
        if aclose is not None:
            await aclose()


def events(n: int, tag: str = "e") -> list[Event]:
    g = AckGroup(n)
    return [Event(orjson.dumps({"event": {"message": f"{tag}{i}"}}), g.ack(i), SOURCE) for i in range(n)]


def messages(evs: list[Event]) -> list[str]:
    return [orjson.loads(e.item)["event"]["message"] for e in evs]


async def test_what_is_put_is_taken_in_order_and_a_closed_buffer_drains_then_ends(make: MakeBuffer) -> None:
    buf = make(10)
    await buf.put(events(3, "a"))
    await buf.put(events(2, "b"))
    assert buf.events == 5
    buf.close()
    taken: list[Event] = []
    while batch := await buf.take(10, 1 << 20, 0.01):
        taken += batch
    assert messages(taken) == ["a0", "a1", "a2", "b0", "b1"]
    assert await buf.take(10, 1 << 20, 0.01) == []


async def test_a_put_that_does_not_fit_is_refused_whole_with_a_429(make: MakeBuffer) -> None:
    buf = make(4)
    await buf.put(events(3, "a"))
    with pytest.raises(BufferFull) as info:
        await buf.put(events(2, "b"))
    assert not isinstance(info.value, Draining)
    assert info.value.http_status == 429 and info.value.retry_after_secs
    assert buf.events == 3  # none of the refused put


async def test_a_closed_buffer_refuses_puts_with_a_503_draining(make: MakeBuffer) -> None:
    buf = make(10)
    buf.close()
    with pytest.raises(Draining) as info:
        await buf.put(events(1))
    assert info.value.http_status == 503 and info.value.retry_after_secs


async def test_at_shutdown_no_event_put_is_left_with_an_open_ack_and_unaccounted(make: MakeBuffer) -> None:
    buf = make(10)
    put = events(4)
    await buf.put(put)
    handed_back = buf.drain_nowait()  # shutdown resolves these (the disk spool keeps its rows)
    assert all(e.ack.resolved or e in handed_back for e in put)
    assert buf.drain_nowait() == []
