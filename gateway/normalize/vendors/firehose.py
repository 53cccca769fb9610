"""AWS Firehose HTTP endpoint delivery: ``{"requestId", "timestamp", "records": [{"data": <base64>}]}``.

What each record's ``data`` holds is configured (``records:`` of a ``format: firehose`` source):

``json``
    a JSON object, array or JSON lines (each object one event, mapped like ``format: json``)
``cloudtrail``
    one CloudTrail event, an EventBridge event for CloudTrail, or a log file ``{"Records": [...]}``
    (see :mod:`gateway.normalize.vendors.cloudtrail` for the mapping)
``cloudwatch_logs``
    a CloudWatch Logs subscription message, gzip JSON: ``CONTROL_MESSAGE`` is skipped (no event),
    each ``logEvents[]`` entry of a ``DATA_MESSAGE`` is one event: a CloudTrail event when its
    ``message`` is one (mapped as such), else a log line (below)
``raw``
    text, one event whose ``message`` it is

A log line from CloudWatch Logs maps to ``message`` = the line, ``timestamp`` = the log event's
``timestamp`` (ms), ``target`` = ``logGroup``, ``new`` = compact JSON of ``id`` (CloudWatch's
event id), ``logGroup``, ``logStream`` and ``owner``.

:func:`vendor` builds the format for one ``records:`` kind.  Its records are
:class:`FirehoseRecord` objects; the dedup id of each is ``<requestId>:<record index>`` (and
``.<n>`` for the n-th event of a record holding several), Firehose keeping the request id across
its retries of a batch.  The vendor's own event id (CloudTrail ``eventID``, CloudWatch's log
event id) stays in ``new``.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from gateway.normalize.limits import clip
from gateway.normalize.vendors import (
    DecodeError,
    Vendor,
    cloudtrail,
    new_with_ids,
    put_clipped,
    raw,
    record_invalid,
    text_of,
)
from gateway.normalize.vendors import json as json_format

__all__ = ["NAME", "FirehoseRecord", "RecordsKind", "request_of", "vendor"]

NAME = "firehose"

RecordsKind = Literal["json", "cloudtrail", "cloudwatch_logs", "raw"]

MAX_REQUEST_ID_CHARS: Final = 256
_GZIP_MAGIC: Final = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class FirehoseRecord:
    """One event of a delivery: what to map (``kind``, ``value``) and its dedup key."""

    kind: Literal["json", "cloudtrail", "log", "raw"]
    value: Any
    key: str
    log: dict[str, Any] | None = None
    """For ``kind == "log"``: the subscription message's logGroup/logStream/owner and the event id."""

    @property
    def pointer(self) -> str:
        """Where the event is in the delivery: ``/records/<index>`` (``/<n>`` for the n-th of a record)."""
        place = self.key.rpartition(":")[2]
        index, _, n = place.partition(".")
        return f"/records/{index}" + (f"/{n}" if n else "")


def request_of(body: bytes) -> tuple[str, int] | None:
    """``(requestId, timestamp)`` of a delivery body, or None if the body does not carry them."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    rid, ts = doc.get("requestId"), doc.get("timestamp")
    if not isinstance(rid, str) or not rid or len(rid) > MAX_REQUEST_ID_CHARS:
        return None
    return rid, ts if isinstance(ts, int) and not isinstance(ts, bool) else 0


def _envelope(body: bytes) -> tuple[str, list[Any]]:
    if not isinstance(body, bytes | bytearray | memoryview):
        raise DecodeError("the body must be bytes")
    data = bytes(body)
    if not data.strip():
        raise DecodeError("empty body")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DecodeError("a Firehose delivery must be a JSON object")
    rid = doc.get("requestId")
    if not isinstance(rid, str) or not rid.strip():
        raise DecodeError('"requestId" must be a non-empty string')
    if len(rid) > MAX_REQUEST_ID_CHARS:
        raise DecodeError(f'"requestId" is longer than {MAX_REQUEST_ID_CHARS} characters')
    ts = doc.get("timestamp")
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise DecodeError('"timestamp" must be an integer (milliseconds since the epoch)')
    records = doc.get("records")
    if not isinstance(records, list):
        raise DecodeError('"records" must be an array')
    return rid, records


def _data(record: Any, i: int) -> bytes:
    if not isinstance(record, dict) or not isinstance(record.get("data"), str):
        raise DecodeError(f'records[{i}] must be an object with a base64 string "data"')
    try:
        return base64.b64decode(record["data"], validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError(f"records[{i}].data is not valid base64") from None


def _gunzip(data: bytes, budget: int, i: int) -> bytes:
    """A gzip record's content within ``budget`` bytes (a bomb stops at the budget)."""
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(data, budget + 1)
    except zlib.error:
        raise DecodeError(f"records[{i}].data is not valid gzip") from None
    if len(out) > budget or d.unconsumed_tail:
        raise DecodeError(f"records[{i}].data decompresses to more than the body limit")
    if not d.eof:
        raise DecodeError(f"records[{i}].data is truncated gzip")
    return out


def _json_docs(data: bytes, i: int) -> list[Any]:
    try:
        return json_format.documents(data)
    except DecodeError as exc:
        raise DecodeError(f"records[{i}]: {exc.detail}") from None


def _keyed(rid: str, i: int, kind: Any, values: list[Any]) -> list[FirehoseRecord]:
    if len(values) == 1:
        return [FirehoseRecord(kind, values[0], f"{rid}:{i}")]
    return [FirehoseRecord(kind, v, f"{rid}:{i}.{n}") for n, v in enumerate(values)]


def _cloudwatch(rid: str, i: int, data: bytes) -> list[FirehoseRecord]:
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"records[{i}]: invalid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise DecodeError(f"records[{i}] must be a CloudWatch Logs subscription message (an object)")
    kind = msg.get("messageType")
    if kind == "CONTROL_MESSAGE":
        return []  # CloudWatch's health check of the destination, not an event
    if kind != "DATA_MESSAGE":
        raise DecodeError(f'records[{i}].messageType must be "DATA_MESSAGE" or "CONTROL_MESSAGE"')
    entries = msg.get("logEvents")
    if not isinstance(entries, list):
        raise DecodeError(f"records[{i}].logEvents must be an array")
    where = {k: msg[k] for k in ("logGroup", "logStream", "owner") if isinstance(msg.get(k), str)}
    out: list[FirehoseRecord] = []
    for n, entry in enumerate(entries):
        key = f"{rid}:{i}" if len(entries) == 1 else f"{rid}:{i}.{n}"
        if not isinstance(entry, dict):
            out.append(FirehoseRecord("log", entry, key, where))
            continue
        text = entry.get("message")
        parsed: Any = None
        if isinstance(text, str) and text.lstrip().startswith("{"):
            try:
                parsed = orjson.loads(text)
            except orjson.JSONDecodeError:
                parsed = None
        if cloudtrail.is_cloudtrail_event(parsed):
            out.append(FirehoseRecord("cloudtrail", parsed, key))
        else:
            log = dict(where)
            if entry.get("id") is not None:
                log["id"] = entry["id"]
            out.append(FirehoseRecord("log", entry, key, log))
    return out


def _decoder(kind: RecordsKind, max_bytes: int) -> Any:
    def decode(body: bytes, content_type: str | None = None) -> list[Any]:
        """The events of a Firehose delivery, as :class:`FirehoseRecord` objects."""
        rid, records = _envelope(body)
        out: list[Any] = []
        budget = max_bytes  # what the records may decompress to, all together
        for i, record in enumerate(records):
            data = _data(record, i)
            if kind == "raw":
                if data.strip():
                    out.append(FirehoseRecord("raw", data, f"{rid}:{i}"))
            elif kind == "cloudwatch_logs":
                if data.startswith(_GZIP_MAGIC):
                    data = _gunzip(data, budget, i)
                    budget -= len(data)
                out.extend(_cloudwatch(rid, i, data))
            elif kind == "cloudtrail":
                events: list[Any] = []
                for doc in _json_docs(data, i):
                    try:
                        events.extend(cloudtrail.events_of(doc))
                    except DecodeError as exc:
                        raise DecodeError(f"records[{i}]: {exc.detail}") from None
                out.extend(_keyed(rid, i, "cloudtrail", events))
            else:
                out.extend(_keyed(rid, i, "json", _json_docs(data, i)))
        return out

    return decode


def _log_event(record: FirehoseRecord) -> dict[str, Any]:
    entry = record.value
    if not isinstance(entry, dict):
        raise record_invalid(f"a CloudWatch Logs event must be an object, not {type(entry).__name__}")
    text = entry.get("message")
    if not isinstance(text, str) or not text.strip():
        raise record_invalid("a CloudWatch Logs event needs a non-empty `message` string", "/message")
    ev: dict[str, Any] = {"message": clip(text.rstrip("\r\n"), 32766)}
    ts = entry.get("timestamp")
    if isinstance(ts, int) and not isinstance(ts, bool):
        ev["timestamp"] = ts
    log = record.log or {}
    group = text_of(log.get("logGroup"))
    if group is not None:
        ev["target"] = clip(group, 128)
    ids = {"id": text_of(log.get("id"))}
    put_clipped(ev, "new", new_with_ids({k: v for k, v in log.items() if k != "id"}, ids), 32766)
    return ev


def to_event(record: Any) -> tuple[dict[str, Any], str | None]:
    """Fields of one :class:`FirehoseRecord` and its dedup key ``<requestId>:<index>``."""
    if not isinstance(record, FirehoseRecord):
        raise record_invalid("not a Firehose record")
    if record.kind == "cloudtrail":
        fields, _ = cloudtrail.to_event(record.value)
    elif record.kind == "log":
        fields = _log_event(record)
    elif record.kind == "raw":
        fields, _ = raw.to_event(record.value)
    else:
        fields, _ = json_format.to_event(record.value)
    return fields, record.key


def mapped(record: Any) -> Any:
    """What a ``map:`` of the source reads: the record's decoded value."""
    return record.value if isinstance(record, FirehoseRecord) else record


def vendor(kind: RecordsKind = "json", max_bytes: int = 10 * 1024 * 1024) -> Vendor:
    """The ``firehose`` format for records of ``kind``, decompressing at most ``max_bytes`` per body."""
    return Vendor(NAME, _decoder(kind, max_bytes), to_event, subject=mapped)
