"""Configuration of a Kafka consumer-group source."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from gateway.kafka.config import KafkaSecurity
from gateway.sources.targets import Targets

__all__ = ["KafkaSourceConfig"]


class KafkaSourceConfig(Targets):
    """Consume topics in a consumer group; commit offsets only past delivered events."""

    type: Literal["kafka"] = Field(description="Source kind.")
    bootstrap_servers: str | list[str] = Field(description="Brokers, `host:port` (comma-separated or a list).")
    topics: list[str] | None = Field(default=None, description="Topics to consume.")
    topic_pattern: str | None = Field(default=None, description="Regex of topics to consume (instead of topics).")
    group_id: str = Field(description="Consumer group id; instances sharing it split the partitions.")
    format: Literal["pangea", "auth0", "okta", "github", "splunk_hec", "raw", "json"] = Field(
        default="pangea",
        description='`pangea`: {"event": {...}} or a bare event; `raw`: the value becomes `message`.',
    )
    key_field: str | None = Field(default=None, description="Put the message key into this event field.")
    header_fields: dict[str, str] = Field(
        default_factory=dict, description="Header name -> event field to copy it into (e.g. tenant -> tenant_id)."
    )
    restrictions: dict[str, list[str]] | None = Field(
        default=None,
        description=(
            "Allowed values per field, as a webhook source's; a violating event is dead-lettered"
            " (`forbidden_field_value`, code ForbiddenFieldValue)."
        ),
    )
    security: KafkaSecurity = Field(default_factory=KafkaSecurity, description="TLS/SASL settings.")
    commit_interval_secs: float = Field(default=1.0, gt=0, description="How often delivered offsets are committed.")
    session_timeout_ms: int = Field(default=30_000, ge=1000, description="Group session timeout.")
    heartbeat_interval_ms: int = Field(default=3_000, ge=100, description="Group heartbeat interval.")
    max_poll_interval_ms: int = Field(default=300_000, ge=1000, description="Max time between polls.")
    drain_timeout_secs: float = Field(
        default=10.0, gt=0, description="On revoke, wait this long for in-flight acks; below the session timeout."
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest", description="Where a group with no committed offset starts."
    )
    max_poll_records: int = Field(default=2000, ge=1, description="Records fetched per poll.")
    fetch_max_wait_ms: int = Field(
        default=100,
        ge=0,
        le=10_000,
        description="Longest wait of a fetch for new records; bounds latency on brokers that hold fetches.",
    )
    max_partition_fetch_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description=(
            "Most record bytes fetched from one partition per fetch (aiokafka's default is 1 MiB): "
            "what is read ahead of the poll, per partition."
        ),
    )
    fetch_max_bytes: int = Field(
        default=50 * 1024 * 1024,
        ge=1024,
        description="Most record bytes one fetch request returns, across its partitions.",
    )
    pause_high_watermark: float = Field(
        default=0.8, gt=0, le=1, description="Pause partitions when the buffer is this full."
    )
    resume_low_watermark: float = Field(
        default=0.5, ge=0, lt=1, description="Resume paused partitions when the buffer drains below this."
    )
    dlq_topic: str | None = Field(
        default=None, description="Dead-letter topic; default `<topic>.dlq` of the message's topic."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.topics is None) == (self.topic_pattern is None):
            raise ValueError("give exactly one of topics, topic_pattern")
        if self.topics is not None and not self.topics:
            raise ValueError("topics must not be empty")
        if self.drain_timeout_secs * 1000 >= self.session_timeout_ms:
            raise ValueError("drain_timeout_secs must be below session_timeout_ms")
        if self.resume_low_watermark >= self.pause_high_watermark:
            raise ValueError("resume_low_watermark must be below pause_high_watermark")
        return self
