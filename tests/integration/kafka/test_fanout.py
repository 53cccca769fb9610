"""Issue 13: a second sink (Kafka) and fan-out, end to end against the real broker.

`audit-gateway run` with the issue's configuration as written (the broker address put in):
each event goes to the embedded local audit log and, as one JSON message keyed by the vendor's
event id, to a Kafka topic.  The source's ack is the worst of its destinations': with the
Kafka destination down a webhook sender gets no 2xx and a Kafka source commits nothing, though
the audit log has every event.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import aiohttp
import orjson

from tests.integration.kafka.harness import pangea_values
from tests.integration.kafka.test_kafka_e2e import wait_committed_to_end
from tests.kafka_broker import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS, committed_and_end_offsets, produce, read_topic
from tests.support.procs import Proc, free_port, gateway, stored_messages

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "vendors"


def issue_config(tmp: Path, bootstrap: str, topic: str, extra_source: str = "", extra_yaml: str = "") -> Path:
    """The issue's YAML, verbatim but for the broker, the topic, and test-speed knobs."""
    cfg = tmp / f"fanout-{uuid.uuid4().hex[:6]}.yaml"
    cfg.write_text(
        f"""
shutdown_timeout_secs: 2
destinations:
  audit:
    schema: standard
  archive:
    sink: {{type: kafka, bootstrap_servers: {bootstrap}, topic: {topic}, produce_timeout_secs: 2,
            retry: {{initial_backoff_secs: 0.05, max_backoff_secs: 0.2}}}}
sources:
  auth0:
    type: webhook
    path: /v1/log_stream
    format: auth0
    destinations: [audit, archive]   # `destination: audit` keeps working
{extra_source}
{extra_yaml}
"""
    )
    return cfg


def auth0_body() -> tuple[bytes, list[str]]:
    body = (FIXTURES / "auth0_batch1_jsonarray.json").read_bytes()
    return body, [rec["log_id"] for rec in json.loads(body)]


async def post(gw: Proc, body: bytes, timeout: float = 30.0) -> int:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            gw.url() + "/v1/log_stream",
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as r,
    ):
        return r.status


async def wait_stored(db: Path, n: int, timeout: float = 30.0) -> list[str]:
    end = time.monotonic() + timeout
    while True:
        got = stored_messages(db) if db.exists() else []
        if len(got) >= n or time.monotonic() > end:
            return got
        await asyncio.sleep(0.1)


async def test_the_issue_fan_out_writes_each_event_to_the_audit_log_and_one_kafka_message_keyed_by_its_id(
    tmp_path: Path, kafka_bootstrap: str, topic: str
) -> None:
    body, log_ids = auth0_body()
    with gateway(tmp_path, config=issue_config(tmp_path, kafka_bootstrap, topic)) as gw:
        assert await post(gw, body) == 200
        stored = await wait_stored(tmp_path / "data" / "local-audit.db", len(log_ids))
    assert len(stored) == len(log_ids)
    records = await read_topic(kafka_bootstrap, topic, len(log_ids) + 1, timeout=3.0)
    assert len(records) == len(log_ids)  # one message per event, none twice
    assert sorted(r.key.decode() for r in records) == sorted(log_ids)  # type: ignore[attr-defined]
    by_key = {r.key.decode(): orjson.loads(r.value) for r in records}  # type: ignore[attr-defined]
    # The same normalized event the audit log got: {"event": {...}} with the standard fields.
    assert sorted(v["event"]["message"] for v in by_key.values()) == sorted(stored)


async def test_a_webhook_gets_no_2xx_while_one_destination_cannot_take_its_events(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    body, log_ids = auth0_body()
    down = f"127.0.0.1:{free_port()}"  # nothing listens: the archive cannot take anything
    cfg = issue_config(tmp_path, down, "audit.archive", extra_source="    ack_timeout_secs: 3")
    with gateway(tmp_path, config=cfg) as gw:
        status = await post(gw, body)
        stored = await wait_stored(tmp_path / "data" / "local-audit.db", len(log_ids))
    assert len(stored) == len(log_ids)  # the audit log has them all ...
    assert status == 503  # ... but the sender is not told so: it will send them again


async def test_kafka_offsets_are_committed_only_past_events_every_destination_has(
    tmp_path: Path, kafka_bootstrap: str, topic: str, group_id: str
) -> None:
    n = 50
    await produce(kafka_bootstrap, topic, pangea_values(n), partitions=6)

    def kafka_source(group: str) -> str:
        return f"""
  app:
    type: kafka
    bootstrap_servers: {kafka_bootstrap}
    topics: [{topic}]
    group_id: {group}
    destinations: [audit, archive]
    session_timeout_ms: {SESSION_TIMEOUT_MS}
    heartbeat_interval_ms: {HEARTBEAT_INTERVAL_MS}
    commit_interval_secs: 0.2
    drain_timeout_secs: 2
"""

    # The archive down: the audit log gets every event, the group commits nothing.
    down = f"127.0.0.1:{free_port()}"
    with gateway(tmp_path / "down", config=_mk(tmp_path / "down", down, kafka_source(group_id))):
        stored = await wait_stored(tmp_path / "down" / "data" / "local-audit.db", n)
        assert len(stored) == n
        await asyncio.sleep(1.0)  # five commit intervals past delivery to the audit log
        committed, _end = await committed_and_end_offsets(kafka_bootstrap, group_id, topic)
    assert all(not c for c in committed.values()), committed

    # The archive up (a fresh group): every offset is committed, every event archived once.
    archive = f"archive.{uuid.uuid4().hex[:8]}"
    other_group = group_id + "-up"
    cfg = _mk(tmp_path / "up", kafka_bootstrap, kafka_source(other_group), archive)
    with gateway(tmp_path / "up", config=cfg):
        await wait_committed_to_end(kafka_bootstrap, other_group, topic)
    assert len(await read_topic(kafka_bootstrap, archive, n + 1, timeout=3.0)) == n


def _mk(tmp: Path, bootstrap: str, source: str, topic: str = "audit.archive") -> Path:
    """The issue's configuration with a Kafka source added under ``sources``."""
    tmp.mkdir(parents=True, exist_ok=True)
    return issue_config(tmp, bootstrap, topic, extra_source=source)
