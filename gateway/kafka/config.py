"""Kafka connection settings shared by every Kafka client: the source, the buffer, the dead-letter store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, model_validator

from gateway.configbase import StrictModel


class KafkaSecurity(StrictModel):
    """TLS and SASL settings, as aiokafka names them."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="Kafka security protocol."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism (SASL_* protocols)."
    )
    username: str | None = Field(default=None, description="SASL username.")
    password: SecretStr | None = Field(default=None, description="SASL password; never logged.")
    ca_file: Path | None = Field(default=None, description="CA bundle to verify the brokers (SSL).")
    cert_file: Path | None = Field(default=None, description="Client certificate (mutual TLS).")
    key_file: Path | None = Field(default=None, description="Client private key (mutual TLS).")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        sasl = self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")
        tls = self.protocol in ("SSL", "SASL_SSL")
        if sasl and (self.sasl_mechanism is None or self.username is None or self.password is None):
            raise ValueError(f"protocol {self.protocol} needs sasl_mechanism, username and password")
        if not sasl and self.sasl_mechanism is not None:
            raise ValueError(f"sasl_mechanism needs protocol SASL_PLAINTEXT or SASL_SSL, not {self.protocol}")
        if not tls and (self.ca_file or self.cert_file or self.key_file):
            raise ValueError(f"ca_file/cert_file/key_file need protocol SSL or SASL_SSL, not {self.protocol}")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both cert_file and key_file, or neither")
        return self


KafkaOnlyServers = Annotated[
    str | list[str] | None, Field(description="Kafka only: brokers, `host:port` (comma-separated or a list).")
]
"""``bootstrap_servers`` of a setting that produces to Kafka only with ``type: kafka``."""

KafkaOnlySecurity = Annotated[KafkaSecurity, Field(description="Kafka only: TLS/SASL settings.")]
"""``security`` of a setting that produces to Kafka only with ``type: kafka``."""


def require_kafka_target(setting: str, topic: str | None, bootstrap_servers: str | list[str] | None) -> None:
    """A ``type: kafka`` setting needs a topic and brokers; raises ValueError naming what is missing."""
    missing = [k for k, v in (("topic", topic), ("bootstrap_servers", bootstrap_servers)) if not v]
    if missing:
        raise ValueError(f"{setting} type kafka requires {' and '.join(missing)}")
