"""Issue 14, done-when: pangea-sdk's logging calls get the same outcome through the gateway as
straight against the audit log: naive and offset timestamps, ``sign_local`` (whole-second and
offset timestamps included), ``log_bulk``, ``log_bulk_async`` + ``poll_result``, and the events
read back verify (``verify_events``) either way.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from pangea.config import PangeaConfig
from pangea.exceptions import AcceptedRequestException
from pangea.services import Audit
from pangea.services.audit.models import EventVerification, SearchOrder

from tests.support.procs import gateway

TOKEN = "pts_sidecar_sdk_logging_token"
PLUS2 = datetime.timezone(datetime.timedelta(hours=2))
TIMESTAMPS: dict[str, datetime.datetime] = {
    "naive": datetime.datetime(2026, 12, 2, 11, 48, 38, 708025),
    "naive whole second": datetime.datetime(2026, 12, 2, 11, 48, 38),
    "utc whole second": datetime.datetime(2026, 12, 2, 11, 48, 52, tzinfo=datetime.UTC),
    "offset": datetime.datetime(2026, 12, 2, 13, 48, 52, 123, tzinfo=PLUS2),
    "offset whole second": datetime.datetime(2026, 12, 2, 13, 48, 52, tzinfo=PLUS2),
}


def key_file(tmp: Path) -> str:
    path = tmp / "app.pem"
    key = ed25519.Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(path)


def run(audit: Audit, tag: str) -> list[Any]:
    """Every logging call of the SDK, tagged by actor; the outcome of each."""
    outcomes: list[Any] = []
    for name, ts in TIMESTAMPS.items():
        for signed in (False, True):
            r = audit.log(f"{name} signed={signed}", actor=tag, timestamp=ts, verbose=True, sign_local=signed)
            outcomes.append((r.status, r.result.signature_verification if r.result else None))
    bulk = audit.log_bulk([{"message": f"bulk {i}", "actor": tag} for i in range(3)], sign_local=True)
    outcomes.append((bulk.status, len(bulk.result.results) if bulk.result else None))
    accepted = audit.log_bulk_async([{"message": f"async {i}", "actor": tag} for i in range(2)])
    outcomes.append(accepted.status)
    for _ in range(100):  # the app polls until the result is there, as the SDK's own tests do
        try:
            done = audit.poll_result(response=accepted)
            break
        except AcceptedRequestException:
            continue
    outcomes.append(done.status)
    return outcomes


def read_back(audit: Audit, tag: str) -> list[tuple[str, Any, EventVerification | None]]:
    found = audit.search(f"actor:{tag}", order=SearchOrder.ASC, verify_events=True, limit=100)
    assert found.result is not None
    return [
        (e.envelope.event["message"], e.envelope.event.get("timestamp"), e.signature_verification)
        for e in found.result.events
    ]


def test_the_sdks_logging_calls_get_the_same_outcome_through_the_gateway_as_directly(tmp_path: Path) -> None:
    keys = key_file(tmp_path)
    with gateway(tmp_path, env={"AUDIT_GATEWAY_LOCAL_TOKEN": TOKEN}) as gw:
        cfg = {"poll_result_timeout": 30}
        via = Audit("any", config=PangeaConfig(base_url_template=gw.url(), **cfg), private_key_file=keys)
        direct = Audit(
            TOKEN, config=PangeaConfig(base_url_template=gw.url("local_audit"), **cfg), private_key_file=keys
        )
        assert run(via, "via") == run(direct, "direct")
        got, want = read_back(direct, "via"), read_back(direct, "direct")
    assert len(got) == len(want) == 2 * len(TIMESTAMPS) + 5
    assert [m for m, _, _ in got] == [m for m, _, _ in want]
    # Every signed event verifies when read back, because what the gateway stores is what the SDK
    # signed.  Straight to the audit log some do not: the SDK signs "…:52.000000Z" but sends
    # "…:52Z" (or a naive "…:38"), and the log stores what it was sent.
    signed = [m for m, _, _ in got if "signed=True" in m or m.startswith("bulk")]
    assert {m: v for m, _, v in got if m in signed} == dict.fromkeys(signed, EventVerification.PASS)
    assert {m: v for m, _, v in want if m in signed}["utc whole second signed=True"] == EventVerification.FAIL
    # unsigned: timestamps stored in the canonical UTC form; signed: in the form the SDK signed
    stamps = {m: t for m, t, _ in got}
    assert stamps["naive signed=False"] == "2026-12-02T11:48:38.708025Z"
    assert stamps["offset signed=False"] == "2026-12-02T11:48:52.000123Z"
    assert stamps["offset signed=True"] == "2026-12-02T13:48:52.000123+02:00"
    assert stamps["offset whole second signed=True"] == "2026-12-02T13:48:52.000000+02:00"
    assert stamps["utc whole second signed=True"] == "2026-12-02T11:48:52.000000Z"


def test_log_with_verify_gives_the_same_membership_and_consistency_results_as_directly(tmp_path: Path) -> None:
    with gateway(tmp_path, env={"AUDIT_GATEWAY_LOCAL_TOKEN": TOKEN}) as gw:
        via = Audit("any", config=PangeaConfig(base_url_template=gw.url()))
        direct = Audit(TOKEN, config=PangeaConfig(base_url_template=gw.url("local_audit")))

        def verifications(audit: Audit, tag: str) -> list[tuple[Any, Any]]:
            out = []
            for i in range(3):  # the 2nd and 3rd send prev_root: the root the previous answer gave
                r = audit.log(f"verified {i}", actor=tag, verbose=True, verify=True)
                assert r.result is not None and r.result.envelope is not None
                out.append((r.result.membership_verification, r.result.consistency_verification))
            return out

        got, want = verifications(via, "via"), verifications(direct, "direct")
    assert got == want
    assert got[1:] == [(EventVerification.PASS, EventVerification.PASS)] * 2


def test_log_stream_through_the_gateway_as_directly(tmp_path: Path) -> None:
    def stream(tag: str) -> dict[str, Any]:
        data = {"date": "2026-12-02T11:48:52.193Z", "type": "s", "description": f"stream {tag}", "user_id": tag}
        return {"logs": [{"log_id": f"log-{tag}", "data": data}]}

    with gateway(tmp_path, env={"AUDIT_GATEWAY_LOCAL_TOKEN": TOKEN}) as gw:
        via = Audit("any", config=PangeaConfig(base_url_template=gw.url()))
        direct = Audit(TOKEN, config=PangeaConfig(base_url_template=gw.url("local_audit")))
        got, want = via.log_stream(stream("via")), direct.log_stream(stream("direct"))
        assert (got.http_status, got.status) == (want.http_status, want.status) == (200, "Success")
        found = direct.search('message:"stream"', verify_events=False)
        assert found.result is not None
        assert len(found.result.events) == 2
