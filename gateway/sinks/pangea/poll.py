"""What Pangea's 202 polling is made of: where to poll, and what a poll's answer means.

``/v2/log_async`` always answers 202, and any call may when the upstream is slow; the result is
then fetched with ``GET result.location`` (else ``/request/{request_id}``), with the same
credentials, until it answers something other than 202.  The waiting, the deadline and the
metric are the delivery driver's (:mod:`gateway.delivery.poll`, the one poll loop); this module
builds the poll request (:func:`pending`) and classifies its answer (:func:`poll_step`).
"""

from __future__ import annotations

import dataclasses
import logging
from urllib.parse import urlsplit, urlunsplit

from gateway.delivery.retry import Verdict, classify
from gateway.delivery.sink import Pending, Polled
from gateway.sinks.pangea.request_builder import Answer, PangeaRequest, join_url, resolve_location, same_origin

__all__ = ["pending", "poll_step", "poll_url"]

log = logging.getLogger(__name__)


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


def pending(base_url: str, sent: PangeaRequest, accepted: Answer) -> Pending[PangeaRequest]:
    """The driver's :class:`~gateway.delivery.sink.Pending` for a 202 ``accepted`` answer to ``sent``."""
    url = poll_url(base_url, accepted)
    poll = None if url is None else dataclasses.replace(sent, poll_url=url)
    return Pending(poll, accepted.retry_after, accepted.request_id)


def poll_step(
    base_url: str, polled: PangeaRequest, answer: Answer | None, error: BaseException | None
) -> Polled[PangeaRequest]:
    """What the ``answer`` to the poll ``polled`` (or the ``error`` it raised) means.

    A 200 is the final answer (``done``); so is an error answer that is not transient
    (``failed``, e.g. a 400 ValidationError found while processing: the original call's error).
    A transient failure (per :func:`~gateway.delivery.retry.classify`) is polled through
    (``error``), a 202 too (``pending``); a 404 means the upstream does not know the request
    (``lost``).  An exception that is not transient is final (``failed``): it is classified as
    the call's.
    """
    if error is not None:
        return Polled("error" if classify(None, error) is Verdict.RETRY else "failed")
    assert answer is not None
    if answer.status == 202:
        # A later 202 may move the location; its own request_id is the GET's, not the call's.
        url = poll_url(base_url, answer, by_request_id=False)
        return Polled("pending", None if url is None else dataclasses.replace(polled, poll_url=url), answer.retry_after)
    if answer.status == 200:
        return Polled("done")
    if answer.status == 404:
        return Polled("lost")
    if classify(answer.status, None) is Verdict.RETRY:
        return Polled("error", None, answer.retry_after)
    return Polled("failed")
