"""Shared base for every configuration model: unknown keys are errors, fields are documented.

Units in names are a contract: a field named ``*_bytes`` holds a number of bytes and one named
``*_secs`` a number of seconds.  Either also accepts a string with a unit (``max_bytes: 1GiB``,
``timeout_secs: 30s``), converted here once for every model, before the field's own validation
(so its bounds still apply to the converted number).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|min|s|m|h|d)")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|min|s|m|h|d))+")


def parse_size(text: str) -> int | None:
    """``1GiB``, ``512KiB``, ``4MB``, ``1000`` → bytes (``KiB`` = 1024, ``KB`` = 1000); None if not a size."""
    m = _SIZE.fullmatch(text)
    if m is None:
        return None
    unit = _SIZE_UNITS.get(m.group(2).lower())
    if unit is None:
        return None
    return int(float(m.group(1)) * unit)


def parse_duration_secs(text: str) -> float | None:
    """``30s``, ``500ms``, ``5m``, ``1h30m``, ``2d``, ``10`` → seconds; None if not a duration."""
    text = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    if not _DURATION.fullmatch(text):
        return None
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))


class StrictModel(BaseModel):
    """Base of all config models: ``extra="forbid"`` so a typo is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=False)

    @model_validator(mode="before")
    @classmethod
    def _units(cls, data: Any) -> Any:
        """``*_bytes`` and ``*_secs`` fields given as strings with a unit become numbers; a string
        that is neither is left for the field's validation to refuse."""
        if not isinstance(data, dict):
            return data
        out: dict[str, Any] | None = None
        for key, value in data.items():
            if not isinstance(value, str) or not isinstance(key, str) or key not in cls.model_fields:
                continue
            number: float | None = None
            if key.endswith("_bytes"):
                number = parse_size(value)
            elif key.endswith("_secs"):
                number = parse_duration_secs(value)
            if number is not None:
                out = dict(data) if out is None else out
                out[key] = number
        return data if out is None else out
