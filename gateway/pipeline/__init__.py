"""Per-destination delivery: buffer → batches → sink, with bounded concurrency.

A :class:`Destination` owns its buffer and ``max_in_flight`` worker tasks; each worker
takes a batch from the buffer and awaits ``sink.send`` on it, so at most
``max_in_flight`` requests are in flight and the buffer pushes back on intake.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from gateway.acks import Ack, AckStatus
from gateway.batching import Batch
from gateway.buffer.base import Buffer
from gateway.event import Event, encode_item
from gateway.normalize.fastpath import FastPath
from gateway.normalize.schema import Schema
from gateway.normalize.signing import Signer
from gateway.pipeline.config import DestinationConfig
from gateway.sinks.base import Sink
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.reasons import Reason

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
                    self._give_up(
                        [e for e in batch.events if not e.ack.resolved], Reason.INTERNAL_ERROR, "internal error"
                    )
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
        for batch in list(self._inflight):  # the driver resolved (and counted) its own; a bug if not
            self._give_up([e for e in batch.events if not e.ack.resolved], Reason.SHUTDOWN, "shutdown")
        left = self.buffer.drain_nowait()
        self._give_up(left, Reason.SHUTDOWN, "shutdown")
        if not (in_flight or left):
            return
        if self.keeps_undelivered:
            log.info(
                "shutdown deadline: undelivered events stay in the spool for the next start",
                extra={"destination": self.name, "in_flight": in_flight, "buffered": len(left)},
            )
            return
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

    def _give_up(self, events: list[Event], reason: Reason, detail: str) -> None:
        """Resolve the open ones ERRORED; count them all dropped unless the spool keeps them."""
        counts: dict[str, int] = {}
        for ev in events:
            if not ev.ack.resolved:
                ev.ack.resolve(AckStatus.ERRORED, detail)
            counts[ev.source] = counts.get(ev.source, 0) + 1
        if not self.keeps_undelivered:
            for source, n in counts.items():
                self.metrics.account(source, self.name).dropped(reason, n)


class _Share:
    """One source event sent to several destinations: its ack waits for all of them."""

    __slots__ = ("ack", "copies", "detail", "left", "placed", "worst")

    def __init__(self, ack: Ack, copies: list[Event]) -> None:
        self.ack = ack
        self.copies = copies
        self.left = len(copies)
        self.placed = 0  # destinations (in order) whose buffer has its copy
        self.worst = AckStatus.DELIVERED
        self.detail: Any = None


class _ShareReceiver:
    """Receives the acks of one destination's copies and hands them to the fan-out."""

    __slots__ = ("fanout", "index", "wants_delivery_details")

    def __init__(self, fanout: FanOut, index: int) -> None:
        self.fanout = fanout
        self.index = index
        # Only the first destination's results reach the source (a sender sees its answers).
        self.wants_delivery_details = index == 0

    def ack_resolved(self, key: int, status: AckStatus, detail: Any) -> None:
        self.fanout._resolved(key, self.index, status, detail)


class FanOut:
    """Several destinations seen by a source as one (``destinations: [audit, archive]``).

    Each event goes to every destination's buffer, in order; the source's ack resolves once
    every destination resolved its copy, with the worst status (DELIVERED only if all have
    it) and the first destination's detail (a sender sees its upstream's answers) unless a
    worse one decides.  A submit that fails part-way (a full buffer, a cancelled wait) keeps
    what was placed: submitting the same events again places them where they are missing;
    :meth:`abandon` gives up on them (their missing copies count ERRORED).

    Normalization is the first destination's (the configuration requires the same schema
    and signing of every destination of a source).
    """

    def __init__(self, destinations: list[Destination]) -> None:
        if len(destinations) < 2:
            raise ValueError("a fan-out needs two destinations or more")
        self.destinations = destinations
        self.primary = destinations[0]
        self._receivers = [_ShareReceiver(self, i) for i in range(len(destinations))]
        self._shares: dict[int, _Share] = {}  # fan-out key → share, until every copy resolved
        self._open: dict[int, _Share] = {}  # id(source ack) → share, until every copy is buffered
        self._next_key = 0

    # What admission and sources read of "their" destination: the first one's.
    @property
    def name(self) -> str:
        return self.primary.name

    @property
    def config(self) -> DestinationConfig:
        return self.primary.config

    @property
    def schema(self) -> Schema:
        return self.primary.schema

    @property
    def signer(self) -> Signer | None:
        return self.primary.signer

    def encode(self, event: dict[str, Any]) -> bytes:
        return self.primary.encode(event)

    def fast_path(self) -> FastPath | None:
        return self.primary.fast_path()

    def item(self, normalized: dict[str, Any]) -> bytes:
        return self.primary.item(normalized)

    @property
    def buffer(self) -> _FullestBuffer:
        """The fill of the fullest destination buffer (flow control pauses on the slowest)."""
        return _FullestBuffer(self.destinations)

    @property
    def sink(self) -> _AnyRefused:
        """``credentials_refused`` when any destination's upstream refuses the gateway's credential."""
        return _AnyRefused(self.destinations)

    async def submit(self, events: list[Event], *, wait: bool = False) -> None:
        """Put ``events`` in every destination's buffer (raises as the first refusing buffer does)."""
        shares = [self._share(e) for e in events]
        for i, dest in enumerate(self.destinations):
            todo = [s for s in shares if s.placed == i]
            if todo:
                await dest.submit([s.copies[i] for s in todo], wait=wait)
                for s in todo:
                    s.placed = i + 1
        n = len(self.destinations)
        for e, s in zip(events, shares, strict=True):
            if s.placed == n:
                self._open.pop(id(e.ack), None)

    def unplaced(self, events: list[Event]) -> list[int]:
        """Per destination (in order), how many of ``events`` have no copy in its buffer yet."""
        placed = [s.placed if (s := self._open.get(id(e.ack))) is not None else 0 for e in events]
        return [sum(1 for p in placed if p <= i) for i in range(len(self.destinations))]

    def abandon(self, events: list[Event]) -> None:
        """Give up on ``events`` not yet in every buffer: their missing copies resolve ERRORED."""
        for e in events:
            share = self._open.pop(id(e.ack), None)
            if share is None:
                continue
            for i in range(share.placed, len(self.destinations)):
                share.copies[i].ack.resolve(AckStatus.ERRORED, "not buffered")

    def _share(self, event: Event) -> _Share:
        share = self._open.get(id(event.ack))
        if share is not None and share.ack is event.ack:
            return share
        key = self._next_key
        self._next_key += 1
        copies = [
            Event(event.item, Ack(r, key), event.source, event.dedup_key, event.want_envelope) for r in self._receivers
        ]
        share = _Share(event.ack, copies)
        self._shares[key] = share
        self._open[id(event.ack)] = share
        return share

    def _resolved(self, key: int, index: int, status: AckStatus, detail: Any) -> None:
        share = self._shares.get(key)
        if share is None:
            return
        if status > share.worst or (index == 0 and status == share.worst):
            share.worst, share.detail = status, detail
        share.left -= 1
        if share.left:
            return
        del self._shares[key]
        if not share.ack.resolved:  # a source may have given up on it (dropped at shutdown)
            share.ack.resolve(share.worst, share.detail)


class _FullestBuffer:
    __slots__ = ("_destinations",)

    def __init__(self, destinations: list[Destination]) -> None:
        self._destinations = destinations

    @property
    def fill_ratio(self) -> float:
        return max(d.buffer.fill_ratio for d in self._destinations)


class _AnyRefused:
    __slots__ = ("_destinations",)

    def __init__(self, destinations: list[Destination]) -> None:
        self._destinations = destinations

    @property
    def credentials_refused(self) -> bool:
        return any(getattr(d.sink, "credentials_refused", False) for d in self._destinations)


Target = Destination | FanOut
"""Where a source's events go: one destination, or several."""


def target(names: list[str], destinations: dict[str, Destination]) -> Target:
    """The destination named, or the fan-out to all those named (in order)."""
    if len(names) == 1:
        return destinations[names[0]]
    return FanOut([destinations[n] for n in names])


def destination_names(target: Target) -> list[str]:
    """The destinations a target's events go to, in order (one unless a fan-out)."""
    return [d.name for d in target.destinations] if isinstance(target, FanOut) else [target.name]


def give_up_unplaced(target: Target, events: list[Event]) -> list[int]:
    """Give up on ``events`` that will not be buffered further; returns, per destination (in
    :func:`destination_names` order), how many of them have no copy in its buffer.  A fan-out's
    copies already placed stay and are delivered; its missing ones resolve ERRORED."""
    if isinstance(target, FanOut):
        unplaced = target.unplaced(events)
        target.abandon(events)
        return unplaced
    return [len(events)]
