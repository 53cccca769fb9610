"""Dead letters: recorded with reason, source, bytes and time; listed, shown and replayed by `dlq`."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
from pydantic import SecretStr

from gateway.app import Gateway, RunOptions
from gateway.local_audit.server import LocalAuditServer
from gateway.local_audit.settings import LocalAuditSettings
from gateway.sinks.deadletter.base import DeadLetter
from gateway.sinks.deadletter.local import DeadLetterDb, DeadLetterWriteError, LocalDeadLetterStore
from gateway.telemetry.metrics import Metrics
from tests.support.procs import REPO

TOKEN = "pts_deadletter_tests"


def letter(reason: str = "invalid_event", source: str = "sdk", payload: bytes = b'{"event":{}}') -> DeadLetter:
    return DeadLetter(source, "default", reason, '[{"code":"Required"}]', payload, received_at=1_700_000_000.0)


async def test_the_local_store_keeps_reason_source_bytes_and_time_and_counts_by_reason(tmp_path: Path) -> None:
    metrics = Metrics()
    store = LocalDeadLetterStore(tmp_path / "deadletters.db", metrics)
    await store.write([letter(), letter("upstream_rejected", "auth0", b"\x00raw\xff")])
    await store.close()
    with DeadLetterDb(tmp_path / "deadletters.db") as db:
        rows = db.list()
    assert [(r.source, r.destination, r.reason, r.payload, r.received_at) for r in rows] == [
        ("sdk", "default", "invalid_event", b'{"event":{}}', 1_700_000_000.0),
        ("auth0", "default", "upstream_rejected", b"\x00raw\xff", 1_700_000_000.0),
    ]
    sample = metrics.registry.get_sample_value
    assert sample("gateway_deadletters_total", {"source": "auth0", "reason": "upstream_rejected"}) == 1


async def test_a_dead_letter_that_cannot_be_written_is_reported_to_the_writer(tmp_path: Path) -> None:
    store = LocalDeadLetterStore(tmp_path / "deadletters.db", Metrics())
    store._db.execute("PRAGMA query_only=ON")  # fault injection: every write fails
    with pytest.raises(DeadLetterWriteError):
        await store.write([letter()])
    await store.close()


def dlq(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "gateway", "dlq", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    return out.returncode, out.stdout + out.stderr


async def run_dlq(*args: str) -> tuple[int, str]:
    return await asyncio.to_thread(dlq, *args)


def gateway_yaml(path: Path, upstream: str, data_dir: Path, policy: str) -> Path:
    config = {
        "upstream": {"url": upstream, "token": TOKEN},
        "data_dir": str(data_dir),
        "destinations": {"default": {"schema_policy": {"on_unknown_field": policy}}},
        "sources": {"sdk": {"type": "webhook", "format": "pangea", "destination": "default"}},
    }
    path.write_bytes(orjson.dumps(config))
    return path


async def stored_messages(server: LocalAuditServer, db_path: Path) -> list[str]:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE name LIKE 'records_%'")]
        return [
            str(m) for t in tables for (m,) in db.execute(f"SELECT json_extract(envelope, '$.event.message') FROM {t}")
        ]
    finally:
        db.close()


async def test_dlq_lists_shows_and_replays_with_the_fixed_config_and_keeps_what_still_fails(tmp_path: Path) -> None:
    audit_db = tmp_path / "audit.db"
    server = LocalAuditServer(LocalAuditSettings(listen_port=0, db_path=audit_db, default_token=SecretStr(TOKEN)))
    await server.start()
    data_dir = tmp_path / "data"
    try:
        broken = gateway_yaml(tmp_path / "broken.yaml", server.base_url, data_dir, "reject")
        fixed = gateway_yaml(tmp_path / "fixed.yaml", server.base_url, data_dir, "drop")

        # 1. The gateway refuses an event with a field the schema lacks: it is dead-lettered.
        from gateway.config import load_config

        gw = Gateway(
            load_config(broken),
            RunOptions(listen="127.0.0.1:0", admin_listen="127.0.0.1:0", data_dir=data_dir),
        )
        await gw.start()
        try:
            body = {"events": [{"event": {"message": "fine"}}, {"event": {"message": "late", "customer": "acme"}}]}
            url = f"http://127.0.0.1:{gw.intake_port}/v2/log"
            async with aiohttp.ClientSession() as s, s.post(url, json=body) as r:
                answer = await r.json()
                assert r.status == 400, answer
            assert answer["result"]["errors"][0]["source"] == "/events/1/event/customer"
        finally:
            await gw.stop()

        # 2. list and show
        code, out = await run_dlq("list", "--data-dir", str(data_dir))
        assert code == 0 and "invalid_event" in out and "1 not replayed" in out, out
        with DeadLetterDb(data_dir / "deadletters.db") as db:
            (row,) = db.list()
        code, out = await run_dlq("show", str(row.id), "--data-dir", str(data_dir))
        assert code == 0 and '"customer": "acme"' in out and "reason:          invalid_event" in out, out

        # 3. Replay with the config unchanged: it fails again and stays.
        code, out = await run_dlq("replay", "--all", "--config", str(broken))
        assert code == 1 and "replayed 0, failed 1" in out, out
        with DeadLetterDb(data_dir / "deadletters.db") as db:
            (row,) = db.list()
        assert row.replay_attempts == 1 and row.replay_error and "customer" in row.replay_error

        # 4. With the schema policy fixed it is re-normalized and reaches the upstream.
        code, out = await run_dlq("replay", "--reason", "invalid_event", "--config", str(fixed))
        assert code == 0 and "replayed 1, failed 0" in out, out
        assert sorted(await stored_messages(server, audit_db)) == ["fine", "late"]
        with DeadLetterDb(data_dir / "deadletters.db") as db:
            assert db.list() == []
            (done,) = db.list(include_replayed=True)
        assert done.replayed_at is not None and done.replayed_at <= time.time()
        code, out = await run_dlq("list", "--data-dir", str(data_dir))
        assert "0 not replayed" in out
    finally:
        await server.stop()


async def test_dlq_replay_of_an_upstream_rejected_item_uses_the_stored_item(tmp_path: Path) -> None:
    audit_db = tmp_path / "audit.db"
    server = LocalAuditServer(LocalAuditSettings(listen_port=0, db_path=audit_db, default_token=SecretStr(TOKEN)))
    await server.start()
    data_dir = tmp_path / "data"
    try:
        store = LocalDeadLetterStore(data_dir / "deadletters.db", Metrics())
        item = orjson.dumps({"event": {"message": "was refused upstream", "actor": "a"}})
        await store.write([letter("upstream_rejected", "auth0", item)])
        await store.close()
        config = tmp_path / "c.yaml"
        config.write_bytes(
            orjson.dumps(
                {
                    "upstream": {"url": server.base_url, "token": TOKEN},
                    "data_dir": str(data_dir),
                    "destinations": {"default": {}},
                    "sources": {"auth0": {"type": "webhook", "format": "auth0", "destination": "default"}},
                }
            )
        )
        code, out = await run_dlq("replay", "--id", "1", "--config", str(config))
        assert code == 0, out
        assert await stored_messages(server, audit_db) == ["was refused upstream"]
    finally:
        await server.stop()


def test_dlq_without_a_store_says_where_it_looked(tmp_path: Path) -> None:
    code, out = dlq("list", "--data-dir", str(tmp_path / "nowhere"))
    assert code != 0 and "no dead-letter store" in out


def test_the_dead_letter_config_requires_topic_and_brokers_for_kafka() -> None:
    from gateway.sinks.deadletter.config import DeadLetterConfig

    with pytest.raises(ValueError, match="topic and bootstrap_servers"):
        DeadLetterConfig.model_validate({"type": "kafka"})
    assert DeadLetterConfig().local_path(Path("/d")) == Path("/d/deadletters.db")
