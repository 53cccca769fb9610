"""Issue 5, end to end: client-side ed25519 signing, verified by pangea-sdk's own verification.

One gateway process (embedded local audit log) for the module:

* destination ``signed`` signs every event with a key generated in tmp (``signing.private_key_file``);
  Auth0, HEC and an SDK route (``/signing/v2/log``) feed it;
* destination ``plain`` does not sign; the SDK route at the root feeds it, so events an SDK client
  signed itself (``private_key_file``, ``sign_local=True``) must reach the log byte for byte.

What landed is read back with ``Audit.search(..., verify_events=True)``; each event's
``signature_verification`` is what pangea-sdk's ``verify_signature`` says of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from pangea.services.audit.models import EventEnvelope, EventVerification
from pangea.services.audit.signing import Signer
from pangea.services.audit.util import canonicalize_event

from tests.integration.vendors.harness import (
    AUTH0_AUTHORIZATION,
    HEC_TOKEN,
    TOKEN,
    fixture_bytes,
    record_count,
    request,
    sdk,
    search_all,
)
from tests.support.procs import Proc, start_gateway


def write_key(path: Path) -> str:
    """A fresh ed25519 key as unencrypted PKCS#8 PEM; returns its SubjectPublicKeyInfo PEM."""
    key = ed25519.Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


class Keys:
    def __init__(self, tmp: Path) -> None:
        self.gateway_file = tmp / "gateway-signing.pem"
        self.gateway_public = write_key(self.gateway_file)
        self.sdk_file = tmp / "sdk-signing.pem"
        self.sdk_public = write_key(self.sdk_file)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("signing")
    config = tmp / "gateway.yaml"
    config.write_text(
        json.dumps(
            {
                "destinations": {
                    "signed": {
                        "schema": "standard",
                        "signing": {"private_key_file": str(keys.gateway_file), "public_key_info": {"kid": "gw-1"}},
                    },
                    "plain": {"schema": "standard"},
                },
                "sources": {
                    "auth0": {
                        "type": "webhook",
                        "format": "auth0",
                        "path": "/v1/log_stream",
                        "auth": {"header": "Authorization", "value": AUTH0_AUTHORIZATION},
                        "destination": "signed",
                    },
                    "hec": {
                        "type": "webhook",
                        "format": "splunk_hec",
                        "path": "/services/collector",
                        "auth": {"splunk_token": HEC_TOKEN},
                        "destination": "signed",
                    },
                    "sdk": {"type": "webhook", "format": "pangea", "destination": "plain"},
                    "sdk_signing": {"type": "webhook", "format": "pangea", "path": "/signing", "destination": "signed"},
                },
            }
        )
    )
    proc = start_gateway(tmp, config=config, env={"AUDIT_GATEWAY_LOCAL_TOKEN": TOKEN})
    try:
        yield proc
    finally:
        proc.terminate()


def new_events(gw: Proc, before: set[str]) -> list[Any]:
    return [e for e in search_all(sdk(gw.url("local_audit"))) if e.hash not in before]


def hashes(gw: Proc) -> set[str]:
    return {e.hash for e in search_all(sdk(gw.url("local_audit")))}


def public_key_pem(envelope: EventEnvelope) -> str:
    assert envelope.public_key
    info = json.loads(envelope.public_key)
    assert info["algorithm"] == "ED25519"
    return str(info["key"])


def test_a_signing_destination_signs_vendor_events_and_pangea_sdk_verifies_them(gw: Proc, keys: Keys) -> None:
    before = hashes(gw)
    reply = request(
        gw.url() + "/v1/log_stream",
        fixture_bytes("auth0_batch2_jsonobject.json"),
        {"Authorization": AUTH0_AUTHORIZATION, "Content-Type": "application/json"},
    )
    assert reply.status == 200, reply.body
    reply = request(
        gw.url() + "/services/collector",
        fixture_bytes("splunk_hec_batch_concatenated.txt"),
        {"Authorization": f"Splunk {HEC_TOKEN}"},
    )
    assert reply.status == 200, reply.body

    events = new_events(gw, before)
    assert len(events) == 4 + 7
    for e in events:
        assert e.envelope.signature, e.envelope.event
        assert public_key_pem(e.envelope) == keys.gateway_public
        assert json.loads(e.envelope.public_key)["kid"] == "gw-1"
        assert e.signature_verification == EventVerification.PASS, e.envelope.event
    # object values (Auth0 `details` → `new`) and datetimes are signed in their sent form
    assert any("new" in e.envelope.event and "timestamp" in e.envelope.event for e in events)

    # The verification is not vacuous: a changed event fails it.
    audit = sdk(gw.url("local_audit"))
    tampered = events[0].envelope.model_copy(deep=True)
    assert tampered.event is not None
    tampered.event["message"] = tampered.event["message"] + "!"
    assert audit.verify_signature(tampered) == EventVerification.FAIL


def test_sdk_events_without_a_signature_are_signed_by_the_gateway(gw: Proc, keys: Keys) -> None:
    client = sdk(gw.url() + "/signing")
    before = hashes(gw)
    resp = client.log_bulk(
        [{"message": "gateway-signed 1", "actor": "alice"}, {"message": "gateway-signed 2", "new": {"k": [1, 2]}}]
    )
    assert resp.success, resp.status
    events = new_events(gw, before)
    assert sorted(e.envelope.event["message"] for e in events) == ["gateway-signed 1", "gateway-signed 2"]
    for e in events:
        assert public_key_pem(e.envelope) == keys.gateway_public
        assert e.signature_verification == EventVerification.PASS


@pytest.mark.parametrize("prefix", ["", "/signing"], ids=["plain-destination", "signing-destination"])
def test_events_signed_by_an_sdk_client_are_stored_unchanged_and_verify(gw: Proc, keys: Keys, prefix: str) -> None:
    client = sdk(gw.url() + prefix, private_key_file=str(keys.sdk_file))
    sent: list[dict[str, Any]] = [
        {"message": f"sdk-signed{prefix} bulk 1", "actor": "bob", "action": "login", "status": "success"},
        {
            "message": f"sdk-signed{prefix} bulk 2",
            "target": "db-7",
            "timestamp": "2024-06-11T08:15:12.345000Z",
            "new": {"role": "admin", "scopes": ["a", "b"]},
        },
    ]
    before = hashes(gw)
    bulk = client.log_bulk([dict(e) for e in sent], sign_local=True)
    assert bulk.success, bulk.status
    single = client.log_event(
        {"message": f"sdk-signed{prefix} single", "tenant_id": "acme"}, sign_local=True, verify=True, verbose=True
    )
    assert single.success and single.result is not None, single.status
    assert single.result.signature_verification == EventVerification.PASS

    events = {e.envelope.event["message"]: e for e in new_events(gw, before)}
    assert len(events) == 3
    for e in events.values():
        # the client's key, not the gateway's: a client signature is never replaced
        assert public_key_pem(e.envelope) == keys.sdk_public
        assert e.signature_verification == EventVerification.PASS
    stored = events[f"sdk-signed{prefix} bulk 2"].envelope.event
    assert json.loads(stored["new"]) == sent[1]["new"]  # the SDK sent it as canonical JSON text
    assert stored["timestamp"] == "2024-06-11T08:15:12.345000Z"
    assert events[f"sdk-signed{prefix} bulk 1"].envelope.event == sent[0]


def test_a_client_signed_event_that_normalization_would_change_is_refused(gw: Proc, keys: Keys) -> None:
    before = record_count(gw.url("local_audit"))
    signer = Signer(str(keys.sdk_file))
    event = {"message": "signed with a number for actor", "actor": 5}
    item = {
        "event": event,
        "signature": signer.sign(canonicalize_event(event)),  # type: ignore[arg-type]
        "public_key": json.dumps({"algorithm": "ED25519", "key": keys.sdk_public}, separators=(",", ":")),
    }
    body = json.dumps({"events": [item]}).encode()
    reply = request(gw.url() + "/v2/log", body, {"Content-Type": "application/json"})
    assert reply.status == 400, reply.body
    [err] = reply.json()["result"]["errors"]
    assert err["source"] == "/events/0/event/actor" and err["code"] == "BadState"
    assert record_count(gw.url("local_audit")) == before
