"""The Kafka sink: each event of a batch one JSON message to the destination's topic, ``acks=all``.

The message value is the event's item as the audit log would get it (``{"event": {...}}``, with
``signature`` and ``public_key`` for a signing destination), the key the event's dedup key (the
vendor's event id) when it has one.  The three pieces of :class:`gateway.delivery.sink.Sink`:

* :meth:`KafkaSink.build_request` — the (key, value) pairs of the events;
* :meth:`KafkaSink.call` — produces them and waits for every broker acknowledgement (connecting
  first if need be; an unreachable cluster never fails start);
* :meth:`KafkaSink.classify` — all acknowledged: DELIVERED (result ``{topic, partition,
  offset}``); a retriable Kafka error (not connected, leader moving, a timeout): retried by the
  driver with backoff, the whole batch (at-least-once: messages already written are written
  again); a permanent one (a message over the broker's size limit): those events rejected,
  the others sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from gateway.delivery.sink import Delivered, Outcome, Reject, Retry
from gateway.event import Event
from gateway.kafka.producer import produce_each, producer_kwargs, start_producer
from gateway.sinks.kafka.config import KafkaSinkConfig

__all__ = ["KafkaSink"]

log = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class KafkaRequest:
    """The messages of one batch: (key, value) pairs."""

    messages: list[tuple[bytes | None, bytes]]

    @property
    def nbytes(self) -> int:
        return sum(len(v) for _k, v in self.messages)


_Answer = list["BaseException | dict[str, Any]"]
"""Per message: where it was written, or the error producing it raised."""


def _retriable(exc: BaseException) -> bool:
    if isinstance(exc, KafkaError):
        return bool(exc.retriable) or isinstance(exc, KafkaConnectionError | KafkaTimeoutError)
    return isinstance(exc, TimeoutError | OSError)


class KafkaSink:
    """Produces a destination's batches to ``config.topic`` (see the module doc)."""

    def __init__(self, destination: str, config: KafkaSinkConfig) -> None:
        self.destination = destination
        self.config = config
        self.topic = config.topic
        self._kwargs = producer_kwargs(
            config.bootstrap_servers,
            config.security,
            path=f"destinations.{destination}.sink.security",
            request_timeout_secs=config.produce_timeout_secs,
        )
        self._producer: Any = None
        self._lock = asyncio.Lock()
        self._running = False
        self._unreachable = False  # logged once per outage, not per attempt
        self._connect: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"KafkaSink(destination={self.destination!r}, topic={self.topic!r})"

    # -- life cycle and readiness ------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background: unreachable brokers must not hold up startup."""
        self._running = True
        self._connect = asyncio.create_task(self._connect_quietly(), name=f"sink-{self.destination}-kafka")

    async def _connect_quietly(self) -> None:
        with contextlib.suppress(Exception):
            await self._connected()

    async def stop(self) -> None:
        self._running = False
        if self._connect is not None:
            self._connect.cancel()
            await asyncio.gather(self._connect, return_exceptions=True)
            self._connect = None
        async with self._lock:
            if self._producer is not None:
                with contextlib.suppress(Exception):
                    await self._producer.stop()
                self._producer = None

    @property
    def stopped(self) -> bool:
        return not self._running

    @property
    def credentials_refused(self) -> bool:
        return False

    async def check(self) -> str | None:
        if not self._running:
            return "kafka sink not running"
        if self._producer is None or self._unreachable:
            return f"kafka sink cannot reach the brokers of topic {self.topic}"
        return None

    async def _connected(self) -> Any:
        async with self._lock:
            if self._producer is None:
                try:
                    producer = await start_producer(self._kwargs, self.config.produce_timeout_secs)
                except BaseException as exc:
                    if not self._unreachable and not isinstance(exc, asyncio.CancelledError):
                        self._unreachable = True
                        log.warning(
                            "kafka sink cannot reach its brokers; batches are retried",
                            extra={"destination": self.destination, "topic": self.topic, "error": type(exc).__name__},
                        )
                    raise
                self._producer = producer
            return self._producer

    # -- the three delivery pieces -----------------------------------------------------------

    def build_request(self, events: list[Event], retried_ids: Sequence[str]) -> KafkaRequest:
        """One message per event: key its dedup key (the vendor's id) if any, value its item."""
        return KafkaRequest([(e.dedup_key.encode() if e.dedup_key else None, e.item) for e in events])

    async def call(self, request: KafkaRequest, retried_ids: list[str]) -> _Answer:
        """Produce every message; wait (``produce_timeout_secs`` at most) for their acknowledgements."""
        producer = await self._connected()
        messages = [(self.topic, key, value, None) for key, value in request.messages]
        results = await produce_each(producer, messages, self.config.produce_timeout_secs)
        return [
            r if isinstance(r, BaseException) else {"topic": r.topic, "partition": r.partition, "offset": r.offset}
            for r in results
        ]

    async def classify(
        self, answer: _Answer | None, error: BaseException | None, sent: int, *, at_once_used: bool
    ) -> Outcome:
        if error is not None:
            if _retriable(error):
                return Retry("network", type(error).__name__)
            if not isinstance(error, KafkaError):
                raise error  # a bug: the driver resolves the batch ERRORED
            code = type(error).__name__
            return Reject("upstream_rejected", others=[{"code": code, "detail": code, "source": ""}])
        assert answer is not None
        failures = [(j, r) for j, r in enumerate(answer) if isinstance(r, BaseException)]
        if not failures:
            if self._unreachable:
                self._unreachable = False
                log.info("kafka sink reaches its brokers again", extra={"destination": self.destination})
            return Delivered(lambda: answer)
        retriable = [r for _j, r in failures if _retriable(r)]
        if retriable:
            return Retry("network", type(retriable[0]).__name__)
        named = {j: [{"code": type(r).__name__, "detail": type(r).__name__, "source": ""}] for j, r in failures}
        return Reject("upstream_rejected", named, rest="resend")
