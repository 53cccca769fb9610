"""The one delivery driver: a batch → a sink, until every event of it is resolved.

:meth:`DeliveryDriver.send` owns a batch:

* builds a request of the events still to send (:meth:`Sink.build_request`), sends it
  (:meth:`Sink.call`) and asks the sink what the answer means (:meth:`Sink.classify`);
* :class:`~gateway.delivery.sink.Delivered` — every event sent DELIVERED with its result;
* :class:`~gateway.delivery.sink.Retry` — sent again after :func:`~gateway.delivery.retry.backoff_secs`
  (full jitter, the upstream's ``Retry-After`` as a floor), each attempt naming the request ids
  of earlier ones; until ``retry.max_attempts`` (then ERRORED, so the source re-delivers) or
  until cancelled;
* :class:`~gateway.delivery.sink.Reject` — the named events (or all) dead-lettered to the
  destination's dead-letter store, once, with secrets masked, counted and resolved REJECTED
  (ERRORED if the store cannot write them: the source re-delivers rather than lose them); the
  rest sent again at once when the sink says so.
* :class:`~gateway.delivery.sink.Pending` — accepted, not finished (a 202): polled
  (:func:`~gateway.delivery.poll.poll_until_final`: waits, ``Retry-After``, the
  ``poll.deadline_secs`` bound, ``gateway_upstream_polls_total``) until the final answer, which
  the sink classifies like a direct one; if polling gives up, retried as above (reason
  ``poll_deadline`` / ``poll_lost``), the accepted request named among the retried ids.

The driver owns the delivery metrics (``gateway_batch_*``, ``gateway_events_forwarded_total``,
``gateway_delivery_in_flight_events``,
``gateway_events_rejected_total{stage="upstream"}``, ``gateway_upstream_retries_total``,
``gateway_upstream_polls_total``, and
``gateway_events_dropped_total`` for what it gives up on) and every ack of the batch: ``send``
returns only when each is resolved, and if it is cancelled resolves what is open as ERRORED.
Each event of a batch gets exactly one outcome in the accounting (see
:class:`~gateway.telemetry.metrics.Account`), by its own source; an ERRORED one is counted
dropped only when ``requeues_errored`` is false (the disk spool offers it again instead).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from operator import attrgetter
from typing import Any, Generic

import orjson

from gateway.acks import AckStatus
from gateway.batching import Batch
from gateway.delivery.config import PollConfig, RetryConfig
from gateway.delivery.deadletter import DeadLetter, DeadLetterStore
from gateway.delivery.poll import PollGaveUp, poll_until_final
from gateway.delivery.retry import backoff_secs
from gateway.delivery.sink import AnswerT, Delivered, Outcome, Pending, PollingSink, Reject, RequestT, Retry, Sink
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.reasons import Reason
from gateway.telemetry.redact import redact
from gateway.telemetry.tap import TAP

__all__ = ["DeliveryDriver"]

_source_of = attrgetter("source")

log = logging.getLogger(__name__)


class DeliveryDriver(Generic[RequestT, AnswerT]):
    """Delivers the batches of one destination through ``sink`` (see the module doc).

    ``sleep`` is the backoff and poll sleep (tests observe delays through it), ``clock`` the
    monotonic clock of the poll deadline (tests let time pass through both); ``poll`` the
    polling policy of a sink that answers :class:`~gateway.delivery.sink.Pending`.  The sink's life cycle
    and readiness (``start``, ``stop``, ``check``, ``credentials_refused``) are reached through
    the driver, which is what a :class:`~gateway.pipeline.Destination` drives.
    """

    def __init__(
        self,
        sink: Sink[RequestT, AnswerT],
        retry: RetryConfig,
        metrics: Metrics,
        deadletters: DeadLetterStore,
        *,
        poll: PollConfig | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        requeues_errored: bool = False,
    ) -> None:
        self.sink = sink
        self.requeues_errored = requeues_errored
        """The buffer takes ERRORED events back and offers them again (the disk spool): they
        stay in flight in the accounting rather than count as dropped."""
        self.destination = sink.destination
        self.retry = retry
        self.poll = poll if poll is not None else PollConfig()
        self._metrics = metrics
        self._deadletters = deadletters
        self._sleep = sleep
        self._clock = clock

    def __repr__(self) -> str:
        return f"DeliveryDriver({self.sink!r})"

    # -- the sink's life cycle and readiness -------------------------------------------------

    async def start(self) -> None:
        await self.sink.start()

    async def stop(self) -> None:
        await self.sink.stop()

    async def check(self) -> str | None:
        return await self.sink.check()

    @property
    def credentials_refused(self) -> bool:
        return self.sink.credentials_refused

    # -- delivery ----------------------------------------------------------------------------

    async def send(self, batch: Batch) -> None:
        """Deliver ``batch``; returns when every ack is resolved.  Re-raises only cancellation."""
        # Out of the buffer's gauge, into this one until resolved (a retrying batch is not lost
        # from view); the whole batch is counted until send returns.
        in_flight = self._metrics.delivery_in_flight_events.labels(self.destination)
        in_flight.inc(len(batch))
        try:
            await self._send(batch)
        finally:
            in_flight.dec(len(batch))

    async def _send(self, batch: Batch) -> None:
        # Batch indexes without an outcome yet, kept up to date in place by _deliver so that
        # whatever ends it (cancellation, a bug) accounts for exactly the rest.
        todo = list(range(len(batch)))
        try:
            if self.sink.stopped:
                self._errored(batch, todo, Reason.SINK_STOPPED, "sink not running")
                return
            await self._deliver(batch, todo)
        except asyncio.CancelledError:
            self._errored(batch, todo, Reason.SHUTDOWN, "cancelled (shutdown)")
            raise
        except Exception:
            log.exception("sink error on a batch", extra={"destination": self.destination})
            self._errored(batch, todo, Reason.INTERNAL_ERROR, "internal error")
        if todo or batch.ack.open_count:  # a bug if so; the contract says every ack is resolved
            log.error("batch left with open acks", extra={"destination": self.destination})
            self._errored(batch, todo, Reason.INTERNAL_ERROR, "internal error")
            batch.resolve_all(AckStatus.ERRORED, "internal error")

    def _count(self, batch: Batch, indexes: Sequence[int] | None) -> dict[str, int]:
        """Events per source among ``indexes`` of ``batch`` (None: all); usually one source."""
        events = batch.events
        if indexes is None or len(indexes) == len(events):
            sources = list(map(_source_of, events))
            if sources.count(sources[0]) == len(sources):  # the usual batch: one source (C-level)
                return {sources[0]: len(sources)}
            chosen: Sequence[Any] = events
        else:
            chosen = [events[i] for i in indexes]
        counts: dict[str, int] = {}
        for e in chosen:
            counts[e.source] = counts.get(e.source, 0) + 1
        return counts

    def _errored(self, batch: Batch, todo: list[int], reason: Reason, detail: str) -> None:
        """Resolve ``todo`` ERRORED and account for them (dropped, unless the buffer retakes them)."""
        if not todo:
            return
        self._resolve(batch, todo, AckStatus.ERRORED, detail)
        if not self.requeues_errored:
            for source, k in self._count(batch, todo).items():
                self._metrics.account(source, self.destination).dropped(reason, k)
        todo.clear()

    async def _deliver(self, batch: Batch, todo: list[int]) -> None:
        sink = self.sink
        n = len(batch)
        pending = todo  # batch indexes still to deliver; request position j ↔ pending[j]
        retried_ids: list[str] = []  # request ids of earlier attempts, for the upstream to de-duplicate
        failures = 0  # retriable failures so far (backoff exponent, max_attempts)
        at_once_used = False
        observed = False
        while pending:
            if sink.stopped:
                self._errored(batch, pending, Reason.SINK_STOPPED, "sink stopped")
                return
            events = batch.events if len(pending) == n else [batch.events[i] for i in pending]
            request = sink.build_request(events, retried_ids)
            if not observed:
                self._metrics.batch_events.labels(self.destination).observe(n)
                self._metrics.batch_bytes.labels(self.destination).observe(request.nbytes)
                observed = True

            answer: AnswerT | None = None
            error: BaseException | None = None
            try:
                answer = await sink.call(request, retried_ids)
            except Exception as exc:  # network errors, gave-up polls, credential errors
                error = exc

            if sink.stopped:  # stop() closed the sink under this call: not the upstream's fault
                self._errored(batch, pending, Reason.SINK_STOPPED, "sink stopped")
                return

            outcome = await self._final(
                await sink.classify(answer, error, len(pending), at_once_used=at_once_used),
                retried_ids,
                len(pending),
                at_once_used=at_once_used,
            )
            if outcome is None:  # stop() closed the sink under a poll
                self._errored(batch, pending, Reason.SINK_STOPPED, "sink stopped")
                return

            if isinstance(outcome, Delivered):
                # pending holds distinct ascending indexes: as many as the batch is every one.
                batch.ack.resolve_many(None if len(pending) == n else pending, AckStatus.DELIVERED, outcome.results)
                for source, k in self._count(batch, pending).items():
                    self._metrics.account(source, self.destination).forwarded(k)
                pending.clear()
                if TAP.active:  # tap point "delivered" (issue 16): one call per batch, for every sink
                    TAP.delivered(self.destination, events)
                return

            if isinstance(outcome, Retry):
                if outcome.at_once and not at_once_used:
                    at_once_used = True
                    self._metrics.upstream_retries.labels(self.destination, outcome.reason).inc()
                    continue
                failures += 1
                max_attempts = self.retry.max_attempts
                if max_attempts is not None and failures >= max_attempts:
                    log.warning(
                        "upstream retries exhausted; events errored",
                        extra={"destination": self.destination, "attempts": failures, "last_error": outcome.what},
                    )
                    self._errored(
                        batch,
                        pending,
                        Reason.RETRIES_EXHAUSTED,
                        f"upstream failed after {failures} attempts: {outcome.what}",
                    )
                    return
                self._metrics.upstream_retries.labels(self.destination, outcome.reason).inc()
                delay = backoff_secs(
                    failures - 1, self.retry.initial_backoff_secs, self.retry.max_backoff_secs, outcome.retry_after
                )
                log.debug(
                    "upstream call failed; retrying",
                    extra={
                        "destination": self.destination,
                        "error": outcome.what,
                        "attempt": failures,
                        "delay_secs": round(delay, 2),
                    },
                )
                await self._sleep(delay)
                continue

            pending[:] = await self._rejected(batch, pending, outcome)

    async def _final(
        self, outcome: Outcome, retried_ids: list[str], sent: int, *, at_once_used: bool
    ) -> Delivered | Retry | Reject | None:
        """``outcome``, or for a :class:`Pending` one, how the sink classifies the final answer
        its polls get; a poll that gives up is a :class:`Retry` (the send is made again).  None
        when the sink stopped meanwhile."""
        if not isinstance(outcome, Pending):
            return outcome
        sink = self.sink
        if not isinstance(sink, PollingSink):
            raise TypeError(f"{sink!r} answered Pending but does not classify polls")
        while isinstance(outcome, Pending):
            try:
                answer, error = await poll_until_final(
                    sink, outcome, self.poll, retried_ids, count=self._count_poll, sleep=self._sleep, clock=self._clock
                )
            except PollGaveUp as exc:
                return Retry(f"poll_{exc.outcome}", str(exc))
            if sink.stopped:
                return None
            outcome = await sink.classify(answer, error, sent, at_once_used=at_once_used)
        return outcome

    def _count_poll(self, outcome: str) -> None:
        self._metrics.upstream_polls.labels(self.destination, outcome).inc()

    async def _rejected(self, batch: Batch, pending: list[int], outcome: Reject) -> list[int]:
        """Dead-letter what ``outcome`` refuses; returns the batch indexes still to send."""
        named = outcome.errors
        if outcome.rest == "resend" and named:
            await self._reject(batch, [(pending[j], errs) for j, errs in sorted(named.items())], outcome.reason)
            return [i for j, i in enumerate(pending) if j not in named]
        await self._reject(batch, [(i, named.get(j) or outcome.others) for j, i in enumerate(pending)], outcome.reason)
        return []

    async def _reject(self, batch: Batch, rejected: Sequence[tuple[int, list[dict[str, Any]]]], dl_reason: str) -> None:
        """Dead-letter, count and resolve REJECTED; if the dead letters cannot be written, ERRORED.

        The errors keep the upstream's words (for the operator: dead-letter store, Kafka
        dead-letter topic) with registered secrets masked; webhook answers keep only codes.
        The dead letter's reason and the metric's are the sink's (``upstream_rejected``,
        ``config_error``), in the one vocabulary; the upstream's codes stay in the detail."""
        reason = Reason(dl_reason)
        rejected = [(i, [_masked(e) for e in errs]) for i, errs in rejected]
        now = time.time()
        letters = [
            DeadLetter(
                source=batch.events[i].source,
                destination=self.destination,
                reason=reason.value,
                detail=orjson.dumps(errs).decode(),
                payload=batch.events[i].item,
                received_at=now,
            )
            for i, errs in rejected
        ]
        try:
            await self._deadletters.write(letters)
        except Exception:
            # Not recorded anywhere: let the source re-deliver rather than lose them.
            log.exception("dead-letter write failed; events errored", extra={"destination": self.destination})
            self._errored(batch, [i for i, _ in rejected], Reason.DEADLETTER_FAILED, "dead-letter write failed")
            return
        for i, errs in rejected:
            batch.ack.resolve_one(i, AckStatus.REJECTED, errs)
        for source, k in self._count(batch, [i for i, _ in rejected]).items():
            self._metrics.account(source, self.destination).rejected("upstream", reason, k)
        if TAP.active:  # tap point "rejected" (issue 16): the upstream's refusals too, one call per batch
            TAP.rejected(self.destination, [batch.events[i] for i, _ in rejected], [errs for _, errs in rejected])

    @staticmethod
    def _resolve(batch: Batch, indexes: list[int], status: AckStatus, detail: Any) -> None:
        batch.ack.resolve_many(indexes, status, [detail] * len(indexes))


def _masked(error: dict[str, Any]) -> dict[str, Any]:
    """``error`` with registered secrets masked in its string values."""
    return {k: redact(v) if isinstance(v, str) else v for k, v in error.items()}
