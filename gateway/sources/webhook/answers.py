"""From an admission's resolved acks to the HTTP answer."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from gateway.acks import AckStatus
from gateway.sinks.pangea.request_builder import error_code
from gateway.sources.intake import Admission
from gateway.sources.webhook.envelope import envelope

_EVENT_POINTER = re.compile(r"^(/events/\d+)?(/event)?")
_SAFE_POINTER = re.compile(r"^(/[A-Za-z0-9_.~-]*){0,8}$")
"""A pointer into an event (``/event/actor``) as the upstream may name one; anything else is not kept."""
RETRY_AFTER_SECS = 5
FORBIDDEN_CODE = "ForbiddenFieldValue"


async def settle(admission: Admission, timeout_secs: float) -> AckStatus | None:
    """Wait for the admitted events' acks; None if the wait timed out (they stay queued)."""
    return await admission.group.settled(timeout_secs)


def upstream_errors(admission: Admission) -> list[dict[str, Any]]:
    """The per-event reasons the upstream gave, re-pointed into this request's body.

    Only the error code and the pointer survive, each when shaped like one; the detail is ours.
    No text of the upstream's answer reaches a sender: it may echo anything, the gateway's
    own credential included (the full reasons are in the dead-letter store).
    """
    out: list[dict[str, Any]] = []
    for n, reason in sorted(admission.group.reasons.items()):
        pointer = admission.pointer(n)
        items = reason if isinstance(reason, list) else [reason]
        for item in items:
            code = (error_code(item.get("code")) if isinstance(item, dict) else None) or "Rejected"
            source = pointer
            if isinstance(item, dict):
                # Upstream pointers index the batch; re-point them at this request's event.
                src = item.get("source")
                src = src if isinstance(src, str) else ""
                m = _EVENT_POINTER.match(src)
                rest = src[m.end() :] if m else ""
                if len(rest) <= 256 and _SAFE_POINTER.match(rest):
                    source = pointer + rest
            out.append(
                {"code": code, "detail": f"the upstream audit log refused this event ({code})", "source": source}
            )
    return out


def answer(
    status: AckStatus | None,
    admission: Admission,
    ok_result: Any,
    *,
    request_id: str,
    request_time: str,
) -> web.Response:
    """The envelope for a settled admission (shared by every Pangea-shaped route)."""
    total = admission.total
    if status is None or status == AckStatus.ERRORED:
        why = "timed out waiting for the upstream" if status is None else "the upstream did not accept the events"
        return envelope(
            503,
            "ServiceNotAvailable",
            f"{why}; retry later",
            None,
            request_id=request_id,
            request_time=request_time,
            headers={"Retry-After": str(RETRY_AFTER_SECS)},
        )
    errors = list(admission.errors)
    if status == AckStatus.REJECTED:
        errors.extend(upstream_errors(admission))
    if errors:
        refused = total - (len(admission.indexes) - len(admission.group.reasons))
        # Refused only for values the route's restrictions forbid: 403 ForbiddenFieldValue, as
        # the upstream answers a token's field restrictions; any other refusal makes it a 400.
        forbidden = all(e.get("code") == FORBIDDEN_CODE for e in errors)
        return envelope(
            403 if forbidden else 400,
            FORBIDDEN_CODE if forbidden else "ValidationError",
            f"{total - refused} of {total} events accepted; {refused} refused",
            {"errors": errors},
            request_id=request_id,
            request_time=request_time,
        )
    return envelope(200, "Success", "Success", ok_result, request_id=request_id, request_time=request_time)
