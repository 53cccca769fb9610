"""The configuration reference, generated from the pydantic models' field descriptions.

The README's "Configuration reference" section is this output; a test keeps them equal.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from gateway.config import GatewayConfig


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    out: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    for arg in typing.get_args(annotation):
        out.extend(_models_in(arg))
    return out


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation) if a is not type(None))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(annotation))}]"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


def _default(field: FieldInfo) -> str:
    if field.default is not PydanticUndefined:
        return "" if field.default is None else f"`{field.default}`"
    if field.default_factory is not None:
        return "(section)"
    return "**required**"


def _rows(model: type[BaseModel], prefix: str, seen: set[tuple[type[BaseModel], str]]) -> list[str]:
    rows: list[str] = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        path = f"{prefix}{key}"
        rows.append(f"| `{path}` | {_type_name(field.annotation)} | {_default(field)} | {field.description or ''} |")
        origin = typing.get_origin(field.annotation)
        sub_prefix = f"{path}.<name>." if origin is dict else f"{path}."
        for sub in _models_in(field.annotation):
            if (sub, sub_prefix) in seen:
                continue
            seen.add((sub, sub_prefix))
            if sub.__name__ in ("WebhookSourceConfig", "KafkaSourceConfig"):
                rows.append(f"| *{sub.__name__.removesuffix('SourceConfig').lower()} sources:* | | | |")
            rows.extend(_rows(sub, sub_prefix, seen))
    return rows


def reference() -> str:
    """Markdown table of every configuration key."""
    head = "| key | type | default | description |\n|---|---|---|---|\n"
    return head + "\n".join(_rows(GatewayConfig, "", set())) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
