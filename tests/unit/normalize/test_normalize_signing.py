"""Client-side signing: what Signer produces is what pangea-sdk produces, and the SDK verifies it."""

from __future__ import annotations

import copy
import datetime
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from pangea.services.audit.audit import AuditBase
from pangea.services.audit.models import EventEnvelope, EventVerification
from pangea.services.audit.signing import Verifier

from gateway.errors import ConfigError
from gateway.normalize.schema import EventInvalid, Schema
from gateway.normalize.signing import Signer

EVENT: dict[str, Any] = {
    "message": 'Ünïcode message with "quotes" and \n newline',
    "actor": "maria.lopez@acme.example",
    "action": "login",
    "status": "success",
    "timestamp": "2024-06-11T08:15:12.345000Z",
    "tenant_id": "acme",
}


def write_pem(tmp_path: Path) -> Path:
    key = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "key.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def write_openssh(tmp_path: Path) -> Path:
    key = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "id_ed25519"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    return path


def sdk_item(key_file: Path, event: dict[str, Any], public_key_info: dict[str, str] | None = None) -> dict[str, Any]:
    sdk = AuditBase(private_key_file=str(key_file), public_key_info=dict(public_key_info or {}))
    log = sdk._process_log(copy.deepcopy(event), sign_local=True)
    return {"event": log.event, "signature": log.signature, "public_key": log.public_key}


def sdk_verifies(item: dict[str, Any]) -> bool:
    # What the SDK does with a search result or a verbose log answer: the envelope as stored.
    stored = orjson.loads(orjson.dumps(item))  # it travels as JSON
    envelope = EventEnvelope(
        event=stored["event"], signature=stored["signature"], public_key=stored["public_key"],
        received_at=datetime.datetime(2024, 6, 11, 8, 15, 13, tzinfo=datetime.UTC),
    )  # fmt: skip
    return AuditBase().verify_signature(envelope) == EventVerification.PASS


@pytest.mark.parametrize("writer", [write_pem, write_openssh])
def test_signed_item_is_byte_for_byte_what_the_sdk_sends(tmp_path: Path, writer: Any) -> None:
    key_file = writer(tmp_path)
    ours = Signer.from_pem_file(key_file).sign_item(EVENT)
    assert ours == sdk_item(key_file, EVENT)
    assert orjson.dumps(ours) == orjson.dumps(sdk_item(key_file, EVENT))


def test_the_sdk_verifies_our_signature(tmp_path: Path) -> None:
    item = Signer.from_pem_file(write_pem(tmp_path)).sign_item(EVENT)
    assert sdk_verifies(item)
    public_key = json.loads(item["public_key"])
    assert public_key["algorithm"] == "ED25519"
    assert public_key["key"].startswith("-----BEGIN PUBLIC KEY-----")


def test_a_changed_event_fails_sdk_verification(tmp_path: Path) -> None:
    item = Signer.from_pem_file(write_pem(tmp_path)).sign_item(EVENT)
    item["event"] = dict(item["event"], actor="someone.else")
    assert not sdk_verifies(item)


def test_signing_a_normalized_custom_event_with_object_values_matches_the_sdk(tmp_path: Path) -> None:
    key_file = write_pem(tmp_path)
    raw = {"message": {"b": [1, "é"], "a": None}, "new": {"x": 1}, "old": None, "timestamp": 1718093712}
    normalized = Schema.standard().normalize(raw)
    ours = Signer.from_pem_file(key_file).sign_item(normalized)
    assert ours == sdk_item(key_file, normalized)
    assert sdk_verifies(ours)
    # The SDK given the raw object values canonicalizes them to the same text.
    sdk_raw = sdk_item(key_file, {k: v for k, v in raw.items() if k != "timestamp"})
    assert sdk_raw["event"]["message"] == normalized["message"]


def test_public_key_info_is_included_like_the_sdk(tmp_path: Path) -> None:
    key_file = write_pem(tmp_path)
    info = {"key_id": "k-2024"}
    ours = Signer.from_pem_file(key_file, info).sign_item(EVENT)
    assert ours == sdk_item(key_file, EVENT, info)
    assert json.loads(ours["public_key"])["key_id"] == "k-2024"
    assert Verifier().verify_signature(
        ours["signature"],
        json.dumps(ours["event"], ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode(),
        json.loads(ours["public_key"])["key"],
    )


def test_public_key_fits_the_upstream_limit(tmp_path: Path) -> None:
    assert len(Signer.from_pem_file(write_pem(tmp_path)).public_key) <= 256
    with pytest.raises(ConfigError):
        Signer.from_pem_file(write_pem(tmp_path), {"note": "x" * 300})


def test_unusable_key_files_are_config_errors_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.pem"):
        Signer.from_pem_file(tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    with pytest.raises(ConfigError, match=r"garbage\.pem"):
        Signer.from_pem_file(garbage)
    rsa_file = tmp_path / "rsa.pem"
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_file.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(ConfigError, match="ed25519"):
        Signer.from_pem_file(rsa_file)


# -- client-signed events with date-times: the form sent is the form the signature verifies over


def _sdk_item(tmp_path: Path, timestamp: datetime.datetime) -> dict[str, Any]:
    """One ``{event, signature, public_key}`` exactly as pangea-sdk sends it with ``sign_local=True``."""
    from pangea.config import PangeaConfig
    from pangea.services.audit.audit import Audit
    from pangea.services.audit.models import Event
    from pydantic_core import to_jsonable_python

    audit = Audit(
        "token", config=PangeaConfig(base_url_template="http://127.0.0.1:9"), private_key_file=str(write_pem(tmp_path))
    )
    req = audit._get_log_request(Event(message="m", timestamp=timestamp), sign_local=True, verify=False, verbose=None)
    item: dict[str, Any] = to_jsonable_python(req.model_dump(exclude_none=True), exclude_none=True)
    return item


def _sdk_verifies(item: dict[str, Any], sent: dict[str, Any]) -> bool:
    envelope = EventEnvelope(
        event=sent,
        signature=item["signature"],
        public_key=item["public_key"],
        received_at=datetime.datetime.now(datetime.UTC),
    )
    return AuditBase.verify_signature(AuditBase.__new__(AuditBase), envelope) == EventVerification.PASS


_PLUS2 = datetime.timezone(datetime.timedelta(hours=2))


@pytest.mark.parametrize(
    ("timestamp", "sent_as", "stored"),
    [
        # naive (datetime.now()): the SDK sends no offset and signs the canonical UTC text
        (
            datetime.datetime(2026, 12, 2, 11, 48, 52, 708025),
            "2026-12-02T11:48:52.708025",
            "2026-12-02T11:48:52.708025Z",
        ),
        # whole second: sent "…:52Z", signed "…:52.000000Z"
        (
            datetime.datetime(2026, 12, 2, 11, 48, 52, tzinfo=datetime.UTC),
            "2026-12-02T11:48:52Z",
            "2026-12-02T11:48:52.000000Z",
        ),
        # an offset with microseconds: signed as sent, so passed through byte-identical (not rewritten to Z)
        (
            datetime.datetime(2026, 12, 2, 13, 48, 52, 123, tzinfo=_PLUS2),
            "2026-12-02T13:48:52.000123+02:00",
            "2026-12-02T13:48:52.000123+02:00",
        ),
        # a whole-second offset: sent "…:52+02:00", signed "…:52.000000+02:00"
        (
            datetime.datetime(2026, 12, 2, 13, 48, 52, tzinfo=_PLUS2),
            "2026-12-02T13:48:52+02:00",
            "2026-12-02T13:48:52.000000+02:00",
        ),
    ],
)
def test_sdk_signed_timestamps_are_sent_in_the_form_their_signature_verifies_over(
    tmp_path: Path, timestamp: datetime.datetime, sent_as: str, stored: str
) -> None:
    item = _sdk_item(tmp_path, timestamp)
    assert item["event"]["timestamp"] == sent_as
    extras = {"signature": item["signature"], "public_key": item["public_key"]}
    out = Schema.standard().normalize_signed(item["event"], extras)
    assert out == {"message": "m", "timestamp": stored}
    assert _sdk_verifies(item, out)


def test_a_signed_event_whose_signature_verifies_over_no_form_is_refused(tmp_path: Path) -> None:
    item = _sdk_item(tmp_path, datetime.datetime(2026, 12, 2, 11, 48, 52, tzinfo=datetime.UTC))
    other = _sdk_item(tmp_path, datetime.datetime(2026, 12, 2, 11, 48, 53, tzinfo=datetime.UTC))
    extras = {"signature": other["signature"], "public_key": item["public_key"]}  # a signature of another event
    with pytest.raises(EventInvalid) as info:
        Schema.standard().normalize_signed(item["event"], extras)
    assert [(e["code"], e["source"]) for e in info.value.errors] == [("BadState", "")]
    # and one already in its sent form, signed by someone else's key
    canonical = {"message": "m", "timestamp": "2026-12-02T11:48:52.000000Z"}
    with pytest.raises(EventInvalid):
        Schema.standard().normalize_signed(
            canonical, {"signature": other["signature"], "public_key": item["public_key"]}
        )
