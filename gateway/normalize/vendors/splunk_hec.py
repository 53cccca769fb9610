"""Splunk HTTP Event Collector: ``/services/collector[/event]`` and ``/services/collector/raw``.

An event-endpoint body is one or more JSON objects written one after the other (whitespace
between them allowed, *not* a JSON array)::

    {"time": 1718104863.961, "host": "...", "source": "...", "sourcetype": "...", "index": "...",
     "event": <string or object>, "fields": {...}}

``time`` is epoch seconds (a number or a numeric string, fractional allowed).  :func:`decode`
checks each object as HEC does and raises :class:`DecodeError` with ``hec_code`` 5 (no data), 6
(invalid data format), 12 (event field is required) or 13 (event field cannot be blank) and the
offending object's 0-based ``event_number``.  :func:`decode_raw` reads a raw-endpoint body: one
event per non-empty line.

Mapping (``to_event``):

* a GitHub audit-log stream record (``event`` an object with ``action`` and ``actor``,
  ``_document_id`` or ``@timestamp``): ``actor``; ``action`` (over 32: head cut and marked
  ``~``, last segment kept); ``target`` = ``repo``, else ``repository``, ``user``, ``team``,
  ``org``, ``business``; ``tenant_id`` =
  ``org``, else ``business``; ``status`` = ``status_code`` when present; ``source`` =
  ``actor_ip``, else the envelope's ``host``, else its ``source``; ``timestamp`` = ``@timestamp``
  (ms), else ``created_at`` (ms), else ``time``; ``message`` = ``GitHub audit <action> by <actor>
  on <target>``; ``new`` = compact JSON of the whole record (``_document_id`` always whole, see
  :func:`~gateway.normalize.vendors.new_with_ids`); dedup id ``_document_id``;
* any other event: ``message`` = the string, or compact JSON of the object (or other value);
  ``source`` = ``host``, else ``source``; ``timestamp`` = ``time``; no dedup id;
* a raw-endpoint line: ``message`` = the line.

Raw content becomes ``message`` uncut: the destination's oversize policy decides.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

import orjson

from gateway.normalize.limits import clip, fit_name
from gateway.normalize.mapping import compile_paths, first
from gateway.normalize.schema import as_number, epoch_to_rfc3339, json_text
from gateway.normalize.vendors import DecodeError, new_with_ids, put_clipped, record_invalid, text_of

__all__ = ["NAME", "decode", "decode_raw", "to_event"]

NAME = "splunk_hec"

NO_DATA = 5
INVALID_DATA_FORMAT = 6
EVENT_FIELD_REQUIRED = 12
EVENT_FIELD_BLANK = 13

_BOM = "\ufeff"
_WS = re.compile(r"[ \t\n\r]*")


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    # orjson refuses numbers that overflow a double (1e999); the stdlib would read them as
    # infinity, which JSON cannot carry on to the upstream.
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_no_constants, parse_float=_finite)


def _skip_ws(text: str, idx: int) -> int:
    m = _WS.match(text, idx)
    return m.end() if m is not None else idx


def _check(obj: Any, n: int) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise DecodeError("Invalid data format", hec_code=INVALID_DATA_FORMAT, event_number=n)
    if "event" not in obj:
        raise DecodeError("Event field is required", hec_code=EVENT_FIELD_REQUIRED, event_number=n)
    ev = obj["event"]
    if ev is None or (isinstance(ev, str | dict | list) and not ev) or (isinstance(ev, str) and not ev.strip()):
        raise DecodeError("Event field cannot be blank", hec_code=EVENT_FIELD_BLANK, event_number=n)
    t = obj.get("time")
    if t is not None and as_number(t) is None:
        raise DecodeError("Invalid data format", hec_code=INVALID_DATA_FORMAT, event_number=n)
    return obj


def decode(body: bytes, content_type: str | None = None) -> list[Any]:
    """The event objects of an event-endpoint body (concatenated JSON objects)."""
    if not isinstance(body, bytes | bytearray | memoryview):
        raise DecodeError("the body must be bytes", hec_code=INVALID_DATA_FORMAT)
    data = bytes(body)
    try:
        single = orjson.loads(data)  # the common case of one object
    except orjson.JSONDecodeError:
        pass
    else:
        return [_check(single, 0)]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("Invalid data format", hec_code=INVALID_DATA_FORMAT, event_number=0) from None
    if text.startswith(_BOM):
        text = text[1:]
    end = len(text)
    idx = _skip_ws(text, 0)
    if idx == end:
        raise DecodeError("No data", hec_code=NO_DATA)
    out: list[Any] = []
    while idx < end:
        n = len(out)
        if text[idx] != "{":
            raise DecodeError("Invalid data format", hec_code=INVALID_DATA_FORMAT, event_number=n)
        try:
            obj, idx = _DECODER.raw_decode(text, idx)
        except (ValueError, RecursionError):
            raise DecodeError("Invalid data format", hec_code=INVALID_DATA_FORMAT, event_number=n) from None
        out.append(_check(obj, n))
        idx = _skip_ws(text, idx)
    return out


def decode_raw(body: bytes) -> list[Any]:
    """The lines of a raw-endpoint body (one event per non-empty line, ``\\r\\n`` allowed).

    Bytes that are not UTF-8 are kept as ``\\xNN`` escapes rather than refusing the body.
    """
    if not isinstance(body, bytes | bytearray | memoryview):
        raise DecodeError("the body must be bytes", hec_code=INVALID_DATA_FORMAT)
    text = bytes(body).decode("utf-8", "backslashreplace")
    if text.startswith(_BOM):
        text = text[1:]
    lines = [line.rstrip("\r") for line in text.split("\n")]
    out = [line for line in lines if line.strip()]
    if not out:
        raise DecodeError("No data", hec_code=NO_DATA)
    return out


def _epoch_seconds(t: Any) -> str | None:
    num = as_number(t)
    if num is None:
        return None
    try:
        return epoch_to_rfc3339(num, "s")
    except ValueError:
        return None


_AUDIT_TARGET = compile_paths("repo", "repository", "user", "team", "org", "business")
_AUDIT_TENANT = compile_paths("org", "business")


def _is_github_audit(event: dict[str, Any]) -> bool:
    return isinstance(event.get("action"), str) and (
        "actor" in event or "_document_id" in event or "@timestamp" in event
    )


def _github_audit(record: dict[str, Any], event: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    action = text_of(event.get("action")) or "unknown"
    ev: dict[str, Any] = {"action": fit_name(action, 32)}
    actor = text_of(event.get("actor"))
    put_clipped(ev, "actor", actor, 128)
    target = text_of(first(event, _AUDIT_TARGET))
    put_clipped(ev, "target", target, 128)
    put_clipped(ev, "tenant_id", text_of(first(event, _AUDIT_TENANT)), 128)
    put_clipped(ev, "status", text_of(event.get("status_code")), 32)
    put_clipped(
        ev,
        "source",
        text_of(event.get("actor_ip")) or text_of(record.get("host")) or text_of(record.get("source")),
        128,
    )
    ts = None
    for key in ("@timestamp", "created_at"):
        v = event.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            try:
                ts = epoch_to_rfc3339(v, "ms")
                break
            except ValueError:
                continue
    if ts is None and record.get("time") is not None:
        ts = _epoch_seconds(record["time"])
    if ts is not None:
        ev["timestamp"] = ts
    words = ["GitHub audit", action]
    if actor:
        words += ["by", actor]
    if target:
        words += ["on", target]
    ev["message"] = clip(" ".join(words), 32766)
    doc_id = text_of(event.get("_document_id"))
    # The whole record, its `_document_id` never cut (the vendor's event id, issue 17).
    rest = {k: v for k, v in event.items() if k != "_document_id"}
    put_clipped(ev, "new", new_with_ids(rest, {"_document_id": doc_id}), 32766)
    return ev, doc_id


def to_event(record: Any) -> tuple[dict[str, Any], str | None]:
    """Standard-schema fields of one HEC event object (or raw line); GitHub audit records keep their id."""
    if isinstance(record, str):
        return {"message": record}, None
    if not isinstance(record, dict):
        raise record_invalid(f"a HEC event must be an object or a raw line, not {type(record).__name__}")
    if "event" not in record or record["event"] is None:
        raise record_invalid("a HEC event needs an `event` field", "/event")
    event = record["event"]
    if isinstance(event, dict) and _is_github_audit(event):
        return _github_audit(record, event)
    if isinstance(event, str):
        message: str | None = event
    else:
        message = json_text(event)
        if message is None:
            raise record_invalid("the `event` field cannot be written as JSON text", "/event")
    ev: dict[str, Any] = {"message": message}
    put_clipped(ev, "source", text_of(record.get("host")) or text_of(record.get("source")), 128)
    if record.get("time") is not None:
        ts = _epoch_seconds(record["time"])
        if ts is None:
            raise record_invalid("`time` must be epoch seconds", "/time")
        ev["timestamp"] = ts
    return ev, None
