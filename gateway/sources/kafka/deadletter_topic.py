"""The Kafka dead-letter topic: poison messages are produced there, then committed past.

A poison message (undecodable, or refused by admission) is
produced to ``dlq_topic`` (default ``<topic>.dlq``) with its original key and value by the
gateway's one dead-letter producer (:class:`gateway.kafka.deadletter.DeadLetterProducer`,
whose headers the dead-letter store of ``type: kafka`` writes too), with ``acks=all``: the
message's own headers first, then ``x-gateway-reason``, ``x-gateway-detail``,
``x-gateway-source``, ``x-gateway-destination``, ``x-gateway-received-at``,
``x-gateway-source-topic``, ``x-gateway-source-partition``, ``x-gateway-source-offset``.
What is this module's is the bookkeeping: only when the broker has it does the message's
offset count as done (:meth:`PartitionTracker.dead_lettered`).

Retriable failures (broker away, leader moving) are retried with backoff for as long as
the source runs; the partition keeps flowing meanwhile, only its commit position waits.
A failure Kafka calls final (message too large, not authorized) writes the dead letter to
the gateway's :class:`~gateway.delivery.deadletter.DeadLetterStore` instead, so the
partition is never stalled for good.  At shutdown, dead letters not yet written leave
their offsets uncommitted: the partition's next reader dead-letters them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import KafkaError

from gateway.delivery.deadletter import DeadLetter, DeadLetterStore
from gateway.kafka.deadletter import DeadLetterProducer, KafkaDeadLetter
from gateway.sources.kafka.offsets import PartitionTracker
from gateway.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

SEND_BATCH = 500


@dataclass(slots=True)
class DeadLetterJob:
    """One dead letter to produce; ``tracker.dead_lettered(offset)`` once it is written."""

    tracker: PartitionTracker
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    reason: str
    detail: str
    attempts: int = 0
    finished: bool = False
    received_at: float = field(default_factory=time.time)
    """When it was found poison."""

    def finish(self, written: bool) -> None:
        """Tell the tracker, once: written (the offset may be committed past) or not."""
        if self.finished:
            return
        self.finished = True
        if written:
            self.tracker.dead_lettered(self.offset)
        else:
            self.tracker.dead_letter_failed(self.offset)


class DeadLetterTopic:
    """Produces dead letters in the background; ``put`` never blocks."""

    def __init__(
        self,
        source: str,
        destination: str,
        dlq_topic: str | None,
        producer_kwargs: dict[str, Any],
        metrics: Metrics,
        store: DeadLetterStore,
    ) -> None:
        self.source = source
        self.destination = destination
        self.dlq_topic = dlq_topic
        self._producer = DeadLetterProducer(producer_kwargs, what=f"dead-letter topic of source {source}")
        self._metrics = metrics
        self._store = store
        self._queue: deque[DeadLetterJob] = deque()
        self._wake = asyncio.Event()
        self._inflight: list[DeadLetterJob] = []
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def topic_for(self, source_topic: str) -> str:
        return self.dlq_topic or f"{source_topic}.dlq"

    @property
    def backlog(self) -> int:
        """Dead letters queued or being produced."""
        return len(self._queue) + len(self._inflight)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"kafka-dlq-{self.source}")

    def put(self, job: DeadLetterJob) -> None:
        if self._closing:
            job.finish(False)
            return
        self._queue.append(job)
        self._wake.set()

    async def _connect(self) -> None:
        backoff = 0.2
        while not await self._producer.connect():  # it logs why
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._producer.connected:
                await self._connect()
            jobs = [self._queue.popleft() for _ in range(min(SEND_BATCH, len(self._queue)))]
            self._inflight = jobs
            retry = await self._send(jobs)
            self._inflight = []
            if retry:
                self._queue.extendleft(reversed(retry))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            else:
                backoff = 0.1

    async def _send(self, jobs: list[DeadLetterJob]) -> list[DeadLetterJob]:
        """Produce ``jobs``; returns those to retry."""
        results = await self._producer.produce([self._letter(job) for job in jobs])
        retry: list[DeadLetterJob] = []
        final: list[tuple[DeadLetterJob, BaseException]] = []
        for job, res in zip(jobs, results, strict=True):
            if res is None:
                self._metrics.kafka_deadlettered.labels(self.source, job.reason).inc()
                job.finish(True)
            elif isinstance(res, KafkaError) and not res.retriable:
                final.append((job, res))
            elif isinstance(res, Exception):
                job.attempts += 1
                if job.attempts in (1, 10) or job.attempts % 100 == 0:
                    log.warning(
                        "dead-letter topic write failed; retrying",
                        extra={"source": self.source, "topic": self.topic_for(job.topic), "error": repr(res)},
                    )
                retry.append(job)
            else:
                raise res
        if final:
            await self._to_store(final)
        return retry

    def _letter(self, job: DeadLetterJob) -> KafkaDeadLetter:
        return KafkaDeadLetter(
            self.topic_for(job.topic),
            job.key,
            job.value,
            job.reason,
            job.detail,
            self.source,
            self.destination,
            job.received_at,
            (job.topic, job.partition, job.offset),
            job.headers,
        )

    async def _to_store(self, failed: list[tuple[DeadLetterJob, BaseException]]) -> None:
        now = time.time()
        letters = [
            DeadLetter(
                source=self.source,
                destination=self.destination,
                reason=job.reason,
                detail=(
                    f"{job.detail} (source {job.topic}/{job.partition}@{job.offset}; "
                    f"dead-letter topic refused it: {type(exc).__name__})"
                ),
                payload=job.value or b"",
                received_at=now,
            )
            for job, exc in failed
        ]
        log.error(
            "dead-letter topic refused messages for good; recorded in the dead-letter store",
            extra={"source": self.source, "count": len(letters), "error": repr(failed[0][1])},
        )
        try:
            await self._store.write(letters)
        except Exception:  # the store must not raise; if it does, do not commit past them
            log.exception("dead-letter store write failed", extra={"source": self.source})
            for job, _ in failed:
                job.finish(False)
            return
        for job, _ in failed:
            self._metrics.deadletters.labels(self.source, job.reason).inc()
            job.finish(True)

    async def stop(self, deadline: float) -> None:
        """Write what is queued until ``deadline``; what is left stays uncommitted."""
        loop = asyncio.get_running_loop()
        while self.backlog and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)  # a short poll; the worker task drains the queue
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        left = [*self._inflight, *self._queue]
        self._inflight = []
        self._queue.clear()
        for job in left:
            job.finish(False)
        if left:
            log.warning(
                "shutdown: dead letters not written; their offsets stay uncommitted",
                extra={"source": self.source, "count": len(left)},
            )
        await self._producer.close(max(0.5, deadline - loop.time()))
