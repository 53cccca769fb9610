"""The sink contract, run against every sink (Pangea against a loopback upstream, Kafka against the
real broker) through the one delivery driver: the same batch, the same promises.

* a delivered batch resolves every ack DELIVERED, each event reaching the upstream once;
* while a batch is retried its events are counted in ``gateway_delivery_in_flight_events``,
  and an upstream that stays unreachable leaves them ERRORED after ``max_attempts`` (never
  dead-lettered: the source keeps them);
* a stopped sink resolves a batch ERRORED at once.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from gateway.acks import Ack, AckStatus
from gateway.batching import Batch
from gateway.delivery.config import RetryConfig
from gateway.delivery.driver import DeliveryDriver
from gateway.event import Event
from gateway.sinks.kafka.config import KafkaSinkConfig
from gateway.sinks.kafka.sink import KafkaSink
from gateway.sinks.pangea.config import UpstreamConfig
from gateway.sinks.pangea.sink import PangeaSink
from gateway.telemetry.metrics import Metrics
from tests.integration.sinks.upstream_stub import AckLog, RecordingDeadLetters, SleepRecorder, UpstreamStub
from tests.kafka_broker import read_topic
from tests.support.accounting import sample_sum
from tests.support.procs import free_port

TOKEN = "pts_contract_token"
DEST = "contract"


@dataclass
class Rig:
    driver: DeliveryDriver[Any, Any]
    metrics: Metrics
    dead: RecordingDeadLetters
    sleep: SleepRecorder
    delivered: Callable[[int], Awaitable[list[str]]]
    """The messages the upstream holds, once it holds ``n`` (or after a short wait)."""


SinkKind = Callable[[bool], Awaitable[Rig]]


@pytest.fixture(params=["pangea", "kafka"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[SinkKind]:
    made: list[DeliveryDriver[Any, Any]] = []
    stubs: list[UpstreamStub] = []

    async def factory(reachable: bool) -> Rig:
        metrics, dead, sleep = Metrics(), RecordingDeadLetters(), SleepRecorder()
        retry = RetryConfig(initial_backoff_secs=0.01, max_backoff_secs=0.02, max_attempts=3)
        sink: Any
        delivered: Callable[[int], Awaitable[list[str]]]
        if request.param == "pangea":
            stub = UpstreamStub(tokens=(TOKEN,))
            await stub.start()
            stubs.append(stub)
            url = stub.base_url if reachable else f"http://127.0.0.1:{free_port()}"
            sink = PangeaSink(DEST, None, UpstreamConfig(url=url, token=SecretStr(TOKEN)), metrics, dead)

            async def delivered(n: int) -> list[str]:
                return [e["event"]["message"] for s in stub.seen("/v2/log") for e in s.json["events"]]

        else:
            bootstrap = request.getfixturevalue("kafka_bootstrap") if reachable else f"127.0.0.1:{free_port()}"
            topic = f"contract.{uuid.uuid4().hex[:8]}"
            sink = KafkaSink(
                DEST,
                KafkaSinkConfig(type="kafka", bootstrap_servers=bootstrap, topic=topic, produce_timeout_secs=2),
            )

            async def delivered(n: int) -> list[str]:
                records = await read_topic(bootstrap, topic, n + 1, timeout=2.0)
                return [orjson.loads(r.value)["event"]["message"] for r in records]  # type: ignore[attr-defined]

        driver: DeliveryDriver[Any, Any] = DeliveryDriver(sink, retry, metrics, dead, sleep=sleep)
        await driver.start()
        made.append(driver)
        return Rig(driver, metrics, dead, sleep, delivered)

    yield factory
    for d in made:
        await d.stop()
    for s in stubs:
        await s.stop()


def batch(acks: AckLog, n: int) -> Batch:
    events = [
        Event(orjson.dumps({"event": {"message": f"m{i}", "actor": "contract"}}), Ack(acks, i), "src", f"id-{i}")
        for i in range(n)
    ]
    return Batch(DEST, events)


async def test_a_delivered_batch_resolves_every_ack_and_reaches_the_upstream_once(make: SinkKind) -> None:
    rig = await make(True)
    acks = AckLog()
    await rig.driver.send(batch(acks, 5))
    assert [acks.by_key[i][0] for i in range(5)] == [AckStatus.DELIVERED] * 5
    assert acks.resolutions == 5
    assert sorted(await rig.delivered(5)) == [f"m{i}" for i in range(5)]
    assert sample_sum(rig.metrics.registry, "gateway_events_forwarded_total", destination=DEST) == 5
    assert rig.metrics.registry.get_sample_value("gateway_delivery_in_flight_events", {"destination": DEST}) == 0


async def test_an_unreachable_upstream_is_retried_counted_in_flight_then_errored_never_dead_lettered(
    make: SinkKind,
) -> None:
    rig = await make(False)
    acks = AckLog()
    seen_in_flight: list[float | None] = []
    record = rig.sleep.__call__

    async def sleep(delay: float) -> None:  # what the gauge reads while the batch waits to retry
        seen_in_flight.append(
            rig.metrics.registry.get_sample_value("gateway_delivery_in_flight_events", {"destination": DEST})
        )
        await record(delay)

    rig.driver._sleep = sleep
    await rig.driver.send(batch(acks, 4))
    assert [acks.by_key[i][0] for i in range(4)] == [AckStatus.ERRORED] * 4
    assert "after 3 attempts" in acks.by_key[0][1]
    assert seen_in_flight == [4, 4]  # two backoffs between three attempts, the batch counted in each
    assert rig.dead.letters == []
    retries = rig.metrics.registry.get_sample_value(
        "gateway_upstream_retries_total", {"destination": DEST, "reason": "network"}
    )
    assert retries == 2
    assert rig.metrics.registry.get_sample_value("gateway_delivery_in_flight_events", {"destination": DEST}) == 0
    # Given up on: counted dropped once each, under the vocabulary's reason (the sender resends them).
    assert sample_sum(rig.metrics.registry, "gateway_events_dropped_total", destination=DEST) == 4
    assert sample_sum(rig.metrics.registry, "gateway_events_dropped_total", reason="retries_exhausted") == 4


async def test_a_stopped_sink_resolves_a_batch_errored_at_once(make: SinkKind) -> None:
    rig = await make(True)
    await rig.driver.stop()
    acks = AckLog()
    await rig.driver.send(batch(acks, 2))
    assert [acks.by_key[i] for i in range(2)] == [(AckStatus.ERRORED, "sink not running")] * 2
    assert sample_sum(rig.metrics.registry, "gateway_events_dropped_total", reason="sink_stopped") == 2
