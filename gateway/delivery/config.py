"""Configuration of the delivery driver that every sink shares."""

from __future__ import annotations

from pydantic import Field

from gateway.configbase import StrictModel

__all__ = ["PollConfig", "RetryConfig"]


class RetryConfig(StrictModel):
    """Retries of retriable upstream failures (408, 429, 5xx but 501, network errors)."""

    initial_backoff_secs: float = Field(default=0.5, gt=0, description="First backoff ceiling.")
    max_backoff_secs: float = Field(default=30.0, gt=0, description="Backoff ceiling cap (full jitter below it).")
    max_attempts: int | None = Field(
        default=None,
        ge=1,
        description="Attempts per batch before its events resolve as errored; null retries until shutdown.",
    )


class PollConfig(StrictModel):
    """Polling of 202-accepted requests until the upstream has the events."""

    initial_delay_secs: float = Field(default=0.2, gt=0, description="Delay before the first poll.")
    max_delay_secs: float = Field(default=5.0, gt=0, description="Cap of the growing delay between polls.")
    deadline_secs: float = Field(
        default=300.0, gt=0, description="Give up polling after this long; the batch is then retried."
    )
