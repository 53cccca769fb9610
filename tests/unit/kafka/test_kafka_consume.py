"""Messages → events without a broker: formats, mapping, poison routing, tracker registration."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from aiokafka.structs import ConsumerRecord, TopicPartition

from gateway.acks import Ack, AckStatus
from gateway.event import Event
from gateway.sources.kafka.offsets import PartitionTracker
from gateway.sources.kafka.source import KafkaSource, subscription_pattern
from tests.integration.kafka.harness import MemoryDeadLetters, RecordingSink, source_config

TP = TopicPartition("audit", 0)


def record(offset: int, value: bytes | None, key: bytes | None = None, headers: Any = ()) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord("audit", 0, offset, 0, 0, key, value, None, 0, 0, headers)


def new_source(**cfg: Any) -> KafkaSource:
    """A source on a standard-schema destination with a memory buffer; never started."""
    from gateway.buffer.memory import MemoryBuffer
    from gateway.config import DestinationConfig
    from gateway.normalize.schema import Schema
    from gateway.pipeline import Destination
    from gateway.telemetry.metrics import Metrics

    metrics = Metrics()
    dest = Destination(
        "default", DestinationConfig(), MemoryBuffer("default", 100, 10**6, metrics), RecordingSink(),
        Schema.standard(), metrics, 1,
    )  # fmt: skip
    return KafkaSource("app", source_config("127.0.0.1:1", "audit", "g", **cfg), dest, metrics, MemoryDeadLetters())


async def consume(
    values: list[bytes | None], **cfg: Any
) -> tuple[list[dict[str, Any]], list[Any], PartitionTracker, KafkaSource]:
    src = new_source(**cfg)
    tracker = PartitionTracker("audit", 0)
    out: list[Event] = []
    src._consume(
        TP, [record(i, v, b"key-%d" % i, [("tenant", b"t%d" % i)]) for i, v in enumerate(values)], tracker, out
    )
    jobs = list(src.dlq._queue)
    for e in out:
        assert e.ack.receiver is tracker and e.source == "app"
    return [orjson.loads(e.item)["event"] for e in out], jobs, tracker, src


@pytest.mark.parametrize(
    "value",
    [
        b'{"event": {"message": "a"}}',
        b'{"message": "a"}',
        b'  {"event": {"message": "a"}}\n',
        b'\xef\xbb\xbf{"event": {"message": "a"}}',  # a BOM: the vendor path
        b'[{"event": {"message": "a"}}]',  # an array: the vendor path
        b'{"events": [{"event": {"message": "a"}}]}',  # a /v2/log body
    ],
)
async def test_pangea_values_in_every_accepted_shape_become_the_same_event(value: bytes) -> None:
    events, jobs, tracker, _ = await consume([value])
    assert events == [{"message": "a"}] and jobs == []
    assert tracker.busy == 1 and tracker.committable() == 0


async def test_a_value_with_several_records_is_committed_once_all_are_delivered() -> None:
    value = b'{"message": "a"}\n{"message": "b"}\n{"message": "c"}'
    events, _, tracker, _ = await consume([value])
    assert [e["message"] for e in events] == ["a", "b", "c"]
    assert tracker.busy == 3


async def test_raw_values_become_the_message_and_key_and_headers_are_mapped() -> None:
    events, _, _, _ = await consume(
        [b"user alice logged in\n", b"\xffbinary"],
        format="raw",
        key_field="actor",
        header_fields={"tenant": "tenant_id"},
    )
    assert events == [
        {"message": "user alice logged in", "actor": "key-0", "tenant_id": "t0"},
        {"message": "\\xffbinary", "actor": "key-1", "tenant_id": "t1"},
    ]


async def test_poison_values_are_queued_for_the_dead_letter_topic_with_their_reason() -> None:
    values = [
        b"{broken",
        None,
        b'{"event": {"actor": "no message"}}',
        b'{"event": {"message": "ok"}}',
        b'[{"message": "fine"}, {"nope": 1}]',
    ]
    events, jobs, tracker, _ = await consume(values)
    assert [e["message"] for e in events] == ["ok", "fine"]
    assert [(j.offset, j.reason) for j in jobs] == [
        (0, "decode_error"),
        (1, "decode_error"),
        (2, "invalid_event"),
        (4, "invalid_event"),
    ]
    assert jobs[0].value == b"{broken" and jobs[0].key == b"key-0" and jobs[0].headers == [("tenant", b"t0")]
    assert "message" in jobs[2].detail
    # nothing is committable until the dead letters are written and the events delivered
    assert tracker.committable() == 0
    for j in jobs:
        j.finish(True)
    assert tracker.committable() == 3  # offset 3 ("ok") and 4's good record are still in flight


async def test_restrictions_refuse_as_admission_does_and_every_record_is_counted_received() -> None:
    values = [
        b'{"event": {"message": "a", "tenant_id": "t1"}}',
        b'{"event": {"message": "b", "tenant_id": "t2"}}',
        b'{"event": {"message": "c"}}',
        b"{broken",
    ]
    events, jobs, _, src = await consume(values, restrictions={"tenant_id": ["t1"]})
    assert [e["message"] for e in events] == ["a"]
    assert [(j.offset, j.reason) for j in jobs] == [
        (1, "forbidden_field_value"),
        (2, "forbidden_field_value"),
        (3, "decode_error"),
    ]
    detail = "'tenant_id' holds a value that is not allowed"
    assert orjson.loads(jobs[0].detail) == [{"code": "ForbiddenFieldValue", "detail": detail, "source": "/tenant_id"}]
    sample = src.metrics.registry.get_sample_value
    pair = {"source": "app", "destination": "default"}
    assert sample("gateway_events_received_total", pair) == 4  # the refused ones too
    rejected = {**pair, "stage": "intake"}
    assert sample("gateway_events_rejected_total", {**rejected, "reason": "forbidden_field_value"}) == 2
    assert sample("gateway_events_rejected_total", {**rejected, "reason": "decode_error"}) == 1


async def test_an_upstream_rejection_is_not_dead_lettered_again_to_the_topic_and_its_offset_is_done() -> None:
    value = b'{"event": {"message": "refused"}}'
    _, jobs, tracker, src = await consume([value])
    Ack(tracker, 0).resolve(AckStatus.REJECTED, [{"code": "X", "detail": "no", "source": "/event"}])
    assert jobs == [] and not src.dlq._queue  # the delivery driver wrote its one dead letter
    assert tracker.committable() == 1 and tracker.busy == 0


def test_a_topic_pattern_never_matches_dead_letter_topics() -> None:
    p = re.compile(subscription_pattern(r"audit\..*", "quarantine"))
    assert p.match("audit.events")
    assert not p.match("audit.events.dlq")
    assert not p.match("quarantine")
    assert not p.match("other")


async def test_poison_between_fast_path_messages_keeps_every_offset_in_order() -> None:
    values = [
        b'{"event":{"message":"a","timestamp":"2026-11-22T03:04:05.123Z"}}',
        b'{"message":"b"}',
        b'{"event":{"message":"c","colour":"red"}}',  # unknown field: the full path words the error
        b'{"event":{"message":"d","actor":7}}',  # coerced by the full path
        b'{"event":{"message":"e"}}',
    ]
    events, jobs, tracker, _ = await consume(values)
    assert events == [
        {"message": "a", "timestamp": "2026-11-22T03:04:05.123000Z"},
        {"message": "b"},
        {"message": "d", "actor": "7"},
        {"message": "e"},
    ]
    assert [(j.offset, j.reason) for j in jobs] == [(2, "invalid_event")]
    assert "colour" in jobs[0].detail
    assert tracker.last_tracked == 4 and tracker.busy == 5 and tracker.committable() == 0


async def test_refetched_offsets_are_not_tracked_twice() -> None:
    src = new_source()
    tracker = PartitionTracker("audit", 0)
    out: list[Event] = []
    first = [record(i, b'{"message":"m%d"}' % i) for i in range(3)]
    src._consume(TP, first, tracker, out)
    src._consume(TP, [*first[1:], record(3, b'{"message":"m3"}')], tracker, out)
    assert [orjson.loads(e.item)["event"]["message"] for e in out] == ["m0", "m1", "m2", "m3"]
    assert [e.ack.key for e in out] == [0, 1, 2, 3] and tracker.busy == 4


async def test_a_producer_signed_value_keeps_its_signature_unless_mapping_would_change_it() -> None:
    value = b'{"event":{"message":"m","actor":"a"},"signature":"c2ln","public_key":"{\\"key\\":\\"k\\"}"}'
    src = new_source()
    out: list[Event] = []
    src._consume(TP, [record(0, value)], PartitionTracker("audit", 0), out)
    assert [orjson.loads(e.item) for e in out] == [
        {"event": {"message": "m", "actor": "a"}, "signature": "c2ln", "public_key": '{"key":"k"}'}
    ]

    events, jobs, _, _ = await consume([value], key_field="tenant_id")  # consume() gives every record a key
    assert events == []
    [job] = jobs
    assert job.reason == "invalid_event" and "tenant_id" in job.detail and "signature" in job.detail
