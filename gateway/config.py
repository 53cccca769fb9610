"""Root configuration: a YAML file validated by pydantic, composed of each component's config.

``${VAR}`` and ``${VAR:-default}`` are substituted in string values before validation
(``$${`` escapes); a missing variable without a default is an error naming the key path.
Validation errors name the offending key path, e.g. ``sources.auth0.pathh: Extra inputs...``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import Field, ValidationError, model_validator

from gateway.buffer.config import BufferConfig
from gateway.configbase import StrictModel
from gateway.dedup import DedupConfig
from gateway.errors import ConfigError
from gateway.normalize.config import InlineSchemaConfig, SchemaPolicy
from gateway.sinks.deadletter.config import DeadLetterConfig
from gateway.sinks.pangea.config import UpstreamConfig
from gateway.sources.kafka.config import KafkaSourceConfig
from gateway.sources.poll.config import PollSourceConfig
from gateway.sources.webhook.config import IntakeServerConfig, WebhookSourceConfig

DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_ADMIN_LISTEN = "127.0.0.1:9090"
DEFAULT_LOCAL_AUDIT_LISTEN = "127.0.0.1:8090"
DEFAULT_DATA_DIR = "./audit-gateway-data"


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


SourceConfig = Annotated[WebhookSourceConfig | KafkaSourceConfig | PollSourceConfig, Field(discriminator="type")]


class LocalAuditEmbedConfig(StrictModel):
    """The embedded local audit log, started when `upstream` is omitted."""

    listen: str | None = Field(default=None, description="HOST:PORT; default 127.0.0.1:8090 (or --local-audit-listen).")


class GatewayConfig(StrictModel):
    """The whole gateway."""

    listen: str | None = Field(default=None, description="Intake HOST:PORT; --listen wins; default 127.0.0.1:8080.")
    admin_listen: str | None = Field(
        default=None, description="Admin HOST:PORT (/metrics, /healthz, /readyz); --admin-listen wins."
    )
    data_dir: Path | None = Field(default=None, description="State directory; --data-dir wins.")
    shutdown_timeout_secs: float = Field(default=30.0, gt=0, description="SIGTERM: longest wait for the flush.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log level.")
    upstream: UpstreamConfig | None = Field(
        default=None, description="The audit log; omitted: the embedded local audit log."
    )
    local_audit: LocalAuditEmbedConfig = Field(
        default_factory=LocalAuditEmbedConfig, description="Embedded local audit log settings."
    )
    intake: IntakeServerConfig = Field(
        default_factory=IntakeServerConfig, description="HTTP intake listener settings (TLS, timeouts)."
    )
    buffer: BufferConfig = Field(default_factory=BufferConfig, description="Buffering between intake and upstream.")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Dropping resent events by their source id.")
    deadletter: DeadLetterConfig = Field(
        default_factory=DeadLetterConfig, description="Where events refused for good are recorded."
    )
    destinations: dict[str, DestinationConfig] = Field(
        min_length=1, description="Audit configurations upstream, by name."
    )
    sources: dict[str, SourceConfig] = Field(min_length=1, description="Where events come from, by name.")

    @model_validator(mode="after")
    def _references(self) -> Self:
        for name, src in self.sources.items():
            if src.destination not in self.destinations:
                raise ValueError(f"sources.{name}.destination: unknown destination {src.destination!r}")
        paths: dict[str, str] = {}
        for name, src in self.sources.items():
            if isinstance(src, WebhookSourceConfig):
                key = f"{src.format == 'pangea'}:{src.route_path}"
                if key in paths:
                    raise ValueError(f"sources.{name}.path: route already used by source {paths[key]!r}")
                paths[key] = name
        return self


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute(value: Any, path: str, env: dict[str, str]) -> Any:
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"environment variable {name} is not set", path or "<root>")

        return _VAR.sub(repl, value)
    if isinstance(value, dict):
        return {k: _substitute(v, f"{path}.{k}" if path else str(k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    return value


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("webhook", "kafka", "poll") and out.startswith("sources."):
            continue  # the discriminator tag pydantic inserts; not a key the user wrote
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_config(data: Any, env: dict[str, str] | None = None) -> GatewayConfig:
    """Validate a parsed YAML document; raises ConfigError naming the first bad key path."""
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a mapping")
    data = _substitute(data, "", dict(os.environ) if env is None else env)
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False, include_input=False):
            lines.append(f"{_loc(err['loc']) or '<root>'}: {err['msg']}")
        raise ConfigError("; ".join(lines)) from None


def load_config(path: Path, env: dict[str, str] | None = None) -> GatewayConfig:
    """Read and validate a YAML configuration file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(data, env)


def default_config() -> GatewayConfig:
    """`audit-gateway run` without --config: Auth0 log stream + Pangea-compatible API to `default`."""
    return parse_config(
        {
            "destinations": {"default": {"schema": "standard"}},
            "sources": {
                "auth0": {"type": "webhook", "format": "auth0", "path": "/v1/log_stream", "destination": "default"},
                "sdk": {"type": "webhook", "format": "pangea", "destination": "default"},
            },
        },
        env={},
    )
