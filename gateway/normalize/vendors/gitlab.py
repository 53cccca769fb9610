"""GitLab audit event streaming: one JSON audit event per POST.

GitLab sends the JSON with ``Content-Type: application/x-www-form-urlencoded``; the body is read
as JSON whatever the content type says.  A body may also hold an array of events or JSON lines
(events relayed through Kafka).

Mapping of a GitLab audit event to the standard schema:

=============  ==================================================================================
``actor``      ``author_name``, else ``details.author_name``, else ``author_id``
``action``     ``event_type``, else ``details.event_name``; fitted to 32 (the full name stays in
               ``new``)
``target``     ``target_details``, else ``details.target_details``, else ``entity_path``
``source``     ``ip_address``, else ``details.ip_address``
``timestamp``  ``created_at``
``tenant_id``  ``entity_path`` (the group, project or user the event belongs to)
``message``    ``details.custom_message``, else ``GitLab <event_type> by <actor> on <target>``
``new``        compact JSON of ``id`` (the vendor's event id, always whole), ``event_type``,
               ``entity_type``, ``entity_id``, ``target_type``, ``target_id``, ``author_id`` and
               ``details``
=============  ==================================================================================

The dedup id is ``id`` as text (``1284133`` and ``"1284133"`` are the same event).
"""

from __future__ import annotations

from typing import Any, Final

from gateway.normalize.limits import clip, fit_name
from gateway.normalize.mapping import compile_paths, first
from gateway.normalize.vendors import new_with_ids, put_clipped, record_invalid, text_of
from gateway.normalize.vendors.json import documents

__all__ = ["NAME", "decode", "to_event"]

NAME = "gitlab"

_ACTOR: Final = compile_paths("author_name", "details.author_name", "author_id")
_ACTION: Final = compile_paths("event_type", "details.event_name")
_TARGET: Final = compile_paths("target_details", "details.target_details", "entity_path")
_SOURCE: Final = compile_paths("ip_address", "details.ip_address")
_NEW_KEYS: Final = ("id", "event_type", "entity_type", "entity_id", "target_type", "target_id", "author_id", "details")


def decode(body: bytes, content_type: str | None = None) -> list[Any]:
    """The events of a body: one JSON object (GitLab's own), an array of them, or JSON lines."""
    return documents(body)


def to_event(record: Any) -> tuple[dict[str, Any], str | None]:
    """Standard-schema fields of one GitLab audit event and its ``id``."""
    if not isinstance(record, dict):
        raise record_invalid(f"a GitLab audit event must be an object, not {type(record).__name__}")
    if record.get("details") is not None and not isinstance(record["details"], dict):
        raise record_invalid("`details` must be an object", "/details")
    name = text_of(first(record, _ACTION))
    if name is None:
        raise record_invalid("a GitLab audit event needs an `event_type`", "/event_type")
    event_id = text_of(record.get("id"))
    if event_id is None:
        raise record_invalid("a GitLab audit event needs an `id`", "/id")

    ev: dict[str, Any] = {"action": fit_name(name, 32)}
    actor = text_of(first(record, _ACTOR))
    put_clipped(ev, "actor", actor, 128)
    target = text_of(first(record, _TARGET))
    put_clipped(ev, "target", target, 128)
    put_clipped(ev, "source", text_of(first(record, _SOURCE)), 128)
    created = record.get("created_at")
    if created is not None and created != "":
        ev["timestamp"] = created
    put_clipped(ev, "tenant_id", text_of(record.get("entity_path")), 128)
    details = record.get("details") or {}
    custom = text_of(details.get("custom_message"))
    words = ["GitLab", name] + (["by", actor] if actor else []) + (["on", target] if target else [])
    ev["message"] = clip((custom.strip() if custom else "") or " ".join(words), 32766)
    detail = {k: record[k] for k in _NEW_KEYS if record.get(k) is not None}
    put_clipped(ev, "new", new_with_ids(detail, {"id": event_id}), 32766)
    return ev, event_id
