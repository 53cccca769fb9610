"""The Kafka source, trackers and rebalances: assign, revoke, re-read after an error."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import ConsumerRebalanceListener, TopicPartition

from gateway.sources.kafka.offsets import PartitionTracker
from gateway.sources.kafka.state import (
    ERRORED_HOLD_SECS,
    SourceState,
)

log = logging.getLogger(__name__)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, source: Rebalancing) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._source._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._source._on_assigned(assigned)


class Rebalancing(SourceState):
    """Keeps one offset tracker per assigned partition across rebalances."""

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
