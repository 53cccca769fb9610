"""A destination's configuration: its schema, batching, signing and sink.

Below the sources and the root configuration, beside the pipeline that uses it (``gateway.config``
re-exports it under its old name).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator

from gateway.configbase import StrictModel
from gateway.normalize.config import InlineSchemaConfig, SchemaPolicy
from gateway.sinks.kafka.config import KafkaSinkConfig

__all__ = ["BatchConfig", "DestinationConfig", "SigningConfig"]


class BatchConfig(StrictModel):
    """How events are grouped into upstream requests."""

    max_events: int = Field(default=1000, ge=1, le=1000, description="Events per request (the API allows 1000).")
    max_bytes: int = Field(default=4_000_000, ge=1024, description="Request body size cap in bytes.")
    timeout_secs: float = Field(default=0.2, gt=0, description="Send a partial batch after this long.")


class SigningConfig(StrictModel):
    """Client-side ed25519 signing of each event, as pangea-sdk's ``private_key_file`` does."""

    private_key_file: Path = Field(description="Unencrypted ed25519 private key (PEM or OpenSSH).")
    public_key_info: dict[str, str] | None = Field(
        default=None, description="Extra members of the `public_key` JSON sent with each event."
    )


class DestinationConfig(StrictModel):
    """One audit configuration upstream: its id, schema and batching."""

    config_id: str | None = Field(default=None, description="Upstream configuration id (sent as `config_id`).")
    schema_: Literal["standard", "upstream"] | InlineSchemaConfig = Field(
        default="standard",
        alias="schema",
        description="`standard`, `upstream` (fetched from /v1/schema), or inline `{fields: [...]}`.",
    )
    schema_policy: SchemaPolicy = Field(default_factory=SchemaPolicy, description="Handling of misfit events.")
    batch: BatchConfig = Field(default_factory=BatchConfig, description="Batching.")
    signing: SigningConfig | None = Field(default=None, description="Sign events locally before sending.")
    sink: KafkaSinkConfig | None = Field(
        default=None,
        description="Where the events go: omitted, the audit log `upstream`; `{type: kafka, ...}` a Kafka topic.",
    )

    @model_validator(mode="after")
    def _schema_source(self) -> Self:
        if self.sink is not None and self.schema_ == "upstream":
            raise ValueError("schema `upstream` is fetched from the audit log upstream; a Kafka sink has none")
        return self
