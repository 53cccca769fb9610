"""Polling of 202-accepted upstream calls until their result is ready.

``/v2/log_async`` always answers 202, and any call may when the upstream is slow; the result is
then fetched with ``GET result.location`` (else ``/request/{request_id}``), with the same
credentials, until it answers something other than 202.

At-least-once note: a 202 means the upstream *has* the events (it stores them at 202 time).
If polling gives up (deadline, or the request id is unknown to the upstream), the sink sends
the batch again with ``X-Pangea-Retried-Request-Ids`` naming the accepted request; an upstream
that honours the header de-duplicates, one that does not stores the events twice.  We accept
that duplicate rather than risk a loss.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

from gateway.delivery.retry import Verdict, classify
from gateway.errors import RetriableUpstreamError
from gateway.sinks.pangea.config import PollConfig
from gateway.sinks.pangea.request_builder import Answer, join_url, resolve_location, same_origin

__all__ = ["PollGaveUp", "poll_delay", "poll_until_done", "poll_url"]

log = logging.getLogger(__name__)


class PollGaveUp(RetriableUpstreamError):
    """Polling ended without a result; the call must be made again (retriable by classification).

    ``outcome`` is ``deadline`` (``poll.deadline_secs`` passed) or ``lost`` (the upstream does
    not know the request, or the 202 named no location and no request id).
    """

    def __init__(self, outcome: str, request_id: str | None) -> None:
        super().__init__(f"polling gave up ({outcome}) for request {request_id or '<unknown>'}")
        self.outcome = outcome
        self.request_id = request_id


def poll_url(base_url: str, accepted: Answer, *, by_request_id: bool = True) -> str | None:
    """Where to poll for ``accepted``'s result, always under ``base_url``'s origin.

    ``result.location`` may be absolute or relative.  An absolute location on another origin
    is *not* followed as is: polling sends our bearer token, and a response field must not be
    able to send it elsewhere.  Its path is used on our base URL instead (Pangea's own
    locations are on the service's origin, so this only changes anything behind a proxy).
    Without a location: ``/request/{request_id}`` (what the official SDK polls).
    """
    result = accepted.result
    location = result.get("location") if result else None
    if isinstance(location, str) and location:
        resolved = resolve_location(base_url, location)
        if same_origin(resolved, base_url):
            return resolved
        parts = urlsplit(resolved)
        log.warning(
            "202 location is on another origin; polling it under the configured upstream URL",
            extra={"location_host": parts.hostname},
        )
        return join_url(base_url, urlunsplit(("", "", parts.path, parts.query, "")))
    if by_request_id and accepted.request_id:
        return join_url(base_url, f"/request/{accepted.request_id}")
    return None


def poll_delay(n: int, config: PollConfig) -> float:
    """The ``n``-th delay (0-based): doubling from ``initial_delay_secs``, capped at ``max_delay_secs``."""
    return min(config.max_delay_secs, config.initial_delay_secs * 2.0 ** min(n, 62))


async def poll_until_done(
    get: Callable[[str], Awaitable[Answer]],
    base_url: str,
    accepted: Answer,
    config: PollConfig,
    *,
    on_outcome: Callable[[str], None] = lambda _outcome: None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Answer:
    """Poll until the accepted call's final answer, and return it.

    ``get(url)`` performs one authenticated GET.  Returns the first non-202 answer that is not
    a transient failure: a 200 (``outcome=done``) or the original call's error
    (``outcome=failed``, e.g. a 400 ValidationError found while processing).  Transient
    failures (per :func:`~gateway.delivery.retry.classify`) are polled through
    (``outcome=error``).  Raises :class:`PollGaveUp` when the deadline passes or the upstream
    does not know the request (404).  ``on_outcome`` is told each poll's outcome (metrics).
    """
    request_id = accepted.request_id
    url = poll_url(base_url, accepted)
    if url is None:
        on_outcome("lost")
        raise PollGaveUp("lost", request_id)
    start = clock()
    n = 0
    retry_after = accepted.retry_after
    while True:
        remaining = config.deadline_secs - (clock() - start)
        if remaining <= 0:
            on_outcome("deadline")
            raise PollGaveUp("deadline", request_id)
        # The upstream's Retry-After is a floor (it said when to come back); the deadline a ceiling.
        await sleep(min(remaining, max(poll_delay(n, config), retry_after or 0.0)))
        n += 1
        try:
            answer = await get(url)
        except Exception as exc:
            if classify(None, exc) is Verdict.RETRY:
                on_outcome("error")
                log.debug("poll failed; polling on", extra={"error": type(exc).__name__})
                retry_after = None
                continue
            raise
        retry_after = answer.retry_after
        if answer.status == 202:
            on_outcome("pending")
            # A later 202 may move the location; its own request_id is the GET's, not the call's.
            url = poll_url(base_url, answer, by_request_id=False) or url
            continue
        if answer.status == 200:
            on_outcome("done")
            return answer
        if answer.status == 404:
            on_outcome("lost")
            raise PollGaveUp("lost", request_id)
        if classify(answer.status, None) is Verdict.RETRY:
            on_outcome("error")
            continue
        on_outcome("failed")
        return answer
