"""Kafka fixtures: a real Kafka-protocol broker (tansu, or ``KAFKA_BOOTSTRAP_SERVERS``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kafka_broker import create_topic, tansu_broker


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``KAFKA_BOOTSTRAP_SERVERS`` when set, else a tansu broker for the session."""
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    log: Path = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with tansu_broker(log) as bootstrap:
        yield bootstrap


@pytest.fixture
async def topic(kafka_bootstrap: str) -> str:
    """A fresh topic with 6 partitions."""
    name = f"audit.events.{uuid.uuid4().hex[:10]}"
    await create_topic(kafka_bootstrap, name, 6)
    return name


@pytest.fixture
def group_id() -> str:
    return f"audit-gateway-{uuid.uuid4().hex[:10]}"
