"""Issue 13: the Kafka source admits through the webhook routes' admission path, and its poison
topic and the dead-letter store of ``type: kafka`` write through one dead-letter producer."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson

from gateway.delivery.deadletter import DeadLetter
from gateway.kafka.config import KafkaSecurity
from gateway.kafka.deadletter import (
    HEADER_DETAIL,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_SOURCE,
    HEADER_TOPIC,
)
from gateway.kafka.producer import producer_kwargs
from gateway.sinks.deadletter.config import DeadLetterConfig
from gateway.sinks.deadletter.kafka import KafkaDeadLetterStore
from gateway.sinks.deadletter.local import LocalDeadLetterStore
from gateway.sources.kafka.deadletter_topic import DeadLetterJob, DeadLetterTopic
from gateway.sources.kafka.offsets import PartitionTracker
from gateway.telemetry.metrics import Metrics
from tests.integration.kafka.harness import RecordingSink
from tests.kafka_broker import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS, create_topic, produce, read_topic
from tests.support.procs import gateway

AUTH = "Bearer tok_SHARED_ADMISSION_71c2"
ORIGIN = {HEADER_TOPIC, HEADER_PARTITION, HEADER_OFFSET}


def post_refused(url: str, records: list[dict[str, Any]]) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(records).encode(), method="POST", headers={"Authorization": AUTH})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def without_source(errors: list[dict[str, str]]) -> list[tuple[str, str]]:
    """An error's code and wording; its JSON pointer differs (a request body's index, a message's record)."""
    return [(e["code"], e["detail"]) for e in errors]


async def test_a_kafka_message_and_a_webhook_request_are_refused_by_the_same_restriction_with_the_same_code_and_detail(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    topic = f"shared.{uuid.uuid4().hex[:10]}"
    await create_topic(kafka_bootstrap, topic, 1)
    cfg = tmp_path / "g.yaml"
    cfg.write_text(
        "destinations: {audit: {schema: standard}}\n"
        "sources:\n"
        "  hook: {type: webhook, format: json, path: /hook, destination: audit,"
        f" auth: {{value: '{AUTH}'}}, restrictions: {{tenant_id: [t1]}}}}\n"
        f"  k: {{type: kafka, bootstrap_servers: '{kafka_bootstrap}', topics: [{topic}], group_id: g-{topic},"
        f" format: json, destination: audit, restrictions: {{tenant_id: [t1]}},"
        f" session_timeout_ms: {SESSION_TIMEOUT_MS}, heartbeat_interval_ms: {HEARTBEAT_INTERVAL_MS},"
        " drain_timeout_secs: 2}\n"
    )
    refused = {"message": "from elsewhere", "tenant_id": "t2"}
    with gateway(tmp_path, config=cfg) as gw:
        status, answer = await asyncio.to_thread(post_refused, gw.url() + "/hook", [refused])
        await produce(kafka_bootstrap, topic, [orjson.dumps(refused), orjson.dumps({**refused, "tenant_id": "t1"})])
        poison = await read_topic(kafka_bootstrap, f"{topic}.dlq", 1, timeout=60)
    assert status == 403 and answer["status"] == "ForbiddenFieldValue"
    hook_errors = answer["result"]["errors"]
    assert hook_errors[0]["source"] == "/0/tenant_id"
    assert len(poison) == 1
    headers = dict(poison[0].headers)  # type: ignore[attr-defined]
    assert headers[HEADER_REASON] == b"forbidden_field_value"
    kafka_errors = orjson.loads(headers[HEADER_DETAIL])
    assert kafka_errors[0]["source"] == "/tenant_id"
    assert (
        without_source(kafka_errors)
        == without_source(hook_errors)
        == [("ForbiddenFieldValue", "'tenant_id' holds a value that is not allowed")]
    )


async def test_the_kafka_dead_letter_store_and_the_poison_topic_write_the_same_headers(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    stored, poisoned, source_topic = (f"{what}.{uuid.uuid4().hex[:10]}" for what in ("dead", "poison", "src"))
    for t in (stored, poisoned):
        await create_topic(kafka_bootstrap, t, 1)
    metrics = Metrics()
    detail = '[{"code":"ForbiddenFieldValue","detail":"not allowed","source":"/tenant_id"}]'
    store = KafkaDeadLetterStore(
        DeadLetterConfig(type="kafka", topic=stored, bootstrap_servers=kafka_bootstrap),
        LocalDeadLetterStore(tmp_path / "dl.db", metrics),
        metrics,
    )
    await store.write([DeadLetter("k", "audit", "forbidden_field_value", detail, b'{"tenant_id":"t2"}', time.time())])
    await store.close()
    kwargs = producer_kwargs(kafka_bootstrap, KafkaSecurity(), path="test")
    topic = DeadLetterTopic("k", "audit", poisoned, kwargs, metrics, RecordingSink())
    tracker = PartitionTracker(source_topic, 3)
    tracker.track(41, 1)
    topic.start()
    topic.put(
        DeadLetterJob(
            tracker, source_topic, 3, 41, b"key", b'{"tenant_id":"t2"}', [("tenant", b"t2")], "forbidden_field_value",
            detail,
        )
    )  # fmt: skip
    await topic.stop(asyncio.get_running_loop().time() + 30)
    assert tracker.committable() == 42  # written, so committed past
    (from_store,) = await read_topic(kafka_bootstrap, stored, 1)
    (from_topic,) = await read_topic(kafka_bootstrap, poisoned, 1)
    store_headers = dict(from_store.headers)  # type: ignore[attr-defined]
    topic_headers = dict(from_topic.headers)  # type: ignore[attr-defined]
    # The poison message keeps its own headers in front and says where it was consumed; the rest is one vocabulary.
    assert tuple(from_topic.headers[0]) == ("tenant", b"t2")  # type: ignore[attr-defined]
    assert set(topic_headers) - {"tenant"} == set(store_headers) | ORIGIN
    for name in (HEADER_REASON, HEADER_DETAIL, HEADER_SOURCE):
        assert topic_headers[name] == store_headers[name], name
    assert (topic_headers[HEADER_TOPIC], topic_headers[HEADER_PARTITION], topic_headers[HEADER_OFFSET]) == (
        source_topic.encode(),
        b"3",
        b"41",
    )
