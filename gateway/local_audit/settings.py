"""Configuration of the embedded local audit log (pydantic v2, unknown keys are errors).

A configuration file given with ``--configs FILE`` (YAML or JSON) holds either a list of
configurations or ``{configs: [...]}``::

    configs:
      - id: pci_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
        tokens: ["pts_secret_for_this_config"]
      - id: pci_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
        tokens: []                      # empty: the server's default token may use it
        schema:
          fields:
            - {id: message, type: text, required: true}
            - {id: amount, type: integer}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import Field, SecretStr, model_validator

from gateway.configbase import StrictModel

__all__ = [
    "CONFIG_ID_PATTERN",
    "DEFAULT_CONFIG_ID",
    "DEFAULT_DB_PATH",
    "DURATION_PATTERN",
    "STANDARD_SCHEMA_FIELDS",
    "AuditConfigSettings",
    "AuditSchemaSettings",
    "ConfigsFile",
    "FaultSettings",
    "FieldType",
    "LocalAuditSettings",
    "SchemaFieldSettings",
    "load_configs_file",
]

# The upstream's `pangea-service-config-id` format; ids that fit it work unchanged upstream.
CONFIG_ID_PATTERN = r"^pci_[a-z2-7]{32}$"
# The spec's `Duration`.
DURATION_PATTERN = (
    r"^(\d+)(d|da|day|days|h|hour|hr|hrs|hours|mi|min|mins|minute|minutes|mo|mon|month|months"
    r"|s|sec|secs|second|seconds|w|week|weeks|y|year|years)$"
)
DEFAULT_CONFIG_ID = "pci_auditgatewaylocaldefaultconfigid"
DEFAULT_DB_PATH = Path("audit-gateway-data/local-audit.db")

FieldType = Literal["boolean", "datetime", "integer", "string", "string-unindexed", "text"]


class SchemaFieldSettings(StrictModel):
    """One field of an audit schema, as /v1/schema describes it (spec: AuditSchemaField)."""

    id: str = Field(
        pattern=r"^[a-z][0-9a-z_]*$",
        max_length=32,
        description="Field name in the event; lower-case letters, digits and `_`, starting with a letter.",
    )
    type: FieldType = Field(description="Data type the server enforces on the field's value.")
    required: bool = Field(default=False, description="Events without this field are rejected.")
    size: int | None = Field(
        default=None, ge=1, description="Maximum length in characters (string types only); null: unlimited."
    )
    redact: bool = Field(default=False, description="Reported by /v1/schema only; the local log does not redact.")
    name: str | None = Field(default=None, max_length=64, description="Human display name of the field.")
    description: str | None = Field(default=None, max_length=255, description="Human description of the field.")
    partitioned: bool | None = Field(
        default=None, description="Reported by /v1/schema only: the field partitions cold storage upstream."
    )
    ui_default_visible: bool | None = Field(
        default=None, description="Reported by /v1/schema only: shown by default in audit UIs."
    )

    @model_validator(mode="after")
    def _checks(self) -> Self:
        if self.id == "received_at":
            raise ValueError("`received_at` is stamped by the server and cannot be a schema field")
        if self.size is not None and self.type in ("boolean", "integer"):
            raise ValueError(f"field {self.id!r}: `size` applies to string types only")
        if self.redact and self.type in ("boolean", "datetime", "integer"):
            raise ValueError(f"field {self.id!r}: `redact` applies to string types only")
        return self


# The upstream's standard schema: the limits of the spec's AuditEvent.
STANDARD_SCHEMA_FIELDS: tuple[SchemaFieldSettings, ...] = (
    SchemaFieldSettings(id="timestamp", type="datetime", name="Timestamp", size=128),
    SchemaFieldSettings(id="actor", type="string", size=128, name="Actor"),
    SchemaFieldSettings(id="action", type="string", size=32, name="Action"),
    SchemaFieldSettings(id="status", type="string", size=32, name="Status"),
    SchemaFieldSettings(id="target", type="string", size=128, name="Target"),
    SchemaFieldSettings(id="source", type="string", size=128, name="Source"),
    SchemaFieldSettings(id="message", type="text", size=32766, required=True, name="Message"),
    SchemaFieldSettings(id="old", type="text", size=32766, name="Old"),
    SchemaFieldSettings(id="new", type="text", size=32766, name="New"),
    SchemaFieldSettings(id="tenant_id", type="string", size=128, name="Tenant ID"),
)


class AuditSchemaSettings(StrictModel):
    """A custom schema: the only fields events of this configuration may carry."""

    fields: list[SchemaFieldSettings] = Field(min_length=1, description="The schema's fields, in display order.")
    client_signable: bool = Field(default=True, description="Reported by /v1/schema: events may carry signatures.")
    save_malformed: Literal["all", "reject", "unredacted"] = Field(
        default="reject", description="Reported by /v1/schema; the local log always rejects malformed events."
    )
    tamper_proofing: bool = Field(default=True, description="Reported by /v1/schema: records are hashed into a tree.")
    vendor_id: str | None = Field(default=None, description="Reported by /v1/schema: the vendor of a stream schema.")
    json_path: str | None = Field(
        default=None, description="Reported by /v1/schema: where events sit in a stream body."
    )

    @model_validator(mode="after")
    def _unique(self) -> Self:
        seen: set[str] = set()
        for f in self.fields:
            if f.id in seen:
                raise ValueError(f"field id {f.id!r} appears twice")
            seen.add(f.id)
        return self


class AuditConfigSettings(StrictModel):
    """One audit configuration: its id, the tokens that may use it and its event schema."""

    id: str = Field(pattern=CONFIG_ID_PATTERN, description="Configuration id, `pci_` + 32 of [a-z2-7].")
    name: str | None = Field(default=None, description="Human name, shown in logs only.")
    tokens: list[SecretStr] = Field(
        default_factory=list,
        description="Bearer tokens accepted for this configuration; empty: the server's default token.",
    )
    schema_: AuditSchemaSettings | None = Field(
        default=None, alias="schema", description="Custom event schema; null: the standard schema."
    )
    retention: str | None = Field(
        default=None,
        pattern=DURATION_PATTERN,
        description="How far back searches and exports reach (spec Duration, e.g. `90d`); null: forever.",
    )

    @property
    def schema_fields(self) -> tuple[SchemaFieldSettings, ...]:
        """The effective fields: the custom schema's or the standard ones."""
        return tuple(self.schema_.fields) if self.schema_ is not None else STANDARD_SCHEMA_FIELDS


class FaultSettings(StrictModel):
    """Fault injection knobs; all off by default.  Changed at runtime through ``POST /_faults``."""

    latency_ms: float = Field(default=0.0, ge=0, le=600_000, description="Delay added before every API answer.")
    error_5xx_ratio: float = Field(
        default=0.0, ge=0, le=1, description="Share of API calls answered 503, 500 or 502 (nothing stored)."
    )
    error_429_ratio: float = Field(
        default=0.0, ge=0, le=1, description="Share of API calls answered 429 with Retry-After (nothing stored)."
    )
    retry_after_secs: int = Field(default=1, ge=0, description="Value of the Retry-After header on 429 and 503.")
    accept_every_nth: int = Field(
        default=0,
        ge=0,
        description="Answer every Nth /v1/log and /v2/log call 202 (events stored, result polled); 0: never.",
    )
    pending_polls: int = Field(
        default=1, ge=0, description="Polls of /request/{id} answered 202 before the stored result is given."
    )
    outage: bool = Field(default=False, description="Answer every API call 503 ServiceNotAvailable.")
    seed: int | None = Field(default=None, description="Seed of the fault dice, for reproducible runs.")


class LocalAuditSettings(StrictModel):
    """Everything the local audit log server needs."""

    listen_host: str = Field(default="127.0.0.1", description="Address to bind.")
    listen_port: int = Field(default=8090, ge=0, le=65535, description="Port to bind; 0 picks a free one.")
    db_path: Path = Field(default=DEFAULT_DB_PATH, description="SQLite database file (created with its folder).")
    configs: list[AuditConfigSettings] = Field(
        default_factory=lambda: [AuditConfigSettings(id=DEFAULT_CONFIG_ID)],
        min_length=1,
        description="Audit configurations served; default: one with the standard schema and the default token.",
    )
    default_token: SecretStr | None = Field(
        default=None,
        description=(
            "Token of configurations listing none. Null: env AUDIT_GATEWAY_LOCAL_TOKEN, else a generated "
            "token kept in `<db_path>.token` (mode 0600) and reused on restart."
        ),
    )
    faults: FaultSettings = Field(default_factory=FaultSettings, description="Fault injection at startup.")
    synchronous: Literal["OFF", "NORMAL", "FULL"] = Field(
        default="NORMAL",
        description="SQLite `synchronous` in WAL mode: NORMAL survives a process crash, FULL also power loss.",
    )
    max_body_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 beyond)."
    )
    search_ttl_secs: float = Field(
        default=86_400.0, gt=0, description="How long a search result id stays pageable through /v1/results."
    )
    async_result_ttl_mins: int = Field(
        default=1440, ge=1, description="How long 202-accepted results stay pollable at /request/{id}."
    )
    publish_interval_secs: float = Field(
        default=300.0,
        ge=0,
        description=(
            "How often each configuration's grown Merkle root is published to the publication store the "
            "local log serves at /arweave (Arweave-shaped); 0: never."
        ),
    )
    enable_test_faults: bool = Field(
        default=False,
        description="Serve the fault-injection admin endpoints (`/_faults`) and honour `faults`; tests only.",
    )

    @model_validator(mode="after")
    def _faults_need_the_flag(self) -> Self:
        if not self.enable_test_faults and self.faults != FaultSettings():
            raise ValueError("fault injection needs enable_test_faults (the --enable-test-faults flag)")
        return self

    @model_validator(mode="after")
    def _unique_ids(self) -> Self:
        ids = [c.id for c in self.configs]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"configuration ids appear twice: {', '.join(dupes)}")
        return self


class ConfigsFile(StrictModel):
    """The ``--configs`` file: the configurations to serve."""

    configs: list[AuditConfigSettings] = Field(min_length=1, description="Audit configurations served.")


def load_configs_file(path: Path) -> list[AuditConfigSettings]:
    """Read a YAML/JSON configurations file (a list, or a mapping with `configs`); raises on errors."""
    data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    if isinstance(data, list):
        data = {"configs": data}
    return ConfigsFile.model_validate(data).configs
