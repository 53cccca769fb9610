"""1Password Events API audit events (``POST /api/v2/auditevents``): ``{cursor, has_more, items}``.

``decode`` takes a page (its ``items``), an array of events, or JSON lines (events relayed
through Kafka).  Mapping of an audit event to the standard schema:

=============  ==================================================================================
``actor``      ``actor_details.email``, else ``actor_details.name``, else ``actor_uuid``
``action``     ``<object_type>.<action>`` (``user.suspend``, ``gm.grant``, ``vault.delete``)
``target``     ``aux_details.email`` (the person a grant or removal concerns), else
               ``aux_details.name``, else ``object_uuid``
``source``     ``session.ip``
``timestamp``  ``timestamp``
``tenant_id``  ``account_uuid``
``message``    ``1Password <action> <object_type> by <actor> on <target>``
``new``        compact JSON of ``uuid`` (the vendor's event id, always whole), ``object_type``,
               ``object_uuid``, ``aux_uuid``, ``aux_id``, ``aux_info``, ``aux_details``,
               ``actor_type``, ``actor_uuid``, ``session`` and ``location``
=============  ==================================================================================

The dedup id is ``uuid``.
"""

from __future__ import annotations

from typing import Any, Final

from gateway.normalize.limits import clip, fit_name
from gateway.normalize.mapping import compile_paths, first
from gateway.normalize.vendors import new_with_ids, put_clipped, record_invalid, text_of
from gateway.normalize.vendors.json import enveloped

__all__ = ["NAME", "decode", "to_event"]

NAME = "onepassword"

_ACTOR: Final = compile_paths("actor_details.email", "actor_details.name", "actor_uuid")
_TARGET: Final = compile_paths("aux_details.email", "aux_details.name", "object_uuid")
_NEW_KEYS: Final = (
    "object_type",
    "object_uuid",
    "aux_uuid",
    "aux_id",
    "aux_info",
    "aux_details",
    "actor_type",
    "actor_uuid",
    "session",
    "location",
)


def decode(body: bytes, content_type: str | None = None) -> list[Any]:
    """The audit events of a page ``{cursor, has_more, items}``, an array, or JSON lines."""
    return enveloped(body, "items", unless="uuid", what="audit events")


def to_event(record: Any) -> tuple[dict[str, Any], str | None]:
    """Standard-schema fields of one audit event and its ``uuid``."""
    if not isinstance(record, dict):
        raise record_invalid(f"a 1Password audit event must be an object, not {type(record).__name__}")
    verb = text_of(record.get("action"))
    if verb is None:
        raise record_invalid("a 1Password audit event needs an `action`", "/action")
    kind = text_of(record.get("object_type"))
    ev: dict[str, Any] = {"action": fit_name(f"{kind}.{verb}" if kind else verb, 32)}
    actor = text_of(first(record, _ACTOR))
    put_clipped(ev, "actor", actor, 128)
    target = text_of(first(record, _TARGET))
    put_clipped(ev, "target", target, 128)
    session = record.get("session")
    if isinstance(session, dict):
        put_clipped(ev, "source", text_of(session.get("ip")), 128)
    when = record.get("timestamp")
    if when is not None and when != "":
        ev["timestamp"] = when
    put_clipped(ev, "tenant_id", text_of(record.get("account_uuid")), 128)
    words = ["1Password", verb, *([kind] if kind else [])]
    words += (["by", actor] if actor else []) + (["on", target] if target else [])
    ev["message"] = clip(" ".join(words), 32766)
    uuid = text_of(record.get("uuid"))
    detail = {k: record[k] for k in _NEW_KEYS if record.get(k) is not None}
    put_clipped(ev, "new", new_with_ids(detail, {"uuid": uuid}), 32766)
    return ev, uuid
