"""The one way the gateway makes a Kafka consumer (the Kafka source's)."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer

__all__ = ["new_consumer"]


def new_consumer(servers: list[str], client_kwargs: dict[str, Any], **settings: Any) -> Any:
    """An ``AIOKafkaConsumer`` of the brokers ``servers`` (:func:`~gateway.kafka.security.bootstrap_list`),
    TLS/SASL ``client_kwargs`` (:func:`~gateway.kafka.security.client_kwargs`) and aiokafka's
    consumer ``settings``."""
    return AIOKafkaConsumer(bootstrap_servers=servers, **settings, **client_kwargs)
