"""Moved to :mod:`gateway.kafka.security`, below every Kafka client; re-exported for the importers
not yet moved (buffer/kafka.py)."""

from gateway.kafka.security import bootstrap_list, client_kwargs

__all__ = ["bootstrap_list", "client_kwargs"]
