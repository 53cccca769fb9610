"""Kafka source fixtures: a fresh topic and group per test (the broker: ``tests/integration/conftest.py``)."""

from __future__ import annotations

import uuid

import pytest

from tests.kafka_broker import create_topic


@pytest.fixture
async def topic(kafka_bootstrap: str) -> str:
    """A fresh topic with 6 partitions."""
    name = f"audit.events.{uuid.uuid4().hex[:10]}"
    await create_topic(kafka_bootstrap, name, 6)
    return name


@pytest.fixture
def group_id() -> str:
    return f"audit-gateway-{uuid.uuid4().hex[:10]}"
