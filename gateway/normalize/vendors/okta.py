"""Okta event hooks: ``{"eventType": "com.okta.event_hook", "data": {"events": [LogEvent...]}}``.

A body may also be a bare LogEvent or an array of them (System Log events relayed through
Kafka).  The one-time verification request is a GET without body: the route answers it.

Mapping of a LogEvent to the standard schema:

=============  ==================================================================================
``actor``      ``actor.alternateId``, else ``actor.displayName`` (``unknown`` counts as empty)
``action``     ``eventType``; longer than 32: the head is cut and marked, the last segment kept
               (``application.use~.change_username``); the full type is in ``new``
``target``     every target's ``alternateId`` (else ``displayName``), joined with ``", "``, cut
               to 128
``status``     ``outcome.result`` in lower case (``success``, ``failure``, ``challenge``...)
``source``     ``client.ipAddress``
``timestamp``  ``published``
``message``    ``displayMessage``, else ``eventType``
``new``        compact JSON of ``uuid`` (the vendor's event id, always whole), ``eventType``,
               ``severity``, ``outcome`` and ``target`` (the full list, each reduced to
               id/type/alternateId/displayName)
=============  ==================================================================================

The dedup id is ``uuid``.
"""

from __future__ import annotations

from typing import Any

from gateway.normalize.limits import clip, fit_name
from gateway.normalize.vendors import DecodeError, new_with_ids, put_clipped, record_invalid, text_of
from gateway.normalize.vendors.json import documents

__all__ = ["NAME", "decode", "to_event"]

NAME = "okta"

_TARGET_KEYS = ("id", "type", "alternateId", "displayName")


def decode(body: bytes, content_type: str | None = None) -> list[Any]:
    """LogEvents of an event-hook body (``data.events``), or of a bare LogEvent / array of them."""
    out: list[Any] = []
    for doc in documents(body):
        if isinstance(doc, dict) and isinstance(doc.get("data"), dict) and "events" in doc["data"]:
            events = doc["data"]["events"]
            if not isinstance(events, list):
                raise DecodeError('"data.events" must be an array of events')
            out.extend(events)
        elif isinstance(doc, dict) and doc.get("eventType") == "com.okta.event_hook":
            raise DecodeError('an event hook body needs "data.events"')
        else:
            out.append(doc)
    return out


def _name(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return None
    for key in ("alternateId", "displayName"):
        v = text_of(obj.get(key))
        if v is not None and v.lower() != "unknown":
            return v
    return None


def to_event(record: Any) -> tuple[dict[str, Any], str | None]:
    """Standard-schema fields of one LogEvent and its ``uuid``."""
    if not isinstance(record, dict):
        raise record_invalid(f"an Okta event must be an object, not {type(record).__name__}")
    event_type = text_of(record.get("eventType"))
    if event_type is None:
        raise record_invalid("an Okta event needs an `eventType`", "/eventType")

    ev: dict[str, Any] = {"action": fit_name(event_type, 32)}
    put_clipped(ev, "actor", _name(record.get("actor")), 128)

    raw_targets = record.get("target")
    targets = [t for t in raw_targets if isinstance(t, dict)] if isinstance(raw_targets, list) else []
    names = [n for n in (_name(t) for t in targets) if n is not None]
    if names:
        ev["target"] = clip(", ".join(names), 128)

    outcome = record.get("outcome")
    if isinstance(outcome, dict):
        result = text_of(outcome.get("result"))
        if result is not None:
            ev["status"] = clip(result.lower(), 32)
    client = record.get("client")
    if isinstance(client, dict):
        put_clipped(ev, "source", text_of(client.get("ipAddress")), 128)
    published = record.get("published")
    if published is not None and published != "":
        ev["timestamp"] = published
    ev["message"] = clip(text_of(record.get("displayMessage")) or event_type, 32766)

    detail: dict[str, Any] = {"eventType": event_type}
    for key in ("severity", "outcome"):
        if record.get(key) is not None:
            detail[key] = record[key]
    if targets:
        detail["target"] = [{k: t[k] for k in _TARGET_KEYS if t.get(k) is not None} for t in targets]
    uuid = text_of(record.get("uuid"))
    if uuid is not None or len(detail) > 1 or len(event_type) > 32:
        put_clipped(ev, "new", new_with_ids(detail, {"uuid": uuid}), 32766)
    return ev, uuid
