"""What a destination admits, built from its configuration: its schema and its signer.

One builder for the running gateway (:mod:`gateway.app`) and ``audit-gateway dlq replay``
(:mod:`gateway.deadletter_cli`), so that a replayed event is normalized and signed exactly
as it would be at intake.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from gateway.normalize.config import SchemaFieldConfig
from gateway.normalize.schema import Schema
from gateway.normalize.signing import Signer
from gateway.pipeline.config import DestinationConfig

FetchSchema = Callable[[], Awaitable[list[SchemaFieldConfig]]]
"""Asks the upstream for the destination's schema (``POST /v1/schema``): the sink's ``fetch_schema``."""


async def build_schema(config: DestinationConfig, fetch: FetchSchema) -> Schema:
    """The destination's schema: ``standard``, inline, or fetched from the upstream with ``fetch``."""
    if config.schema_ == "standard":
        return Schema.standard(config.schema_policy)
    if config.schema_ == "upstream":
        return Schema.from_fields(await fetch(), config.schema_policy)
    return Schema.from_fields(list(config.schema_.fields), config.schema_policy)


def build_signer(config: DestinationConfig) -> Signer | None:
    """The destination's event signer, or None when it does not sign."""
    if config.signing is None:
        return None
    return Signer.from_pem_file(config.signing.private_key_file, config.signing.public_key_info)
