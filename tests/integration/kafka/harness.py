"""In-process harness: a KafkaSource feeding a real Destination + MemoryBuffer into a recording sink.

The sink is the fault-injection point: it records every event it is given, and can stall,
reject chosen events (ack REJECTED) or fail batches (ack ERRORED) on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.acks import AckStatus
from gateway.batching import Batch
from gateway.buffer.memory import MemoryBuffer
from gateway.config import DestinationConfig
from gateway.normalize.schema import Schema
from gateway.pipeline import Destination
from gateway.sinks.deadletter.base import DeadLetter
from gateway.sources.kafka.config import KafkaSourceConfig
from gateway.sources.kafka.source import KafkaSource
from gateway.telemetry.metrics import Metrics
from tests.kafka_broker import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS


class RecordingSink:
    """Delivers (records) every event; faults on demand."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.items: list[dict[str, Any]] = []
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.reject: Callable[[dict[str, Any]], bool] | None = None
        self.fail_batches = 0
        """The next N batches resolve ERRORED (as a sink whose retries ran out)."""
        self.batches = 0
        self.delay = 0.0
        """Seconds each batch takes (a slow upstream)."""

    async def start(self) -> None:
        pass

    async def send(self, batch: Batch) -> None:
        await self.flowing.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        self.batches += 1
        if self.fail_batches > 0:
            self.fail_batches -= 1
            batch.resolve_all(AckStatus.ERRORED, "retries exhausted")
            return
        for i, ev in enumerate(batch.events):
            item = orjson.loads(ev.item)["event"]
            if self.reject is not None and self.reject(item):
                batch.ack.resolve_one(i, AckStatus.REJECTED, "ValidationError: refused by the upstream")
                continue
            self.items.append(item)
            self.messages.append(item["message"])
        batch.ack.resolve(AckStatus.DELIVERED)

    async def check(self) -> str | None:
        return None

    async def stop(self) -> None:
        pass

    def counts(self) -> Counter[str]:
        return Counter(self.messages)

    async def wait_for(self, pred: Callable[[], bool], timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > end:
                raise TimeoutError(f"condition not met in {timeout}s; sink has {len(self.messages)} events")
            await asyncio.sleep(0.02)

    async def wait_distinct(self, n: int, timeout: float = 60.0) -> None:
        await self.wait_for(lambda: len(set(self.messages)) >= n, timeout)


@dataclass
class MemoryDeadLetters:
    letters: list[DeadLetter] = field(default_factory=list)

    async def write(self, letters: list[DeadLetter]) -> None:
        self.letters.extend(letters)

    async def close(self) -> None:
        pass


def source_config(bootstrap: str, topic: str, group_id: str, **overrides: Any) -> KafkaSourceConfig:
    return KafkaSourceConfig.model_validate(
        {
            "type": "kafka",
            "bootstrap_servers": bootstrap,
            "topics": [topic],
            "group_id": group_id,
            "format": "pangea",
            "destination": "default",
            "session_timeout_ms": SESSION_TIMEOUT_MS,
            "heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS,
            "drain_timeout_secs": 2.0,
            "commit_interval_secs": 0.2,
            **overrides,
        }
    )


@dataclass
class Running:
    source: KafkaSource
    destination: Destination
    sink: RecordingSink
    metrics: Metrics
    deadletters: MemoryDeadLetters

    def metric(self, name: str, **labels: str) -> float:
        v = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if v is None else v


@contextlib.asynccontextmanager
async def running_source(
    config: KafkaSourceConfig,
    sink: RecordingSink | None = None,
    *,
    max_events: int = 100_000,
    max_bytes: int = 64 * 1024 * 1024,
    workers: int = 4,
    batch: dict[str, Any] | None = None,
    name: str = "app",
) -> AsyncIterator[Running]:
    """Start destination + source; on exit stop them in the app's order (source, destination, source)."""
    metrics = Metrics()
    sink = sink or RecordingSink()
    dconf = DestinationConfig.model_validate({"batch": batch or {"max_events": 1000, "timeout_secs": 0.05}})
    buffer = MemoryBuffer("default", max_events, max_bytes, metrics)
    dest = Destination("default", dconf, buffer, sink, Schema.standard(), metrics, workers)
    dest.start()
    dls = MemoryDeadLetters()
    src = KafkaSource(name, config, dest, metrics, dls)
    await src.start()
    run = Running(src, dest, sink, metrics, dls)
    try:
        yield run
    finally:
        loop = asyncio.get_running_loop()
        await src.stop_accepting()
        sink.flowing.set()
        await dest.stop(loop.time() + 5)
        await src.stop(loop.time() + 5)


def pangea_values(n: int, prefix: str = "m") -> list[bytes]:
    """``n`` Pangea-shaped values (``{"event": {...}}``), messages ``<prefix><i>``."""
    return [
        orjson.dumps({"event": {"message": f"{prefix}{i}", "actor": "kafka-test", "action": "emit"}}) for i in range(n)
    ]
