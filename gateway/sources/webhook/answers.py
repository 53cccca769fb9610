"""From an admission's resolved acks to the HTTP answer."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from gateway.acks import AckStatus
from gateway.sources.intake import Admission
from gateway.sources.webhook.envelope import envelope

_EVENT_POINTER = re.compile(r"^(/events/\d+)?(/event)?")
RETRY_AFTER_SECS = 5
FORBIDDEN_CODE = "ForbiddenFieldValue"


async def settle(admission: Admission, timeout_secs: float) -> AckStatus | None:
    """Wait for the admitted events' acks; None if the wait timed out (they stay queued)."""
    try:
        return await asyncio.wait_for(admission.group.wait(), timeout_secs)
    except TimeoutError:
        return None


def upstream_errors(admission: Admission) -> list[dict[str, Any]]:
    """The per-event reasons the upstream gave, re-pointed into this request's body."""
    out: list[dict[str, Any]] = []
    for n, reason in sorted(admission.group.reasons.items()):
        pointer = admission.pointer(n)
        items = reason if isinstance(reason, list) else [reason]
        for item in items:
            if isinstance(item, dict):
                err = dict(item)
                # Upstream pointers index the batch; re-point them at this request's event.
                src = str(err.get("source", ""))
                m = _EVENT_POINTER.match(src)
                err["source"] = pointer + src[m.end() :] if m else pointer
            else:
                err = {"code": "Rejected", "detail": str(item), "source": pointer}
            out.append(err)
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
