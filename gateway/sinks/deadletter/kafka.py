"""The Kafka dead-letter store: refused events are produced to a topic (``acks=all``).

Selected by ``deadletter: {type: kafka, topic: ..., bootstrap_servers: ...}``.  Each dead
letter is one message: the key is the source name, the value the original bytes, and the
headers say the rest — ``x-gateway-reason``, ``x-gateway-detail``, ``x-gateway-source``,
``x-gateway-destination``, ``x-gateway-received-at`` (the header names of the Kafka source's
own dead-letter topic).

A dead letter is never lost: when the brokers do not acknowledge within
``produce_timeout_secs`` (or the producer cannot connect) the letters are written to the
local SQLite store instead, where ``audit-gateway dlq`` finds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from gateway.kafka.producer import HEADER_DETAIL, HEADER_REASON, detail_header, produce_each, producer_kwargs
from gateway.sinks.deadletter.base import DeadLetter
from gateway.sinks.deadletter.config import DeadLetterConfig
from gateway.sinks.deadletter.local import LocalDeadLetterStore, count_and_log
from gateway.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

HEADER_SOURCE = "x-gateway-source"
HEADER_DESTINATION = "x-gateway-destination"
HEADER_RECEIVED_AT = "x-gateway-received-at"


def headers_of(letter: DeadLetter) -> list[tuple[str, bytes]]:
    return [
        (HEADER_REASON, letter.reason.encode()),
        (HEADER_DETAIL, detail_header(letter.detail)),
        (HEADER_SOURCE, letter.source.encode()),
        (HEADER_DESTINATION, (letter.destination or "").encode()),
        (HEADER_RECEIVED_AT, repr(letter.received_at).encode()),
    ]


class KafkaDeadLetterStore:
    """Produces dead letters to a topic; falls back to the local store when Kafka cannot take them."""

    def __init__(self, config: DeadLetterConfig, fallback: LocalDeadLetterStore, metrics: Metrics) -> None:
        assert config.topic is not None
        self.config = config
        self.topic = config.topic
        self.fallback = fallback
        self.metrics = metrics
        self._producer: Any = None
        self._lock = asyncio.Lock()
        self._kwargs = producer_kwargs(
            config.bootstrap_servers,
            config.security,
            path="deadletter.security",
            request_timeout_secs=config.produce_timeout_secs,
        )

    async def start(self) -> None:
        """Connect now if the brokers answer; otherwise the first write tries again."""
        await self._connected()

    async def _connected(self) -> Any:
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(**self._kwargs)
                try:
                    await asyncio.wait_for(producer.start(), self.config.produce_timeout_secs)
                except (KafkaError, TimeoutError, OSError) as exc:
                    with contextlib.suppress(Exception):
                        await producer.stop()
                    log.warning("dead-letter topic unreachable", extra={"topic": self.topic, "error": repr(exc)})
                    return None
                self._producer = producer
            return self._producer

    async def write(self, letters: list[DeadLetter]) -> None:
        if not letters:
            return
        producer = await self._connected()
        failed = letters
        if producer is not None:
            failed = await self._produce(producer, letters)
        if failed:
            log.warning(
                "dead-letter topic did not take dead letters; writing them locally",
                extra={"topic": self.topic, "count": len(failed), "path": str(self.fallback.path)},
            )
            await self.fallback.write(failed)  # raises if even that fails: the caller keeps the events
        failed_ids = {id(d) for d in failed}
        done = [d for d in letters if id(d) not in failed_ids]
        if done:
            count_and_log(self.metrics, done)

    async def _produce(self, producer: Any, letters: list[DeadLetter]) -> list[DeadLetter]:
        messages = [(self.topic, d.source.encode(), d.payload, headers_of(d)) for d in letters]
        try:
            results = await produce_each(producer, messages, self.config.produce_timeout_secs)
        except TimeoutError:
            return letters
        return [d for d, r in zip(letters, results, strict=True) if isinstance(r, BaseException)]

    async def close(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None
        await self.fallback.close()
