"""``deadletter: {type: kafka}``: refused events go to a topic, or to the local file when Kafka cannot take them."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from gateway.kafka.deadletter import HEADER_REASON, HEADER_SOURCE
from gateway.sinks.deadletter.base import DeadLetter
from gateway.sinks.deadletter.config import DeadLetterConfig
from gateway.sinks.deadletter.kafka import KafkaDeadLetterStore
from gateway.sinks.deadletter.local import DeadLetterDb, LocalDeadLetterStore
from gateway.telemetry.metrics import Metrics
from tests.kafka_broker import create_topic, read_topic
from tests.support.procs import free_port


def letters() -> list[DeadLetter]:
    return [
        DeadLetter("auth0", "default", "invalid_event", "[]", b'{"log_id":"1"}', 1.0),
        DeadLetter("sdk", "default", "upstream_rejected", "[]", b'{"event":{}}', 2.0),
    ]


@pytest.fixture
async def topic(kafka_bootstrap: str) -> str:
    name = f"dead.{uuid.uuid4().hex[:10]}"
    await create_topic(kafka_bootstrap, name, 1)
    return name


async def test_dead_letters_are_produced_with_their_reason_and_source(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    metrics = Metrics()
    config = DeadLetterConfig(type="kafka", topic=topic, bootstrap_servers=kafka_bootstrap)
    store = KafkaDeadLetterStore(config, LocalDeadLetterStore(tmp_path / "dl.db", metrics), metrics)
    await store.start()
    await store.write(letters())
    await store.close()
    msgs = await read_topic(kafka_bootstrap, topic, 2)
    got = sorted((m.value, dict(m.headers)[HEADER_REASON], dict(m.headers)[HEADER_SOURCE]) for m in msgs)  # type: ignore[attr-defined]
    assert got == [(b'{"event":{}}', b"upstream_rejected", b"sdk"), (b'{"log_id":"1"}', b"invalid_event", b"auth0")]
    assert (
        metrics.registry.get_sample_value("gateway_deadletters_total", {"source": "sdk", "reason": "upstream_rejected"})
        == 1
    )
    with DeadLetterDb(tmp_path / "dl.db") as db:
        assert db.list() == []  # nothing needed the fallback


async def test_dead_letters_go_to_the_local_file_when_the_brokers_are_away(tmp_path: Path) -> None:
    metrics = Metrics()
    config = DeadLetterConfig(
        type="kafka", topic="dead", bootstrap_servers=f"127.0.0.1:{free_port()}", produce_timeout_secs=1
    )
    store = KafkaDeadLetterStore(config, LocalDeadLetterStore(tmp_path / "dl.db", metrics), metrics)
    await store.start()  # does not fail: the first write tries again
    await store.write(letters())
    await store.close()
    with DeadLetterDb(tmp_path / "dl.db") as db:
        assert [r.reason for r in db.list()] == ["invalid_event", "upstream_rejected"]
    assert (
        metrics.registry.get_sample_value("gateway_deadletters_total", {"source": "auth0", "reason": "invalid_event"})
        == 1
    )
