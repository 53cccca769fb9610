"""Configuration of a pull source (``type: poll``): a vendor's log API read page by page."""

from __future__ import annotations

from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from gateway.sources.targets import Targets

PollVendor = Literal["okta_system_log", "auth0_logs", "github_audit_log", "onepassword_audit_events"]


class PollSourceConfig(Targets):
    """A vendor's log API, polled with its own paging; the cursor advances only past delivered events."""

    type: Literal["poll"] = Field(description="Source kind.")
    vendor: PollVendor = Field(
        description=(
            "okta_system_log (GET /api/v1/logs, `SSWS` token), auth0_logs (GET /api/v2/logs checkpoints, Management"
            " API token with read:logs), github_audit_log (GET /enterprises/{enterprise}/audit-log, classic PAT with"
            " read:audit_log), onepassword_audit_events (POST /api/v2/auditevents, Events Reporting token)."
        )
    )
    url: str = Field(
        description=(
            "The vendor's base URL: `https://acme.okta.com`, `https://acme.us.auth0.com`, `https://api.github.com`,"
            " `https://events.1password.com`."
        )
    )
    token: SecretStr = Field(description="API token (sent as `SSWS <token>` to Okta, `Bearer <token>` otherwise).")
    interval_secs: float = Field(default=15.0, gt=0, description="Wait between polls once the log is read to its end.")
    since: str | None = Field(
        default=None,
        description=(
            "Where a source without a cursor starts: an RFC 3339 time (Okta `since`, GitHub `created:>=`, 1Password"
            " `start_time`) or an Auth0 log_id (`from`); unset: the vendor's default window."
        ),
    )
    enterprise: str | None = Field(default=None, description="github_audit_log: the enterprise slug (required).")
    page_size: int = Field(
        default=100, ge=1, le=1000, description="Events asked per page (Auth0 and GitHub cap at 100)."
    )
    request_timeout_secs: float = Field(default=60.0, gt=0, description="Longest wait for one page.")
    max_page_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, description="A larger page is an error.")
    max_wait_secs: float = Field(
        default=900.0, gt=0, description="Longest wait a rate limit (Retry-After, reset header) may impose at once."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        u = urlsplit(value)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _enterprise(self) -> Self:
        if self.vendor == "github_audit_log" and not self.enterprise:
            raise ValueError("enterprise: required for vendor github_audit_log")
        return self
