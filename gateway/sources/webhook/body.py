"""Reading request bodies within limits (size, gzip bombs)."""

from __future__ import annotations

import asyncio
import zlib

from aiohttp import web

from gateway.errors import IntakeError, PayloadTooLarge, ValidationFailed


class RequestTimeout(IntakeError):
    http_status = 408
    pangea_status = "ValidationError"


BODY_TIMEOUT_SECS = web.AppKey("body_timeout_secs", float)


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The request body, gunzipped if sent so, never more than ``max_bytes`` (413 otherwise).

    A client slower than the app's ``BODY_TIMEOUT_SECS`` (intake.body_timeout_secs) gets 408.
    """
    timeout_secs = request.config_dict.get(BODY_TIMEOUT_SECS, 30.0)
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"body over {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_secs):
            async for chunk in request.content.iter_chunked(65536):
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"body over {max_bytes} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"body not received within {timeout_secs:g} s") from None
    raw = b"".join(chunks)
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding != "gzip":
        raise ValidationFailed(f"unsupported Content-Encoding {encoding!r}")
    # Decompress incrementally so a small bomb cannot expand past the limit in memory.
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(raw, max_bytes + 1)
    except zlib.error:
        raise ValidationFailed("body is not valid gzip") from None
    if len(out) > max_bytes or d.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed body over {max_bytes} bytes")
    return out
