"""Configuration of an HTTP webhook source (one route per source)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator

from gateway.configbase import StrictModel
from gateway.sources.targets import Targets

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


SIGNATURE_PRESETS: dict[str, dict[str, Any]] = {
    # stripe/stripe-python stripe/_webhook.py: HMAC-SHA256 hex of "<t>.<body>", any v1 may match, 300 s.
    "stripe": {
        "header": "Stripe-Signature",
        "format": "t={timestamp},v1={signature}",
        "signed": "{timestamp}.{body}",
        "algorithm": "sha256",
        "encoding": "hex",
        "tolerance_secs": 300,
    },
    # Slack "Verifying requests from Slack": v0=HMAC-SHA256 hex of "v0:<ts>:<body>", 5 minutes.
    "slack": {
        "header": "X-Slack-Signature",
        "format": "v0={signature}",
        "timestamp_header": "X-Slack-Request-Timestamp",
        "signed": "v0:{timestamp}:{body}",
        "algorithm": "sha256",
        "encoding": "hex",
        "tolerance_secs": 300,
    },
}
"""What ``preset:`` fills in (keys given beside it win)."""


class SignatureAuth(StrictModel):
    """An HMAC signature over the raw body (and a timestamp), with a replay window and key rotation.

    ``format`` says where the signature (and the timestamp) sit in ``header``: either
    comma-separated ``name={placeholder}`` items (Stripe: ``t={timestamp},v1={signature}``, where
    the signature item may repeat, one per active secret) or one pattern for the whole value
    (Slack: ``v0={signature}``).  ``signed`` is what is signed: ``{body}`` (the exact body bytes)
    and, for a replay window, ``{timestamp}`` (Unix seconds, from ``format`` or ``timestamp_header``).
    """

    preset: Literal["stripe", "slack"] | None = Field(
        default=None, description="Fill in the vendor's scheme (stripe, slack); keys given beside it win."
    )
    header: str = Field(description="Header carrying the signature (filled by `preset`).")
    format: str = Field(
        description=(
            "Where the signature is in the header: `t={timestamp},v1={signature}`, `v0={signature}`..."
            " (filled by `preset`)."
        )
    )
    signed: str = Field(
        description="What is signed, with `{body}` and `{timestamp}`: `{timestamp}.{body}` (filled by `preset`)."
    )
    timestamp_header: str | None = Field(
        default=None, description="Header carrying the timestamp when `format` does not (Slack)."
    )
    algorithm: Literal["sha1", "sha256", "sha512"] = Field(default="sha256", description="HMAC hash.")
    encoding: Literal["hex", "base64"] = Field(default="hex", description="How the signature is written.")
    tolerance_secs: float = Field(
        default=300.0,
        gt=0,
        description="Timestamps further than this from now answer 401; a signature seen within it: 401 (replay).",
    )
    secrets: list[SecretStr] = Field(
        min_length=1,
        description="Signing secrets, any may match (rotation: the new and the previous); empty values are ignored.",
    )

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") in SIGNATURE_PRESETS:
            return {**SIGNATURE_PRESETS[data["preset"]], **data}
        return data

    @model_validator(mode="after")
    def _placeholders(self) -> Self:
        if self.format.count("{signature}") != 1:
            raise ValueError("format: needs {signature} once")
        if self.signed.count("{body}") != 1:
            raise ValueError("signed: needs {body} once")
        in_format = "{timestamp}" in self.format
        if "{timestamp}" in self.signed and not in_format and self.timestamp_header is None:
            raise ValueError("signed uses {timestamp}: put {timestamp} in format or give timestamp_header")
        if "," in self.format:
            for item in self.format.split(","):
                name, eq, value = item.strip().partition("=")
                if not eq or not name or value not in ("{timestamp}", "{signature}"):
                    raise ValueError(f"format: item {item!r} must be name={{timestamp}} or name={{signature}}")
        if not any(s.get_secret_value() for s in self.secrets):
            raise ValueError("secrets: give at least one non-empty secret")
        return self


class WebhookAuth(StrictModel):
    """Inbound authentication of a route; compared in constant time.  Give one kind."""

    header: str = Field(default="Authorization", description="Header carrying the shared value.")
    value: SecretStr | None = Field(default=None, description="Expected header value, e.g. `Bearer <token>`.")
    hmac_sha256_secret: SecretStr | None = Field(
        default=None, description="GitHub-style `X-Hub-Signature-256` HMAC secret over the raw body."
    )
    splunk_token: SecretStr | None = Field(default=None, description="HEC token (`Authorization: Splunk <token>`).")
    signature: SignatureAuth | None = Field(
        default=None, description="A timestamped HMAC signature (Stripe, Slack, or described) with a replay window."
    )
    pass_through: bool = Field(
        default=False,
        description=(
            "Format `pangea`: the caller's own bearer token is sent upstream with its calls, and the upstream"
            " decides what it may read (and, once the delivery side carries it, write)."
        ),
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        names = ("value", "hmac_sha256_secret", "splunk_token", "signature", "pass_through")
        kinds = [k for k in names if getattr(self, k) not in (None, False)]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of {', '.join(names)} (got {kinds or 'none'})")
        return self


CallerEndpoint = Literal["log", "search", "root", "export", "schema", "config"]
"""Endpoint groups a caller may be allowed, as the audit service scopes its tokens: ``log``
(/v1/log, /v2/log, /v2/log_async), ``search`` (/v1/search, /v1/results, /v1/download_results),
``root``, ``export``, ``schema``, ``config`` (/v1beta/config*)."""


class CallerConfig(StrictModel):
    """One application allowed to call a ``format: pangea`` source, like a service token of the
    audit service: its token, the destinations (configurations) it may use, the endpoints it may
    call, and field restrictions on the events it writes."""

    token: SecretStr | None = Field(default=None, description="The caller's bearer token; never logged.")
    token_file: Path | None = Field(default=None, description="File holding the caller's token (read at start).")
    destinations: list[str] = Field(
        min_length=1, description="Destinations (by name) it may write to and read; several: it must name config_id."
    )
    endpoints: list[CallerEndpoint] | None = Field(
        default=None, description="Endpoint groups it may call (log, search, root, export, schema, config); null: all."
    )
    restrictions: dict[str, list[str]] | None = Field(
        default=None, description="Allowed values per field of its events; others answer 403 ForbiddenFieldValue."
    )

    @model_validator(mode="after")
    def _one_token(self) -> Self:
        if (self.token is None) == (self.token_file is None):
            raise ValueError("give exactly one of token, token_file")
        return self


class WebhookSourceConfig(Targets):
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
    callers: list[CallerConfig] | None = Field(
        default=None,
        description=(
            "Format `pangea`: who may call it (by bearer token) and which destinations, endpoints and field"
            " values each may use; the caller's token decides the configuration. Not with `auth`."
        ),
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
        if self.auth is not None and self.auth.signature is not None and self.format in ("pangea", "splunk_hec"):
            raise ValueError(f"auth.signature: not for format {self.format} (it has its own token auth)")
        if self.auth is not None and self.auth.pass_through and self.format != "pangea":
            raise ValueError("auth.pass_through: only for format pangea")
        if self.callers is not None:
            if self.format != "pangea":
                raise ValueError("callers: only for format pangea")
            if self.auth is not None:
                raise ValueError("callers: give either callers or auth (the callers' tokens are the auth)")
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
    max_connections: int = Field(
        default=4096,
        ge=1,
        description=(
            "Open connections held at once; one more is answered 503 and closed. Lowered at start to fit"
            " the file descriptor limit (raised to its hard limit) less 192 kept for the admin port and upstream."
        ),
    )
