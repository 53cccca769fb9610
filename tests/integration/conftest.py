"""Integration fixtures shared across folders: one Kafka-protocol broker for the session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.kafka_broker import tansu_broker


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``KAFKA_BOOTSTRAP_SERVERS`` when set, else a tansu broker started once for the session.

    The Kafka source, Kafka buffer and Kafka dead-letter tests all use it; each names its
    own topics and groups, so they share it without seeing each other's records.
    """
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    with tansu_broker(tmp_path_factory.mktemp("tansu") / "tansu.log") as bootstrap:
        yield bootstrap
