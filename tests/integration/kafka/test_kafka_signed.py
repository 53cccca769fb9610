"""Producer-signed events through Kafka: stored byte for byte, verified by pangea-sdk.

A producer that signs with the SDK (``Signer`` over ``canonicalize_event``) publishes
``{"event", "signature", "public_key"}`` values.  The gateway must keep all three, unchanged;
a signed event that normalization (or key mapping) would change goes to the dead-letter topic
instead of reaching the log with a broken signature.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from pangea.config import PangeaConfig
from pangea.services.audit.audit import Audit
from pangea.services.audit.models import EventVerification
from pangea.services.audit.signing import Signer
from pangea.services.audit.util import canonicalize_event

from gateway.kafka.deadletter import HEADER_OFFSET, HEADER_REASON
from tests.integration.kafka.test_kafka_e2e import TOKEN, run_gateway, wait_committed_to_end, wait_stored, write_config
from tests.kafka_broker import produce, read_topic
from tests.support.procs import Proc, local_audit


@pytest.fixture
def la(tmp_path: Path) -> Iterator[Proc]:
    with local_audit(tmp_path, TOKEN) as proc:
        yield proc


def signed_value(signer: Signer, public_pem: str, event: dict[str, Any]) -> bytes:
    item = {
        "event": event,
        "signature": signer.sign(canonicalize_event(event)),  # type: ignore[arg-type]
        "public_key": json.dumps({"algorithm": "ED25519", "key": public_pem}, separators=(",", ":")),
    }
    return json.dumps(item).encode()


async def test_producer_signed_events_keep_their_signature_and_changed_ones_are_dead_lettered(
    tmp_path: Path, la: Proc, kafka_bootstrap: str, topic: str, group_id: str
) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    key_file = tmp_path / "producer.pem"
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    signer = Signer(str(key_file))
    good = [
        {"message": "signed 1", "actor": "bob", "timestamp": "2024-06-11T08:15:12.345000Z"},
        {"message": "signed 2", "new": '{"role":"admin"}', "tenant_id": "acme"},
        # signed as sent, in another spelling than the canonical one: passed through byte-identical
        {"message": "signed 3", "timestamp": "2024-06-11T10:15:12.345+02:00"},
    ]
    changed = {"message": "signed, with a number the schema would make a string", "actor": 5}
    values = [signed_value(signer, public_pem, e) for e in good]
    values.insert(1, signed_value(signer, public_pem, changed))
    await produce(kafka_bootstrap, topic, values, keys=[b"k"] * len(values))  # one partition, in order

    gw = run_gateway(tmp_path, write_config(tmp_path, la.url("local_audit"), kafka_bootstrap, topic, group_id), "s")
    try:
        async with aiohttp.ClientSession() as s:
            await wait_stored(s, la, 3, 60, gw)
        await wait_committed_to_end(kafka_bootstrap, group_id, topic)
        dlq = await read_topic(kafka_bootstrap, f"{topic}.dlq", 1)
    finally:
        gw.terminate()

    [letter] = dlq
    headers = dict(letter.headers)  # type: ignore[attr-defined]
    assert headers[HEADER_REASON] == b"invalid_event" and headers[HEADER_OFFSET] == b"1"
    assert letter.value == values[1]  # type: ignore[attr-defined]

    audit = Audit(TOKEN, config=PangeaConfig(base_url_template=la.url("local_audit")))
    found = audit.search(query="", verify_events=True, limit=10)
    assert found.result is not None
    stored = {e.envelope.event["message"]: e for e in found.result.events}
    assert sorted(stored) == ["signed 1", "signed 2", "signed 3"]
    for sent in good:
        e = stored[sent["message"]]
        assert e.envelope.event == sent  # byte for byte: nothing respelled, nothing added
        assert json.loads(e.envelope.public_key)["key"] == public_pem
        assert e.signature_verification == EventVerification.PASS
