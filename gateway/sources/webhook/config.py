"""Configuration of an HTTP webhook source (one route per source)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator

from gateway.configbase import StrictModel

WebhookFormat = Literal["auth0", "okta", "github", "gitlab", "firehose", "splunk_hec", "pangea", "json"]
FirehoseRecords = Literal["json", "cloudtrail", "cloudwatch_logs", "raw"]

DEFAULT_PATHS: dict[str, str] = {
    "auth0": "/v1/log_stream",
    "okta": "/webhooks/okta",
    "github": "/webhooks/github",
    "gitlab": "/webhooks/gitlab",
    "firehose": "/webhooks/firehose",
    "splunk_hec": "/services/collector",
    "pangea": "",
    "json": "/webhooks/json",
}


class WebhookAuth(StrictModel):
    """Inbound authentication of a route; compared in constant time.  Give one kind."""

    header: str = Field(default="Authorization", description="Header carrying the shared value.")
    value: SecretStr | None = Field(default=None, description="Expected header value, e.g. `Bearer <token>`.")
    hmac_sha256_secret: SecretStr | None = Field(
        default=None, description="GitHub-style `X-Hub-Signature-256` HMAC secret over the raw body."
    )
    splunk_token: SecretStr | None = Field(default=None, description="HEC token (`Authorization: Splunk <token>`).")

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        kinds = [k for k in ("value", "hmac_sha256_secret", "splunk_token") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of value, hmac_sha256_secret, splunk_token (got {kinds or 'none'})")
        return self


class WebhookSourceConfig(StrictModel):
    """An HTTP route that accepts a vendor's (or the Pangea SDK's) event bodies."""

    type: Literal["webhook"] = Field(description="Source kind.")
    format: WebhookFormat = Field(
        description="Body format: auth0, okta, github, gitlab, firehose, splunk_hec, pangea, json."
    )
    records: FirehoseRecords | None = Field(
        default=None,
        description=(
            "Format `firehose` only: what each record's data holds: json (default), cloudtrail (events, EventBridge"
            " envelopes or `Records[]` files), cloudwatch_logs (gzip subscription messages), raw (text)."
        ),
    )
    path: str | None = Field(
        default=None,
        description="Route path (format `pangea`: a prefix for /v1/log, /v2/log, /v2/log_async, /request/{id}).",
    )
    destination: str = Field(description="Name of the destination (under `destinations`) its events go to.")
    auth: WebhookAuth | None = Field(default=None, description="Inbound auth; required when listening beyond loopback.")
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1, description="Larger bodies answer 413.")
    max_events_per_request: int = Field(default=10_000, ge=1, description="More events in one body answer 400.")
    max_json_depth: int = Field(default=64, ge=2, description="Deeper JSON nesting answers 400.")
    ack_timeout_secs: float = Field(
        default=60.0, gt=0, description="Longest wait for the upstream before answering 503 (events stay queued)."
    )
    map: dict[str, str | list[str] | dict[str, Any]] | None = Field(
        default=None,
        description=(
            "Declarative mapping `field: path` (dotted, list indexes as numbers); a list of paths is fallbacks;"
            " `{const: x}` or `{path: p, default: x}`. The whole mapping for format `json`; overrides otherwise."
        ),
    )
    rate_limit_per_sec: float | None = Field(
        default=None, gt=0, description="Requests per second this route admits (token bucket); over it: 429."
    )
    rate_limit_burst: int = Field(default=100, ge=1, description="Token bucket size for `rate_limit_per_sec`.")
    restrictions: dict[str, list[str]] | None = Field(
        default=None, description="Allowed values per field; a violating event answers 403 ForbiddenFieldValue."
    )

    @field_validator("map")
    @classmethod
    def _compile_map(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            from gateway.normalize.mapping import Mapping

            Mapping(value)  # raises ValueError("map.<field>: ...") on a bad spec
        return value

    @model_validator(mode="after")
    def _records_for_firehose(self) -> Self:
        if self.records is not None and self.format != "firehose":
            raise ValueError("records: only for format firehose")
        return self

    @property
    def route_path(self) -> str:
        return self.path if self.path is not None else DEFAULT_PATHS[self.format]


class IntakeTlsConfig(StrictModel):
    """TLS for the intake listener."""

    cert_file: Path = Field(description="PEM certificate chain.")
    key_file: Path = Field(description="PEM private key.")


class IntakeServerConfig(StrictModel):
    """Settings of the HTTP intake listener shared by every webhook source."""

    tls: IntakeTlsConfig | None = Field(default=None, description="Serve HTTPS with this certificate.")
    body_timeout_secs: float = Field(
        default=30.0, gt=0, description="Longest time to receive a request body (slow clients get 408)."
    )
    keepalive_timeout_secs: float = Field(default=75.0, gt=0, description="Idle keep-alive connections close after.")
    max_header_bytes: int = Field(default=8190, ge=1024, description="Longest request line or header field.")
