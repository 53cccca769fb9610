"""Generic JSON: a body is one object, an array of records, or JSON lines (NDJSON).

``to_event`` returns the record itself (a copy): pair this format with a declarative
:class:`~gateway.normalize.mapping.Mapping` to turn arbitrary records into event fields, or send
records that already have the event's shape.  The other JSON-based formats split bodies with
:func:`documents`.
"""

from __future__ import annotations

from itertools import repeat
from operator import contains
from typing import Any

import orjson

from gateway.normalize.vendors import DecodeError, record_invalid

__all__ = ["NAME", "decode", "documents", "to_event"]

NAME = "json"

_BOM = b"\xef\xbb\xbf"


def _parse(data: bytes) -> Any:
    return orjson.loads(data)


def documents(body: bytes) -> list[Any]:
    """The records of a JSON body: an object is one, an array's items are many, and so are JSON lines.

    Each line of a JSON-lines body is an object (one record) or an array (its items).  Raises
    :class:`DecodeError` for an empty body, invalid JSON or UTF-8, or a top-level scalar.
    """
    if not isinstance(body, bytes | bytearray | memoryview):
        raise DecodeError("the body must be bytes")
    data = bytes(body).strip()
    if data.startswith(_BOM):
        data = data[len(_BOM) :].lstrip()
    if not data:
        raise DecodeError("empty body")
    try:
        doc = _parse(data)
    except orjson.JSONDecodeError as exc:
        if b"\n" not in data:
            raise DecodeError(f"invalid JSON: {exc}") from None
        return _lines(data, exc)
    return _records(doc, "the body")


def enveloped(body: bytes, key: str, *, unless: str, what: str) -> list[Any]:
    """:func:`documents`, where an object with a ``key`` member (and no ``unless`` member) is an
    envelope: its ``key`` array's items are the records.  ``what`` names those items in the error
    when ``key`` is not an array."""
    docs = documents(body)
    # The usual body is an array of the records themselves: that none is an envelope is told by
    # one C-level map of `in` instead of a Python loop per record (issue 18).  `in` also answers
    # on a list or a string, maybe true where no envelope is, and raises TypeError on a number
    # or null: the loop below decides those.
    try:
        if not any(map(contains, docs, repeat(key))):
            return docs
    except TypeError:
        pass
    out: list[Any] = []
    for doc in docs:
        if isinstance(doc, dict) and key in doc and unless not in doc:
            items = doc[key]
            if not isinstance(items, list):
                raise DecodeError(f'"{key}" must be an array of {what}')
            out.extend(items)
        else:
            out.append(doc)
    return out


def _records(doc: Any, where: str) -> list[Any]:
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        return [doc]
    raise DecodeError(f"{where} must be a JSON object or array, not a {type(doc).__name__}")


def _lines(data: bytes, first_error: orjson.JSONDecodeError) -> list[Any]:
    out: list[Any] = []
    for n, line in enumerate(data.split(b"\n"), 1):
        line = line.strip()
        if not line:
            continue
        try:
            doc = _parse(line)
        except orjson.JSONDecodeError as exc:
            if n == 1:  # not JSON lines at all: report the error of the whole body
                raise DecodeError(f"invalid JSON: {first_error}") from None
            raise DecodeError(f"invalid JSON on line {n}: {exc}") from None
        out.extend(_records(doc, f"line {n}"))
    return out


def decode(body: bytes, content_type: str | None = None) -> list[Any]:
    """Split a JSON body (object, array or JSON lines) into records; see :func:`documents`."""
    return documents(body)


def to_event(record: Any) -> tuple[dict[str, Any], str | None]:
    """The record itself as the event's fields (a shallow copy); no dedup id."""
    if not isinstance(record, dict):
        raise record_invalid(f"a record must be a JSON object, not {type(record).__name__}")
    return dict(record), None
