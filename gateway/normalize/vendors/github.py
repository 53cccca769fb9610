"""GitHub webhooks (repository, organization, enterprise or app hooks).

``decode`` reads a delivery body, JSON (``content_type: json``) or form-encoded
(``payload=<urlencoded JSON>``), and returns ``[payload]``.

``to_event`` takes the record **the webhook route builds** from the delivery, because the event
name and delivery id travel in headers::

    {"event": <X-GitHub-Event>, "delivery": <X-GitHub-Delivery>, "payload": <decoded body>}

A bare payload (no ``event``/``delivery`` wrapper, e.g. relayed through Kafka) maps too, with
``payload.action`` alone as the action.  Check :func:`is_ping` first: a ``ping`` delivery (sent
when a hook is created) should produce no event.

Mapping to the standard schema:

=============  ==================================================================================
``actor``      ``sender.login``
``action``     ``<event>.<payload.action>`` (or ``<event>``); longer than 32: the head is cut
               and marked, the verb kept (``repository_vulner~.auto_reopened``)
``target``     ``repository.full_name``, else the event's subject (``member.login``,
               ``invitation.login``/``email``, ``user.login``, ``team.slug``), else
               ``organization.login``, ``enterprise.slug``, ``installation.account.login``
``tenant_id``  ``organization.login``, else ``repository.owner.login``
``message``    ``GitHub <event> <action> by <actor> on <target>``
``old``        compact JSON of ``payload.changes`` (the previous values on ``edited`` events)
``new``        compact JSON of the payload without ``action``, ``sender``, ``repository``,
               ``organization``, ``enterprise``, ``installation`` and ``changes`` (the event's own
               subject: the invitation, member, hook...), with the delivery's headers as received:
               ``X-GitHub-Delivery`` (the vendor's delivery id) and ``X-GitHub-Event``, always
               whole
=============  ==================================================================================

GitHub signs the body only: ``X-GitHub-Delivery`` and ``X-GitHub-Event`` are not authenticated.
They are kept in the stored record as received so that an auditor sees what the action was
derived from; a replay of a captured body under a new delivery id, or with another event name,
cannot be told from a real delivery (the README says so).

No ``timestamp`` (deliveries carry none; the upstream stamps ``received_at``), ``status`` or
``source``.  The dedup id is the delivery id.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import orjson

from gateway.normalize.limits import clip, fit_name
from gateway.normalize.mapping import compile_paths, first
from gateway.normalize.schema import json_text
from gateway.normalize.vendors import DecodeError, new_with_ids, put_clipped, record_invalid, text_of

__all__ = ["NAME", "decode", "is_ping", "to_event"]

NAME = "github"

_COMMON = frozenset({"action", "sender", "repository", "organization", "enterprise", "installation", "changes"})
_ACTOR = compile_paths("sender.login")
_TARGETS = compile_paths(
    "repository.full_name",
    "member.login",
    "invitation.login",
    "invitation.email",
    "user.login",
    "team.slug",
    "organization.login",
    "enterprise.slug",
    "installation.account.login",
)
_TENANT = compile_paths("organization.login", "repository.owner.login")


def is_ping(event_name: str) -> bool:
    """True for the ``ping`` event GitHub sends when a hook is created: answer 2xx, emit nothing."""
    return event_name.strip().lower() == "ping"


def _is_form(body: bytes, content_type: str | None) -> bool:
    if content_type is not None:
        return content_type.split(";", 1)[0].strip().lower() == "application/x-www-form-urlencoded"
    return body.lstrip().startswith(b"payload=")


def decode(body: bytes, content_type: str | None = None) -> list[Any]:
    """``[payload]`` of a delivery body, JSON or form-encoded ``payload=...``."""
    if not isinstance(body, bytes | bytearray | memoryview):
        raise DecodeError("the body must be bytes")
    data = bytes(body)
    if _is_form(data, content_type):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("form body is not UTF-8") from None
        try:
            fields = urllib.parse.parse_qs(text, keep_blank_values=True, errors="strict", max_num_fields=100)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DecodeError(f"invalid form body: {exc}") from None
        values = fields.get("payload")
        if not values:
            raise DecodeError("form body has no `payload` field")
        data = values[0].encode("utf-8")
    if not data.strip():
        raise DecodeError("empty body")
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise DecodeError("a GitHub webhook payload must be a JSON object")
    return [payload]


def to_event(record: Any) -> tuple[dict[str, Any], str | None]:
    """Standard-schema fields of ``{"event", "delivery", "payload"}`` (or a bare payload) and the delivery id."""
    if not isinstance(record, dict):
        raise record_invalid(f"a GitHub record must be an object, not {type(record).__name__}")
    if isinstance(record.get("payload"), dict) and ("event" in record or "delivery" in record):
        payload: dict[str, Any] = record["payload"]
        event_name = text_of(record.get("event"))
        delivery = text_of(record.get("delivery"))
    else:
        payload, event_name, delivery = record, None, None
    verb = text_of(payload.get("action"))
    if event_name is None and verb is None:
        raise record_invalid("a GitHub record needs the event name (X-GitHub-Event) or a payload action")

    name = f"{event_name}.{verb}" if event_name and verb else (event_name or verb or "")
    ev: dict[str, Any] = {"action": fit_name(name, 32)}
    actor = text_of(first(payload, _ACTOR))
    put_clipped(ev, "actor", actor, 128)
    target = text_of(first(payload, _TARGETS))
    put_clipped(ev, "target", target, 128)
    put_clipped(ev, "tenant_id", text_of(first(payload, _TENANT)), 128)

    words = ["GitHub", *(w for w in (event_name, verb) if w)]
    if actor:
        words += ["by", actor]
    if target:
        words += ["on", target]
    ev["message"] = clip(" ".join(words), 32766)

    changes = payload.get("changes")
    if changes:
        put_clipped(ev, "old", json_text(changes), 32766)
    rest = {k: v for k, v in payload.items() if k not in _COMMON and v is not None}
    put_clipped(ev, "new", new_with_ids(rest, {"X-GitHub-Delivery": delivery, "X-GitHub-Event": event_name}), 32766)
    return ev, delivery
