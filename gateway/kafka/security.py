"""aiokafka connection settings (brokers, TLS, SASL) from the configuration."""

from __future__ import annotations

from typing import Any

from aiokafka.helpers import create_ssl_context

from gateway.errors import ConfigError
from gateway.kafka.config import KafkaSecurity


def bootstrap_list(value: str | list[str] | None) -> list[str]:
    """The brokers of a ``bootstrap_servers`` setting: comma-separated text or a list."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else value
    return [s.strip() for s in items if s.strip()]


def client_kwargs(security: KafkaSecurity, *, path: str = "security") -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaConsumer`` / ``AIOKafkaProducer`` / the admin client.

    * ``SSL`` / ``SASL_SSL``: an ``ssl_context`` verifying the brokers with ``ca_file`` (or
      the system CAs), presenting ``cert_file`` + ``key_file`` when given (mutual TLS).
    * ``SASL_PLAINTEXT`` / ``SASL_SSL``: ``sasl_mechanism`` (PLAIN, SCRAM-SHA-256/512) with
      ``username`` and ``password`` (aiokafka takes them as ``sasl_plain_*`` for SCRAM too).

    Raises :class:`ConfigError` (naming ``path``) when a needed setting is missing or a file
    cannot be read.
    """
    proto = security.protocol
    out: dict[str, Any] = {"security_protocol": proto}
    if proto in ("SSL", "SASL_SSL"):
        if (security.cert_file is None) != (security.key_file is None):
            raise ConfigError("give both cert_file and key_file, or neither", path)
        try:
            out["ssl_context"] = create_ssl_context(
                cafile=str(security.ca_file) if security.ca_file is not None else None,
                certfile=str(security.cert_file) if security.cert_file is not None else None,
                keyfile=str(security.key_file) if security.key_file is not None else None,
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load TLS files: {exc}", path) from None
    elif security.ca_file or security.cert_file or security.key_file:
        raise ConfigError(f"ca_file/cert_file/key_file need protocol SSL or SASL_SSL, not {proto}", path)
    if proto in ("SASL_PLAINTEXT", "SASL_SSL"):
        if security.sasl_mechanism is None:
            raise ConfigError(f"protocol {proto} needs sasl_mechanism", path)
        if security.username is None or security.password is None:
            raise ConfigError(f"sasl_mechanism {security.sasl_mechanism} needs username and password", path)
        out["sasl_mechanism"] = security.sasl_mechanism
        out["sasl_plain_username"] = security.username
        out["sasl_plain_password"] = security.password.get_secret_value()
    elif security.sasl_mechanism is not None:
        raise ConfigError(f"sasl_mechanism needs protocol SASL_PLAINTEXT or SASL_SSL, not {proto}", path)
    return out
