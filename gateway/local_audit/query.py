"""Search query and time-range parsing for /v1/search, as the spec describes them.

Query syntax (spec, ``/v1/search`` ``query``): a space-separated list of case-sensitive values;
``field:value`` limits a value to one field, values with spaces are double-quoted
(``actor:"Jane Doe"``), a bare value matches any field.  Every term must match (AND); each
value matches when the field *contains* it, so ``field:""`` matches every event that has the
field at all.  The empty query matches everything.

Times (spec ``DateTimeRel``): an RFC 3339-like timestamp (zone optional, UTC assumed) or a
relative duration such as ``7d``, ``120min``, ``2months`` counted back from now.
"""

from __future__ import annotations

import re
from calendar import monthrange
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from gateway.errors import GatewayError

__all__ = ["QueryError", "Term", "is_rfc3339", "parse_duration", "parse_query", "parse_time"]


class QueryError(GatewayError, ValueError):
    """A query or time the server cannot parse; the message is shown to the caller."""


@dataclass(frozen=True, slots=True)
class Term:
    """One search term: ``field`` None means "any field contains ``value``"."""

    field: str | None
    value: str


def _read_quoted(q: str, i: int) -> tuple[str, int]:
    """Read a double-quoted string starting at ``q[i] == '"'``; ``\\"`` and ``\\\\`` escape."""
    out: list[str] = []
    j = i + 1
    n = len(q)
    while j < n:
        c = q[j]
        if c == "\\" and j + 1 < n and q[j + 1] in '"\\':
            out.append(q[j + 1])
            j += 2
            continue
        if c == '"':
            return "".join(out), j + 1
        out.append(c)
        j += 1
    raise QueryError(f"unterminated quoted value starting at position {i}")


def _read_word(q: str, i: int) -> int:
    """Index just past the whitespace-free run starting at ``i``."""
    n = len(q)
    while i < n and not q[i].isspace():
        i += 1
    return i


def parse_query(query: str, fields: Collection[str]) -> list[Term]:
    """Split ``query`` into terms; ``field:`` prefixes must name one of ``fields``."""
    terms: list[Term] = []
    i = 0
    n = len(query)
    while i < n:
        c = query[i]
        if c.isspace():
            i += 1
            continue
        if c == '"':
            value, i = _read_quoted(query, i)
            if value:
                terms.append(Term(None, value))
            continue
        j = i
        while j < n and not query[j].isspace() and query[j] not in ':"':
            j += 1
        if j < n and query[j] == ":" and j > i:
            field = query[i:j]
            j += 1
            if j < n and query[j] == '"':
                value, j = _read_quoted(query, j)
            else:
                end = _read_word(query, j)
                value, j = query[j:end], end
            quoted = query[i + len(field) + 1 : i + len(field) + 2] == '"'
            if field not in fields:
                raise QueryError(
                    f"unknown field {field!r} in query; searchable fields: {', '.join(sorted(fields))} "
                    "(quote the whole value to search for it as text)"
                )
            if not value and not quoted:
                raise QueryError(
                    f'empty value for field {field!r} in query (quote it, {field}:"", to ask for any value)'
                )
            terms.append(Term(field, value))
            i = j
            continue
        end = _read_word(query, i)
        terms.append(Term(None, query[i:end]))
        i = end
    return terms


_UNIT_SECONDS: dict[str, int] = {}
for _names, _secs in (
    (("s", "sec", "secs", "second", "seconds"), 1),
    (("mi", "min", "mins", "minute", "minutes"), 60),
    (("h", "hour", "hr", "hrs", "hours"), 3600),
    (("d", "da", "day", "days"), 86_400),
    (("w", "week", "weeks"), 7 * 86_400),
    (("mo", "mon", "month", "months"), 30 * 86_400),
    (("y", "year", "years"), 365 * 86_400),
):
    for _name in _names:
        _UNIT_SECONDS[_name] = _secs

# Spec `Duration` and the absolute branch of `DateTimeRel`, verbatim but for the escaped dot.
_DURATION = re.compile(
    r"^(\d+)(d|da|day|days|h|hour|hr|hrs|hours|mi|min|mins|minute|minutes|mo|mon|month|months"
    r"|s|sec|secs|second|seconds|w|week|weeks|y|year|years)$"
)
_ABSOLUTE = re.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})T(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,6}))?"
    r"(?:([+-])(\d{1,2})(?::?(\d{1,2}))?|(Z))?$"
)


def parse_duration(value: str) -> timedelta | None:
    """A spec ``Duration`` (``7d``, ``120min``, ``2months``) as a timedelta; None if it is not one."""
    m = _DURATION.match(value)
    if m is None:
        return None
    seconds = int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        return timedelta.max


def parse_time(value: str, now: datetime) -> datetime:
    """A ``DateTimeRel`` as an aware UTC datetime; relative values count back from ``now``."""
    span = parse_duration(value)
    if span is not None:
        try:
            return now - span
        except OverflowError:
            return datetime.min.replace(tzinfo=UTC)
    m = _ABSOLUTE.match(value)
    if not m:
        raise QueryError(f"{value!r} is neither an RFC 3339 timestamp nor a duration like 7d or 120min")
    year, month, day, hour, minute, second = (int(m.group(k)) for k in range(1, 7))
    micro = int((m.group(7) or "0").ljust(6, "0"))
    tz = UTC
    if m.group(8):
        off = timedelta(hours=int(m.group(9)), minutes=int(m.group(10) or 0))
        if off >= timedelta(hours=24):
            raise QueryError(f"{value!r} has an out-of-range zone offset")
        tz = timezone(off if m.group(8) == "+" else -off)
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=tz).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise QueryError(f"{value!r} is not a valid date and time") from exc


# RFC 3339 section 5.6 `date-time` (JSON Schema's `format: date-time`); a missing zone offset is
# taken as UTC, as the service does.
# Field ranges are in the pattern so the common case costs one match; only days 29-31 need a
# calendar check.  Runs once per event carrying a datetime field, hence the care.
_RFC3339 = re.compile(
    r"^(\d{4})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt]([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(?:\.\d+)?"
    r"(?:[Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)?$"
)


def is_rfc3339(value: str) -> bool:
    """Whether ``value`` is an RFC 3339 ``date-time``, zone optional (UTC); leap second 60 accepted."""
    m = _RFC3339.match(value)
    if m is None:
        return False
    day = m.group(3)
    if day > "28":
        return int(day) <= monthrange(int(m.group(1)), int(m.group(2)))[1]
    return True
