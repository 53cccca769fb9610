"""Configuration of the upstream Secure Audit Log (the Pangea-compatible sink)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator

from gateway.configbase import StrictModel
from gateway.delivery.config import PollConfig, RetryConfig


class OAuth2Config(StrictModel):
    """OAuth2 client-credentials grant (HTTP Basic client auth), as Pangea's OAuth clients use."""

    token_url: str = Field(description="Token endpoint URL, e.g. https://.../v1/oauth/token.")
    client_id: str = Field(description="OAuth2 client id.")
    client_secret: SecretStr = Field(description="OAuth2 client secret; never logged.")
    scope: str | None = Field(default=None, description="Optional space-separated scopes to request.")
    refresh_before_expiry_secs: float = Field(
        default=60.0, ge=0, description="Refresh the cached token this long before `expires_in` runs out."
    )


class UpstreamConfig(StrictModel):
    """Where events go: a Pangea-compatible Secure Audit Log."""

    url: str = Field(description="Base URL, e.g. https://audit.aws.us.pangea.cloud.")
    token: SecretStr | None = Field(default=None, description="Service token (pts_...); never logged.")
    token_file: Path | None = Field(
        default=None, description="File holding the token; re-read when it changes (Kubernetes Secret rotation)."
    )
    oauth2: OAuth2Config | None = Field(default=None, description="OAuth2 client credentials instead of a token.")
    endpoint: Literal["log", "log_async"] = Field(
        default="log", description="`log` posts to /v2/log; `log_async` to /v2/log_async (202, then polled)."
    )
    timeout_secs: float = Field(default=30.0, gt=0, description="Timeout of one upstream HTTP call.")
    max_in_flight: int = Field(default=4, ge=1, le=256, description="Concurrent upstream requests per destination.")
    verify_tls: bool = Field(default=True, description="Verify the upstream's TLS certificate.")
    retry: RetryConfig = Field(default_factory=RetryConfig, description="Retry policy.")
    poll: PollConfig = Field(default_factory=PollConfig, description="202 polling policy.")

    @model_validator(mode="after")
    def _one_credential(self) -> Self:
        given = [n for n in ("token", "token_file", "oauth2") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"exactly one of token, token_file, oauth2 is required (got {given or 'none'})")
        return self
