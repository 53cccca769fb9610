"""Issue 16: ``audit-gateway tap`` prints the events passing a running gateway, secrets redacted."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.procs import REPO, gateway

AUTH = "Bearer tok_TAP_SECRET_5d1c"


def taps(admin_url: str) -> int:
    with urllib.request.urlopen(admin_url + "/status", timeout=30) as resp:
        return int(json.loads(resp.read())["taps"])


def start_tap(admin_port: int, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "tap", "--admin", f"127.0.0.1:{admin_port}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def wait_watching(admin_url: str, n: int, tap: subprocess.Popen[str]) -> None:
    end = time.monotonic() + 30
    while taps(admin_url) < n:
        assert tap.poll() is None, tap.communicate()
        assert time.monotonic() < end, "the tap never connected"
        time.sleep(0.05)


def post(url: str, records: list[dict[str, Any]]) -> None:
    req = urllib.request.Request(url, data=json.dumps(records).encode(), method="POST", headers={"Authorization": AUTH})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200


def test_tap_prints_an_event_posted_at_each_stage_with_secrets_and_restricted_fields_redacted(tmp_path: Path) -> None:
    cfg = tmp_path / "g.yaml"
    cfg.write_text(
        "destinations: {audit: {schema: standard}}\n"
        "sources:\n"
        "  auth0: {type: webhook, format: auth0, path: /v1/log_stream, destination: audit,"
        f" auth: {{value: '{AUTH}'}}}}\n"
        "tap: {redact_fields: [actor]}\n"
    )
    record = {
        "log_id": "9002024061108151234560000000000000000122337203685477580",
        "data": {
            "date": "2024-06-11T08:15:12.345Z",
            "type": "s",
            "description": f"pasted by mistake: {AUTH}",
            "user_name": "alice@example.com",
            "ip": "203.0.113.24",
        },
    }
    with gateway(tmp_path, config=cfg) as gw:
        admin = gw.url("admin")
        every_stage = start_tap(gw.ports["admin"], "--source", "auth0", "--limit", "3")
        delivered = start_tap(gw.ports["admin"], "--stage", "delivered", "--destination", "audit", "--limit", "1")
        other = start_tap(gw.ports["admin"], "--source", "nobody", "--limit", "1")
        wait_watching(admin, 3, other)
        post(gw.url() + "/v1/log_stream", [record])
        out, err = every_stage.communicate(timeout=30)
        assert every_stage.returncode == 0, err
        delivered_out, _ = delivered.communicate(timeout=30)
        assert delivered.returncode == 0
        assert other.poll() is None  # its filter matched nothing: still waiting
    # An open tap does not hold up the gateway's stop: its stream ends, and the tap with it.
    assert gw.popen.returncode == 0
    assert other.communicate(timeout=30) == ("", "") and other.returncode == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(x["stage"], x["source"], x["destination"]) for x in lines] == [
        ("received", "auth0", "audit"),
        ("normalized", "auth0", "audit"),
        ("delivered", "auth0", "audit"),
    ]
    received, normalized, stored = (x["event"] for x in lines)
    assert received["log_id"] == record["log_id"]
    assert received["data"]["description"] == "pasted by mistake: ***"
    assert normalized["message"] == stored["message"]
    assert "pasted by mistake: ***" in json.dumps(normalized)
    assert normalized["actor"] == "***" and stored["actor"] == "***"
    assert [json.loads(line)["stage"] for line in delivered_out.splitlines()] == ["delivered"]
    assert "tok_TAP_SECRET" not in out + delivered_out and "alice@example.com" not in out.split("\n", 1)[1]


async def test_tap_prints_a_kafka_record_as_received_and_normalized(tmp_path: Path, kafka_bootstrap: str) -> None:
    import asyncio
    import uuid

    from tests.kafka_broker import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS, create_topic, produce

    topic = f"tap.{uuid.uuid4().hex[:10]}"
    await create_topic(kafka_bootstrap, topic, 1)
    cfg = tmp_path / "g.yaml"
    cfg.write_text(
        "destinations: {audit: {schema: standard}}\n"
        "sources:\n"
        f"  k: {{type: kafka, bootstrap_servers: '{kafka_bootstrap}', topics: [{topic}], group_id: tap-{topic},"
        f" format: pangea, destination: audit, session_timeout_ms: {SESSION_TIMEOUT_MS},"
        f" heartbeat_interval_ms: {HEARTBEAT_INTERVAL_MS}, drain_timeout_secs: 2}}\n"
        "tap: {redact_fields: [actor]}\n"
    )
    with gateway(tmp_path, config=cfg) as gw:
        tap = start_tap(gw.ports["admin"], "--source", "k", "--limit", "2")
        await asyncio.to_thread(wait_watching, gw.url("admin"), 1, tap)
        await produce(kafka_bootstrap, topic, [b'{"event": {"message": "from kafka", "actor": "mallory"}}'])
        out, err = await asyncio.to_thread(tap.communicate, timeout=60)
    assert tap.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(x["stage"], x["source"], x["destination"]) for x in lines] == [
        ("received", "k", "audit"),
        ("normalized", "k", "audit"),
    ]
    assert lines[0]["event"] == {"event": {"message": "from kafka", "actor": "mallory"}}
    assert lines[1]["event"]["message"] == "from kafka" and lines[1]["event"]["actor"] == "***"
