"""Configuration of the dead-letter store: where events refused for good are recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator

from gateway.configbase import StrictModel
from gateway.kafka.config import KafkaOnlySecurity, KafkaOnlyServers, KafkaSecurity, require_kafka_target


class DeadLetterConfig(StrictModel):
    """`local`: a SQLite file under the data directory; `kafka`: a topic (the local file is its fallback)."""

    type: Literal["local", "kafka"] = Field(
        default="local", description="`local` (SQLite under the data directory) or `kafka` (a topic)."
    )
    path: Path | None = Field(
        default=None,
        description="The local SQLite file (kafka: where dead letters go when the topic cannot take them); "
        "default <data-dir>/deadletters.db.",
    )
    topic: str | None = Field(default=None, description="Kafka only: the dead-letter topic.")
    bootstrap_servers: KafkaOnlyServers = None
    security: KafkaOnlySecurity = Field(default_factory=KafkaSecurity)
    produce_timeout_secs: float = Field(
        default=30.0, gt=0, description="Kafka only: after this long without the brokers' ack, use the local file."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.type == "kafka":
            require_kafka_target("deadletter", self.topic, self.bootstrap_servers)
        return self

    def local_path(self, data_dir: Path) -> Path:
        return self.path or data_dir / "deadletters.db"
