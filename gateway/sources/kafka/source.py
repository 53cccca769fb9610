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
* **Poison** messages (undecodable → ``decode_error``; invalid for the schema →
  ``invalid_schema``) go to the dead-letter topic (:mod:`gateway.sources.kafka.deadletter_topic`)
  and are then committed past: they never stall a partition.  An event the upstream refuses
  (ack REJECTED) was dead-lettered by the delivery driver to the destination's dead-letter
  store; its offset is committed past, and it is not written to the topic again.
* **Producer-signed** ``pangea`` records (the SDK's ``signature``/``public_key`` beside
  ``event``) are forwarded exactly as signed; one that normalization or key/header mapping
  would change is poison (``invalid_schema``, ``BadState``).
* An event that resolves ERRORED while the partition is still ours (the sink gave up after
  ``retry.max_attempts``, or failed internally) makes the partition be read again from its
  first undelivered offset, after a short hold: nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Iterable
from itertools import repeat
from operator import attrgetter
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from gateway.acks import Ack, AckStatus
from gateway.errors import BufferFull, ConfigError
from gateway.event import Event, encode_item
from gateway.kafka.producer import producer_kwargs
from gateway.kafka.security import bootstrap_list, client_kwargs
from gateway.normalize.schema import EventInvalid, pointer
from gateway.normalize.vendors import VENDORS
from gateway.normalize.vendors.pangea import signature_of
from gateway.pipeline import Target
from gateway.sinks.deadletter.base import DeadLetterStore
from gateway.sources.kafka.config import KafkaSourceConfig
from gateway.sources.kafka.deadletter_topic import DeadLetterJob, DeadLetterTopic
from gateway.sources.kafka.offsets import PartitionTracker
from gateway.sources.kafka.records import install as install_decoded_records
from gateway.sources.kafka.records import records_as_decoded
from gateway.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 200
"""getmany wait: also how often errored partitions and holds are looked at."""
PAUSED_WAIT_SECS = 0.005
"""While paused for backpressure: how soon a drained buffer resumes fetching."""
SUBMIT_CHUNK = 500
"""Events per buffer put (a put is all-or-nothing, so it must fit in the buffer)."""
SUBMIT_SLICE_SECS = 0.5
"""While the buffer is full: how often the blocked put looks at revocations and the poll timer."""
DLQ_BACKLOG_PAUSE = 10_000
"""Pause the partitions while this many dead letters wait to be written."""
ERRORED_HOLD_SECS = 1.0
"""A partition re-read after an ERRORED ack is paused this long first."""
CONNECT_BACKOFF_MAX_SECS = 10.0


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _detail(exc: BaseException) -> str:
    errors = getattr(exc, "errors", None)
    msg = str(exc) or type(exc).__name__
    if errors:
        return f"{msg}: {errors}"
    return msg


_value_of = attrgetter("value")
_offset_of = attrgetter("offset")
_key_of = attrgetter("key")
_headers_of = attrgetter("headers")


def _kept(m: Any) -> Any:
    """What a tracker keeps of a message for the dead-letter topic: the value bytes alone when
    that is all there is (no container for the GC to walk), else ``(key, value, headers)``."""
    return m.value if m.key is None and not m.headers else (m.key, m.value, m.headers)


def _released(ack: Ack) -> bool:
    """The ack's partition is being revoked or was given up (its events will be read again)."""
    t = ack.receiver
    return isinstance(t, PartitionTracker) and (t.revoking or t.discarded)


def subscription_pattern(pattern: str, dlq_topic: str | None) -> str:
    """The user's ``topic_pattern``, never matching dead-letter topics (``*.dlq``, ``dlq_topic``)."""
    guard = r"(?!.*\.dlq$)"
    if dlq_topic:
        guard += rf"(?!{re.escape(dlq_topic)}$)"
    return f"{guard}(?:{pattern})"


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._source._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._source._on_assigned(assigned)


class KafkaSource:
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
        self._ready = asyncio.Event()
        self._consumed_children: dict[str, Any] = {}
        self._m_received = metrics.events_received.labels(name)
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
        return AIOKafkaConsumer(
            bootstrap_servers=self._servers,
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
            **self._kwargs,
        )

    async def _connect(self) -> None:
        backoff = 0.2
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
                log.warning(
                    "kafka brokers unreachable; retrying",
                    extra={"source": self.name, "bootstrap_servers": self._servers, "error": repr(exc)},
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, CONNECT_BACKOFF_MAX_SECS)
                continue
            except BaseException:  # cancelled (stopped) while connecting
                self.consumer = None
                with contextlib.suppress(Exception):
                    await asyncio.shield(consumer.stop())
                raise
            self._ready.set()
            log.info("kafka consumer started", extra={"source": self.name, "group_id": self.config.group_id})
            return

    async def wait_ready(self) -> None:
        """Until the consumer is connected (tests, readiness)."""
        await self._ready.wait()

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
                self._drop(events, "internal_error")
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

    def _restart_partitions(self, data: dict[TopicPartition, list[Any]]) -> None:
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

    # -- message → events ---------------------------------------------------------------

    def _consume(self, tp: TopicPartition, msgs: list[Any], tracker: PartitionTracker, out: list[Event]) -> None:
        """Turn ``msgs`` of one partition into events (appended to ``out``); poison to the DLQ.

        Every message is registered in the tracker before anything can resolve its acks.
        Format ``pangea`` without key or header mapping first offers each value to the
        destination's compiled schema (:meth:`Schema.fast_path`); what it declines takes
        :meth:`_consume_one`.
        """
        child = self._consumed_children.get(tp.topic)
        if child is None:
            child = self._consumed_children[tp.topic] = self.metrics.kafka_consumed.labels(self.name, tp.topic)
        child.inc(len(msgs))
        # The compiled path needs the message alone: mapping a key or header edits the event.
        fast_path = None
        if self._fast_pangea and self.config.key_field is None and not self.config.header_fields:
            fast_path = self.destination.fast_path()
        if fast_path is not None:
            n_events = self._consume_compiled(msgs, tracker, out, fast_path.items)
        else:
            n_events = 0
            for m in msgs:
                last = tracker.last_tracked
                if last is not None and m.offset <= last:
                    continue  # already tracked by this assignment (a re-fetched duplicate)
                n_events += self._consume_one(m, tracker, out)
        self._m_received.inc(n_events)

    def _consume_compiled(
        self,
        msgs: list[Any],
        tracker: PartitionTracker,
        out: list[Event],
        fast_items: Callable[[list[bytes | None]], list[bytes | None]],
    ) -> int:
        """The hot loop: messages the compiled schema accepts become events in runs, each run
        registered with one :meth:`PartitionTracker.track_many`; any other message takes
        :meth:`_consume_one` in its place (after the run before it is registered)."""
        last = tracker.last_tracked
        if last is not None and msgs and msgs[0].offset <= last:
            msgs = [m for m in msgs if m.offset > last]  # re-fetched duplicates of this assignment
        values = list(map(_value_of, msgs))
        items = fast_items(values)
        if all(items):  # no None (an item is never empty): `None not in` compares, at thrice the cost
            offsets = list(map(_offset_of, msgs))
            if list(map(_key_of, msgs)).count(None) == len(msgs) and not any(map(_headers_of, msgs)):
                kept: list[Any] = values  # what _kept gives for each: no key, no headers
            else:
                kept = list(map(_kept, msgs))
            return self._register_run(tracker, offsets, kept, items, out)  # type: ignore[arg-type]
        offsets = []
        kept = []
        run: list[bytes] = []
        n = 0
        for m, item in zip(msgs, items, strict=True):
            if item is None:
                if offsets:
                    n += self._register_run(tracker, offsets, kept, run, out)
                    offsets, kept, run = [], [], []
                n += self._consume_one(m, tracker, out)
                continue
            offsets.append(m.offset)
            kept.append(_kept(m))
            run.append(item)
        if offsets:
            n += self._register_run(tracker, offsets, kept, run, out)
        return n

    def _register_run(
        self, tracker: PartitionTracker, offsets: list[int], kept: list[Any], items: list[bytes], out: list[Event]
    ) -> int:
        tracker.track_many(offsets, kept)
        out.extend(map(Event, items, map(Ack, repeat(tracker), offsets), repeat(self.name)))
        return len(items)

    def _consume_one(self, m: Any, tracker: PartitionTracker, out: list[Event]) -> int:
        """One message through the full path; returns the events it became.

        Format ``pangea`` decodes the common value (one JSON object, ``{"event": {...}}`` or a
        bare event) itself, giving exactly what the vendor decoder would; anything else
        (arrays, JSON lines, ``{"events": [...]}``, a BOM, invalid JSON) and the other formats
        take the vendor's own path, which also words the errors.
        """
        offset = m.offset
        value = m.value
        if self._fast_pangea and value is not None:
            record: Any
            try:
                record = orjson.loads(value)
            except orjson.JSONDecodeError:
                record = None
            if type(record) is dict and "events" not in record:
                inner = record.get("event")
                event = inner if type(inner) is dict else record
                tracker.track(offset, 1, _kept(m))
                try:
                    item = self._item(record, event, m)
                except EventInvalid as exc:
                    self._poison(tracker, m, "invalid_schema", _detail(exc))
                    return 0
                except Exception as exc:
                    self._poison(tracker, m, "decode_error", _detail(exc))
                    return 0
                out.append(Event(item, Ack(tracker, offset), self.name, None))
                return 1
        return self._consume_vendor(m, tracker, out)

    def _item(self, record: Any, event: dict[str, Any], m: Any) -> bytes:
        """The request item of one record's event: mapped and normalized, or, signed by the
        producer (format ``pangea`` with the SDK's ``signature``/``public_key``), kept exactly
        as signed; raises :class:`EventInvalid`."""
        extras = signature_of(record) if self._fast_pangea else None
        if extras is None:
            self._map(event, m)
            return self.destination.encode(event)
        given = dict(event)
        self._map(event, m)
        changed = sorted(k for k in event if given.get(k) != event[k])
        if changed:
            raise EventInvalid(
                [
                    {
                        "code": "BadState",
                        "detail": f"'{k}' would be set from the message key or a header, which would break"
                        " the event's signature",
                        "source": pointer(k),
                    }
                    for k in changed
                ]
            )
        return encode_item(self.destination.schema.normalize_signed(event), extras)

    def _map(self, event: dict[str, Any], m: Any) -> None:
        """Copy the message key and the configured headers into the event."""
        key_field = self.config.key_field
        if key_field is not None and m.key is not None:
            event[key_field] = _text(m.key)
        header_fields = self.config.header_fields
        if header_fields:
            for hname, hvalue in m.headers:
                field = header_fields.get(hname)
                if field is not None and hvalue is not None:
                    event[field] = _text(hvalue)

    def _consume_vendor(self, m: Any, tracker: PartitionTracker, out: list[Event]) -> int:
        """One message through the vendor format (any number of records); returns events made."""
        offset = m.offset
        value = m.value
        try:
            if value is None:
                raise ValueError("message has no value (tombstone)")
            records = self._vendor.decode(value)
        except Exception as exc:
            tracker.track(offset, 1)
            self._poison(tracker, m, "decode_error", _detail(exc))
            return 0
        tracker.track(offset, len(records), _kept(m))
        to_event = self._vendor.to_event
        n = 0
        for record in records:
            try:
                event, dedup = to_event(record)
                item = self._item(record, event, m)
            except EventInvalid as exc:
                self._poison(tracker, m, "invalid_schema", _detail(exc))
                continue
            except Exception as exc:
                self._poison(tracker, m, "decode_error", _detail(exc))
                continue
            out.append(Event(item, Ack(tracker, offset), self.name, dedup))
            n += 1
        return n

    def _poison(self, tracker: PartitionTracker, m: Any, reason: str, detail: str) -> None:
        self.metrics.events_rejected.labels(self.name, self.config.destination, "intake", reason).inc()
        headers = list(m.headers or ())
        self.dlq.put(
            DeadLetterJob(tracker, tracker.topic, tracker.partition, m.offset, m.key, m.value, headers, reason, detail)
        )

    # -- into the buffer ----------------------------------------------------------------

    async def _submit(self, events: list[Event]) -> None:
        """Put ``events`` in the buffer in chunks; wait for room while keeping the group alive."""
        start = 0
        n = len(events)
        try:
            while start < n:
                chunk = events[start : start + SUBMIT_CHUNK]
                try:
                    await self.destination.submit(chunk, wait=False)
                except BufferFull:
                    await self._submit_waiting(chunk)
                start += SUBMIT_CHUNK
        except BaseException:
            # Cancelled (shutdown): what did not get in is dropped; its acks resolve ERRORED
            # so its offsets stay uncommitted.
            self._drop(events[start:], "shutdown")
            raise

    async def _submit_waiting(self, chunk: list[Event]) -> None:
        """The buffer is full: pause, wait for room in slices; drop events of revoked partitions."""
        loop = asyncio.get_running_loop()
        keepalive = self._keepalive_secs()
        last_poll = loop.time()
        while chunk:
            self._backpressure = True
            self._update_pauses()
            try:
                await asyncio.wait_for(self.destination.submit(chunk, wait=True), SUBMIT_SLICE_SECS)
                return
            except TimeoutError:
                pass
            except BufferFull:  # the buffer closed: shutting down
                self._drop(chunk, "shutdown")
                return
            gone = [e for e in chunk if _released(e.ack)]
            if gone:
                self._drop(gone, "revoked")
                chunk = [e for e in chunk if not _released(e.ack)]
            if loop.time() - last_poll >= keepalive:
                await self._keepalive_poll()
                last_poll = loop.time()

    def _drop(self, events: Iterable[Event], reason: str) -> None:
        events = list(events)
        abandon = getattr(self.destination, "abandon", None)  # a fan-out: copies placed so far
        if abandon is not None:
            abandon(events)
        n = 0
        for e in events:
            if not e.ack.resolved:
                e.ack.resolve(AckStatus.ERRORED, reason)
                n += 1
        if n:
            self.metrics.events_dropped.labels(self.config.destination, reason).inc(n)

    def _keepalive_secs(self) -> float:
        """How long the source may go without polling while paused (a quarter of
        ``max_poll_interval_ms``, after which the group would evict the consumer)."""
        return max(1.0, self.config.max_poll_interval_ms / 1000 / 4)

    async def _keepalive_poll(self) -> None:
        """Poll with everything paused so the group does not consider us gone.

        Anything returned anyway (a partition assigned meanwhile) is not processed now: seek
        back to it so it is read again, leaving no gap in the tracker.
        """
        self._update_pauses()
        try:
            data = await self.consumer.getmany(timeout_ms=0)
        except KafkaError:
            return
        for tp, msgs in data.items():
            if msgs:
                with contextlib.suppress(Exception):
                    self.consumer.seek(tp, msgs[0].offset)

    # -- pause / resume -----------------------------------------------------------------

    def _update_pauses(self) -> None:
        consumer = self.consumer
        if consumer is None:
            return
        fill = self.destination.buffer.fill_ratio
        backlog = self.dlq.backlog
        if self._backpressure:
            if fill < self.config.resume_low_watermark and backlog < DLQ_BACKLOG_PAUSE // 2:
                self._backpressure = False
                log.info("buffer drained; resuming partitions", extra={"source": self.name, "fill": fill})
        elif fill >= self.config.pause_high_watermark or backlog >= DLQ_BACKLOG_PAUSE:
            self._backpressure = True
            log.info("buffer filling; pausing partitions", extra={"source": self.name, "fill": fill})
        assigned = consumer.assignment()
        if self._backpressure or not self._accepting:
            want = set(assigned)
        elif self._hold_until:
            now = asyncio.get_running_loop().time()
            for tp, until in list(self._hold_until.items()):
                if until <= now:
                    del self._hold_until[tp]
            want = {tp for tp in self._hold_until if tp in assigned}
        else:
            want = set()
        paused = consumer.paused()
        if want != paused:
            if want - paused:
                consumer.pause(*(want - paused))
            if paused - want:
                consumer.resume(*(paused - want))
            self._m_paused.set(len(want))

    # -- trackers and rebalances -------------------------------------------------------

    def _new_tracker(
        self, tp: TopicPartition, *, committed: int | None = None, expect: int | None = None
    ) -> PartitionTracker:
        t = PartitionTracker(tp.topic, tp.partition, committed=committed, expect=expect)
        self.trackers[tp] = t
        return t

    def _reread_errored(self) -> None:
        """Partitions with an ERRORED ack: read again from the first undelivered offset."""
        for tp, t in list(self.trackers.items()):
            if t.errored is None or t.revoking:
                continue
            pos = t.committable()
            if pos is None:  # pragma: no cover - an errored offset is always registered
                continue
            t.discarded = True
            self._new_tracker(tp, committed=t.committed, expect=pos)
            self.consumer.seek(tp, pos)
            self._hold_until[tp] = asyncio.get_running_loop().time() + ERRORED_HOLD_SECS
            log.warning(
                "events of a partition were not delivered; reading it again",
                extra={"source": self.name, "topic": tp.topic, "partition": tp.partition, "offset": pos},
            )

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.metrics.kafka_rebalances.labels(self.name, "assigned").inc()
        for tp in assigned:
            if tp not in self.trackers:
                self._new_tracker(tp)
        log.info(
            "partitions assigned",
            extra={"source": self.name, "partitions": sorted(f"{tp.topic}/{tp.partition}" for tp in assigned)},
        )
        if self._backpressure or not self._accepting:
            with contextlib.suppress(Exception):
                self.consumer.pause(*assigned)

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        if not revoked:
            return
        self.metrics.kafka_rebalances.labels(self.name, "revoked").inc()
        trackers = {tp: self.trackers[tp] for tp in revoked if tp in self.trackers}
        for t in trackers.values():
            t.revoking = True
        undelivered = 0
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.config.drain_timeout_secs
            while loop.time() < deadline and any(t.busy for t in trackers.values()):  # noqa: ASYNC110
                await asyncio.sleep(0.02)  # acks resolve in the sink's tasks; a short poll over the trackers
            undelivered = sum(t.busy for t in trackers.values())
            await self.commit(list(trackers))
        finally:
            for tp, t in trackers.items():
                t.discarded = True
                if self.trackers.get(tp) is t:
                    del self.trackers[tp]
                self._hold_until.pop(tp, None)
                with contextlib.suppress(KeyError):
                    self.metrics.kafka_lag.remove(self.name, tp.topic, str(tp.partition))
            log.info(
                "partitions revoked",
                extra={
                    "source": self.name,
                    "partitions": sorted(f"{tp.topic}/{tp.partition}" for tp in revoked),
                    "undelivered": undelivered,
                },
            )

    # -- commits ------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        interval = self.config.commit_interval_secs
        while True:
            await asyncio.sleep(interval)
            try:
                await self.commit()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the commit loop die
                log.exception("commit failed", extra={"source": self.name})

    async def commit(self, partitions: list[TopicPartition] | None = None) -> None:
        """Commit the committable offsets of ``partitions`` (default: all owned); update lag."""
        consumer = self.consumer
        if consumer is None:
            return
        async with self._commit_lock:
            tps = list(self.trackers) if partitions is None else partitions
            offsets: dict[TopicPartition, int] = {}
            owners: dict[TopicPartition, PartitionTracker] = {}
            for tp in tps:
                t = self.trackers.get(tp)
                if t is None:
                    continue
                c = t.to_commit()
                if c is not None:
                    offsets[tp] = c
                    owners[tp] = t
            if offsets:
                try:
                    await consumer.commit(offsets)
                except KafkaError as exc:
                    self.metrics.kafka_commits.labels(self.name, "error").inc()
                    log.warning("offset commit failed", extra={"source": self.name, "error": repr(exc)})
                else:
                    self.metrics.kafka_commits.labels(self.name, "ok").inc()
                    for tp, off in offsets.items():
                        owners[tp].committed = off
            for tp in tps:
                t = self.trackers.get(tp)
                if t is None:
                    continue
                if t.committed is None and not t.committed_looked_up:
                    # Nothing read yet on this assignment: its lag counts from the group's offset.
                    t.committed_looked_up = True
                    try:
                        found = await asyncio.wait_for(consumer.committed(tp), 5.0)
                    except (KafkaError, TimeoutError, AssertionError):
                        found = None
                    if found is not None and t.committed is None:
                        t.committed = found
                if t.committed is None:
                    continue
                hw = consumer.highwater(tp)
                if hw is not None:
                    self.metrics.kafka_lag.labels(self.name, tp.topic, str(tp.partition)).set(max(0, hw - t.committed))
