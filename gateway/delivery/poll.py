"""The one poll loop: a :class:`~gateway.delivery.sink.Pending` request → its final answer.

An upstream may accept a call without finishing it (Pangea answers 202: ``/v2/log_async``
always, any call when it is slow); the result is then fetched with the sink's poll request
until the answer is final.  :func:`poll_until_final` owns the waiting (delays doubling from
``poll.initial_delay_secs`` up to ``poll.max_delay_secs``, the upstream's ``Retry-After`` as a
floor), the give-up bound (``poll.deadline_secs``) and the ``gateway_upstream_polls_total``
outcomes; the sink only builds the poll request and says what each answer means
(:meth:`~gateway.delivery.sink.PollingSink.classify_poll`).

The :class:`~gateway.delivery.driver.DeliveryDriver` calls it for a batch; a sink's own calls
that are not deliveries (Pangea's ``/v1/schema`` fetch) call it too, so there is one loop.

At-least-once note: a 202 means the upstream *has* the events (it stores them at 202 time).
When polling gives up the batch is sent again naming the accepted request (Pangea's
``X-Pangea-Retried-Request-Ids``); an upstream that honours that de-duplicates, one that does
not stores the events twice.  That duplicate is accepted rather than a risk of loss.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from gateway.delivery.config import PollConfig
from gateway.delivery.sink import AnswerT, Pending, PollingSink, RequestT
from gateway.errors import RetriableUpstreamError

__all__ = ["PollGaveUp", "poll_delay", "poll_until_final"]

log = logging.getLogger(__name__)


class PollGaveUp(RetriableUpstreamError):
    """Polling ended without a result; the call must be made again (retriable by classification).

    ``outcome`` is ``deadline`` (``poll.deadline_secs`` passed) or ``lost`` (the upstream does
    not know the request, or the accepted answer named nothing to poll).
    """

    def __init__(self, outcome: str, request_id: str | None) -> None:
        super().__init__(f"polling gave up ({outcome}) for request {request_id or '<unknown>'}")
        self.outcome = outcome
        self.request_id = request_id


def poll_delay(n: int, config: PollConfig) -> float:
    """The ``n``-th delay (0-based): doubling from ``initial_delay_secs``, capped at ``max_delay_secs``."""
    return min(config.max_delay_secs, config.initial_delay_secs * 2.0 ** min(n, 62))


async def poll_until_final(
    sink: PollingSink[RequestT, AnswerT],
    pending: Pending[RequestT],
    config: PollConfig,
    retried_ids: list[str],
    *,
    count: Callable[[str], None],
    sleep: Callable[[float], Awaitable[None]],
    clock: Callable[[], float],
) -> tuple[AnswerT | None, BaseException | None]:
    """Poll ``pending`` until the final answer; returns it (or the exception the last poll raised).

    Each poll is ``sink.call(poll request)`` after a wait, its answer told to
    ``sink.classify_poll``; ``count`` is given each poll's outcome (the metric).  Raises
    :class:`PollGaveUp` when ``config.deadline_secs`` has passed (outcome ``deadline``) or the
    upstream lost the request (``lost``).  ``sleep`` and ``clock`` are injected (tests let time
    pass without waiting).
    """
    request = pending.poll
    if request is None:
        count("lost")
        raise PollGaveUp("lost", pending.request_id)
    start = clock()
    n = 0
    after = pending.after_secs
    while True:
        remaining = config.deadline_secs - (clock() - start)
        if remaining <= 0:
            count("deadline")
            raise PollGaveUp("deadline", pending.request_id)
        # The upstream's Retry-After is a floor (it said when to come back); the deadline a ceiling.
        await sleep(min(remaining, max(poll_delay(n, config), after or 0.0)))
        n += 1
        answer: AnswerT | None = None
        error: BaseException | None = None
        try:
            answer = await sink.call(request, retried_ids)
        except Exception as exc:  # classified by the sink: transient ones are polled through
            error = exc
        step = sink.classify_poll(answer, error)
        count(step.outcome)
        if step.outcome in ("pending", "error"):
            if error is not None:
                log.debug("poll failed; polling on", extra={"error": type(error).__name__})
            request = step.poll or request
            after = step.after_secs
            continue
        if step.outcome == "lost":
            raise PollGaveUp("lost", pending.request_id)
        return answer, error
