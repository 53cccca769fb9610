"""``buffer: {type: kafka}``: replicas answer once the brokers have the events; a consumer group forwards them."""

from __future__ import annotations

import uuid

import orjson
import pytest

from gateway.acks import AckGroup, AckStatus
from gateway.buffer.config import BufferConfig
from gateway.buffer.disk import SpoolUnavailable
from gateway.buffer.kafka import HEADER_SOURCE, KafkaBuffer
from gateway.event import Event
from gateway.telemetry.metrics import Metrics
from tests.integration.kafka.harness import running_source, source_config
from tests.kafka_broker import create_topic, read_topic
from tests.support.procs import free_port


def config(bootstrap: str, topic: str, **kw: object) -> BufferConfig:
    return BufferConfig.model_validate({"type": "kafka", "topic": topic, "bootstrap_servers": bootstrap, **kw})


def make_events(n: int, source: str = "auth0", tag: str = "k") -> tuple[AckGroup, list[Event]]:
    g = AckGroup(n)
    return g, [
        Event(orjson.dumps({"event": {"message": f"{tag}-{i}"}}), g.ack(i), source, f"{tag}-{i}") for i in range(n)
    ]


@pytest.fixture
async def topic(kafka_bootstrap: str) -> str:
    name = f"accepted.{uuid.uuid4().hex[:10]}"
    await create_topic(kafka_bootstrap, name, 3)
    return name


async def test_intake_events_are_acknowledged_once_the_brokers_have_them(kafka_bootstrap: str, topic: str) -> None:
    buf = KafkaBuffer("default", config(kafka_bootstrap, topic), Metrics())
    group, events = make_events(5)
    await buf.put(events)
    assert group.done and group.status == AckStatus.DELIVERED
    msgs = await read_topic(kafka_bootstrap, topic, 5)
    assert sorted(m.value for m in msgs) == sorted(e.item for e in events)  # type: ignore[attr-defined]
    assert all((HEADER_SOURCE, b"auth0") in m.headers for m in msgs)  # type: ignore[attr-defined]
    assert buf.events == 0  # nothing is held by this replica
    await buf.aclose()


async def test_a_consumer_group_with_the_pangea_format_forwards_what_replicas_produced(
    kafka_bootstrap: str, topic: str
) -> None:
    replicas = [KafkaBuffer("default", config(kafka_bootstrap, topic), Metrics()) for _ in range(2)]
    produced: list[bytes] = []
    for n, replica in enumerate(replicas):
        _g, events = make_events(20, tag=f"r{n}")
        await replica.put(events)
        produced += [e.item for e in events]
    async with running_source(source_config(kafka_bootstrap, topic, f"fwd-{uuid.uuid4().hex[:6]}")) as run:
        await run.sink.wait_distinct(40)
        assert sorted(run.sink.messages) == sorted(orjson.loads(i)["event"]["message"] for i in produced)
    for replica in replicas:
        await replica.aclose()


async def test_unreachable_brokers_answer_503_and_acknowledge_nothing() -> None:
    buf = KafkaBuffer("default", config(f"127.0.0.1:{free_port()}", "t", produce_timeout_secs=1), Metrics())
    group, events = make_events(3)
    with pytest.raises(SpoolUnavailable) as info:
        await buf.put(events)
    assert info.value.http_status == 503 and info.value.retry_after_secs
    assert group.pending == 3
    await buf.aclose()


async def test_events_of_kafka_sources_are_buffered_in_memory_not_produced_again(kafka_bootstrap: str) -> None:
    buf = KafkaBuffer("default", config(kafka_bootstrap, "unused"), Metrics(), local_sources=["from-kafka"])
    _g, events = make_events(4, source="from-kafka")
    await buf.put(events)
    assert buf.events == 4
    assert await buf.take(10, 1_000_000, 0.01) == events
    await buf.aclose()


def test_the_kafka_buffer_needs_a_topic_and_brokers() -> None:
    with pytest.raises(ValueError, match="topic and bootstrap_servers"):
        BufferConfig.model_validate({"type": "kafka"})
