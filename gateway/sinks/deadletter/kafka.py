"""The Kafka dead-letter store: refused events are produced to a topic (``acks=all``).

Selected by ``deadletter: {type: kafka, topic: ..., bootstrap_servers: ...}``.  Each dead
letter is one message: the key is the source name, the value the original bytes, and the
headers say the rest — ``x-gateway-reason``, ``x-gateway-detail``, ``x-gateway-source``,
``x-gateway-destination``, ``x-gateway-received-at``: produced by the one dead-letter producer
(:mod:`gateway.kafka.deadletter`), as the Kafka source's dead-letter topic is.

A dead letter is never lost: when the brokers do not acknowledge within
``produce_timeout_secs`` (or the producer cannot connect) the letters are written to the
local SQLite store instead, where ``audit-gateway dlq`` finds them.
"""

from __future__ import annotations

import logging

from gateway.kafka.deadletter import DeadLetterProducer, KafkaDeadLetter
from gateway.kafka.producer import producer_kwargs
from gateway.sinks.deadletter.base import DeadLetter
from gateway.sinks.deadletter.config import DeadLetterConfig
from gateway.sinks.deadletter.local import LocalDeadLetterStore, count_and_log
from gateway.telemetry.metrics import Metrics

log = logging.getLogger(__name__)


class KafkaDeadLetterStore:
    """Produces dead letters to a topic; falls back to the local store when Kafka cannot take them."""

    def __init__(self, config: DeadLetterConfig, fallback: LocalDeadLetterStore, metrics: Metrics) -> None:
        assert config.topic is not None
        self.config = config
        self.topic = config.topic
        self.fallback = fallback
        self.metrics = metrics
        self.producer = DeadLetterProducer(
            producer_kwargs(
                config.bootstrap_servers,
                config.security,
                path="deadletter.security",
                request_timeout_secs=config.produce_timeout_secs,
            ),
            what=f"dead-letter topic {self.topic}",
            connect_timeout_secs=config.produce_timeout_secs,
            produce_timeout_secs=config.produce_timeout_secs,
        )

    async def start(self) -> None:
        """Connect now if the brokers answer; otherwise the first write tries again."""
        await self.producer.connect()

    async def write(self, letters: list[DeadLetter]) -> None:
        if not letters:
            return
        results = await self.producer.produce([self._message(d) for d in letters])
        failed = [d for d, r in zip(letters, results, strict=True) if r is not None]
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

    def _message(self, d: DeadLetter) -> KafkaDeadLetter:
        """The key is the source name: one source's dead letters stay in order in one partition."""
        return KafkaDeadLetter(
            self.topic, d.source.encode(), d.payload, d.reason, d.detail, d.source, d.destination, d.received_at
        )

    async def close(self) -> None:
        await self.producer.close()
        await self.fallback.close()
