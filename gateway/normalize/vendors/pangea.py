"""Pangea-shaped records: events already in the upstream's schema (Kafka values, SDK bodies).

A record is ``{"event": {...}}`` (optionally with the SDK's ``signature``/``public_key``) or a
bare event object.  A body may hold one record, an array or JSON lines of them, or a
``/v2/log`` body ``{"events": [...]}``.  No mapping is done: the event's fields are returned as
given and the schema validates them.  There is no dedup id.

A record's ``signature``/``public_key`` are not returned by :func:`to_event`; a route or source
that accepts client-signed events reads them with :func:`signature_of` and must keep the event
unchanged (see :meth:`gateway.normalize.schema.Schema.normalize_signed`).
"""

from __future__ import annotations

from typing import Any

from gateway.normalize.vendors import record_invalid
from gateway.normalize.vendors.json import enveloped

__all__ = ["NAME", "decode", "signature_of", "to_event", "unwrap"]

NAME = "pangea"


def decode(body: bytes, content_type: str | None = None) -> list[Any]:
    """Records of a body: one, an array, JSON lines, or the ``events`` of a ``/v2/log`` body."""
    return enveloped(body, "events", unless="event", what='{"event": {...}} items')


def unwrap(record: Any) -> dict[str, Any]:
    """The event object of a record: ``record["event"]`` when that is an object, else the record."""
    if not isinstance(record, dict):
        raise record_invalid(f"a record must be a JSON object, not {type(record).__name__}")
    inner = record.get("event")
    if isinstance(inner, dict):
        return inner
    return record


def signature_of(record: Any) -> dict[str, Any] | None:
    """The SDK's ``signature``/``public_key`` of a ``{"event": {...}}`` record, if it has either."""
    if type(record) is not dict or type(record.get("event")) is not dict:
        return None
    extras = {k: record[k] for k in ("signature", "public_key") if record.get(k) is not None}
    return extras or None


def to_event(record: Any) -> tuple[dict[str, Any], str | None]:
    """The event's fields as given (a shallow copy); no dedup id."""
    return dict(unwrap(record)), None
