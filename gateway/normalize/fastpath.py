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
from itertools import repeat
from operator import attrgetter
from typing import Annotated, Any, NamedTuple

import msgspec

from gateway.acks import exhaust
from gateway.normalize.config import SchemaFieldConfig

_INT64 = msgspec.Meta(ge=-(2**63), le=2**63 - 1)

_EVENT_PREFIX = b'{"event":'
_event_of = attrgetter("event")
_MEMO_MAX = 4096
_DECLINED = (msgspec.DecodeError, msgspec.EncodeError)
"""What decoding or encoding a value the fast path does not take raises."""
_FIELDS_DECLINED = (*_DECLINED, UnicodeEncodeError)
"""... and encoding a converted dict's lone surrogate (JSON text cannot hold one)."""


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

    __slots__ = (
        "_bare",
        "_datetimes",
        "_dt_memo",
        "_encode_into",
        "_event_type",
        "_log_call",
        "_wrapped",
        "_wrapper",
    )

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
        self._event_type = event_type
        # A whole /v2/log call: its members as the intake reads them, each event's item as above.
        log_call = msgspec.defstruct(
            "FastLogCall",
            [
                ("events", list[wrapper]),  # type: ignore[valid-type]  # a struct made just above
                ("verbose", bool | None, None),
                ("config_id", str | None, None),
                ("prev_root", str | None, None),
            ],
            forbid_unknown_fields=True,
            gc=False,
        )
        self._log_call = msgspec.json.Decoder(log_call).decode
        self._wrapped = msgspec.json.Decoder(wrapper).decode
        # A bare event is recognized as the slow path does: an object that is not {"event": {...}}
        # and has no "events" member; a schema with such fields leaves bare events to it.
        ids = {f.id for f in fields}
        self._bare = None if ids & {"event", "events"} else msgspec.json.Decoder(event_type).decode
        self._datetimes = tuple((f"f{i}", attrgetter(f"f{i}")) for i, f in enumerate(fields) if f.type == "datetime")
        self._dt_memo = _DatetimeMemo(datetime_text)
        self._encode_into = msgspec.json.Encoder().encode_into

    def item(self, value: bytes) -> bytes | None:
        """The request item ``{"event":{...}}`` for ``value``, or ``None``: take the full path.

        ``value`` is ``{"event": {...}}`` (exactly that member) or a bare event object.
        """
        try:
            return self._all([value])[0]
        except _DECLINED:
            return None

    def items(self, values: list[bytes | None]) -> list[bytes | None]:
        """:meth:`item` of each value (``None`` stays ``None``): the Kafka hot path.

        A poll's values are usually all alike and valid, so they are decoded, fixed up and
        encoded list by list with C-level ``map``s; a list that is not (one value declines)
        is gone through one value at a time instead.
        """
        if not values:
            return []
        if all(values):  # no None (nor empty value: it declines anyway); faster than `None not in`
            try:
                return self._all(values)  # type: ignore[arg-type]  # no None in it, as just checked
            except _DECLINED:
                pass
        return [None if v is None else self.item(v) for v in values]

    def fields_items(self, events: list[dict[str, Any] | None]) -> list[bytes | None]:
        """The request item of each event *dict* (a source's own mapping of a record), ``None``
        staying ``None`` and an event the fast path does not take giving ``None``.

        ``msgspec.convert`` validates a dict against the compiled struct in C, with the rules
        of its JSON decoding (no coercion: a float, a bool for an integer, a non-string key, an
        unknown member all decline), so no JSON is written and read again; encoding a lone
        surrogate declines too.
        """
        if not events:
            return []
        if all(events):
            try:
                return self._fields_all(events)  # type: ignore[arg-type]  # no None in it, as just checked
            except _FIELDS_DECLINED:
                pass
        out: list[bytes | None] = []
        for event in events:
            try:
                out.append(None if event is None else self._fields_all([event])[0])
            except _FIELDS_DECLINED:
                out.append(None)
        return out

    def _fields_all(self, dicts: list[dict[str, Any]]) -> list[bytes | None]:
        # One convert of the list: a call per dict cost a third more, each one reading its
        # arguments and the type again (issue 18); a dict it declines fails the list, and
        # fields_items then goes dict by dict.
        events: list[Any] = msgspec.convert(dicts, list[self._event_type])  # type: ignore[name-defined]
        items = list(map(self._wrapper, events))
        self._canonicalize(events)
        out: list[bytes | None] = self._encode_exact(items)
        return out

    def _all(self, values: list[bytes]) -> list[bytes | None]:
        """Items of values shaped like the first one; raises one of :data:`_DECLINED` when any
        value is not accepted (:meth:`items` then goes through them one by one)."""
        first = values[0]
        if first.startswith(_EVENT_PREFIX):
            items = list(map(self._wrapped, values))
            events = list(map(_event_of, items))
        elif self._bare is not None:
            events = list(map(self._bare, values))
            items = list(map(self._wrapper, events))
        else:
            raise msgspec.DecodeError("a schema with an `event` or `events` field takes no bare events here")
        self._canonicalize(events)
        out: list[bytes | None] = self._encode_exact(items)
        return out

    def _encode_exact(self, items: list[Any]) -> list[Any]:
        """Each item's JSON as an exact-size ``bytes``.

        ``encode`` hands back its growing buffer shrunk in place, which keeps a buffered item's
        allocation ~35 bytes over its length (RSS per buffered event 476 vs 433 bytes with
        orjson's items, issue 18); encoding into one reused buffer and copying it out costs no
        more than ``encode`` alone.
        """
        buf = bytearray()  # per call: never shared between callers
        into = self._encode_into
        out: list[bytes] = []
        append = out.append
        for item in items:
            into(item, buf)
            append(bytes(buf))
        return out

    def _canonicalize(self, events: list[Any]) -> None:
        """Respell the events' date-times canonically, from the memo (a stream's events share
        their date-times); a date-time the fast path cannot send raises from the memo (see
        :class:`_DatetimeMemo`)."""
        canonical = self._dt_memo.__getitem__
        for attr, stamp_of in self._datetimes:
            stamps = list(map(stamp_of, events))
            texts = list(map(canonical, stamps))
            if texts != stamps:  # already canonical (an SDK's microseconds): nothing to set
                exhaust(map(setattr, events, repeat(attr), texts))

    def log_call(self, raw: bytes, max_events: int) -> LogCall | None:
        """A Pangea ``/v2/log`` body decoded, validated and turned into its events' items in C
        calls, or ``None``: the caller takes the full path (which words every error).

        Taken only by the plain call: a JSON object with no member but ``events`` (1 to
        ``max_events`` objects of exactly one ``event`` member each: no client signature),
        ``verbose`` (a boolean), ``config_id`` and ``prev_root`` (strings), every event one
        :meth:`item` accepts.  The items are those the full path gives (``encode_item`` of
        :meth:`Schema.normalize`), in order.  Such a body nests 4 containers deep, no deeper.
        """
        try:
            call: Any = self._log_call(raw)  # a struct made at run time: its members untyped
            wrapped = call.events
            if not wrapped or len(wrapped) > max_events:
                return None
            self._canonicalize(list(map(_event_of, wrapped)))
            items: list[bytes] = self._encode_exact(wrapped)
        except _DECLINED:
            return None
        return LogCall(items, bool(call.verbose), call.config_id, call.prev_root)


class LogCall(NamedTuple):
    """What :meth:`FastPath.log_call` reads of a ``/v2/log`` body."""

    items: list[bytes]
    """Each event's request item ``{"event":{...}}``, in the body's order."""
    verbose: bool
    config_id: str | None
    prev_root: str | None


LOG_CALL_DEPTH = 4
"""How deep the containers of a body :meth:`FastPath.log_call` takes nest (object, ``events``,
item, event): a source whose depth limit is lower leaves such bodies to the full path."""


class _DatetimeMemo(dict[str | None, str | None]):
    """Date-time text -> its canonical text, filled on a miss by the schema's canonicalizer.

    ``None`` (an optional date-time that is absent) stays ``None``.  Text that is not a
    date-time the fast path can send (the full path coerces it or words the error) raises
    ``DecodeError`` and is not remembered: the caller's list then goes value by value.
    """

    __slots__ = ("_canonical",)

    def __init__(self, canonical: Callable[[Any], str | None]) -> None:
        super().__init__({None: None})
        self._canonical = canonical

    def __missing__(self, stamp: str | None) -> str:
        text = self._canonical(stamp)
        if text is None:
            raise msgspec.DecodeError("not a date-time the fast path sends as it is")
        if len(self) >= _MEMO_MAX:
            self.clear()
            self[None] = None
        self[stamp] = text
        return text
