"""KafkaSource in process against a real broker: delivery, commits, poison, backpressure, rebalance."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from gateway.kafka.deadletter import (
    HEADER_DETAIL,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_TOPIC,
)
from tests.integration.kafka.harness import RecordingSink, Running, pangea_values, running_source, source_config
from tests.kafka_broker import committed_and_end_offsets, produce, read_topic


async def wait_committed_to_end(bootstrap: str, group: str, topic: str, timeout: float = 30.0) -> dict[int, int]:
    loop = asyncio.get_running_loop()
    end_at = loop.time() + timeout
    while True:
        committed, end = await committed_and_end_offsets(bootstrap, group, topic)
        done = {p: c or 0 for p, c in committed.items()}  # nothing committed on an empty partition
        if done == end or loop.time() > end_at:
            assert done == end, (committed, end)
            return end
        await asyncio.sleep(0.2)


async def test_every_message_of_six_partitions_is_delivered_once_and_committed_to_the_end(
    kafka_bootstrap: str, topic: str, group_id: str
) -> None:
    n = 20_000
    await produce(kafka_bootstrap, topic, pangea_values(n), partitions=6)
    async with running_source(source_config(kafka_bootstrap, topic, group_id)) as run:
        await run.sink.wait_distinct(n)
        end = await wait_committed_to_end(kafka_bootstrap, group_id, topic)
        counts = run.sink.counts()
        assert len(counts) == n and max(counts.values()) == 1
        assert sum(end.values()) == n and all(v > 0 for v in end.values())
        assert run.metric("gateway_kafka_messages_consumed_total", source="app", topic=topic) == n
        assert run.metric("gateway_kafka_commits_total", source="app", outcome="ok") >= 1
        for p in range(6):
            assert run.metric("gateway_kafka_consumer_lag", source="app", topic=topic, partition=str(p)) == 0


async def test_bare_events_raw_values_and_key_and_header_mapping(
    kafka_bootstrap: str, topic: str, group_id: str
) -> None:
    values = [orjson.dumps({"message": f"bare{i}", "actor": "a"}) for i in range(6)]
    await produce(
        kafka_bootstrap,
        topic,
        values,
        keys=[f"key{i}".encode() for i in range(6)],
        headers=[[("tenant", f"t{i}".encode()), ("other", b"x")] for i in range(6)],
        partitions=6,
    )
    cfg = source_config(kafka_bootstrap, topic, group_id, key_field="target", header_fields={"tenant": "tenant_id"})
    async with running_source(cfg) as run:
        await run.sink.wait_distinct(6)
        by_msg = {e["message"]: e for e in run.sink.items}
        for i in range(6):
            e = by_msg[f"bare{i}"]
            assert e["target"] == f"key{i}" and e["tenant_id"] == f"t{i}" and e["actor"] == "a"
            assert "other" not in e


async def test_poison_messages_go_to_the_dead_letter_topic_and_the_partition_keeps_flowing_past_rejected_ones(
    kafka_bootstrap: str, topic: str, group_id: str
) -> None:
    good = pangea_values(300)
    values = [
        *good[:100],
        b"{not json",  # undecodable
        orjson.dumps({"event": {"actor": "no message field"}}),  # invalid for the schema
        orjson.dumps({"event": {"message": "reject-me"}}),  # refused by the upstream
        *good[100:],
    ]
    await produce(kafka_bootstrap, topic, values, keys=[b"same-key"] * len(values))  # one partition
    sink = RecordingSink()
    sink.reject = lambda e: e["message"] == "reject-me"
    async with running_source(source_config(kafka_bootstrap, topic, group_id), sink) as run:
        await sink.wait_distinct(300)
        await wait_committed_to_end(kafka_bootstrap, group_id, topic)
        assert "reject-me" not in sink.messages
        dlq = await read_topic(kafka_bootstrap, f"{topic}.dlq", 3, timeout=3.0)
        assert len(dlq) == 2  # the rejected event was dead-lettered by whoever rejected it, not here
        by_reason = {dict(m.headers)[HEADER_REASON].decode(): m for m in dlq}  # type: ignore[attr-defined]
        assert set(by_reason) == {"decode_error", "invalid_event"}
        assert by_reason["decode_error"].value == b"{not json"  # type: ignore[attr-defined]
        assert by_reason["decode_error"].key == b"same-key"  # type: ignore[attr-defined]
        h = dict(by_reason["invalid_event"].headers)  # type: ignore[attr-defined]
        assert b"message" in h[HEADER_DETAIL]
        assert h[HEADER_TOPIC] == topic.encode() and h[HEADER_OFFSET] == b"101"
        assert int(h[HEADER_PARTITION]) in range(6)
        for reason in ("decode_error", "invalid_event"):
            assert run.metric("gateway_kafka_deadlettered_total", source="app", reason=reason) == 1


async def test_a_stalled_upstream_pauses_the_partitions_and_bounds_the_buffer(
    kafka_bootstrap: str, topic: str, group_id: str
) -> None:
    n = 20_000
    await produce(kafka_bootstrap, topic, pangea_values(n), partitions=6)
    sink = RecordingSink()
    sink.flowing.clear()
    cfg = source_config(kafka_bootstrap, topic, group_id, max_poll_records=500)
    async with running_source(cfg, sink, max_events=4000) as run:
        await sink.wait_for(lambda: run.metric("gateway_kafka_paused_partitions", source="app") == 6)
        await asyncio.sleep(1.0)
        consumed = run.metric("gateway_kafka_messages_consumed_total", source="app", topic=topic)
        assert run.destination.buffer.events <= 4000
        assert consumed < 4000 + 4 * 1000 + 500 + 1  # buffer + in-flight batches + one poll
        sink.flowing.set()
        await sink.wait_distinct(n)
        assert run.metric("gateway_kafka_paused_partitions", source="app") == 0
        await wait_committed_to_end(kafka_bootstrap, group_id, topic)


async def test_errored_events_are_read_again_and_nothing_is_skipped(
    kafka_bootstrap: str, topic: str, group_id: str
) -> None:
    n = 3000
    await produce(kafka_bootstrap, topic, pangea_values(n), partitions=6)
    sink = RecordingSink()
    sink.fail_batches = 3
    async with running_source(source_config(kafka_bootstrap, topic, group_id), sink):
        await sink.wait_distinct(n)
        await wait_committed_to_end(kafka_bootstrap, group_id, topic)
    assert set(sink.messages) == {f"m{i}" for i in range(n)}


async def test_shutdown_with_a_stalled_upstream_commits_nothing_undelivered_and_a_restart_gets_it(
    kafka_bootstrap: str, topic: str, group_id: str
) -> None:
    n = 2000
    await produce(kafka_bootstrap, topic, pangea_values(n), partitions=6)
    first = RecordingSink()
    first.flowing.clear()
    cfg = source_config(kafka_bootstrap, topic, group_id)
    async with running_source(cfg, first) as run:
        await first.wait_for(
            lambda: run.metric("gateway_kafka_messages_consumed_total", source="app", topic=topic) == n
        )
        # Stop while nothing was delivered: release the sink only after the source stopped accepting.
        await run.source.stop_accepting()
        run.destination.sink.fail_batches = 10**6  # type: ignore[attr-defined]
    committed, _ = await committed_and_end_offsets(kafka_bootstrap, group_id, topic)
    assert all(c in (None, 0) for c in committed.values()), committed
    second = RecordingSink()
    async with running_source(cfg, second):
        await second.wait_distinct(n)
        await wait_committed_to_end(kafka_bootstrap, group_id, topic)


async def test_two_sources_in_one_group_split_the_partitions_and_take_over_when_one_stops(
    kafka_bootstrap: str, topic: str, group_id: str
) -> None:
    n = 30_000
    await produce(kafka_bootstrap, topic, pangea_values(n), partitions=6)
    cfg = source_config(kafka_bootstrap, topic, group_id, max_poll_records=200)
    a_sink, b_sink = RecordingSink(), RecordingSink()
    a_sink.delay = b_sink.delay = 0.05  # ~8,000 events/s each: the stream outlives the first stop
    small = {"max_events": 100, "timeout_secs": 0.02}
    async with running_source(cfg, b_sink, name="b", batch=small, max_events=2000) as b:
        async with running_source(cfg, a_sink, name="a", batch=small, max_events=2000) as a:
            await a_sink.wait_for(lambda: len(a.source.trackers) + len(b.source.trackers) == 6)
            await a_sink.wait_for(lambda: len(a.source.trackers) > 0 and len(b.source.trackers) > 0)
            assert set(a.source.trackers).isdisjoint(b.source.trackers)
            await a_sink.wait_for(lambda: len(a_sink.messages) > 1000)
        # a stopped mid-stream: b takes over all six partitions and finishes
        assert len(a_sink.messages) < n // 2, "a should have left before finishing its partitions"
        await b_sink.wait_for(lambda: len(b.source.trackers) == 6)
        await b_sink.wait_for(lambda: len(set(a_sink.messages) | set(b_sink.messages)) >= n)
        await wait_committed_to_end(kafka_bootstrap, group_id, topic)
        dups = len(a_sink.messages) + len(b_sink.messages) - n
        print(f"two consumers: a={len(a_sink.messages)} b={len(b_sink.messages)} duplicates={dups}")
        assert run_metric_revoked(b) >= 1


def run_metric_revoked(run: Running) -> float:
    return run.metric("gateway_kafka_rebalances_total", source="b", kind="revoked")


async def test_an_unreachable_broker_does_not_fail_start_and_stop_is_clean(caplog: pytest.LogCaptureFixture) -> None:
    from tests.support.procs import free_port

    address = f"127.0.0.1:{free_port()}"  # nothing listens there: every connection is refused
    cfg = source_config(address, "audit.events", "g-unreachable")
    caplog.set_level(logging.DEBUG, logger="gateway.sources.kafka.source")

    def unreachable_reports() -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.getMessage() == "kafka brokers unreachable; retrying"
            and getattr(r, "source", None) == "app"
            and address in str(getattr(r, "bootstrap_servers", ""))
        ]

    async with running_source(cfg) as run:
        # The source really tries: it reports the brokers unreachable, and tries again.
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 30
        while len(unreachable_reports()) < 2 and loop.time() < give_up:
            await asyncio.sleep(0.05)
        assert len(unreachable_reports()) >= 2, [r.getMessage() for r in caplog.records]
        # ... logged once as a warning, the retries at debug.
        assert [r.levelno for r in unreachable_reports()][:2] == [logging.WARNING, logging.DEBUG]
        # ... and what readiness reads says it is not connected.
        assert run.source.consumer is None and not run.source.trackers
    assert run.source.consumer is None
    task = run.source._task
    assert task is not None and task.done() and task.cancelled()  # the connect loop ended with stop
