"""Issue 13, drift 2: a Kafka event the upstream rejects is dead-lettered once.

The delivery driver writes it to the gateway's dead-letter store; the Kafka source then counts
its offset done and does not write it again to ``<topic>.dlq`` (which keeps the messages the
source itself could not read).  Real processes: a local audit log whose configuration allows an
``actor`` of 8 characters, a gateway normalizing to the standard schema (128), the broker.
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson

from tests.integration.kafka.test_kafka_e2e import wait_committed_to_end
from tests.integration.vendors.harness import deadletters
from tests.kafka_broker import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS, produce, read_topic
from tests.support.procs import gateway, local_audit, stored_messages

TOKEN = "pts_drift2_token_value"
STRICT = "pci_" + "strict".ljust(32, "a")


async def test_an_event_the_upstream_rejects_is_dead_lettered_once_not_also_to_the_source_topic_dlq(
    tmp_path: Path, kafka_bootstrap: str, topic: str, group_id: str
) -> None:
    configs = tmp_path / "configs.json"
    fields = [{"id": "message", "type": "text", "required": True}, {"id": "actor", "type": "string", "size": 8}]
    configs.write_text(json.dumps({"configs": [{"id": STRICT, "schema": {"fields": fields}}]}))
    values = [orjson.dumps({"event": {"message": f"ok-{i}", "actor": "alice"}}) for i in range(3)]
    values.insert(1, orjson.dumps({"event": {"message": "too-long-actor", "actor": "a" * 20}}))
    await produce(kafka_bootstrap, topic, values, keys=[b"one-partition"] * len(values))
    cfg = tmp_path / "gateway.yaml"
    with local_audit(tmp_path, TOKEN, "--configs", str(configs)) as upstream:
        cfg.write_text(
            f"""
shutdown_timeout_secs: 5
upstream: {{url: "{upstream.url("local_audit")}", token: {TOKEN}}}
destinations:
  strict: {{config_id: {STRICT}, schema: standard, batch: {{timeout_secs: 0.05}}}}
sources:
  app:
    type: kafka
    bootstrap_servers: {kafka_bootstrap}
    topics: [{topic}]
    group_id: {group_id}
    destination: strict
    session_timeout_ms: {SESSION_TIMEOUT_MS}
    heartbeat_interval_ms: {HEARTBEAT_INTERVAL_MS}
    drain_timeout_secs: 2
    commit_interval_secs: 0.2
"""
        )
        with gateway(tmp_path, config=cfg):
            await wait_committed_to_end(kafka_bootstrap, group_id, topic)
        assert sorted(stored_messages(tmp_path / "local-audit.db")) == ["ok-0", "ok-1", "ok-2"]
    [letter] = deadletters(tmp_path / "data")
    assert letter["reason"] == "upstream_rejected"
    assert await read_topic(kafka_bootstrap, f"{topic}.dlq", 1, timeout=2.0) == []
