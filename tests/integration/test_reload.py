"""Issue 16: reload on SIGHUP (and ``run --watch-config``) without loss and without closing a port.

The gateway is a real process with its embedded local audit log; the Kafka broker is real; the
load is real HTTP over loopback.  Delivery is checked in the local audit log's SQLite file.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
import uuid
from pathlib import Path

import aiohttp
import orjson

from tests.kafka_broker import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS, create_topic
from tests.support.procs import Proc, start_gateway, stored_messages


def config_text(bootstrap: str, topic: str, group: str, *, extra: bool, typo: bool = False) -> str:
    text = f"""
shutdown_timeout_secs: 10
destinations:
  audit: {{schema: standard, batch: {{timeout_secs: 50ms}}}}
sources:
  hook: {{type: webhook, format: auth0, path: /v1/log_stream, destination: audit}}
  k:
    type: kafka
    bootstrap_servers: {bootstrap}
    topics: [{topic}]
    group_id: {group}
    format: pangea
    destination: audit
    session_timeout_ms: {SESSION_TIMEOUT_MS}
    heartbeat_interval_ms: {HEARTBEAT_INTERVAL_MS}
    drain_timeout_secs: 2
    commit_interval_secs: 0.5
"""
    if extra:
        text = text.replace(
            "destinations:\n", "destinations:\n  extra: {schema: standard, batch: {timeout_secs: 50ms}}\n"
        )
        key = "destinaton" if typo else "destination"
        text += f"  hook2: {{type: webhook, format: auth0, path: /extra/log_stream, {key}: extra}}\n"
    return text


def auth0_record(tag: str) -> bytes:
    return orjson.dumps(
        [{"log_id": f"reload-{tag}", "data": {"date": "2024-06-11T08:15:12.345Z", "type": "s", "description": tag}}]
    )


class Load:
    """Steady webhook and Kafka load; remembers what the gateway acknowledged."""

    def __init__(self, gw: Proc, bootstrap: str, topic: str) -> None:
        self.gw, self.bootstrap, self.topic = gw, bootstrap, topic
        self.acked: set[str] = set()
        self.produced: set[str] = set()
        self.refused_connections = 0
        self.other_errors: list[str] = []
        self.stop = asyncio.Event()

    async def webhook(self, path: str, prefix: str) -> None:
        # A new connection per request: every one of them must find the port open.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            i = 0
            while not self.stop.is_set():
                tag = f"{prefix}-{uuid.uuid4().hex[:12]}"
                try:
                    async with http.post(self.gw.url() + path, data=auth0_record(tag)) as resp:
                        if resp.status == 200:
                            self.acked.add(tag)
                        elif resp.status not in (404, 429, 503):  # 404: hook2 not configured now
                            self.other_errors.append(f"{resp.status} {await resp.text()}")
                except aiohttp.ClientConnectorError:
                    self.refused_connections += 1
                except aiohttp.ServerDisconnectedError:
                    pass  # closed before an answer: not acknowledged, so the sender would retry it
                i += 1
                await asyncio.sleep(0.005)

    async def kafka(self) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            while not self.stop.is_set():
                tags = [f"kafka-{uuid.uuid4().hex[:12]}" for _ in range(10)]
                futures = [
                    await producer.send(self.topic, orjson.dumps({"event": {"message": t, "actor": "load"}}))
                    for t in tags
                ]
                await asyncio.gather(*futures)
                self.produced.update(tags)
                await asyncio.sleep(0.05)
        finally:
            await producer.stop()

    async def wait_more_acks(self, n: int, timeout: float = 30.0) -> None:
        target = len(self.acked) + n
        end = time.monotonic() + timeout
        while len(self.acked) < target:
            assert time.monotonic() < end, "the gateway stopped acknowledging"
            await asyncio.sleep(0.02)


async def reloads(http: aiohttp.ClientSession, gw: Proc) -> dict[str, float]:
    async with http.get(gw.url("admin") + "/metrics") as resp:
        text = await resp.text()
    return {m[0]: float(m[1]) for m in re.findall(r'gateway_config_reloads_total\{result="(\w+)"\} (\S+)', text)}


async def reload_and_wait(http: aiohttp.ClientSession, gw: Proc, result: str) -> None:
    before = (await reloads(http, gw)).get(result, 0.0)
    gw.popen.send_signal(signal.SIGHUP)
    end = time.monotonic() + 60
    while (await reloads(http, gw)).get(result, 0.0) <= before:
        assert gw.popen.poll() is None, gw.log()
        assert time.monotonic() < end, f"no reload {result}:\n{gw.log()}"
        await asyncio.sleep(0.05)


async def run_load_and_reloads(
    gw: Proc, cfg: Path, kafka_bootstrap: str, topic: str, group: str, tmp_path: Path
) -> tuple[set[str], set[str], Load]:
    """Steady load, the five reloads, then every Kafka event stored: (stored messages, the added
    source's acknowledged tags, the load)."""
    plain = config_text(kafka_bootstrap, topic, group, extra=False)
    with_extra = config_text(kafka_bootstrap, topic, group, extra=True)
    load = Load(gw, kafka_bootstrap, topic)
    tasks = [
        asyncio.create_task(load.webhook("/v1/log_stream", "hook")),
        asyncio.create_task(load.webhook("/extra/log_stream", "hook2")),
        asyncio.create_task(load.kafka()),
    ]
    try:
        async with aiohttp.ClientSession() as http:
            await load.wait_more_acks(20)
            steps = [
                (with_extra, "ok"),  # adds destination extra and source hook2
                (plain, "ok"),  # removes them: extra drains
                (config_text(kafka_bootstrap, topic, group, extra=True, typo=True), "refused"),
                (with_extra, "ok"),
                (plain, "ok"),
            ]
            for text, result in steps:
                cfg.write_text(text)
                await reload_and_wait(http, gw, result)
                await load.wait_more_acks(20)  # still serving after each, the refused one too
            hook2_acked = {t for t in load.acked if t.startswith("hook2-")}
            assert await reloads(http, gw) == {"ok": 4.0, "refused": 1.0}
    finally:
        load.stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    db = tmp_path / "data" / "local-audit.db"
    end = time.monotonic() + 60
    while not load.produced <= set(stored_messages(db)):
        assert time.monotonic() < end, "Kafka events not delivered"
        await asyncio.sleep(0.1)
    return set(stored_messages(db)), hook2_acked, load


async def test_five_reloads_under_webhook_and_kafka_load_lose_nothing_acknowledged_and_close_no_port(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    topic = f"reload.{uuid.uuid4().hex[:10]}"
    await create_topic(kafka_bootstrap, topic, 3)
    group = f"reload-{uuid.uuid4().hex[:8]}"
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(config_text(kafka_bootstrap, topic, group, extra=False))
    gw = start_gateway(tmp_path, config=cfg)
    try:
        stored, hook2_acked, load = await run_load_and_reloads(gw, cfg, kafka_bootstrap, topic, group, tmp_path)
        assert gw.terminate() == 0
    finally:
        gw.kill()  # (a no-op once it exited)
    assert load.refused_connections == 0
    assert load.other_errors == []
    assert hook2_acked, "the added source never took an event"
    assert len(load.acked) >= 120 and len(load.produced) > 0
    missing = {t for t in load.acked if not any(t in m for m in stored)}
    assert missing == set()
    log = gw.log()
    refused = [
        orjson.loads(line) for line in log.splitlines() if "configuration reload refused" in line and line[:1] == "{"
    ]
    assert len(refused) == 1
    assert (
        "sources.hook2.destinaton: Extra inputs are not permitted; did you mean 'destination'?" in refused[0]["error"]
    )
    assert log.count('"message":"configuration reloaded"') == 4


async def test_watch_config_reloads_when_the_file_changes(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text("destinations: {audit: {}}\nsources: {a: {type: webhook, format: auth0, destination: audit}}\n")
    ports_gw = start_gateway(tmp_path, config=cfg, extra_args=["--watch-config"])
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(ports_gw.url() + "/b/log_stream", data=auth0_record("watch-before")) as resp:
                assert resp.status == 404
            cfg.write_text(
                "destinations: {audit: {}}\n"
                "sources:\n"
                "  a: {type: webhook, format: auth0, destination: audit}\n"
                "  b: {type: webhook, format: auth0, path: /b/log_stream, destination: audit}\n"
            )
            end = time.monotonic() + 30
            while (await reloads(http, ports_gw)).get("ok", 0.0) < 1:
                assert time.monotonic() < end, ports_gw.log()
                await asyncio.sleep(0.05)
            async with http.post(ports_gw.url() + "/b/log_stream", data=auth0_record("watch-after")) as resp:
                assert resp.status == 200, await resp.text()
    finally:
        assert ports_gw.terminate() == 0
    assert any("watch-after" in m for m in stored_messages(tmp_path / "data" / "local-audit.db"))


async def test_a_reload_changing_a_destination_on_a_disk_buffer_or_a_process_setting_is_refused(
    tmp_path: Path,
) -> None:
    base = (
        "buffer: {type: disk}\n"
        "destinations: {audit: {schema: standard}}\n"
        "sources: {a: {type: webhook, format: auth0, path: /v1/log_stream, destination: audit}}\n"
    )
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(base)
    gw = start_gateway(tmp_path, config=cfg)
    try:
        async with aiohttp.ClientSession() as http:
            cfg.write_text(base.replace("{schema: standard}", "{schema: standard, batch: {timeout_secs: 1s}}"))
            await reload_and_wait(http, gw, "refused")
            cfg.write_text(base + "intake: {body_timeout_secs: 5s}\n")
            await reload_and_wait(http, gw, "refused")
            async with http.post(gw.url() + "/v1/log_stream", data=auth0_record("after-refusals")) as resp:
                assert resp.status == 200  # the running configuration serves on
        assert gw.terminate() == 0
    finally:
        gw.kill()
    errors = [orjson.loads(line)["error"] for line in gw.log().splitlines() if "reload refused" in line]
    assert errors == [
        "destinations.audit: a destination on a disk buffer (or its upstream) changes only on restart",
        "intake: changes only on restart",
    ]
    assert any("after-refusals" in m for m in stored_messages(tmp_path / "data" / "local-audit.db"))


async def test_a_reload_applies_a_changed_log_level_unless_run_log_level_was_given(tmp_path: Path) -> None:
    body = "destinations: {audit: {}}\nsources: {a: {type: webhook, format: auth0, destination: audit}}\n"
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text("log_level: warning\n" + body)
    gw = start_gateway(tmp_path, config=cfg)
    pinned_cfg = tmp_path / "pinned.yaml"
    pinned_cfg.write_text("log_level: info\n" + body)
    pinned = start_gateway(tmp_path, config=pinned_cfg, data_dir=tmp_path / "pinned", run_args=["--log-level", "info"])
    try:
        async with aiohttp.ClientSession() as http:
            cfg.write_text("log_level: info\n" + body)
            await reload_and_wait(http, gw, "ok")  # its "configuration reloaded" line is at info
            cfg.write_text("log_level: warning\n" + body)
            await reload_and_wait(http, gw, "ok")  # ... and now below the level
            pinned_cfg.write_text("log_level: warning\n" + body)
            await reload_and_wait(http, pinned, "ok")  # --log-level info wins: still shown
        assert gw.terminate() == 0 and pinned.terminate() == 0
    finally:
        gw.kill()
        pinned.kill()
    messages = [orjson.loads(line)["message"] for line in gw.log().splitlines() if line.startswith("{")]
    assert "gateway started" not in messages  # started at warning
    assert messages.count("configuration reloaded") == 1  # the reload to info, not the one to warning
    pinned_messages = [orjson.loads(line)["message"] for line in pinned.log().splitlines() if line.startswith("{")]
    assert pinned_messages.count("configuration reloaded") == 1
