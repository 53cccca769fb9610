"""Raw text: a whole body (or Kafka value) is one event's ``message``.

Bytes that are not UTF-8 are kept as ``\\xNN`` escapes rather than refusing the event; a
trailing line break is dropped; the text is not cut (the destination's oversize policy decides).
"""

from __future__ import annotations

from typing import Any

from gateway.normalize.vendors import DecodeError, record_invalid

__all__ = ["NAME", "decode", "to_event"]

NAME = "raw"


def decode(body: bytes, content_type: str | None = None) -> list[Any]:
    """``[body]``: one record; an empty (or all-whitespace) body is refused."""
    if not isinstance(body, bytes | bytearray | memoryview):
        raise DecodeError("the body must be bytes")
    data = bytes(body)
    if not data.strip():
        raise DecodeError("empty body")
    return [data]


def to_event(record: Any) -> tuple[dict[str, Any], str | None]:
    """``{"message": text}`` of a bytes or str record; no dedup id."""
    if isinstance(record, bytes | bytearray | memoryview):
        record = bytes(record).decode("utf-8", "backslashreplace")
    if isinstance(record, str):
        return {"message": record.rstrip("\r\n")}, None
    raise record_invalid(f"a raw record must be bytes or text, not {type(record).__name__}")
