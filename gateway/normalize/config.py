"""Configuration of a destination's schema: the standard one, the upstream's, or inline."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gateway.configbase import StrictModel

FieldType = Literal["boolean", "datetime", "integer", "string", "string-unindexed", "text"]


class SchemaFieldConfig(StrictModel):
    """One field of a custom schema, as the upstream's /v1/schema describes it."""

    id: str = Field(pattern=r"^[a-z][0-9a-z_]*$", max_length=32, description="Field name.")
    type: FieldType = Field(description="Field type.")
    required: bool = Field(default=False, description="Events without it are rejected.")
    size: int | None = Field(default=None, ge=1, description="Max length of string fields.")
    redact: bool = Field(default=False, description="The upstream redacts it (informational here).")


class InlineSchemaConfig(StrictModel):
    """A custom schema given in the configuration."""

    fields: list[SchemaFieldConfig] = Field(min_length=1, description="The schema's fields.")


class SchemaPolicy(StrictModel):
    """What to do with events that do not fit the schema as they are."""

    on_oversize: Literal["reject", "truncate"] = Field(
        default="reject", description="Strings over a field's size: reject the event or truncate the string."
    )
    on_unknown_field: Literal["reject", "fold", "drop"] = Field(
        default="reject", description="Fields the schema lacks: reject the event, fold them as JSON, or drop them."
    )
    fold_into: str | None = Field(default=None, description="With `fold`: the field that receives them as JSON.")
    refresh_interval_secs: float = Field(
        default=300.0, gt=0, description="With `schema: upstream`: how often /v1/schema is fetched again."
    )
