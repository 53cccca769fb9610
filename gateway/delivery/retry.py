"""The one retry classifier and backoff of every delivery (sinks, the 202 poller, credential fetchers).

Every decision "try this upstream call again, or give up on it" goes through :func:`classify`;
every wait before a retry comes from :func:`backoff_secs`.  Keeping both here means the sink,
the 202 poller and the credential fetchers cannot drift apart.

Retriable: HTTP 408, 429 and 5xx except 501 (Not Implemented will not start working), network
failures (:class:`aiohttp.ClientError`, :class:`asyncio.TimeoutError`, :class:`OSError`) and
:class:`~gateway.errors.GatewayError` s that say ``retriable``.  Everything else is rejected.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import math
import random
import time
from collections.abc import Callable

import aiohttp

from gateway.errors import GatewayError

__all__ = ["Verdict", "backoff_secs", "classify", "parse_retry_after", "retry_reason"]


class Verdict(enum.Enum):
    """What to do with a failed upstream call."""

    RETRY = "retry"
    """Transient: send the same request again after :func:`backoff_secs`."""
    REJECT = "reject"
    """Permanent: the same request would fail again; reject (or report) it."""


# Network-level failures: the request may or may not have reached the upstream, so a retry
# (with X-Pangea-Retried-Request-Ids where ids are known) is the at-least-once answer.
_NETWORK_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, asyncio.TimeoutError, OSError)

# A 2**attempt this large already exceeds any cap; clamping avoids float overflow on
# "retry until shutdown" (max_attempts=None) batches that fail for days.
_MAX_EXPONENT = 62


def classify(status: int | None, exc: BaseException | None) -> Verdict:
    """Classify a failed call by its HTTP ``status`` or by the exception ``exc`` it raised.

    Call it for failures only (a 2xx is not a failure and would classify as ``REJECT``).
    """
    if exc is not None:
        if isinstance(exc, GatewayError):
            return Verdict.RETRY if exc.retriable else Verdict.REJECT
        if isinstance(exc, aiohttp.InvalidURL):
            # A ClientError (and ValueError): the configured URL is wrong; retrying cannot help.
            return Verdict.REJECT
        return Verdict.RETRY if isinstance(exc, _NETWORK_ERRORS) else Verdict.REJECT
    if status is None:
        return Verdict.REJECT
    if status in (408, 429) or (500 <= status <= 599 and status != 501):
        return Verdict.RETRY
    return Verdict.REJECT


def retry_reason(status: int | None, exc: BaseException | None) -> str:
    """The low-cardinality ``reason`` label of a retry: the status code, ``network``, or ``auth``
    (a retriable :class:`~gateway.errors.GatewayError`: credentials could not be obtained)."""
    if exc is not None:
        if isinstance(exc, GatewayError):
            return "auth" if exc.retriable else "error"
        return "network"
    return str(status) if status is not None else "unknown"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date.

    Returns None when absent or unparseable; a date in the past gives 0.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        secs = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, secs) if math.isfinite(secs) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive parse means "no zone given"
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_secs(
    attempt: int,
    initial: float,
    cap: float,
    retry_after: float | None = None,
    *,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """Delay before retry number ``attempt`` (0 for the first retry).

    Exponential backoff with full jitter: ``uniform(0, min(cap, initial * 2**attempt))``, so
    many gateways hitting one overloaded upstream spread out instead of retrying in lockstep.
    A ``retry_after`` (seconds, from the upstream's ``Retry-After``) is a floor: the upstream
    asked us not to come back sooner, so jitter may lengthen that wait but never shorten it.
    """
    ceiling = min(cap, initial * 2.0 ** min(max(attempt, 0), _MAX_EXPONENT))
    delay = uniform(0.0, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
