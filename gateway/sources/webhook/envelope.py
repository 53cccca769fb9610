"""Pangea-shaped answers: every intake response uses the same envelope."""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson
from aiohttp import web

from gateway.errors import IntakeError

_BASE32 = bytes.maketrans(bytes(range(256)), b"abcdefghijklmnopqrstuvwxyz234567" * 8)
"""Each byte value to a base32 character: 256 values, each character 8 times, so uniform."""


def new_request_id() -> str:
    """A Pangea-style request id, ``prq_`` + 32 base32 characters (lower case)."""
    # 32 random bytes, each turned into one of the 32 characters by a C-level translate:
    # uniform, where base64.b32encode (Python code) cost ~1 % of a /v2/log request (issue 18).
    return "prq_" + secrets.token_bytes(32).translate(_BASE32).decode("ascii")


_second: list[Any] = [None, ""]
"""The last whole second :func:`now_rfc3339` formatted, and its text."""


def now_rfc3339() -> str:
    """Now as RFC 3339 in UTC with microseconds (``2026-12-02T20:16:40.123456Z``)."""
    # Twice per request: the date and time are formatted once a second, only the
    # microseconds each time (a third of datetime.now().isoformat()'s cost, issue 18).
    sec, us = divmod(time.time_ns() // 1000, 1_000_000)
    if sec != _second[0]:
        _second[0], _second[1] = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{_second[1]}.{us:06d}Z"


def envelope(
    http_status: int,
    status: str,
    summary: str,
    result: Any,
    *,
    request_id: str | None = None,
    request_time: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A JSON response in the Pangea envelope."""
    body = {
        "request_id": request_id or new_request_id(),
        "request_time": request_time or now_rfc3339(),
        "response_time": now_rfc3339(),
        "status": status,
        "summary": summary,
        "result": result,
    }
    return web.Response(status=http_status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def error_response(exc: IntakeError, *, request_id: str | None = None, request_time: str | None = None) -> web.Response:
    """Render an IntakeError; validation errors carry ``result.errors[] {code, detail, source}``."""
    headers = None
    if exc.retry_after_secs is not None:
        headers = {"Retry-After": str(max(1, round(exc.retry_after_secs)))}
    result: Any = {"errors": exc.errors} if exc.errors else None
    return envelope(
        exc.http_status,
        exc.pangea_status,
        exc.message,
        result,
        request_id=request_id,
        request_time=request_time,
        headers=headers,
    )
