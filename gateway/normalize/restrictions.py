"""Field restrictions: allowed values per field, as a token's field restrictions upstream.

An event violates a restriction when the restricted field is absent (or ``null``) or holds a
value not in the allowed list.  Check the *normalized* event, so that values compare in their
sent form (``True`` is ``"true"`` in a string field, a datetime is its UTC text).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.normalize.schema import pointer

__all__ = ["check", "checker"]


def _as_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None


def check(event: dict[str, Any], restrictions: dict[str, list[str]]) -> list[dict[str, str]]:
    """Errors (code ``ForbiddenFieldValue``, source ``/<field>``) for every restriction the event breaks.

    Values compare as text: a non-string value is compared by its JSON spelling (``true``,
    ``3``); objects and arrays never match.  An empty list means no value is allowed.
    """
    errors: list[dict[str, str]] = []
    for field, allowed in restrictions.items():
        value = event.get(field)
        if value is None:
            errors.append(
                {
                    "code": "ForbiddenFieldValue",
                    "detail": f"'{field}' is restricted to {len(allowed)} allowed value(s) and is missing",
                    "source": pointer(field),
                }
            )
            continue
        text = _as_text(value)
        if text is None or text not in allowed:
            errors.append(
                {
                    "code": "ForbiddenFieldValue",
                    "detail": f"'{field}' holds a value that is not allowed",
                    "source": pointer(field),
                }
            )
    return errors


def checker(restrictions: dict[str, list[str]] | None) -> Callable[[dict[str, Any]], list[dict[str, str]]] | None:
    """:func:`check` bound to a source's ``restrictions``; None when it has none."""
    if not restrictions:
        return None
    allowed = restrictions

    def check_event(event: dict[str, Any]) -> list[dict[str, str]]:
        return check(event, allowed)

    return check_event
