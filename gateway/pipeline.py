"""Per-destination delivery: buffer → batches → sink, with bounded concurrency.

A :class:`Destination` owns its buffer and ``max_in_flight`` worker tasks; each worker
takes a batch from the buffer and awaits ``sink.send`` on it, so at most
``max_in_flight`` requests are in flight and the buffer pushes back on intake.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from gateway.acks import AckStatus
from gateway.batching import Batch
from gateway.buffer.base import Buffer
from gateway.config import DestinationConfig
from gateway.event import Event, encode_item
from gateway.normalize.fastpath import FastPath
from gateway.normalize.schema import Schema
from gateway.normalize.signing import Signer
from gateway.sinks.base import Sink
from gateway.telemetry.metrics import Metrics

log = logging.getLogger(__name__)


class Destination:
    """One upstream audit configuration and the machinery that feeds it."""

    def __init__(
        self,
        name: str,
        config: DestinationConfig,
        buffer: Buffer,
        sink: Sink,
        schema: Schema,
        metrics: Metrics,
        workers: int,
        signer: Signer | None = None,
        *,
        keeps_undelivered: bool = False,
    ) -> None:
        self.name = name
        self.config = config
        self.buffer = buffer
        self.sink = sink
        self.schema = schema
        self.metrics = metrics
        self.signer = signer
        self.keeps_undelivered = keeps_undelivered
        """The buffer keeps what is not delivered across a restart (the disk spool): nothing is
        dropped at shutdown."""
        self._workers_n = workers
        self._workers: list[asyncio.Task[None]] = []
        self._inflight: set[Batch] = set()

    def encode(self, event: dict[str, Any]) -> bytes:
        """Normalize one event to this destination's schema and return its request item bytes.

        Raises :class:`gateway.normalize.schema.EventInvalid` with Pangea-style errors.
        """
        return self.item(self.schema.normalize(event))

    def fast_path(self) -> FastPath | None:
        """The schema's compiled path from an event's JSON to its request item (see
        :meth:`Schema.fast_path`); ``None`` for a signing destination, as signing needs the
        normalized event.  Ask again per use: an upstream schema is replaced when refreshed."""
        if self.signer is not None:
            return None
        return self.schema.fast_path()

    def item(self, normalized: dict[str, Any]) -> bytes:
        """Request item bytes of an already normalized event (signed if the destination signs)."""
        if self.signer is None:
            return encode_item(normalized)
        signed = self.signer.sign_item(normalized)
        return encode_item(signed["event"], {"signature": signed["signature"], "public_key": signed["public_key"]})

    async def submit(self, events: list[Event], *, wait: bool = False) -> None:
        """Hand events to the buffer (all or none; raises BufferFull)."""
        await self.buffer.put(events, wait=wait)

    def start(self) -> None:
        for i in range(self._workers_n):
            self._workers.append(asyncio.create_task(self._work(), name=f"dest-{self.name}-{i}"))

    async def _work(self) -> None:
        b = self.config.batch
        while True:
            events = await self.buffer.take(b.max_events, b.max_bytes, b.timeout_secs)
            if not events:
                return  # closed and empty
            for batch in Batch.split(self.name, events):  # one credential per upstream request
                self._inflight.add(batch)
                try:
                    await self.sink.send(batch)
                except Exception:  # a sink bug must not lose the acks or kill the worker
                    log.exception("sink failed on a batch", extra={"destination": self.name})
                    batch.resolve_all(AckStatus.ERRORED, "internal error")
                finally:
                    self._inflight.discard(batch)

    async def stop(self, deadline: float) -> None:
        """Flush until the buffer is empty or ``deadline``; then give up on the rest, counted and logged.

        Given up on: the open events of the batches still in flight (their sends are cut) and
        what is still buffered.  Their acks resolve ERRORED, so no sender is answered 2xx for
        them.  With a buffer that keeps undelivered events (the disk spool) nothing is lost:
        they are sent after the next start.  Otherwise they are counted in
        ``gateway_events_dropped_total{reason="shutdown"}`` and logged with the counts.
        """
        self.buffer.close()
        loop = asyncio.get_running_loop()
        in_flight = 0
        if self._workers:
            _done, pending = await asyncio.wait(self._workers, timeout=max(0.0, deadline - loop.time()))
            # Counted before the cut: a cancelled send resolves its open acks itself.
            in_flight = sum(batch.ack.open_count for batch in self._inflight)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for batch in list(self._inflight):
            batch.resolve_all(AckStatus.ERRORED, "shutdown")
        left = self.buffer.drain_nowait()
        for ev in left:
            if not ev.ack.resolved:
                ev.ack.resolve(AckStatus.ERRORED, "shutdown")
        if not (in_flight or left):
            return
        if self.keeps_undelivered:
            log.info(
                "shutdown deadline: undelivered events stay in the spool for the next start",
                extra={"destination": self.name, "in_flight": in_flight, "buffered": len(left)},
            )
            return
        self.metrics.events_dropped.labels(self.name, "shutdown").inc(in_flight + len(left))
        log.warning(
            "shutdown deadline: events dropped undelivered (their senders were not answered 2xx)",
            extra={
                "destination": self.name,
                "reason": "shutdown",
                "events": in_flight + len(left),
                "in_flight": in_flight,
                "buffered": len(left),
            },
        )
