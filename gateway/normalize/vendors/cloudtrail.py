"""AWS CloudTrail events: one event, a log file ``{"Records": [...]}``, or EventBridge envelopes.

``decode`` reads a JSON body (object, array or JSON lines) and returns the CloudTrail events in
it: a ``{"Records": [...]}`` log file gives its records, an EventBridge event for CloudTrail
(``detail-type`` ``AWS ... via CloudTrail``, the event in ``detail``) gives its ``detail``, any
other object is taken as one CloudTrail event.

Mapping of a CloudTrail event to the standard schema:

=============  ==================================================================================
``actor``      ``userIdentity.arn``, else ``userIdentity.userName``, else ``.principalId``, else
               ``.invokedBy`` (an AWS service acting), else ``.type``
``action``     ``<service>:<eventName>`` where service is ``eventSource`` without
               ``.amazonaws.com`` (``iam:CreateUser``, the IAM policy spelling); fitted to 32
               (the full ``eventSource``/``eventName`` are in ``new``)
``target``     the ARNs of ``resources`` joined with ``", "``, else the first of the request
               parameters naming a resource (``userName``, ``roleName``, ``bucketName``, ``name``...)
``status``     ``failure`` when ``errorCode`` is set or a console sign-in answered ``Failure``,
               else ``success``
``source``     ``sourceIPAddress``
``timestamp``  ``eventTime``
``tenant_id``  ``recipientAccountId``
``message``    ``AWS <eventSource> <eventName> by <actor>`` plus ``: <errorCode>: <errorMessage>``
               on a failure
``new``        compact JSON of ``eventID`` (the vendor's event id, always whole), ``eventSource``,
               ``eventName``, ``eventType``, ``eventCategory``, ``awsRegion``, ``readOnly``,
               ``requestID``, ``errorCode``, ``errorMessage``, ``resources``,
               ``requestParameters`` and ``userIdentity``
=============  ==================================================================================

The dedup id is ``eventID``.
"""

from __future__ import annotations

from typing import Any, Final

from gateway.normalize.limits import clip, fit_name
from gateway.normalize.vendors import DecodeError, new_with_ids, put_clipped, record_invalid, text_of
from gateway.normalize.vendors.json import documents

__all__ = ["NAME", "decode", "events_of", "is_cloudtrail_event", "to_event"]

NAME = "cloudtrail"

_NEW_KEYS: Final = (
    "eventSource",
    "eventName",
    "eventType",
    "eventCategory",
    "awsRegion",
    "readOnly",
    "requestID",
    "errorCode",
    "errorMessage",
    "resources",
    "requestParameters",
    "userIdentity",
)
# Request parameters that name what an API call acted on, most specific first.
_TARGET_PARAMS: Final = (
    "userName",
    "roleName",
    "groupName",
    "policyArn",
    "bucketName",
    "functionName",
    "keyId",
    "secretId",
    "instanceId",
    "name",
    "trailName",
    "serialNumber",
)
_ACTOR_KEYS: Final = ("arn", "userName", "principalId", "invokedBy", "type")


def is_cloudtrail_event(obj: Any) -> bool:
    """True for an object that looks like one CloudTrail event (``eventSource`` and ``eventName``)."""
    return isinstance(obj, dict) and "eventName" in obj and "eventSource" in obj


def events_of(doc: Any) -> list[Any]:
    """The CloudTrail events of one decoded document (see the module docstring)."""
    if isinstance(doc, dict):
        if "Records" in doc and "eventName" not in doc:
            records = doc["Records"]
            if not isinstance(records, list):
                raise DecodeError('"Records" must be an array of CloudTrail events')
            return records
        if "detail-type" in doc and isinstance(doc.get("detail"), dict):
            return [doc["detail"]]
    return [doc]


def decode(body: bytes, content_type: str | None = None) -> list[Any]:
    """CloudTrail events of a JSON body: events, log files, EventBridge envelopes (see above)."""
    out: list[Any] = []
    for doc in documents(body):
        out.extend(events_of(doc))
    return out


def _actor(identity: Any) -> str | None:
    if not isinstance(identity, dict):
        return None
    for key in _ACTOR_KEYS:
        value = text_of(identity.get(key))
        if value is not None:
            return value
    return None


def _target(event: dict[str, Any]) -> str | None:
    resources = event.get("resources")
    if isinstance(resources, list):
        arns = [a for a in (text_of(r.get("ARN")) for r in resources if isinstance(r, dict)) if a is not None]
        if arns:
            return ", ".join(arns)
    params = event.get("requestParameters")
    if isinstance(params, dict):
        for key in _TARGET_PARAMS:
            value = text_of(params.get(key))
            if value is not None:
                return value
    return None


def _failed(event: dict[str, Any]) -> bool:
    if text_of(event.get("errorCode")) is not None:
        return True
    answer = event.get("responseElements")
    # A failed console sign-in has no errorCode: the outcome is in responseElements.
    return isinstance(answer, dict) and answer.get("ConsoleLogin") == "Failure"


def _new(event: dict[str, Any]) -> str | None:
    detail = {k: event[k] for k in _NEW_KEYS if event.get(k) is not None}
    return new_with_ids(detail, {"eventID": text_of(event.get("eventID"))})


def to_event(record: Any) -> tuple[dict[str, Any], str | None]:
    """Standard-schema fields of one CloudTrail event and its ``eventID``."""
    if not isinstance(record, dict):
        raise record_invalid(f"a CloudTrail event must be an object, not {type(record).__name__}")
    source = text_of(record.get("eventSource"))
    name = text_of(record.get("eventName"))
    if source is None or name is None:
        raise record_invalid("a CloudTrail event needs `eventSource` and `eventName`")

    service = source.removesuffix(".amazonaws.com")
    ev: dict[str, Any] = {"action": fit_name(f"{service}:{name}", 32)}
    actor = _actor(record.get("userIdentity"))
    put_clipped(ev, "actor", actor, 128)
    put_clipped(ev, "target", _target(record), 128)
    failed = _failed(record)
    ev["status"] = "failure" if failed else "success"
    put_clipped(ev, "source", text_of(record.get("sourceIPAddress")), 128)
    when = record.get("eventTime")
    if when is not None and when != "":
        ev["timestamp"] = when
    put_clipped(ev, "tenant_id", text_of(record.get("recipientAccountId")), 128)
    words = f"AWS {source} {name}" + (f" by {actor}" if actor else "")
    if failed:
        why = [w for w in (text_of(record.get("errorCode")), text_of(record.get("errorMessage"))) if w]
        if why:
            words += ": " + ": ".join(why)
    ev["message"] = clip(words, 32766)
    put_clipped(ev, "new", _new(record), 32766)
    return ev, text_of(record.get("eventID"))
