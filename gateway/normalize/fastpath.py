"""A compiled fast path for events that need no more than validation (the hot path of Kafka).

:meth:`Schema.normalize` works on a decoded ``dict``: orjson builds it, the loop checks each
member, orjson encodes the result again.  For the common event (every member already of its
field's type and within its size) that is most of a Kafka message's cost.  A
:class:`FastPath` compiles the schema into msgspec structs instead, so that one C call decodes
*and* validates the JSON bytes, and another encodes the event to send.

It only ever accepts what :meth:`Schema.normalize` would accept unchanged but for the
spelling of date-times (which it canonicalizes the same way) and the dropping of ``null``
members.  Everything else (a number in a string field, an unknown member, an oversize
string, an epoch date-time, invalid JSON, a lone surrogate) makes :meth:`FastPath.item`
answer ``None`` and the caller takes the full path, which coerces or words the errors.
``tests/unit/normalize/test_normalize_fastpath.py`` checks the two paths agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import msgspec

from gateway.normalize.config import SchemaFieldConfig

_INT64 = msgspec.Meta(ge=-(2**63), le=2**63 - 1)

_EVENT_PREFIX = b'{"event":'


def _field_type(f: SchemaFieldConfig) -> Any:
    if f.type == "integer":
        return Annotated[int, _INT64]
    if f.type == "boolean":
        return bool
    if f.type in ("string", "string-unindexed", "text") and f.size is not None:
        return Annotated[str, msgspec.Meta(max_length=f.size)]
    return str  # unbounded strings, and date-times (canonicalized after decoding)


class FastPath:
    """Decode-and-validate of one event's JSON straight to its request item bytes."""

    __slots__ = ("_bare", "_datetimes", "_dt_text", "_encode", "_wrapped", "_wrapper")

    def __init__(self, fields: tuple[SchemaFieldConfig, ...], datetime_text: Callable[[Any], str | None]) -> None:
        """``datetime_text`` is the schema's own date-time canonicalizer (None: not a date-time)."""
        # Struct attributes are f0, f1... renamed to the field ids: ids may be Python keywords.
        spec: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        rename: dict[str, str] = {}
        for i, f in enumerate(fields):
            attr = f"f{i}"
            rename[attr] = f.id
            t = _field_type(f)
            spec.append((attr, t) if f.required else (attr, t | None, None))
        # Required fields first: a struct cannot have a required field after an optional one.
        spec.sort(key=lambda s: len(s) == 3)
        event_type = msgspec.defstruct(
            "FastEvent", spec, rename=rename, forbid_unknown_fields=True, omit_defaults=True, gc=False
        )
        wrapper = msgspec.defstruct("FastItem", [("event", event_type)], forbid_unknown_fields=True, gc=False)
        self._wrapper = wrapper
        self._wrapped = msgspec.json.Decoder(wrapper).decode
        # A bare event is recognized as the slow path does: an object that is not {"event": {...}}
        # and has no "events" member; a schema with such fields leaves bare events to it.
        ids = {f.id for f in fields}
        self._bare = None if ids & {"event", "events"} else msgspec.json.Decoder(event_type).decode
        self._datetimes = tuple(f"f{i}" for i, f in enumerate(fields) if f.type == "datetime")
        self._dt_text = datetime_text
        self._encode = msgspec.json.Encoder().encode

    def item(self, value: bytes) -> bytes | None:
        """The request item ``{"event":{...}}`` for ``value``, or ``None``: take the full path.

        ``value`` is ``{"event": {...}}`` (exactly that member) or a bare event object.
        """
        return self.items([value])[0]

    def items(self, values: list[bytes | None]) -> list[bytes | None]:
        """:meth:`item` of each value (``None`` stays ``None``), in one loop: the Kafka hot path."""
        wrapped = self._wrapped
        bare = self._bare
        wrap = self._wrapper
        encode = self._encode
        datetimes = self._datetimes
        dt_text = self._dt_text
        errors = (msgspec.DecodeError, msgspec.EncodeError)
        out: list[bytes | None] = []
        append = out.append
        for value in values:
            try:
                if value is None:
                    append(None)
                    continue
                if value.startswith(_EVENT_PREFIX):
                    item = wrapped(value)
                    event = item.event  # type: ignore[attr-defined]  # a struct made at run time
                elif bare is not None:
                    event = bare(value)
                    item = wrap(event)
                else:
                    append(None)
                    continue
                for attr in datetimes:
                    v = getattr(event, attr)
                    if v is not None:
                        text = dt_text(v)
                        if text is None:
                            break
                        setattr(event, attr, text)
                else:
                    append(encode(item))
                    continue
                append(None)  # a date-time the full path must coerce, or word the error of
            except errors:
                append(None)
        return out
