"""``buffer: {type: kafka}``: replicas answer once the brokers have the events; a consumer group forwards them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import orjson
import pytest
from prometheus_client import generate_latest

from gateway.acks import AckGroup, AckStatus
from gateway.buffer.config import BufferConfig
from gateway.buffer.disk import SpoolUnavailable
from gateway.buffer.kafka import HEADER_SOURCE, KafkaBuffer
from gateway.event import Event
from gateway.telemetry.metrics import Metrics
from tests.integration.kafka.harness import running_source, source_config
from tests.kafka_broker import create_topic, kafka_source_yaml, read_topic
from tests.support.accounting import assert_accounting, group_handed_off, scrape, scrape_and_check
from tests.support.procs import free_port, gateway, local_audit, stored_messages


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
    metrics = Metrics()
    buf = KafkaBuffer("default", config(f"127.0.0.1:{free_port()}", "t", produce_timeout_secs=1), metrics)
    group, events = make_events(3)
    metrics.account("auth0", "default").received(3)  # as intake counts them before the put
    with pytest.raises(SpoolUnavailable) as info:
        await buf.put(events)
    assert info.value.http_status == 503 and info.value.retry_after_secs
    assert group.pending == 3
    # Nothing handed off: the events stay in flight until intake counts them refused (its 503).
    acc = assert_accounting(generate_latest(metrics.registry).decode())
    assert acc[("auth0", "default")]["handed_off"] == 0
    assert acc[("auth0", "default")]["in_flight"] == 3
    await buf.aclose()


async def test_events_count_handed_off_for_their_pair_once_the_brokers_acknowledged_them(
    kafka_bootstrap: str, topic: str
) -> None:
    metrics = Metrics()
    buf = KafkaBuffer("audit", config(kafka_bootstrap, topic), metrics, local_sources=["from-kafka"])
    metrics.account("auth0", "audit").received(5)
    metrics.account("from-kafka", "audit").received(2)
    _g, events = make_events(5)
    _g2, kept = make_events(2, source="from-kafka", tag="local")
    await buf.put(events)
    await buf.put(kept)
    acc = assert_accounting(generate_latest(metrics.registry).decode())
    assert acc[("auth0", "audit")]["handed_off"] == 5
    assert acc[("auth0", "audit")]["in_flight"] == 0
    # A Kafka source's events are kept in memory for this instance's delivery: still in flight.
    assert acc[("from-kafka", "audit")]["handed_off"] == 0
    assert acc[("from-kafka", "audit")]["in_flight"] == 2
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


TOKEN = "pts_kafka_buffer_token"


def gateway_config(tmp: Path, upstream: str, bootstrap: str, topic: str, group: str) -> Path:
    """A webhook source producing to the Kafka buffer topic, and that topic's Kafka source."""
    cfg = tmp / "gateway.yaml"
    cfg.write_text(
        f"""
shutdown_timeout_secs: 10
upstream:
  url: {upstream}
  token: ${{UPSTREAM_TOKEN}}
  retry: {{initial_backoff_secs: 0.05, max_backoff_secs: 1.0}}
  poll: {{initial_delay_secs: 0.05, max_delay_secs: 0.5}}
buffer: {{type: kafka, topic: {topic}, bootstrap_servers: {bootstrap}}}
destinations:
  default:
    schema: standard
    batch: {{max_events: 1000, timeout_secs: 0.05}}
sources:
  sdk:
    type: webhook
    format: pangea
    destination: default
{kafka_source_yaml("accepted", bootstrap, topic, group)}"""
    )
    return cfg


async def quiescent_accounts(admin: str, deadline_secs: float) -> dict[tuple[str, str], dict[str, float]]:
    """The checked terms once nothing is in flight (the consumer commits and settles after delivery)."""
    end = time.monotonic() + deadline_secs
    while True:
        try:
            return await scrape_and_check(admin, quiescent=True)
        except AssertionError:
            if time.monotonic() > end:
                raise
        await asyncio.sleep(0.2)


async def test_a_webhook_instance_with_the_kafka_buffer_balances_its_accounts_with_nothing_in_flight(
    tmp_path: Path, kafka_bootstrap: str, topic: str
) -> None:
    n, per_request = 300, 50
    with local_audit(tmp_path, TOKEN) as la:
        cfg = gateway_config(tmp_path, la.url("local_audit"), kafka_bootstrap, topic, f"buf-{uuid.uuid4().hex[:8]}")
        with gateway(tmp_path, config=cfg, env={"UPSTREAM_TOKEN": TOKEN}) as gw:
            messages = [f"handoff-{i}" for i in range(n)]
            async with aiohttp.ClientSession() as s:
                for i in range(0, n, per_request):
                    body = orjson.dumps({"events": [{"event": {"message": m}} for m in messages[i : i + per_request]]})
                    headers = {"Content-Type": "application/json"}
                    async with s.post(gw.url() + "/v2/log", data=body, headers=headers) as r:
                        assert r.status == 200, await r.text()
            end = time.monotonic() + 60
            while len(stored_messages(tmp_path / "local-audit.db")) < n:
                assert gw.popen.poll() is None, gw.log()[-3000:]
                assert time.monotonic() < end, "not delivered upstream in time"
                await asyncio.sleep(0.2)
            acc = await quiescent_accounts(gw.url("admin"), 30)
            handed, received = group_handed_off([await scrape(gw.url("admin"))], "accepted")
    assert acc[("sdk", "default")]["received"] == n
    assert acc[("sdk", "default")]["handed_off"] == n
    assert acc[("sdk", "default")]["forwarded"] == 0
    assert acc[("accepted", "default")]["received"] == n
    assert acc[("accepted", "default")]["forwarded"] + acc[("accepted", "default")]["duplicates"] == n
    assert handed == received == n
    assert Counter(stored_messages(tmp_path / "local-audit.db")) == Counter(messages)


async def test_a_webhook_request_the_kafka_buffer_cannot_produce_is_answered_503_and_counted_refused(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(
        f"""
upstream:
  url: http://127.0.0.1:{free_port()}
  token: ${{UPSTREAM_TOKEN}}
buffer: {{type: kafka, topic: accepted, bootstrap_servers: 127.0.0.1:{free_port()}, produce_timeout_secs: 1}}
destinations:
  default: {{schema: standard}}
sources:
  sdk: {{type: webhook, format: pangea, destination: default}}
"""
    )
    with gateway(tmp_path, config=cfg, env={"UPSTREAM_TOKEN": TOKEN}) as gw:
        body = orjson.dumps({"events": [{"event": {"message": f"lost-{i}"}} for i in range(4)]})
        async with (
            aiohttp.ClientSession() as s,
            s.post(gw.url() + "/v2/log", data=body, headers={"Content-Type": "application/json"}) as r,
        ):
            assert r.status == 503 and r.headers.get("Retry-After"), await r.text()
        text = await scrape(gw.url("admin"))
        acc = assert_accounting(text, quiescent=True)
    # The gateway's own fault (its buffer's brokers), not a full buffer.
    assert 'gateway_events_refused_total{destination="default",reason="unavailable",source="sdk"} 4.0' in text
    assert 'gateway_intake_requests_refused_total{reason="unavailable",source="sdk"} 1.0' in text
    assert acc[("sdk", "default")]["received"] == 4
    assert acc[("sdk", "default")]["refused"] == 4
    assert acc[("sdk", "default")]["handed_off"] == 0
