"""The Kafka consumer-group source, at least once.

One :class:`KafkaSource` per configured ``type: kafka`` source.  It consumes its topics in
the configured consumer group with aiokafka (``enable_auto_commit=False``), turns each
message into events with the vendor format, and puts them in its destination's buffer.
Each event carries an ack from the :class:`~gateway.sources.kafka.offsets.PartitionTracker`
of its partition; offsets are committed only past messages whose events were all
delivered or dead-lettered, contiguously (see :mod:`gateway.sources.kafka.offsets`).

Flow control and failure handling:

* **Commits** every ``commit_interval_secs``, on revocation and on shutdown; never auto.
* **Backpressure**: at ``pause_high_watermark`` of the buffer (or a large dead-letter
  backlog) every assigned partition is paused (``gateway_kafka_paused_partitions``); they
  resume below ``resume_low_watermark``.  Consumed-but-unsubmitted records are at most one
  poll (``max_poll_records``), so memory is bounded by the buffer however far behind the
  group is.  While everything is paused the source does not poll (aiokafka would drop what
  it prefetched for the paused partitions, to fetch it again on resume) but for a keepalive
  poll every quarter of ``max_poll_interval_ms``, so the group does not evict it.
* **Records** reach the source as aiokafka decoded them, not wrapped in a ``ConsumerRecord``
  each (:mod:`gateway.sources.kafka.records`).
* **Rebalance** (eager): on revoke, fetching of the partitions has stopped; their events
  not yet in the buffer are dropped (acks ERRORED), in-flight acks are awaited up to
  ``drain_timeout_secs``, the contiguous delivered offsets are committed, and the trackers
  are discarded.  Events of a revoked partition still in the buffer cannot be taken out
  of it (the memory buffer has no per-partition removal): they are delivered late, but
  their acks resolve into the discarded tracker and are never committed, so the next owner
  reads them again (a duplicate, never a loss).  On assign, aiokafka starts from the
  committed offset.
* **Admission** is the webhook routes' (:class:`gateway.sources.intake.Admitter`): the same
  schema, ``restrictions``, signing, error codes, tap points and counts.
* **Poison** messages (undecodable → ``decode_error``; refused by admission → ``invalid_event``,
  or ``forbidden_field_value`` for a restriction, worded as the webhook's dead letter) go to the
  dead-letter topic (:mod:`gateway.sources.kafka.deadletter_topic`)
  and are then committed past: they never stall a partition.  An event the upstream refuses
  (ack REJECTED) was dead-lettered by the delivery driver to the destination's dead-letter
  store; its offset is committed past, and it is not written to the topic again.
* **Producer-signed** ``pangea`` records (the SDK's ``signature``/``public_key`` beside
  ``event``) are forwarded exactly as signed; one that normalization or key/header mapping
  would change is poison (``invalid_event``, ``BadState``).
* An event that resolves ERRORED while the partition is still ours (the sink gave up after
  ``retry.max_attempts``, or failed internally) makes the partition be read again from its
  first undelivered offset, after a short hold: nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from gateway.errors import ConfigError
from gateway.event import Event
from gateway.kafka.consumer import new_consumer
from gateway.kafka.producer import producer_kwargs
from gateway.kafka.security import bootstrap_list, client_kwargs
from gateway.normalize import restrictions
from gateway.normalize.vendors import VENDORS
from gateway.pipeline import Target
from gateway.sinks.deadletter.base import DeadLetterStore
from gateway.sources.intake import Admitter
from gateway.sources.kafka.commits import Committing
from gateway.sources.kafka.config import KafkaSourceConfig
from gateway.sources.kafka.consume import Consuming
from gateway.sources.kafka.deadletter_topic import DeadLetterTopic
from gateway.sources.kafka.flow import FlowControl
from gateway.sources.kafka.offsets import PartitionTracker
from gateway.sources.kafka.rebalance import Rebalancing, _Listener
from gateway.sources.kafka.records import KafkaRecord, records_as_decoded
from gateway.sources.kafka.records import install as install_decoded_records
from gateway.sources.kafka.state import (
    CONNECT_BACKOFF_MAX_SECS,
    PAUSED_WAIT_SECS,
    POLL_TIMEOUT_MS,
    subscription_pattern,
)
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.reasons import Reason

log = logging.getLogger(__name__)


__all__ = ["KafkaSource", "subscription_pattern"]


class KafkaSource(Consuming, FlowControl, Rebalancing, Committing):
    """Consumes a consumer group's partitions into one destination; see the module docstring."""

    def __init__(
        self,
        name: str,
        config: KafkaSourceConfig,
        destination: Target,
        metrics: Metrics,
        deadletters: DeadLetterStore,
    ) -> None:
        self.name = name
        self.config = config
        self.destination = destination
        self.metrics = metrics
        # Admission is the HTTP routes' (intake.Admitter); its invalid events are the source's
        # poison, dead-lettered to the topic, so the store it is given is never written by it.
        self.admitter = Admitter(name, destination, metrics, deadletters, restrictions.checker(config.restrictions))
        try:
            self._vendor: Any = VENDORS[config.format]
        except KeyError:
            raise ConfigError(f"format {config.format!r} is not available", f"sources.{name}.format") from None
        self._fast_pangea = config.format == "pangea"
        self._kwargs = client_kwargs(config.security, path=f"sources.{name}.security")
        self._servers = bootstrap_list(config.bootstrap_servers)
        self.dlq = DeadLetterTopic(
            name,
            config.destination,
            config.dlq_topic,
            producer_kwargs(
                config.bootstrap_servers,
                config.security,
                path=f"sources.{name}.security",
                client_id=f"audit-gateway-{name}-dlq",
            ),
            metrics,
            deadletters,
        )
        self.consumer: Any = None
        self.trackers: dict[TopicPartition, PartitionTracker] = {}
        self._accepting = True
        self._stopped = False
        self._backpressure = False
        self._hold_until: dict[TopicPartition, float] = {}
        self._commit_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._consumed_children: dict[str, Any] = {}
        self._m_paused = metrics.kafka_paused.labels(name)
        self._m_paused.set(0)

    # -- Source protocol ----------------------------------------------------------------

    async def start(self) -> None:
        """Start consuming in the background; an unreachable broker is retried, not fatal."""
        self.dlq.start()
        self._task = asyncio.create_task(self._run(), name=f"kafka-source-{self.name}")

    async def stop_accepting(self) -> None:
        """Stop fetching: pause everything; events not yet in the buffer are dropped (ERRORED)."""
        if not self._accepting:
            return
        self._accepting = False
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                self.consumer.pause(*self.consumer.assignment())
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def stop(self, deadline: float) -> None:
        """Wait for in-flight acks and dead letters (until ``deadline``), commit, leave the group."""
        await self.stop_accepting()
        if self._stopped:
            return
        self._stopped = True
        loop = asyncio.get_running_loop()
        # Keep a little time for the final commit and leaving the group.
        reserve = min(1.0, max(0.0, deadline - loop.time()) / 4)
        wait_until = deadline - reserve
        while loop.time() < wait_until and any(t.busy for t in self.trackers.values()):  # noqa: ASYNC110
            await asyncio.sleep(0.02)  # acks resolve in the sink's tasks; a short poll over all trackers
        await self.dlq.stop(wait_until)
        if self._commit_task is not None:
            self._commit_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._commit_task
        if self.consumer is not None:
            try:
                await asyncio.wait_for(self.commit(), max(0.2, deadline - loop.time()))
            except TimeoutError:
                self.metrics.kafka_commits.labels(self.name, "error").inc()
                log.warning("shutdown: final commit timed out", extra={"source": self.name})
            for t in self.trackers.values():
                t.discarded = True
            try:
                await asyncio.wait_for(self.consumer.stop(), max(0.5, deadline - loop.time()))
            except (TimeoutError, KafkaError) as exc:
                log.warning("kafka consumer did not close cleanly", extra={"source": self.name, "error": repr(exc)})
        self.trackers.clear()
        self._m_paused.set(0)

    # -- consumer life ------------------------------------------------------------------

    def _new_consumer(self) -> Any:
        c = self.config
        install_decoded_records()
        return new_consumer(
            self._servers,
            self._kwargs,
            group_id=c.group_id,
            client_id=f"audit-gateway-{self.name}",
            enable_auto_commit=False,
            auto_offset_reset=c.auto_offset_reset,
            session_timeout_ms=c.session_timeout_ms,
            heartbeat_interval_ms=c.heartbeat_interval_ms,
            max_poll_interval_ms=c.max_poll_interval_ms,
            max_poll_records=c.max_poll_records,
            fetch_max_wait_ms=c.fetch_max_wait_ms,
            max_partition_fetch_bytes=c.max_partition_fetch_bytes,
            fetch_max_bytes=c.fetch_max_bytes,
            # Records as aiokafka decoded them, not wrapped in a ConsumerRecord each (records.py).
            value_deserializer=records_as_decoded,
        )

    async def _connect(self) -> None:
        backoff = 0.2
        failures = 0
        listener = _Listener(self)
        while True:
            consumer = self._new_consumer()
            if self.config.topics is not None:
                consumer.subscribe(topics=list(self.config.topics), listener=listener)
            else:
                assert self.config.topic_pattern is not None
                consumer.subscribe(
                    pattern=subscription_pattern(self.config.topic_pattern, self.config.dlq_topic),
                    listener=listener,
                )
            self.consumer = consumer  # the rebalance listener may run inside start()
            try:
                await consumer.start()
            except KafkaError as exc:
                self.consumer = None
                with contextlib.suppress(Exception):
                    await consumer.stop()
                failures += 1
                # Logged once per outage (a warning), then each retry at debug: an unreachable
                # cluster must not flood the log every few seconds.
                log.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "kafka brokers unreachable; retrying",
                    extra={
                        "source": self.name,
                        "bootstrap_servers": self._servers,
                        "error": repr(exc),
                        "attempt": failures,
                        "delay_secs": round(backoff, 2),
                    },
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, CONNECT_BACKOFF_MAX_SECS)
                continue
            except BaseException:  # cancelled (stopped) while connecting
                self.consumer = None
                with contextlib.suppress(Exception):
                    await asyncio.shield(consumer.stop())
                raise
            log.info(
                "kafka consumer started",
                extra={"source": self.name, "group_id": self.config.group_id, "failed_attempts": failures},
            )
            return

    async def _run(self) -> None:
        await self._connect()
        self._commit_task = asyncio.create_task(self._commit_loop(), name=f"kafka-commit-{self.name}")
        consumer = self.consumer
        max_records = self.config.max_poll_records
        loop = asyncio.get_running_loop()
        keepalive = self._keepalive_secs()
        last_poll = loop.time()
        while self._accepting:
            self._update_pauses()
            self._reread_errored()
            if self._backpressure:
                # Everything is paused: wait rather than poll.  aiokafka drops what it has
                # prefetched for a paused partition when polled, to fetch it again on resume;
                # only a poll at the keepalive interval keeps the group from thinking us gone.
                if loop.time() - last_poll < keepalive:
                    await asyncio.sleep(PAUSED_WAIT_SECS)
                    continue
                await self._keepalive_poll()
                last_poll = loop.time()
                continue
            try:
                data = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=max_records)
                last_poll = loop.time()
            except KafkaError as exc:
                log.warning("kafka fetch failed", extra={"source": self.name, "error": repr(exc)})
                await asyncio.sleep(0.5)
                continue
            except Exception:
                log.exception("kafka fetch failed unexpectedly", extra={"source": self.name})
                await asyncio.sleep(1.0)
                continue
            if not data:
                continue
            events: list[Event] = []
            try:
                for tp, msgs in data.items():
                    tracker = self.trackers.get(tp)
                    if tracker is None:
                        tracker = self._new_tracker(tp)
                    self._consume(tp, msgs, tracker, events)
            except Exception:
                # A bug, not bad data (that is dead-lettered): never leave a gap in a tracker.
                log.exception("kafka batch processing failed; reading it again", extra={"source": self.name})
                self._drop(events, Reason.INTERNAL_ERROR)
                self._restart_partitions(data)
                await asyncio.sleep(1.0)
                continue
            if events:
                try:
                    await self._submit(events)
                except Exception:
                    # What did not get into the buffer resolved ERRORED: its partitions are read
                    # again from their first undelivered offset (_reread_errored).
                    log.exception("handing events to the buffer failed", extra={"source": self.name})
                    await asyncio.sleep(1.0)

    def _restart_partitions(self, data: dict[TopicPartition, list[KafkaRecord]]) -> None:
        """Give up the trackers of ``data``'s partitions and read them again from the first
        offset that is not done (or the batch's first), so nothing consumed is skipped."""
        for tp, msgs in data.items():
            t = self.trackers.get(tp)
            candidates = [msgs[0].offset] if msgs else []
            committed = None
            if t is not None:
                t.discarded = True
                committed = t.committed
                c = t.committable()
                if c is not None:
                    candidates.append(c)
            if not candidates:
                continue
            pos = min(candidates)
            self._new_tracker(tp, committed=committed, expect=pos)
            with contextlib.suppress(Exception):
                self.consumer.seek(tp, pos)
