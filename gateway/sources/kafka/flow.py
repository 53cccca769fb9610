"""The Kafka source, into the buffer: chunks, waiting for room, dropping, and pausing partitions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from aiokafka.errors import KafkaError

from gateway.acks import AckStatus
from gateway.errors import BufferFull
from gateway.event import Event
from gateway.pipeline import give_up_unplaced
from gateway.sources.kafka.state import (
    DLQ_BACKLOG_PAUSE,
    SUBMIT_CHUNK,
    SUBMIT_SLICE_SECS,
    SourceState,
    _released,
)
from gateway.telemetry.reasons import Reason

log = logging.getLogger(__name__)


class FlowControl(SourceState):
    """Puts events in the destination buffer and pauses fetching while it (or the dead-letter backlog) is full."""

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
            self._drop(events[start:], Reason.SHUTDOWN)
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
                self._drop(chunk, Reason.SHUTDOWN)
                return
            gone = [e for e in chunk if _released(e.ack)]
            if gone:
                self._drop(gone, Reason.REVOKED)
                chunk = [e for e in chunk if not _released(e.ack)]
            if loop.time() - last_poll >= keepalive:
                await self._keepalive_poll()
                last_poll = loop.time()

    def _drop(self, events: Iterable[Event], reason: Reason) -> None:
        events = list(events)
        # Never buffered (a fan-out: the copies not placed yet), so each leaves the accounting here.
        unplaced = give_up_unplaced(self.destination, events)
        for e in events:
            if not e.ack.resolved:
                e.ack.resolve(AckStatus.ERRORED, reason)
        for acct, n in zip(self.admitter.accounts, unplaced, strict=True):
            if n:
                acct.dropped(reason, n)

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
