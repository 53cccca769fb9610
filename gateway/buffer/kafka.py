"""The Kafka buffer: webhook replicas write accepted events to a topic; a consumer group forwards them.

``buffer: {type: kafka, topic: audit.accepted, bootstrap_servers: ...}`` — the aggregator
pattern once one node is not enough:

* **Producer side** (every webhook replica): :meth:`KafkaBuffer.put` produces each event's
  item bytes (``{"event": {...}}``) to ``topic`` with ``acks=all`` and resolves the original
  acks DELIVERED only once the brokers acknowledged every message of the request; so the
  webhook answers 2xx once the events are replicated in Kafka.  A failure (brokers away,
  timeout after ``produce_timeout_secs``) answers 503 with Retry-After; a request whose
  messages were partly written may then be resent by its sender (a duplicate, never a loss).
  Headers: ``x-gateway-source`` (the intake source) and ``x-gateway-dedup-key`` when known.
  Accounting: acknowledged events count ``handed_off`` for their (source, destination) pair
  (out of in flight); events whose produce failed count ``refused`` at intake (the 503).
* **Consumer side**: a ``type: kafka`` source with ``format: pangea`` reading ``topic`` in a
  consumer group; its instances forward to the upstream and commit offsets past what was
  delivered.  Events of Kafka sources (named in ``local_sources``) are not produced again:
  they go to an in-memory buffer, which is what :meth:`take` serves.  So one instance may run
  both sides (webhooks → topic → the same instance's Kafka source → upstream).

With this buffer the Pangea-compatible ``/v2/log`` answer has no upstream hashes (it is given
at replication, before the upstream has the events).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Collection
from typing import Any

from aiokafka.errors import KafkaError

from gateway.acks import AckStatus
from gateway.buffer.base import Buffer
from gateway.buffer.config import BufferConfig
from gateway.buffer.disk import SpoolUnavailable
from gateway.buffer.memory import MemoryBuffer
from gateway.errors import BufferFull, Draining
from gateway.event import Event
from gateway.kafka.producer import produce_each, producer_kwargs, start_producer
from gateway.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

HEADER_SOURCE = "x-gateway-source"
HEADER_DEDUP = "x-gateway-dedup-key"


class KafkaBuffer:
    """Produces intake events to a topic (acks=all); Kafka-sourced events are buffered in memory."""

    def __init__(
        self,
        destination: str,
        config: BufferConfig,
        metrics: Metrics,
        *,
        local_sources: Collection[str] = (),
        inner: Buffer | None = None,
        retry_after_secs: float = 1.0,
    ) -> None:
        assert config.topic is not None
        self.destination = destination
        self._metrics = metrics
        self.topic = config.topic
        self.max_bytes = config.max_bytes
        self.timeout = config.produce_timeout_secs
        self.local_sources = frozenset(local_sources)
        self.inner: Buffer = inner or MemoryBuffer(destination, config.max_events, config.max_bytes, metrics)
        self._retry_after = retry_after_secs
        self._kwargs = producer_kwargs(
            config.bootstrap_servers,
            config.security,
            path="buffer.security",
            request_timeout_secs=self.timeout,
            linger_ms=2,
            max_request_size=8 * 1024 * 1024,
        )
        self._producer: Any = None
        self._lock = asyncio.Lock()
        self._producing_bytes = 0
        self._closed = False
        self._stopper: asyncio.Task[None] | None = None

    # -- Buffer: sizes are those of the in-memory side plus what is being produced ---------

    @property
    def events(self) -> int:
        return self.inner.events

    @property
    def bytes(self) -> int:
        return self.inner.bytes + self._producing_bytes

    @property
    def fill_ratio(self) -> float:
        return max(self.inner.fill_ratio, self._producing_bytes / self.max_bytes)

    async def put(self, events: list[Event], *, wait: bool = False) -> None:
        events = [e for e in events if not e.ack.resolved]
        if not events:
            return
        if events[0].source in self.local_sources:
            await self.inner.put(events, wait=wait)
            return
        if self._closed:
            raise Draining("the gateway is shutting down", retry_after_secs=self._retry_after)
        size = sum(len(e.item) for e in events)
        if self._producing_bytes and self._producing_bytes + size > self.max_bytes:
            raise BufferFull(
                f"kafka buffer for destination {self.destination!r} is full", retry_after_secs=self._retry_after
            )
        self._producing_bytes += size
        try:
            await self._produce(events)
        finally:
            self._producing_bytes -= size
        # Every message is in Kafka: this pair is done with them (the buffer topic's Kafka source
        # counts them received); counted in the step that resolves the acks, before any await.
        for source, n in Counter(e.source for e in events).items():
            self._metrics.account(source, self.destination).handed_off(n)
        for e in events:
            if not e.ack.resolved:
                e.ack.resolve(AckStatus.DELIVERED, None)

    async def _connected(self) -> Any:
        async with self._lock:
            if self._producer is None:
                try:
                    producer = await start_producer(self._kwargs, self.timeout)
                except (KafkaError, TimeoutError, OSError) as exc:
                    log.warning("kafka buffer: brokers unreachable", extra={"topic": self.topic, "error": repr(exc)})
                    raise self._unavailable("brokers unreachable") from None
                self._producer = producer
            return self._producer

    def _unavailable(self, why: str) -> SpoolUnavailable:
        return SpoolUnavailable(
            f"kafka buffer for destination {self.destination!r}: {why}", retry_after_secs=self._retry_after
        )

    async def _produce(self, events: list[Event]) -> None:
        producer = await self._connected()
        messages = [(self.topic, None, e.item, _headers(e)) for e in events]
        try:
            results = await produce_each(producer, messages, self.timeout)
        except (KafkaError, TimeoutError) as exc:
            log.warning("kafka buffer: produce failed", extra={"topic": self.topic, "error": repr(exc)})
            raise self._unavailable("brokers did not acknowledge") from None
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            log.warning(
                "kafka buffer: brokers refused messages",
                extra={"topic": self.topic, "failed": len(errors), "of": len(events), "error": repr(errors[0])},
            )
            raise self._unavailable("brokers did not acknowledge")

    async def take(self, max_events: int, max_bytes: int, timeout_secs: float) -> list[Event]:
        return await self.inner.take(max_events, max_bytes, timeout_secs)

    def close(self) -> None:
        self._closed = True
        self.inner.close()

    def drain_nowait(self) -> list[Event]:
        """The in-memory side's events; the producer is stopped in the background (see :meth:`aclose`)."""
        self._closed = True
        if self._producer is not None and self._stopper is None:
            self._stopper = asyncio.get_running_loop().create_task(self._stop_producer())
        return self.inner.drain_nowait()

    async def _stop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def aclose(self) -> None:
        """Stop the producer (waits for what it still sends)."""
        self.close()
        if self._stopper is not None:
            await self._stopper
        await self._stop_producer()


def _headers(e: Event) -> list[tuple[str, bytes]]:
    headers = [(HEADER_SOURCE, e.source.encode())]
    if e.dedup_key is not None:
        headers.append((HEADER_DEDUP, e.dedup_key.encode()))
    return headers
