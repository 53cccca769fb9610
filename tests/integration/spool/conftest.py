"""A Kafka-protocol broker for the Kafka buffer's tests (tansu, or ``KAFKA_BOOTSTRAP_SERVERS``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.kafka_broker import tansu_broker


@pytest.fixture(scope="session")
def spool_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    with tansu_broker(tmp_path_factory.mktemp("tansu-spool") / "tansu.log") as bootstrap:
        yield bootstrap
