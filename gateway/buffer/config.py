"""Configuration of the buffer between intake and the upstream."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator

from gateway.configbase import StrictModel
from gateway.kafka.config import KafkaOnlySecurity, KafkaOnlyServers, KafkaSecurity, require_kafka_target


class BufferConfig(StrictModel):
    """Bounded buffer; when full, intake pushes back (429 / paused partitions) instead of growing."""

    type: Literal["memory", "disk", "kafka"] = Field(
        default="memory",
        description=(
            "`memory`; `disk`: a durable SQLite spool (answers once written and fsynced); "
            "`kafka`: accepted events are produced to `topic` (acks=all) for a `type: kafka` source to forward."
        ),
    )
    max_events: int = Field(
        default=100_000,
        ge=1,
        description="Capacity in events, per destination (disk: applies only when given explicitly).",
    )
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, description="Capacity in bytes, per destination.")
    path: Path | None = Field(default=None, description="Spool directory (disk only); default <data-dir>/spool.")
    fsync_interval_ms: int = Field(
        default=0,
        ge=0,
        description=(
            "Disk only. 0: each write is committed and fsynced before it is answered (writes arriving "
            "meanwhile share the next commit); N: group commit every N ms, answers wait for the commit "
            "that covers them."
        ),
    )
    memory_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=0,
        description="Disk only: spooled bytes also kept in memory for sending, so they need not be read back.",
    )
    reserve_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=0,
        description=(
            "Disk only: room held in a file next to the spool (`spool.reserve`) and given back when the disk "
            "is full, so deliveries can still be recorded (and are never sent again after a restart); new "
            "events are refused (503) while it cannot be held. 0: no reserve."
        ),
    )
    topic: str | None = Field(default=None, description="Kafka only: the topic accepted events are produced to.")
    bootstrap_servers: KafkaOnlyServers = None
    security: KafkaOnlySecurity = Field(default_factory=KafkaSecurity)
    produce_timeout_secs: float = Field(
        default=30.0, gt=0, description="Kafka only: longest wait for the brokers' acks before answering 503."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.type == "kafka":
            require_kafka_target("buffer", self.topic, self.bootstrap_servers)
        return self

    @property
    def max_events_given(self) -> bool:
        """Whether ``max_events`` was set in the file (a disk spool is bounded by bytes otherwise)."""
        return "max_events" in self.model_fields_set
