"""Cheap limits on decoded input: nesting depth, and fitting text into a field's size."""

from __future__ import annotations

from typing import Any

__all__ = ["check_depth", "clip", "fit_name", "json_depth_at_most"]


_CONTAINERS = (dict, list, tuple)
"""What :func:`check_depth` counts.  A tuple, not ``dict | list | tuple``: that expression builds a
union object each time it runs, which in the loop below was half of the check's cost (issue 18)."""


def check_depth(obj: Any, max_depth: int) -> bool:
    """True if ``obj`` nests no deeper than ``max_depth`` containers.

    A scalar has depth 0, ``{}``/``[]`` depth 1, ``{"a": [1]}`` depth 2.  Iterative (no recursion,
    so any depth orjson lets through is safe to check) and stops at the first container past the
    limit.  Dicts, lists and tuples count as containers.
    """
    if not isinstance(obj, _CONTAINERS):
        return True
    if max_depth < 1:
        return False
    stack: list[tuple[Any, int]] = [(obj, 1)]
    pop = stack.pop
    push = stack.append
    while stack:
        node, depth = pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, _CONTAINERS):
                if depth >= max_depth:
                    return False
                if child:
                    push((child, depth + 1))
    return True


_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'{}[]"\\')
"""Every byte but brackets, quotes and backslashes (deleted by :func:`json_depth_at_most`)."""
_AS_PARENS = bytes.maketrans(b"{}[]", b"()()")
_QUOTE_PAIR = b'""'
_QUOTE = b'"'


def json_depth_at_most(raw: bytes, max_depth: int) -> bool | None:
    """Whether the valid JSON text ``raw`` (or JSON lines) nests no deeper than ``max_depth``
    containers, as :func:`check_depth` counts them on its decoded value; ``None`` when that
    cannot be told cheaply (a string holds a bracket or an escape).

    :func:`check_depth` walks every member of a decoded body in Python (11% of an Auth0
    request's CPU, issue 18).  Here the bytes are reduced by C calls to their structure: all
    but brackets, quotes and backslashes deleted (a backslash left: ``None``, as a quote may be
    escaped).  Strings then holding nothing are ``""`` pairs, so every run of quotes is of even
    length; a string holding a bracket makes the run of its opening quote odd (the strings
    before it in the run being pairs).  All runs are even exactly when the non-overlapping
    ``""`` are half the quotes (each run of ``n`` quotes holds ``n // 2``): else ``None``.  What
    is left without the quotes is the brackets of the containers, whose innermost pairs each
    pass of ``replace`` removes: the passes needed are the depth.
    """
    t = raw.translate(None, _NOT_STRUCTURE)
    if b"\\" in t:
        return None  # an escape: the quote after it may be one a string holds
    # Two counts instead of deleting the pairs with replace (a copy per pair): 16 -> 5 us on a
    # 100-record Auth0 body (issue 18).
    if 2 * t.count(_QUOTE_PAIR) != t.count(_QUOTE):
        return None
    t = t.translate(_AS_PARENS, _QUOTE)
    depth = 0
    while t:
        if depth >= max_depth:
            return False
        t = t.replace(b"()", b"")
        depth += 1
    return True


def clip(text: str, size: int, marker: str = "...") -> str:
    """``text`` cut to at most ``size`` characters, ending with ``marker`` when it was cut.

    Characters are code points, as the upstream counts ``size``; a cut never splits one.
    """
    if len(text) <= size:
        return text
    if len(marker) >= size:
        return text[:size]
    return text[: size - len(marker)] + marker


def fit_name(name: str, size: int) -> str:
    """A dotted name (``event.action``) cut to ``size`` characters, keeping its last segment.

    The cut is marked with ``~`` so that it cannot pass for another name:
    ``repository_vulnerability_alert.dismiss`` (38) fits 32 as
    ``repository_vulnerabilit~.dismiss`` -- the verb stays whole and the head is shortened.  When
    the last segment alone leaves no room for a head, the name is cut at the end (``...~``).
    """
    if len(name) <= size:
        return name
    if size < 2:
        return name[:size]
    head, dot, last = name.rpartition(".")
    room = size - len(last) - 2  # characters of the head that fit before "~."
    if not dot or room < 1:
        return name[: size - 1] + "~"
    return head[:room] + "~." + last
