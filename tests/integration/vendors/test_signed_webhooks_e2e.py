"""Issue 17, end to end: timestamped webhook signatures with a replay window and key rotation.

A real ``audit-gateway run`` with the issue's ``auth.signature`` block verbatim (secrets from the
environment) on a ``format: json`` route, and ``preset: slack`` on another.  The vendors' samples
are re-signed here with the current time: the process's clock is the real one (the samples' own
signatures over past timestamps are checked with an injected clock in
``tests/unit/webhook/test_webhook_signatures.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.vendors.harness import TOKEN, Reply, healthy, record_count, request, sdk, search_all
from tests.integration.vendors.test_vendor_webhooks_e2e import assert_mapped, landed, row
from tests.support.procs import REPO, Proc, start_gateway

FIXTURES = REPO / "tests" / "fixtures" / "vendors"
SIGNING = json.loads((FIXTURES / "stripe_event_radar_early_fraud_warning_headers.json").read_bytes())["signing"]
CURRENT, PREVIOUS = SIGNING["secret_current"], SIGNING["secret_previous_rotated"]
RETIRED = "whsec_test_AuditGatewayRetiredSecret0000000000"
SLACK_SECRET = json.loads((FIXTURES / "slack_event_tokens_revoked_headers.json").read_bytes())["signing"][
    "signing_secret"
]
STRIPE_BODY = (FIXTURES / "stripe_event_radar_early_fraud_warning_body.json").read_bytes()
SLACK_BODY = (FIXTURES / "slack_event_tokens_revoked_body.json").read_bytes()

CONFIG = """\
destinations:
  default:
    schema: standard
sources:
  stripe:
    type: webhook
    path: /webhooks/stripe
    format: json
    map: {message: type, action: data.object.object, target: data.object.id, timestamp: created, new: id}
    destination: default
    auth:
      signature:
        header: Stripe-Signature            # where the signature travels
        format: "t={timestamp},v1={signature}"
        signed: "{timestamp}.{body}"         # what is signed
        algorithm: sha256                     # sha1 | sha256 | sha512
        encoding: hex                         # hex | base64
        tolerance_secs: 300                   # outside it: 401; a signature seen inside it: 401 (replay)
        secrets: ["${WEBHOOK_SECRET}", "${WEBHOOK_SECRET_PREVIOUS}"]
  slack:
    type: webhook
    path: /webhooks/slack
    format: json
    map: {message: event.type, action: event.type, tenant_id: team_id, timestamp: event_time, new: event_id}
    destination: default
    auth:
      signature: {preset: slack, secrets: ["${SLACK_SIGNING_SECRET}"]}
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("signed")
    config = tmp / "gateway.yaml"
    config.write_text(CONFIG)
    env = {
        "AUDIT_GATEWAY_LOCAL_TOKEN": TOKEN,
        "WEBHOOK_SECRET": CURRENT,
        "WEBHOOK_SECRET_PREVIOUS": PREVIOUS,
        "SLACK_SIGNING_SECRET": SLACK_SECRET,
    }
    proc = start_gateway(tmp, config=config, env=env)
    try:
        yield proc
    finally:
        proc.terminate()


def sign(secret: str, payload: bytes) -> str:
    return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def stripe_headers(body: bytes, *secrets: str, t: int | None = None) -> dict[str, str]:
    t = int(time.time()) if t is None else t
    sigs = ",".join(f"v1={sign(s, f'{t}.'.encode() + body)}" for s in secrets)
    return {"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": f"t={t},{sigs}"}


def stripe_event(n: int) -> bytes:
    """The sample as another event (new id): each test sends its own."""
    return STRIPE_BODY.replace(b"evt_1PQRsTExampleAuditEvt01", f"evt_1PQRsTExampleAuditEvt{n:02d}".encode())


def post(gw: Proc, path: str, body: bytes, headers: dict[str, str]) -> Reply:
    return request(gw.url() + path, body, headers)


def assert_unauthorized(reply: Reply) -> None:
    assert reply.status == 401, (reply.status, reply.body)
    assert reply.json()["status"] == "Unauthorized"
    for secret in (CURRENT, PREVIOUS, SLACK_SECRET):
        assert secret.encode() not in reply.body


def expected_stripe(evt: str) -> list[dict[str, str | None]]:
    return [
        {**row(None, "radar.early_fraud_warning", "issfr_1PQRsTExampleEfw00001", None, None, None,
               "2024-06-11T08:03:25Z", "radar.early_fraud_warning.created"), "new": evt}
    ]  # fmt: skip


def test_a_valid_signature_passes_and_the_event_lands_mapped(gw: Proc) -> None:
    body = stripe_event(1)
    events = landed(gw, lambda: assert_ok(post(gw, "/webhooks/stripe", body, stripe_headers(body, CURRENT, PREVIOUS))))
    assert_mapped(events, expected_stripe("evt_1PQRsTExampleAuditEvt01"))


def assert_ok(reply: Reply) -> None:
    assert reply.status == 200, (reply.status, reply.body)


def test_rotation_each_of_two_secrets_passes_alone(gw: Proc) -> None:
    def send() -> None:
        for n, secret in ((2, CURRENT), (3, PREVIOUS)):
            body = stripe_event(n)
            assert_ok(post(gw, "/webhooks/stripe", body, stripe_headers(body, secret)))

    events = landed(gw, send)
    assert sorted(e["new"] for e in events) == ["evt_1PQRsTExampleAuditEvt02", "evt_1PQRsTExampleAuditEvt03"]


def test_tampered_body_stale_timestamp_retired_secret_and_missing_signature_get_401(gw: Proc) -> None:
    before = record_count(gw.url("local_audit"))
    body = stripe_event(4)
    now = int(time.time())
    for data, headers in (
        (body.replace(b"made_with_stolen_card", b"card_never_received"), stripe_headers(body, CURRENT)),
        (body, stripe_headers(body, CURRENT, t=now - 301)),  # stale
        (body, stripe_headers(body, CURRENT, t=now + 3600)),  # from the future
        (body, stripe_headers(body, RETIRED)),
        (body, {"Content-Type": "application/json"}),
        (body, {"Stripe-Signature": "t=x,v1=zz"}),
    ):
        assert_unauthorized(post(gw, "/webhooks/stripe", data, headers))
    assert record_count(gw.url("local_audit")) == before
    assert healthy(gw)


def test_a_replayed_signature_inside_the_window_gets_401_and_is_not_stored_again(gw: Proc) -> None:
    body = stripe_event(5)
    headers = stripe_headers(body, CURRENT, PREVIOUS)
    events = landed(gw, lambda: assert_ok(post(gw, "/webhooks/stripe", body, headers)))
    assert [e["new"] for e in events] == ["evt_1PQRsTExampleAuditEvt05"]
    t = headers["Stripe-Signature"].split(",")[0]
    only_previous = f"{t},{headers['Stripe-Signature'].split(',')[2]}"
    before = record_count(gw.url("local_audit"))
    for replay in (headers, {**headers, "Stripe-Signature": only_previous}):
        assert_unauthorized(post(gw, "/webhooks/stripe", body, replay))
    assert record_count(gw.url("local_audit")) == before


def test_a_refused_request_may_be_retried_with_the_same_signature(gw: Proc) -> None:
    body = stripe_event(6).replace(b'"type": "radar', b'"kind": "radar')  # no message: refused (400)
    headers = stripe_headers(body, CURRENT)
    first = post(gw, "/webhooks/stripe", body, headers)
    assert first.status == 400, first.body
    again = post(gw, "/webhooks/stripe", body, headers)  # the sender's retry, not a replay
    assert again.status == 400, again.body


def test_slack_preset_verifies_and_refuses_a_replay_and_a_stale_request(gw: Proc) -> None:
    t = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": t,
        "X-Slack-Signature": "v0=" + sign(SLACK_SECRET, f"v0:{t}:".encode() + SLACK_BODY),
    }
    events = landed(gw, lambda: assert_ok(post(gw, "/webhooks/slack", SLACK_BODY, headers)))
    assert_mapped(
        events,
        [{**row(None, "tokens_revoked", None, None, None, "T0EXAMPLE01", "2024-06-11T08:04:10Z", "tokens_revoked"),
          "new": "Ev0EXAMPLE077"}],
    )  # fmt: skip
    assert_unauthorized(post(gw, "/webhooks/slack", SLACK_BODY, headers))
    old = str(int(time.time()) - 600)
    stale = {**headers, "X-Slack-Request-Timestamp": old}
    stale["X-Slack-Signature"] = "v0=" + sign(SLACK_SECRET, f"v0:{old}:".encode() + SLACK_BODY)
    assert_unauthorized(post(gw, "/webhooks/slack", SLACK_BODY, stale))


def test_a_replay_after_a_restart_is_still_refused_inside_the_window(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG)
    env = {
        "AUDIT_GATEWAY_LOCAL_TOKEN": TOKEN,
        "WEBHOOK_SECRET": CURRENT,
        "WEBHOOK_SECRET_PREVIOUS": PREVIOUS,
        "SLACK_SIGNING_SECRET": SLACK_SECRET,
    }
    body = stripe_event(7)
    headers = stripe_headers(body, CURRENT)
    first = start_gateway(tmp_path, config=config, env=env)
    try:
        assert_ok(post(first, "/webhooks/stripe", body, headers))
    finally:
        first.terminate()
    again = start_gateway(tmp_path, config=config, env=env)  # same data dir: the accepted signature is on disk
    try:
        assert_unauthorized(post(again, "/webhooks/stripe", body, headers))
        assert [e["new"] for e in stored_events(again)] == ["evt_1PQRsTExampleAuditEvt07"]
    finally:
        again.terminate()


def stored_events(gw: Proc) -> list[dict[str, Any]]:
    return [e.envelope.event for e in search_all(sdk(gw.url("local_audit")))]
