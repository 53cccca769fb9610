"""Vendor formats: split a request body (or Kafka value) into records and map each to event fields.

Every format is a module with the same two functions::

    def decode(body: bytes, content_type: str | None = None) -> list[Any]
        # split a body into records; raises DecodeError(detail) for a body it cannot read
    def to_event(record: Any) -> tuple[dict[str, Any], str | None]
        # standard-schema fields (not yet validated) + the source's dedup id (or None);
        # raises EventInvalid for a record that cannot be mapped

``decode`` rejects only what makes the whole body unreadable; a record that is readable but
unusable fails alone in ``to_event``, so a route may accept the rest of a batch.  Fields from
``to_event`` still go through :meth:`gateway.normalize.schema.Schema.normalize`; mappers keep
their values within the standard limits themselves (``action`` <= 32, ``actor`` <= 128...) so
that a ``reject`` oversize policy does not refuse vendor events.

:data:`VENDORS` holds them by format name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.errors import GatewayError
from gateway.normalize.limits import clip
from gateway.normalize.schema import EventInvalid, json_text

__all__ = ["NEW_SIZE", "VENDORS", "Decode", "DecodeError", "Vendor", "new_with_ids", "record_invalid", "text_of"]

NEW_SIZE = 32766
"""Size of the standard schema's ``new`` field."""


class DecodeError(GatewayError):
    """A body that cannot be split into records.

    ``detail`` says why.  ``hec_code`` is the Splunk HEC reply code for ``splunk_hec`` bodies
    (5 no data, 6 invalid data format, 12 event field is required, 13 event field cannot be
    blank), else ``None``; ``event_number`` is the 0-based index of the offending record when
    known (HEC's ``invalid-event-number``).
    """

    def __init__(self, detail: str, *, hec_code: int | None = None, event_number: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.hec_code = hec_code
        self.event_number = event_number


def record_invalid(detail: str, source: str = "") -> EventInvalid:
    """The :class:`EventInvalid` for a record a vendor cannot map (code ``InvalidObject``)."""
    return EventInvalid([{"code": "InvalidObject", "detail": detail, "source": source}])


class Decode(Protocol):
    """``decode(body, content_type=None) -> records``."""

    def __call__(self, body: bytes, content_type: str | None = None) -> list[Any]: ...


_NUMBERS = (int, float)  # a tuple: `int | float` would build a union object on every call (hot path)


def text_of(value: Any) -> str | None:
    """A non-empty string as is, a number as its text, anything else (``""``, objects...) ``None``."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, _NUMBERS) and not isinstance(value, bool):
        return str(value)
    return None


def put_clipped(event: dict[str, Any], field: str, text: str | None, size: int) -> None:
    """Set ``event[field]`` to ``text`` clipped to ``size`` characters, unless there is no text."""
    if text is not None:
        event[field] = clip(text, size)


def new_with_ids(detail: dict[str, Any], ids: dict[str, str | None], size: int = NEW_SIZE) -> str | None:
    """``new``: compact JSON of ``detail`` plus the vendor's own ids (``{field: id}``), always whole.

    The ids let an auditor find the stored record in the vendor's console, so they are never cut:
    when the JSON would pass ``size`` characters it becomes ``{<ids>, "truncated": "<JSON of
    detail, cut>"}``.  ``None`` when there is nothing to say.
    """
    kept = {k: v for k, v in ids.items() if v is not None}
    obj = {**detail, **kept}
    if not obj:
        return None
    text = json_text(obj)
    if text is not None and len(text) <= size:
        return text
    rest = json_text(detail) or ""
    if not kept:
        return clip(rest, size)
    budget = size - len(json_text(kept) or "") - 20
    while budget > 0:
        text = json_text({**kept, "truncated": clip(rest, budget)})
        if text is not None and len(text) <= size:
            return text
        budget -= max(1, len(text or rest) - size)  # escapes made it longer: cut more
    return clip(json_text(kept) or "", size)


@dataclass(frozen=True)
class Vendor:
    """One format: its name and its two functions."""

    name: str
    decode: Decode
    to_event: Callable[[Any], tuple[dict[str, Any], str | None]]
    subject: Callable[[Any], Any] | None = None
    """The part of a record a source's ``map:`` reads and whose depth is limited (default: all of it)."""


# The format modules import DecodeError and record_invalid from here, so they come last.
from gateway.normalize.vendors import (  # noqa: E402
    auth0,
    cloudtrail,
    firehose,
    github,
    gitlab,
    okta,
    onepassword,
    pangea,
    raw,
    splunk_hec,
)
from gateway.normalize.vendors import json as json_format  # noqa: E402

VENDORS: dict[str, Vendor] = {
    m.NAME: Vendor(m.NAME, m.decode, m.to_event)
    for m in (auth0, okta, github, gitlab, splunk_hec, cloudtrail, onepassword, pangea, raw, json_format)
}
VENDORS[firehose.NAME] = firehose.vendor()
"""Formats by name: ``auth0``, ``okta``, ``github``, ``gitlab``, ``splunk_hec``, ``cloudtrail``, ``onepassword``,
``firehose`` (records of JSON; :func:`firehose.vendor` builds the others), ``pangea``, ``raw``, ``json``."""
