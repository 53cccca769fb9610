"""Audit configurations managed over ``/v1beta/config*``: the spec's ``AuditServiceConfig``.

A request body is validated against the spec's ``AuditServiceConfigV1``/``V2``/``V3`` (``version``
picks one; unknown keys, wrong types and out-of-range values are validation errors with a JSON
pointer each), then kept as JSON in the database.  What the local log acts on:

* ``schema`` (V2/V3, only settable at create time): the events the configuration accepts;
* ``retention``: how far back searches, results and exports reach (records stay in the Merkle
  tree, so proofs keep working, but older records are no longer answered);
* every configuration has its own Merkle tree.

The rest (storage tiers, vault signing, forwarding, shards, partition overrides) is kept and
returned as given, as the service would, but has no effect on a single-node local log.
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic
from pydantic import Field

from gateway.configbase import StrictModel
from gateway.local_audit.query import parse_duration
from gateway.local_audit.settings import DURATION_PATTERN, AuditConfigSettings, AuditSchemaSettings

__all__ = [
    "CONFIG_LIST_ORDER_BY",
    "ConfigFilter",
    "ConfigListRequest",
    "PartitionOverridesRequest",
    "ServiceConfigBody",
    "body_from_settings",
    "pydantic_errors",
    "runtime_settings",
    "version_errors",
]

Errors = list[dict[str, str]]

_MIN_COLD_STORAGE_DAYS = 180
# Properties each version of the spec's AuditServiceConfig allows beyond the common ones.
_ONLY_V1: frozenset[str] = frozenset(("redaction_fields",))
_FROM_V2: frozenset[str] = frozenset(("schema", "ui_metadata", "forwarding_configuration"))
_ONLY_V3: frozenset[str] = frozenset(("cold_storage", "warm_storage", "partition_overrides", "datastore"))
CONFIG_LIST_ORDER_BY = ("id", "created_at", "updated_at")

RedactionField = Literal["message", "new", "old", "actor", "action", "status", "target", "tenant_id", "source"]


def _duration(description: str) -> Any:
    return Field(default=None, pattern=DURATION_PATTERN, description=description)


class ServiceConfigBody(StrictModel):
    """The union of the spec's AuditServiceConfigV1/V2/V3 properties; :func:`version_errors` narrows it."""

    id: str | None = Field(default=None, description="The config ID (server-assigned).")
    version: Literal[1, 2, 3] | None = Field(default=None, description="Which AuditServiceConfig version.")
    created_at: str | None = Field(default=None, description="Ignored when submitted.")
    updated_at: str | None = Field(default=None, description="Must equal the stored value on update.")
    name: str | None = Field(default=None, min_length=1, max_length=255, description="Configuration name.")
    retention: str | None = _duration("Retention window of the logs.")
    hot_storage: str | None = _duration("Retention window in hot storage.")
    warm_storage: str | None = _duration("Retention window in warm storage (V3).")
    cold_storage: str | None = _duration("Retention window in cold storage, at least 180d (V3).")
    query_result_retention: str | None = _duration("How long query results are kept.")
    cold_query_result_retention: str | None = _duration("How long cold query results are kept.")
    redact_service_config_id: str | None = Field(default=None, description="Redact config (kept, unused).")
    redaction_fields: list[RedactionField] | None = Field(default=None, description="Fields to redact (V1).")
    shards: int | None = Field(default=None, ge=1, le=100, description="OpenSearch shards (kept, unused).")
    vault_service_config_id: str | None = Field(default=None, description="Vault config (kept, unused).")
    vault_key_id: str | None = Field(default=None, description="Vault key (kept, unused).")
    vault_sign: bool | None = Field(default=None, description="Vault signing (kept, unused).")
    schema_: AuditSchemaSettings | None = Field(default=None, alias="schema", description="The event schema.")
    ui_metadata: dict[str, Any] | None = Field(default=None, description="UI metadata (kept, unused).")
    forwarding_configuration: dict[str, Any] | None = Field(default=None, description="Forwarding (kept, unused).")
    partition_overrides: dict[str, Any] | None = Field(default=None, description="Per-partition retention (V3).")
    datastore: Literal["default", "postgresql"] | None = Field(default=None, description="Datastore (V3).")

    def stored(self) -> dict[str, Any]:
        """What is kept: the given properties without the server-owned ones."""
        out = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        for key in ("id", "created_at", "updated_at"):
            out.pop(key, None)
        out.setdefault("version", 1)
        return out


class ConfigFilter(StrictModel):
    """The spec's AuditServiceConfigList ``filter``."""

    id: str | None = Field(default=None, description="Only this id.")
    id__contains: list[str] | None = Field(default=None, description="Ids containing each substring.")
    id__in: list[str] | None = Field(default=None, description="Ids equal to one of these.")
    created_at: str | None = Field(default=None, description="created_at equal to this.")
    created_at__gt: str | None = Field(default=None, description="created_at after this.")
    created_at__gte: str | None = Field(default=None, description="created_at at or after this.")
    created_at__lt: str | None = Field(default=None, description="created_at before this.")
    created_at__lte: str | None = Field(default=None, description="created_at at or before this.")
    updated_at: str | None = Field(default=None, description="updated_at equal to this.")
    updated_at__gt: str | None = Field(default=None, description="updated_at after this.")
    updated_at__gte: str | None = Field(default=None, description="updated_at at or after this.")
    updated_at__lt: str | None = Field(default=None, description="updated_at before this.")
    updated_at__lte: str | None = Field(default=None, description="updated_at at or before this.")


class ConfigListRequest(StrictModel):
    """The spec's AuditServiceConfigList request."""

    filter: ConfigFilter | None = Field(default=None, description="Which configurations.")
    last: str | None = Field(default=None, description="Cursor from a previous page.")
    order: Literal["asc", "desc"] | None = Field(default=None, description="Sort direction.")
    order_by: Literal["id", "created_at", "updated_at"] | None = Field(default=None, description="Sort key.")
    size: int | None = Field(default=None, ge=1, description="Page size.")


class _PartitionRetention(StrictModel):
    warm_storage: str | None = _duration("Warm storage retention of this partition.")
    cold_storage: str | None = _duration("Cold storage retention of this partition.")


class PartitionOverridesRequest(StrictModel):
    """Body of ``/v1beta/config/partition_overrides``."""

    id: str = Field(description="The config ID.")
    overrides: dict[str, _PartitionRetention] = Field(description="Partition value -> retention.")


_CODES = {
    "missing": "FieldRequired",
    "extra_forbidden": "UnexpectedProperty",
    "string_type": "InvalidString",
    "int_type": "InvalidInteger",
    "bool_type": "InvalidBool",
    "list_type": "InvalidArray",
    "dict_type": "InvalidObject",
    "model_type": "InvalidObject",
    "model_attributes_type": "InvalidObject",
    "string_pattern_mismatch": "DoesNotMatchPattern",
    "string_too_long": "AboveMaxLength",
    "string_too_short": "BelowMinLength",
    "too_short": "BelowMinItems",
    "too_long": "AboveMaxItems",
    "greater_than_equal": "NotWithinRange",
    "less_than_equal": "NotWithinRange",
    "literal_error": "NotEnumMember",
    "enum": "NotEnumMember",
}


def _pointer(loc: tuple[int | str, ...], base: str) -> str:
    parts = [str(p) for p in loc if not (isinstance(p, str) and p.startswith(("function-", "literal[")))]
    return base + "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def pydantic_errors(exc: pydantic.ValidationError, base: str = "") -> Errors:
    """Pangea validation errors (``code``, ``detail``, ``source`` pointer) for a pydantic failure."""
    return [
        {
            "code": _CODES.get(e["type"], "InvalidValue"),
            "detail": e["msg"],
            "source": _pointer(tuple(e["loc"]), base),
        }
        for e in exc.errors(include_url=False, include_input=False)
    ]


def version_errors(body: ServiceConfigBody, raw: dict[str, Any]) -> Errors:
    """What the chosen AuditServiceConfig version does not allow (anyOf of V1/V2/V3 in the spec)."""
    errors: Errors = []
    version = body.version or 1
    allowed_extra = {1: _ONLY_V1, 2: _FROM_V2, 3: _FROM_V2 | _ONLY_V3}[version]
    for key in sorted((_ONLY_V1 | _FROM_V2 | _ONLY_V3) - allowed_extra):
        if key in raw:
            errors.append(
                {
                    "code": "UnexpectedProperty",
                    "detail": f"{key!r} is not a property of AuditServiceConfigV{version}",
                    "source": f"/{key}",
                }
            )
    if version >= 2:
        if body.version is None:
            errors.append({"code": "FieldRequired", "detail": "'version' is required", "source": "/version"})
        if body.schema_ is None:
            errors.append({"code": "FieldRequired", "detail": "'schema' is required", "source": "/schema"})
    if body.schema_ is not None and "schema" in raw and version == 1:
        errors.append({"code": "FieldRequired", "detail": "a custom schema needs version 2 or 3", "source": "/version"})
    if body.cold_storage is not None:
        span = parse_duration(body.cold_storage)
        if span is not None and span.days < _MIN_COLD_STORAGE_DAYS:
            errors.append(
                {
                    "code": "NotWithinRange",
                    "detail": f"'cold_storage' must be at least {_MIN_COLD_STORAGE_DAYS}d",
                    "source": "/cold_storage",
                }
            )
    return errors


def body_from_settings(cfg: AuditConfigSettings) -> dict[str, Any]:
    """The stored form of a configuration that comes from the settings (file or default)."""
    out: dict[str, Any] = {"version": 1 if cfg.schema_ is None else 2, "name": cfg.name or cfg.id}
    if cfg.schema_ is not None:
        out["schema"] = cfg.schema_.model_dump(by_alias=True, exclude_none=True, mode="json")
    if cfg.retention is not None:
        out["retention"] = cfg.retention
    return out


def runtime_settings(config_id: str, stored: dict[str, Any]) -> AuditConfigSettings:
    """The serving settings (schema, retention) of a configuration created over the API."""
    return AuditConfigSettings.model_validate(
        {
            "id": config_id,
            "name": stored.get("name"),
            "schema": stored.get("schema"),
            "retention": stored.get("retention"),
        }
    )
