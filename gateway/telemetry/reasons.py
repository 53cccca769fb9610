"""The one reason vocabulary (issue 16): every ``reason`` label of the accounting metrics and
every dead-letter record's ``reason`` is one of :class:`Reason`.

Why one set: a dashboard or an alert joins ``gateway_events_rejected_total`` with
``gateway_deadletters_total`` (and the records of ``audit-gateway dlq``) by reason, which
only works if both say ``invalid_event`` for the same thing.  The upstream's own error codes
(``InvalidObject``, ``ForbiddenFieldValue``, ``HTTP_400``, ...) are unbounded and stay where an
operator reads them (the dead letter's ``detail``, the HTTP answer): :func:`rejection_reason`
maps them to the vocabulary, in this one place.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum

from gateway.errors import (
    AuthError,
    BufferFull,
    ConfigScopeRefused,
    Draining,
    EndpointRefused,
    GatewayUnavailable,
    IntakeError,
    PayloadTooLarge,
)


class Reason(StrEnum):
    """Why an event left the accounting equation other than delivered (or a request was refused)."""

    # -- rejected for good and dead-lettered (gateway_events_rejected_total, dead letters) --
    INVALID_EVENT = "invalid_event"
    """It does not validate against the destination's schema (at intake, or the upstream says so)."""
    FORBIDDEN_FIELD_VALUE = "forbidden_field_value"
    """A field value the caller's token may not set (a pass-through restriction)."""
    DECODE_ERROR = "decode_error"
    """The record could not be read at all (not JSON, wrong encoding)."""
    UPSTREAM_REJECTED = "upstream_rejected"
    """The upstream refused it for good, for a reason other than validation."""
    CONFIG_ERROR = "config_error"
    """The upstream refuses the destination's configuration (config id, token scope)."""
    # -- refused at intake, the sender keeps it (gateway_events_refused_total) --------------
    BUFFER_FULL = "buffer_full"
    CREDENTIALS = "credentials"
    """The upstream refuses the gateway's own credential (503: the gateway's fault)."""
    UNAVAILABLE = "unavailable"
    """The buffer cannot take events now (the spool cannot write, a Kafka buffer's brokers do not ack)."""
    DRAINING = "draining"
    CANCELLED = "cancelled"
    """The request went away (the client closed it) before its events were admitted."""
    # -- given up on undelivered, never answered 2xx (gateway_events_dropped_total) --------
    SHUTDOWN = "shutdown"
    REVOKED = "revoked"
    """A Kafka partition revoked: its new owner reads the messages again."""
    RETRIES_EXHAUSTED = "retries_exhausted"
    SINK_STOPPED = "sink_stopped"
    """The destination was stopped (shutdown or retired by a reload) under the send."""
    DEADLETTER_FAILED = "deadletter_failed"
    """Rejected by the upstream, but the dead-letter store could not record it."""
    INTERNAL_ERROR = "internal_error"
    # -- whole requests refused at intake (gateway_intake_requests_refused_total) -----------
    AUTH = "auth"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    BAD_REQUEST = "bad_request"
    """Not a request the route takes (bad JSON envelope, a missing channel, an ambiguous config)."""
    FORBIDDEN = "forbidden"
    """The caller may not do this (a config or endpoint outside its token's scope)."""
    TIMEOUT = "timeout"
    """The request's events were not acknowledged in time (answered 503, the sender resends)."""


# Pangea-style validation codes (the gateway's own schema and the upstream's) → invalid_event.
_VALIDATION_CODES = frozenset(
    {
        "InvalidObject",
        "ValidationError",
        "FieldRequired",
        "UnexpectedProperty",
        "IsTooBig",
        "BadFormat",
        "AboveMaxItems",
        "NotWithinRange",
        "InvalidValue",
        "EventInvalid",
        "SchemaFieldSettings",
        "invalid",
        "invalid_schema",
    }
)


def rejection_reason(code: str | None, default: Reason = Reason.UPSTREAM_REJECTED) -> Reason:
    """The vocabulary's reason for an event refused with error ``code`` (a Pangea error code,
    a Kafka source's poison reason, or a reason already in the vocabulary); ``default`` for a
    code that says nothing more specific (``HTTP_400``, an unknown code)."""
    if code is None:
        return default
    if code in _VALIDATION_CODES:
        return Reason.INVALID_EVENT
    if code == "ForbiddenFieldValue":
        return Reason.FORBIDDEN_FIELD_VALUE
    if code in ("DecodeError", "decode_error"):
        return Reason.DECODE_ERROR
    try:
        return Reason(code)
    except ValueError:
        return default


def refusal_reason(exc: BaseException) -> Reason:
    """Why events were not admitted, from what refused them (the buffer's exception)."""
    if isinstance(exc, asyncio.CancelledError):
        return Reason.CANCELLED
    if isinstance(exc, Draining):
        return Reason.DRAINING
    if isinstance(exc, GatewayUnavailable):
        return Reason.UNAVAILABLE
    if isinstance(exc, BufferFull):
        return Reason.BUFFER_FULL
    return Reason.UNAVAILABLE


def request_refusal_reason(exc: IntakeError) -> Reason:
    """Why a whole request was refused, from the error it is answered with."""
    if isinstance(exc, BufferFull):
        return refusal_reason(exc)
    if isinstance(exc, AuthError):
        return Reason.AUTH
    if isinstance(exc, PayloadTooLarge):
        return Reason.TOO_LARGE
    if isinstance(exc, ConfigScopeRefused | EndpointRefused):
        return Reason.FORBIDDEN
    return Reason.BAD_REQUEST
