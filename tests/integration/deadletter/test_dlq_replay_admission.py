"""``dlq replay`` admits a dead letter exactly as intake would: same mapping, restrictions, schema, signing.

Two drifts of the replay's former copy of intake (issue 13): for a ``json`` webhook with a
``map`` it refused the very record intake accepts (``UnexpectedProperty`` for each raw key),
and it sent events for a signing destination unsigned.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from pangea.services.audit.models import EventVerification
from pydantic import SecretStr

from gateway.app import Gateway, RunOptions
from gateway.config import load_config
from gateway.local_audit.server import LocalAuditServer
from gateway.local_audit.settings import LocalAuditSettings
from gateway.sinks.deadletter.base import DeadLetter
from gateway.sinks.deadletter.local import DeadLetterDb, LocalDeadLetterStore
from gateway.telemetry.metrics import Metrics
from tests.integration.deadletter.test_deadletters import run_dlq
from tests.integration.vendors.harness import sdk, search_all
from tests.integration.vendors.test_signing_e2e import write_key

TOKEN = "pts_replay_admission_tests"
MAP = {"message": "msg", "actor": "who", "new": "extra"}


def write_config(path: Path, upstream: str, data_dir: Path, **source: Any) -> Path:
    config = {
        "upstream": {"url": upstream, "token": TOKEN},
        "data_dir": str(data_dir),
        "destinations": {"default": {}},
        "sources": {"app": {"type": "webhook", "format": "json", "path": "/app", "destination": "default", **source}},
    }
    path.write_bytes(orjson.dumps(config))
    return path


async def post(config: Path, data_dir: Path, record: dict[str, Any]) -> int:
    """Runs the gateway with ``config``, posts ``record`` to the ``app`` source, returns the status."""
    gw = Gateway(load_config(config), RunOptions(listen="127.0.0.1:0", admin_listen="127.0.0.1:0", data_dir=data_dir))
    await gw.start()
    try:
        url = f"http://127.0.0.1:{gw.intake_port}/app"
        async with aiohttp.ClientSession() as s, s.post(url, json=record) as r:
            return r.status
    finally:
        await gw.stop()


async def stored_events(base_url: str) -> dict[str, dict[str, Any]]:
    """Stored events by message, read back (and verified) with pangea-sdk."""
    events = await asyncio.to_thread(search_all, sdk(base_url, TOKEN))
    return {e.envelope.event["message"]: e for e in events}


async def test_replay_admits_a_mapped_json_record_exactly_as_intake_does(tmp_path: Path) -> None:
    server = LocalAuditServer(
        LocalAuditSettings(listen_port=0, db_path=tmp_path / "audit.db", default_token=SecretStr(TOKEN))
    )
    await server.start()
    data_dir = tmp_path / "data"
    try:
        restricted = write_config(
            tmp_path / "restricted.yaml", server.base_url, data_dir, map=MAP, restrictions={"actor": ["bob"]}
        )
        fixed = write_config(tmp_path / "fixed.yaml", server.base_url, data_dir, map=MAP)

        # Refused at intake by a restriction: dead-lettered as received, {msg, who, extra}.
        assert await post(restricted, data_dir, {"msg": "replayed", "who": "alice", "extra": {"k": 1}}) == 403
        # With the restriction lifted, intake takes the same shape of record.
        assert await post(fixed, data_dir, {"msg": "admitted", "who": "alice", "extra": {"k": 1}}) == 200

        code, out = await run_dlq("replay", "--all", "--config", str(fixed))
        assert code == 0 and "replayed 1, failed 0" in out, out
        events = await stored_events(server.base_url)
        assert sorted(events) == ["admitted", "replayed"]
        replayed, admitted = events["replayed"].envelope.event, events["admitted"].envelope.event
        assert replayed == {**admitted, "message": "replayed"}
        assert replayed["actor"] == "alice" and orjson.loads(replayed["new"]) == {"k": 1}
        with DeadLetterDb(data_dir / "deadletters.db") as db:
            assert db.list() == []
    finally:
        await server.stop()


async def test_replay_signs_events_for_a_signing_destination(tmp_path: Path) -> None:
    server = LocalAuditServer(
        LocalAuditSettings(listen_port=0, db_path=tmp_path / "audit.db", default_token=SecretStr(TOKEN))
    )
    await server.start()
    data_dir = tmp_path / "data"
    try:
        public_pem = write_key(tmp_path / "signing.pem")
        # An Auth0 record refused at intake, as intake records it (the record's JSON).
        record = {"log_id": "90020240611", "data": {"type": "s", "date": "2024-06-11T08:15:12.345Z",
                                                     "user_name": "maria", "description": "Success Login"}}  # fmt: skip
        store = LocalDeadLetterStore(data_dir / "deadletters.db", Metrics())
        await store.write([DeadLetter("auth0", "signed", "invalid_event", "[]", orjson.dumps(record), 1.7e9)])
        await store.close()
        config = tmp_path / "signing.yaml"
        config.write_bytes(
            orjson.dumps(
                {
                    "upstream": {"url": server.base_url, "token": TOKEN},
                    "data_dir": str(data_dir),
                    "destinations": {
                        "signed": {"signing": {"private_key_file": str(tmp_path / "signing.pem")}},
                    },
                    "sources": {"auth0": {"type": "webhook", "format": "auth0", "destination": "signed"}},
                }
            )
        )
        code, out = await run_dlq("replay", "--all", "--config", str(config))
        assert code == 0 and "replayed 1, failed 0" in out, out
        [event] = (await stored_events(server.base_url)).values()
        assert event.envelope.event["actor"] == "maria"
        assert event.envelope.signature, event.envelope
        assert orjson.loads(event.envelope.public_key)["key"] == public_pem
        assert event.signature_verification == EventVerification.PASS
    finally:
        await server.stop()


async def test_replay_sends_to_a_destinations_own_kafka_sink(tmp_path: Path, kafka_bootstrap: str) -> None:
    import uuid

    from tests.kafka_broker import read_topic

    data_dir = tmp_path / "data"
    topic = f"archive.{uuid.uuid4().hex[:8]}"
    record = {"log_id": "90020240611", "data": {"type": "s", "date": "2024-06-11T08:15:12.345Z",
                                                 "user_name": "maria", "description": "Success Login"}}  # fmt: skip
    store = LocalDeadLetterStore(data_dir / "deadletters.db", Metrics())
    await store.write([DeadLetter("auth0", "archive", "invalid_event", "[]", orjson.dumps(record), 1.7e9)])
    await store.close()
    config = tmp_path / "archive.yaml"
    config.write_bytes(
        orjson.dumps(
            {
                # No audit log reachable there: replay must not send the archive's events to it.
                "upstream": {"url": "http://127.0.0.1:9", "token": TOKEN},
                "data_dir": str(data_dir),
                "destinations": {"archive": {"sink": {"type": "kafka", "bootstrap_servers": kafka_bootstrap,
                                                      "topic": topic}}},
                "sources": {"auth0": {"type": "webhook", "format": "auth0", "destination": "archive"}},
            }
        )
    )  # fmt: skip
    code, out = await run_dlq("replay", "--all", "--config", str(config))
    assert code == 0 and "replayed 1, failed 0" in out, out
    [message] = await read_topic(kafka_bootstrap, topic, 2, timeout=3.0)
    assert orjson.loads(message.value)["event"]["actor"] == "maria"  # type: ignore[attr-defined]


async def test_replay_refuses_the_events_of_a_pass_through_source(tmp_path: Path) -> None:
    """Their caller's token is not kept: replayed with the gateway's, they could land where the
    caller may not write.  The letter stays, with the reason, and nothing is sent upstream."""
    server = LocalAuditServer(
        LocalAuditSettings(listen_port=0, db_path=tmp_path / "audit.db", default_token=SecretStr(TOKEN))
    )
    await server.start()
    data_dir = tmp_path / "data"
    try:
        store = LocalDeadLetterStore(data_dir / "deadletters.db", Metrics())
        item = {"event": {"message": "from a caller"}}
        await store.write([DeadLetter("sdk", "default", "upstream_rejected", "[]", orjson.dumps(item), 1.7e9)])
        await store.close()
        config = tmp_path / "gateway.yaml"
        config.write_bytes(
            orjson.dumps(
                {
                    "upstream": {"url": server.base_url, "token": TOKEN},
                    "data_dir": str(data_dir),
                    "destinations": {"default": {}},
                    "sources": {
                        "sdk": {
                            "type": "webhook",
                            "format": "pangea",
                            "destination": "default",
                            "auth": {"pass_through": True},
                        }
                    },
                }
            )
        )
        code, out = await run_dlq("replay", "--all", "--config", str(config))
        assert code != 0 and "replayed 0, failed 1" in out and "passes its callers' tokens through" in out, out
        assert await stored_events(server.base_url) == {}
        with DeadLetterDb(data_dir / "deadletters.db") as db:
            assert len(db.list()) == 1
    finally:
        await server.stop()
