"""Reading request bodies within limits (size, gzip bombs)."""

from __future__ import annotations

import asyncio
import zlib

from aiohttp import web

from gateway.errors import IntakeError, PayloadTooLarge, ValidationFailed


class RequestTimeout(IntakeError):
    http_status = 408
    pangea_status = "ValidationError"


class BodyIncomplete(IntakeError):
    """The body stopped before its end: the client went away or its chunked framing broke."""

    http_status = 400
    pangea_status = "ValidationError"


BODY_TIMEOUT_SECS = web.AppKey("body_timeout_secs", float)


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The request body, gunzipped if sent so, never more than ``max_bytes`` (413 otherwise).

    A client slower than the app's ``BODY_TIMEOUT_SECS`` (intake.body_timeout_secs) gets 408.
    """
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"body over {max_bytes} bytes")
    content = request.content
    if content.is_eof() and content.exception() is None:
        # The whole body arrived with its headers (the usual webhook): taken at once, with no
        # timer and no chunk loop (issue 18); the limit is checked all the same.
        raw = content.read_nowait()
        if len(raw) > max_bytes:
            raise PayloadTooLarge(f"body over {max_bytes} bytes")
    else:
        raw = await _read_streamed(request, max_bytes)
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding != "gzip":
        raise ValidationFailed(f"unsupported Content-Encoding {encoding!r}")
    return gunzip(raw, max_bytes)


async def _read_streamed(request: web.Request, max_bytes: int) -> bytes:
    """A body still arriving: read in chunks within the limit and the app's body timeout."""
    timeout_secs = request.config_dict.get(BODY_TIMEOUT_SECS, 30.0)
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
    except (ConnectionError, web.RequestPayloadError):
        # Not our failure: answered (if anyone still listens) as a refusal, not logged as a 500.
        raise BodyIncomplete("request body incomplete") from None
    return b"".join(chunks)


def gunzip(raw: bytes, max_bytes: int) -> bytes:
    """A gzip body's content (every member), never more than ``max_bytes`` (413 otherwise).

    Decompressed incrementally, so a small bomb cannot expand past the limit in memory; a
    truncated stream or trailing bytes that are not gzip are refused (400) rather than read as
    whatever part of the content they happen to give.
    """
    out = bytearray()
    data = raw
    while True:
        d = zlib.decompressobj(wbits=31)
        try:
            out += d.decompress(data, max_bytes + 1 - len(out))
        except zlib.error:
            raise ValidationFailed("body is not valid gzip") from None
        if len(out) > max_bytes or d.unconsumed_tail:
            raise PayloadTooLarge(f"decompressed body over {max_bytes} bytes")
        if not d.eof:
            raise ValidationFailed("gzip body is truncated")
        data = d.unused_data
        if not data:
            return bytes(out)
