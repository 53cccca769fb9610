"""The Kafka source, commits: offsets committed only past what is done."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from gateway.sources.kafka.offsets import PartitionTracker
from gateway.sources.kafka.state import (
    SourceState,
)

log = logging.getLogger(__name__)


class Committing(SourceState):
    """Commits each partition's committable offset on an interval and on demand."""

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
