"""Declarative field maps: build an event's fields from paths into any decoded record.

A spec maps each event field to where its value is found::

    {
        "actor": ["data.user_name", "data.user_id"],   # fallbacks: the first non-empty wins
        "action": "data.type",                         # one dotted path
        "target": "target.0.alternateId",              # a number indexes a list
        "status": {"const": "success"},                # a constant
        "source": {"path": "client.ip", "default": "unknown"},   # path (or list) + default
        "message": "$",                                # "$" is the whole record
    }

Empty means ``null``, missing, ``""``, ``[]`` or ``{}``.  A key holding a dot is written with
``\\.`` (``"labels.app\\.kubernetes\\.io/name"``).  Values are returned as found (numbers,
objects...); :meth:`gateway.normalize.schema.Schema.normalize` then coerces them (an object
becomes compact JSON text, a number its decimal text...).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["MapSpec", "Mapping", "compile_path", "compile_paths", "first", "get", "is_empty"]

MapSpec = dict[str, str | list[str] | dict[str, Any]]
"""The configuration type of a mapping spec (as the webhook/Kafka config should declare ``map``)."""

Path = tuple[str, ...]
_SPLIT = re.compile(r"(?<!\\)\.")
_WHOLE: Path = ()


@functools.lru_cache(maxsize=1024)
def compile_path(path: str) -> Path:
    """Split a dotted path into its segments (``\\.`` is a literal dot; ``$`` is the record)."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"a path must be a non-empty string, not {path!r}")
    if path == "$":
        return _WHOLE
    parts = tuple(p.replace("\\.", ".") for p in _SPLIT.split(path))
    if any(p == "" for p in parts):
        raise ValueError(f"path {path!r} has an empty segment")
    return parts


def get(record: Any, path: Path) -> Any:
    """The value at a compiled path, or ``None`` when any step is missing."""
    cur = record
    for seg in path:
        if isinstance(cur, dict):
            cur = cur.get(seg)
        elif isinstance(cur, list):
            try:
                cur = cur[int(seg)]
            except (ValueError, IndexError):
                return None
        else:
            return None
        if cur is None:
            return None
    return cur


_SIZED = (str, list, dict)  # a tuple: `str | list | dict` would build a union object on every call


def is_empty(value: Any) -> bool:
    """``None``, ``""``, ``[]`` and ``{}`` are empty; ``0`` and ``False`` are values."""
    return value is None or (isinstance(value, _SIZED) and not value)


def compile_paths(*paths: str) -> tuple[Path, ...]:
    """Compile fallback paths once, for :func:`first` on a hot path."""
    return tuple(compile_path(p) for p in paths)


def first(record: Any, paths: Iterable[Path]) -> Any:
    """The first non-empty value among compiled paths (see :func:`compile_paths`), or ``None``."""
    for p in paths:
        v = get(record, p)
        if not is_empty(v):
            return v
    return None


_NO_DEFAULT = object()


class Mapping:
    """A compiled mapping spec; :meth:`apply` builds event fields from one record."""

    __slots__ = ("_rules",)

    def __init__(self, spec: dict[str, Any]) -> None:
        """Compile ``spec`` (see the module docstring); raises ValueError naming a bad entry."""
        if not isinstance(spec, dict):
            raise ValueError("a mapping spec must be an object of field: path")
        rules: list[tuple[str, tuple[Path, ...], Any]] = []
        for field, rule in spec.items():
            if not isinstance(field, str) or not field:
                raise ValueError(f"map: field names must be non-empty strings, not {field!r}")
            try:
                rules.append((field, *self._compile(rule)))
            except ValueError as exc:
                raise ValueError(f"map.{field}: {exc}") from None
        self._rules = tuple(rules)

    @staticmethod
    def _compile(rule: Any) -> tuple[tuple[Path, ...], Any]:
        if isinstance(rule, str):
            return (compile_path(rule),), _NO_DEFAULT
        if isinstance(rule, list):
            if not rule or not all(isinstance(p, str) for p in rule):
                raise ValueError("a list of fallbacks must hold one or more path strings")
            return tuple(compile_path(p) for p in rule), _NO_DEFAULT
        if isinstance(rule, dict):
            keys = set(rule)
            if keys == {"const"}:
                return (), rule["const"]
            if "path" in keys and keys <= {"path", "default"}:
                paths, _ = Mapping._compile(rule["path"])
                return paths, rule.get("default", _NO_DEFAULT)
            raise ValueError('expected {"const": value} or {"path": path-or-list, "default"?: value}')
        raise ValueError(f"expected a path, a list of paths or an object, not {type(rule).__name__}")

    @property
    def fields(self) -> frozenset[str]:
        """The event fields this mapping produces (to check against a schema at start-up)."""
        return frozenset(r[0] for r in self._rules)

    def apply(self, record: Any) -> dict[str, Any]:
        """The mapped fields of ``record``; a field whose paths are all empty and has no default is absent."""
        out: dict[str, Any] = {}
        for field, paths, default in self._rules:
            for path in paths:
                v = get(record, path)
                if not is_empty(v):
                    out[field] = v
                    break
            else:
                if default is not _NO_DEFAULT and default is not None:
                    out[field] = default
        return out
