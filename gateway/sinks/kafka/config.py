"""Configuration of a destination's Kafka sink: ``sink: {type: kafka, bootstrap_servers, topic}``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gateway.configbase import StrictModel
from gateway.delivery.config import RetryConfig
from gateway.kafka.config import KafkaSecurity

__all__ = ["KafkaSinkConfig"]


class KafkaSinkConfig(StrictModel):
    """Write a destination's events to a Kafka topic instead of the audit log upstream."""

    type: Literal["kafka"] = Field(description="Sink kind.")
    bootstrap_servers: str | list[str] = Field(description="Brokers, `host:port` (comma-separated or a list).")
    topic: str = Field(min_length=1, description="Topic each event is written to, as one JSON message.")
    security: KafkaSecurity = Field(default_factory=KafkaSecurity, description="TLS/SASL settings.")
    produce_timeout_secs: float = Field(
        default=30.0, gt=0, description="Longest wait for the brokers to acknowledge a batch (acks=all)."
    )
    max_in_flight: int = Field(default=2, ge=1, le=64, description="Batches being produced at once.")
    retry: RetryConfig = Field(default_factory=RetryConfig, description="Retry policy.")
