"""Validation and safe coercion of events against a destination's schema (the hot path).

A :class:`Schema` is built once per destination, from the standard schema of the Secure Audit
Log (``message`` required, ``actor``, ``action``...) or from a custom one (``/v1/schema`` or the
configuration).  :meth:`Schema.normalize` turns one event (a ``dict`` as a source produced it)
into the event to send, or raises :class:`EventInvalid` listing *every* problem of the event in
the upstream's own error shape ``{"code", "detail", "source"}``, ``source`` being a JSON pointer
relative to the event (``"/actor"``).  The route or consumer prefixes it (``/events/3/event``).

Per field type, what is accepted (``null`` is always the same as an absent field):

``string``, ``string-unindexed``, ``text``
    strings; numbers as their JSON spelling (``3`` -> ``"3"``, ``1.5`` -> ``"1.5"``); booleans as
    ``"true"``/``"false"``; objects and arrays as compact JSON with sorted keys (the Pangea SDK does
    the same to object values before it sends or signs an event).  Longer than ``size``
    characters (code points, as the upstream counts): rejected or truncated per the policy.
    Strings that are not valid Unicode text (lone surrogates) are rejected.
``integer``
    integers in the signed 64-bit range; integral floats (``3.0``); decimal strings (``"42"``).
``boolean``
    booleans; the strings ``"true"``/``"false"`` (any case).
``datetime``
    RFC 3339 date-times (``T``, ``t`` or a space between date and time; any offset, and none
    taken as UTC, as the audit service takes it) and epoch
    numbers or numeric strings, whose unit is told by magnitude: below 1e11 seconds, below 1e14
    milliseconds, below 1e17 microseconds, else nanoseconds.  Sent as UTC in the SDK's spelling,
    ``2024-06-11T08:15:12.345000Z`` (microseconds, ``Z``).

Fields the schema lacks are rejected (``UnexpectedProperty``), dropped, or folded into one
string field as compact JSON, per :class:`~gateway.normalize.config.SchemaPolicy`.

Error codes are those of the upstream's validation errors: ``FieldRequired``,
``UnexpectedProperty``, ``InvalidObject``, ``InvalidString``, ``InvalidInteger``, ``InvalidBool``,
``BadFormatDateTime``, ``AboveMaxLength``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final

import orjson

from gateway.errors import GatewayError
from gateway.normalize.config import FieldType, SchemaFieldConfig, SchemaPolicy
from gateway.normalize.fastpath import FastPath
from gateway.normalize.signing import signature_verifies

__all__ = [
    "STANDARD_FIELDS",
    "EventInvalid",
    "Schema",
    "as_number",
    "epoch_to_rfc3339",
    "json_text",
    "pointer",
]


class EventInvalid(GatewayError):
    """An event the schema refuses; ``errors`` lists all of its problems.

    Each error is ``{"code": ..., "detail": ..., "source": ...}`` where ``source`` is a JSON
    pointer relative to the event (``"/actor"``; ``""`` for the event itself).
    """

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e.get('source') or '/'}: {e.get('detail')}" for e in errors))


STANDARD_FIELDS: Final[tuple[SchemaFieldConfig, ...]] = (
    SchemaFieldConfig(id="message", type="text", required=True, size=32766),
    SchemaFieldConfig(id="actor", type="string", size=128),
    SchemaFieldConfig(id="action", type="string", size=32),
    SchemaFieldConfig(id="target", type="string", size=128),
    SchemaFieldConfig(id="status", type="string", size=32),
    SchemaFieldConfig(id="source", type="string", size=128),
    SchemaFieldConfig(id="old", type="text", size=32766),
    SchemaFieldConfig(id="new", type="text", size=32766),
    SchemaFieldConfig(id="tenant_id", type="string", size=128),
    SchemaFieldConfig(id="timestamp", type="datetime"),
)
"""The upstream's standard event schema (``AuditEvent`` in the API spec), as field configs."""

# Field kinds, as small ints for the hot loop.
_STR: Final = 0
_INT: Final = 1
_BOOL: Final = 2
_DT: Final = 3
_KINDS: Final[dict[FieldType, int]] = {
    "string": _STR,
    "string-unindexed": _STR,
    "text": _STR,
    "integer": _INT,
    "boolean": _BOOL,
    "datetime": _DT,
}

_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**63 - 1
_INT_RE: Final = re.compile(r"[+-]?[0-9]{1,19}")
_NUM_RE: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
# The zone offset is optional: a date-time without one is taken as UTC, as the audit service
# does (the SDK sends ``datetime.now()`` so: ``2026-12-02T11:48:38.708025``).
_RFC3339_RE: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})?"
)
_UTC_DT_RE: Final = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]+))?[Zz]")
_UNIT_FACTORS: Final[dict[str, int | None]] = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}
_EPOCH: Final = datetime(1970, 1, 1)  # naive UTC


def _sendable(text: str) -> str:
    """``text`` with any lone surrogate written as an escape, so that it can be sent as JSON."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def pointer(key: Any) -> str:
    """JSON pointer (RFC 6901) of a top-level member of the event (always valid UTF-8 text)."""
    s = _sendable(key if isinstance(key, str) else str(key))
    if "~" in s or "/" in s:
        s = s.replace("~", "~0").replace("/", "~1")
    return "/" + s


def _err(code: str, key: Any, detail: str) -> dict[str, str]:
    return {"code": code, "detail": _sendable(detail), "source": pointer(key)}


def json_text(value: Any) -> str | None:
    """Compact JSON of ``value`` with sorted keys, or ``None`` if it cannot be serialized.

    orjson first (the fast path); then the stdlib for what orjson refuses but JSON can say
    (integers beyond 64 bits, non-string keys).  The text may contain lone surrogates only if
    ``value`` did; callers that send it check that (:meth:`Schema.normalize` does).
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, ValueError):
        pass
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        return None


def _utc_text(naive_utc: datetime) -> str:
    # The SDK's format_datetime spelling: always microseconds, "Z".
    text = naive_utc.isoformat()
    return text + "Z" if naive_utc.microsecond else text + ".000000Z"


def epoch_to_rfc3339(value: float | int, unit: str | None = None) -> str:
    """RFC 3339 UTC text of an epoch number; raises ValueError if out of range.

    ``unit`` is ``"s"``, ``"ms"``, ``"us"`` or ``"ns"``; ``None`` tells it by magnitude (below
    1e11 seconds, below 1e14 milliseconds, below 1e17 microseconds, else nanoseconds).
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("not a finite number")
    if unit is None:
        m = abs(value)
        unit = "s" if m < 1e11 else "ms" if m < 1e14 else "us" if m < 1e17 else "ns"
    if unit not in _UNIT_FACTORS:
        raise ValueError(f"unknown epoch unit {unit!r}")
    factor = _UNIT_FACTORS[unit]
    if isinstance(value, int):
        micros = value // 1000 if factor is None else value * factor
    else:
        micros = round(value / 1000) if factor is None else round(value * factor)
    try:
        return _utc_text(_EPOCH + timedelta(microseconds=micros))
    except (OverflowError, ValueError):
        raise ValueError("date out of range") from None


def as_number(value: Any) -> int | float | None:
    """A finite number, or the number a decimal string spells (``"12"``, ``"-1.5"``), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        s = value.strip()
        if _NUM_RE.fullmatch(s):
            try:
                return int(s) if s.lstrip("+-").isdigit() else float(s)
            except ValueError:  # over the interpreter's digit limit
                return None
    return None


_DT_CACHE_MAX: Final = 4096
_dt_cache: dict[str, str | None] = {}
"""Date-time text -> its canonical text: a stream's events share their timestamps (to the
millisecond, often to the second), and parsing is most of what a valid event costs."""


def _parse_datetime(value: Any) -> str | None:
    """The canonical UTC text of a datetime value, or None when it is not one."""
    if type(value) is str:
        try:
            return _dt_cache[value]
        except KeyError:
            pass
        text = _parse_datetime_uncached(value)
        if len(_dt_cache) >= _DT_CACHE_MAX:
            _dt_cache.clear()
        _dt_cache[value] = text
        return text
    return _parse_datetime_uncached(value)


_DIGITS_AS_D: Final = bytes.maketrans(b"0123456789", b"dddddddddd")
_CANONICAL_UTC: Final[dict[bytes, Callable[[str], str]]] = {
    b"dddd-dd-ddTdd:dd:dd.ddddddZ": lambda s: s,
    b"dddd-dd-ddTdd:dd:dd.dddZ": lambda s: s[:23] + "000Z",
    b"dddd-dd-ddTdd:dd:ddZ": lambda s: s[:19] + ".000000Z",
}
"""The UTC spellings producers use most (JavaScript's toISOString() is the middle one), by
their shape with every digit as ``d``, and their canonical text: what the regular expression
path below gives for them, at a quarter of its cost (a stream's timestamps change every
millisecond, so this runs for most events of a slow stream)."""


def _parse_datetime_uncached(value: Any) -> str | None:
    if isinstance(value, str):
        common = _parse_common_utc(value)
        if common is not _NOT_COMMON:
            return common  # type: ignore[return-value]  # str or None, as _NOT_COMMON is not
    return _parse_datetime_general(value)


_NOT_COMMON: Final = object()


def _parse_common_utc(value: str) -> object:
    """:func:`_parse_datetime_general` of a string in one of the common UTC spellings
    (:data:`_CANONICAL_UTC`), or ``_NOT_COMMON`` for any other string."""
    s = value.strip()
    respell = _CANONICAL_UTC.get(s.encode().translate(_DIGITS_AS_D)) if s.isascii() else None
    if respell is None:
        return _NOT_COMMON
    try:
        datetime.fromisoformat(s[:19])  # validates the calendar and clock
    except ValueError:
        return None
    return respell(s)


def _parse_datetime_general(value: Any) -> str | None:
    if isinstance(value, str):
        s = value.strip()
        m = _UTC_DT_RE.fullmatch(s)
        if m is not None:  # UTC already (the usual case): only respell the fraction
            date, time, frac = m.groups()
            if frac is None:
                frac = "000000"
            elif len(frac) != 6:
                frac = frac[:6].ljust(6, "0")
            text = f"{date}T{time}.{frac}Z"
            try:
                datetime.fromisoformat(text[:-1])  # validates the calendar and clock
            except ValueError:
                return None
            return text
        if _RFC3339_RE.fullmatch(s):
            try:
                dt = datetime.fromisoformat(s.upper())
                offset = dt.utcoffset()
                naive = dt.replace(tzinfo=None)
                return _utc_text(naive - offset if offset else naive)
            except (ValueError, OverflowError):
                return None
    num = as_number(value)
    if num is None:
        return None
    try:
        return epoch_to_rfc3339(num)
    except ValueError:
        return None


def _sdk_datetime_text(value: Any, canonical: str) -> str:
    """``value`` as pangea-sdk's ``format_datetime`` spells it when signing: microseconds, the
    offset kept (``+00:00`` as ``Z``); ``canonical`` (its UTC text) for what is not offset text."""
    if not isinstance(value, str):
        return canonical
    try:
        dt = datetime.fromisoformat(value.strip().upper())
    except ValueError:
        return canonical
    if dt.tzinfo is None:
        return canonical
    return dt.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


class _FieldError(GatewayError):
    def __init__(self, error: dict[str, str]) -> None:
        self.error = error


class Schema:
    """A destination's event schema: validates, coerces and limits one event at a time.

    Build it with :meth:`standard` or :meth:`from_fields`; it is immutable and shareable.
    """

    __slots__ = ("_fast", "_fields", "_fold_into", "_on_unknown", "_required", "_spec", "_truncate", "policy")

    _standard_cache: ClassVar[dict[SchemaPolicy, Schema]] = {}

    def __init__(self, fields: Iterable[SchemaFieldConfig], policy: SchemaPolicy | None = None) -> None:
        """Prefer :meth:`standard` / :meth:`from_fields`; raises ValueError on an unusable schema."""
        self.policy = policy if policy is not None else SchemaPolicy()
        self._fields: tuple[SchemaFieldConfig, ...] = tuple(fields)
        if not self._fields:
            raise ValueError("a schema needs at least one field")
        spec: dict[str, tuple[int, int | None]] = {}
        for f in self._fields:
            if f.id in spec:
                raise ValueError(f"schema field {f.id!r} is listed twice")
            if f.id == "received_at":
                raise ValueError("schema field id 'received_at' is reserved by the upstream")
            kind = _KINDS[f.type]
            spec[f.id] = (kind, f.size if kind == _STR else None)
        self._spec = spec
        self._required = tuple(f.id for f in self._fields if f.required)
        self._fast: FastPath | None = None
        self._on_unknown = self.policy.on_unknown_field
        self._truncate = self.policy.on_oversize == "truncate"
        self._fold_into: str | None = None
        if self._on_unknown == "fold":
            target = self.policy.fold_into
            if not target:
                raise ValueError("schema_policy.fold_into is required with on_unknown_field: fold")
            if target not in spec:
                raise ValueError(f"schema_policy.fold_into: {target!r} is not a field of the schema")
            if spec[target][0] != _STR:
                raise ValueError(
                    f"schema_policy.fold_into: {target!r} must be a string, string-unindexed or text field"
                )
            self._fold_into = target

    @classmethod
    def standard(cls, policy: SchemaPolicy | None = None) -> Schema:
        """The upstream's standard schema (see :data:`STANDARD_FIELDS`)."""
        policy = policy if policy is not None else SchemaPolicy()
        cached = cls._standard_cache.get(policy)
        if cached is None:
            cached = cls._standard_cache[policy] = cls(STANDARD_FIELDS, policy)
        return cached

    @classmethod
    def from_fields(cls, fields: list[SchemaFieldConfig], policy: SchemaPolicy | None = None) -> Schema:
        """A custom schema (from ``/v1/schema`` or the configuration); raises ValueError if unusable."""
        return cls(fields, policy)

    @property
    def fields(self) -> tuple[SchemaFieldConfig, ...]:
        """The schema's fields, in order."""
        return self._fields

    def fast_path(self) -> FastPath:
        """This schema compiled for events that need no more than validation: its
        :meth:`FastPath.item` gives what ``encode_item(normalize(...))`` would, in one step,
        or ``None`` (decode the event and :meth:`normalize` it); see
        :mod:`gateway.normalize.fastpath`."""
        fast = self._fast
        if fast is None:
            # Uncached: the fast path memoizes date-times itself, so a new one is stored once.
            fast = self._fast = FastPath(self._fields, _parse_datetime_uncached)
        return fast

    def normalize(self, event: dict[str, Any]) -> dict[str, Any]:
        """Return the event to send (a new dict); raise :class:`EventInvalid` with all its errors."""
        if not isinstance(event, dict):
            detail = f"the event must be an object, not {_type_name(event)}"
            raise EventInvalid([{"code": "InvalidObject", "detail": detail, "source": ""}])
        spec = self._spec
        out: dict[str, Any] = {}
        errors: list[dict[str, str]] | None = None
        unknown: dict[Any, Any] | None = None
        for k, v in event.items():
            if v is None:
                continue
            s = spec.get(k)
            if s is None:
                if unknown is None:
                    unknown = {}
                unknown[k] = v
                continue
            kind, size = s
            if kind == _STR and type(v) is str and v.isascii() and (size is None or len(v) <= size):
                out[k] = v  # the common case: nothing to do
                continue
            try:
                out[k] = self._coerce(k, kind, size, v)
            except _FieldError as e:
                if errors is None:
                    errors = []
                errors.append(e.error)
        if unknown is not None:
            errors = self._unknown(event, unknown, out, errors)
        for r in self._required:
            if r not in out:
                if errors is None:
                    errors = []
                if not any(e["source"] == pointer(r) for e in errors):
                    errors.append(_err("FieldRequired", r, f"'{r}' is a required property"))
        if errors:
            raise EventInvalid(errors)
        return out

    def normalize_signed(self, event: dict[str, Any], extras: dict[str, Any] | None = None) -> dict[str, Any]:
        """Validate an event that arrived with a client signature; return the form to send.

        What is stored must be what was signed, or the signature fails to verify when the
        event is read back.  With ``extras`` (the record's ``signature`` and ``public_key``) the
        signature is checked over the forms the event could be sent in, in this order:

        1. the normalized event (:meth:`normalize`): the SDK signs date-times in its canonical
           spelling (``…:52.000000Z``) but sends whole seconds as ``…:52Z`` and naive ones
           without an offset, so this is what it signed;
        2. the event as received (``null`` members dropped, as the SDK drops them before
           signing), passed through byte-identical: e.g. an offset kept, ``…+02:00``;
        3. the event with its date-times in the SDK's signing spelling, offset kept
           (``…:52.000000+02:00``, what the SDK signs for a whole-second offset date-time).

        Forms 2 and 3 are tried only when they differ from 1 in date-times alone (other
        fields must already be in their sent form).  No form verifying, the event is refused
        (``BadState``): the gateway never forwards an event whose signature would then fail.
        Without a readable ed25519 key it cannot verify, and accepts only an event that
        normalization leaves unchanged.
        """
        out = self.normalize(event)
        signature = extras.get("signature") if extras else None
        public_key = extras.get("public_key") if extras else None
        changed = self._changes(event, out)
        if signature is None or public_key is None:
            if changed:
                raise EventInvalid(changed)
            return out
        forms = [out]
        # Only date-times differ: the client may have signed another spelling of them.
        respelled = bool(changed) and all(self._spec.get(e["source"][1:], (None,))[0] == _DT for e in changed)
        if respelled:
            sent = {k: v for k, v in event.items() if v is not None}
            forms.append(sent)
            sdk = {k: (_sdk_datetime_text(v, out[k]) if self._spec[k][0] == _DT else v) for k, v in sent.items()}
            if sdk != sent and sdk != out:
                forms.append(sdk)
        for form in forms:
            ok = signature_verifies(form, signature, public_key)
            if ok is None:  # a key this gateway cannot read: only the unchanged event is safe
                if changed:
                    raise EventInvalid(changed)
                return out
            if ok:
                return form
        raise EventInvalid(
            (changed if not respelled else [])
            or [
                {
                    "code": "BadState",
                    "detail": "the event's signature does not verify over it with its public_key",
                    "source": "",
                }
            ]
        )

    def _changes(self, event: dict[str, Any], out: dict[str, Any]) -> list[dict[str, str]]:
        """``BadState`` errors naming each member that normalization changed, added or dropped."""
        changed = [
            _err("BadState", k, f"'{k}' would be changed by normalization, which would break the event's signature")
            for k, v in event.items()
            if v is not None and (k not in out or out[k] != v or type(out[k]) is not type(v))
        ]
        changed += [
            _err("BadState", k, f"'{k}' would be added by normalization, which would break the event's signature")
            for k in out
            if event.get(k) is None
        ]
        return changed

    # -- slow paths ---------------------------------------------------------------------------

    def _coerce(self, key: Any, kind: int, size: int | None, v: Any) -> Any:
        if kind == _STR:
            return self._string(key, size, v)
        if kind == _INT:
            return _integer(key, v)
        if kind == _BOOL:
            return _boolean(key, v)
        text = _parse_datetime(v)
        if text is None:
            raise _FieldError(
                _err("BadFormatDateTime", key, f"'{key}' is not an RFC 3339 date-time or epoch time: {_show(v)}")
            )
        return text

    def _string(self, key: Any, size: int | None, v: Any) -> str:
        if isinstance(v, str):
            s = v
        elif isinstance(v, bool):
            s = "true" if v else "false"
        elif isinstance(v, int):
            try:
                s = str(v)
            except ValueError:  # over the interpreter's int->str digit limit
                raise _FieldError(_err("InvalidString", key, f"'{key}' is a number too large to write")) from None
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise _FieldError(_err("InvalidString", key, f"'{key}' is not a finite number"))
            s = repr(v)
        elif isinstance(v, dict | list | tuple):
            text = json_text(v)
            if text is None:
                raise _FieldError(_err("InvalidString", key, f"'{key}' cannot be written as JSON text"))
            s = text
        else:
            raise _FieldError(_err("InvalidString", key, f"'{key}' must be a string, not {_type_name(v)}"))
        if not s.isascii():
            try:
                s.encode("utf-8")
            except UnicodeEncodeError:
                raise _FieldError(
                    _err("InvalidString", key, f"'{key}' is not valid Unicode text (lone surrogate)")
                ) from None
        if size is not None and len(s) > size:
            if not self._truncate:
                raise _FieldError(_err("AboveMaxLength", key, f"'{key}' is longer than {size} characters ({len(s)})"))
            s = s[:size]
        return s

    def _unknown(
        self,
        event: dict[Any, Any],
        unknown: dict[Any, Any],
        out: dict[str, Any],
        errors: list[dict[str, str]] | None,
    ) -> list[dict[str, str]] | None:
        policy = self._on_unknown
        if policy == "drop":
            return errors
        if policy == "reject":
            errors = errors if errors is not None else []
            errors.extend(_err("UnexpectedProperty", k, f"'{k}' is not a field of the schema") for k in unknown)
            return errors
        target = self._fold_into
        assert target is not None
        folded: dict[str, Any] = {k if isinstance(k, str) else str(k): v for k, v in unknown.items()}
        given = event.get(target)
        if given is not None:
            folded[target] = given
            if errors:  # the target's own error is superseded: its value moves into the fold
                errors = [e for e in errors if e["source"] != pointer(target)] or None
        text = json_text(folded)
        try:
            if text is None:
                raise _FieldError(_err("InvalidString", target, "the unknown fields cannot be written as JSON text"))
            out[target] = self._string(target, self._spec[target][1], text)
        except _FieldError as e:
            errors = errors if errors is not None else []
            errors.append(e.error)
        return errors


def _integer(key: Any, v: Any) -> int:
    if isinstance(v, bool):
        pass
    elif isinstance(v, int):
        if _INT_MIN <= v <= _INT_MAX:
            return v
    elif isinstance(v, float):
        if math.isfinite(v) and v.is_integer() and _INT_MIN <= v <= _INT_MAX:
            return int(v)
    elif isinstance(v, str):
        s = v.strip()
        if _INT_RE.fullmatch(s):
            n = int(s)
            if _INT_MIN <= n <= _INT_MAX:
                return n
    raise _FieldError(_err("InvalidInteger", key, f"'{key}' must be a 64-bit integer: {_show(v)}"))


def _boolean(key: Any, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str):
        s = v.strip().lower()
        if s == "true":
            return True
        if s == "false":
            return False
    raise _FieldError(_err("InvalidBool", key, f"'{key}' must be a boolean: {_show(v)}"))


def _show(v: Any) -> str:
    """A short, safe rendering of a bad value for an error detail."""
    if isinstance(v, str):
        r = repr(v[:40] + ("..." if len(v) > 40 else ""))
    elif isinstance(v, bool | int | float) or v is None:
        r = repr(v)[:40]
    else:
        r = _type_name(v)
    return r.encode("utf-8", "backslashreplace").decode("utf-8")
