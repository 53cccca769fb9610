"""Timestamped webhook signatures (issue 17): the vendors' own signed samples, an injected clock.

The samples carry Stripe's and Slack's real signatures over fixed past timestamps, so the
verifier's clock is injected (a few seconds after the stamp) instead of re-signing them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.errors import AuthError
from gateway.sources.webhook.auth import SignatureVerifier
from gateway.sources.webhook.config import SignatureAuth, WebhookSourceConfig

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "vendors"
STRIPE = json.loads((FIXTURES / "stripe_event_radar_early_fraud_warning_headers.json").read_bytes())
STRIPE_BODY = (FIXTURES / "stripe_event_radar_early_fraud_warning_body.json").read_bytes()
SLACK = json.loads((FIXTURES / "slack_event_tokens_revoked_headers.json").read_bytes())
SLACK_BODY = (FIXTURES / "slack_event_tokens_revoked_body.json").read_bytes()
STRIPE_T = STRIPE["signing"]["t"]
CURRENT = STRIPE["signing"]["secret_current"]
PREVIOUS = STRIPE["signing"]["secret_previous_rotated"]

# The issue's block, as written (secrets filled in).
ISSUE_BLOCK: dict[str, Any] = {
    "header": "Stripe-Signature",
    "format": "t={timestamp},v1={signature}",
    "signed": "{timestamp}.{body}",
    "algorithm": "sha256",
    "encoding": "hex",
    "tolerance_secs": 300,
    "secrets": [CURRENT, PREVIOUS],
}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def req(headers: dict[str, str]) -> web.Request:
    return make_mocked_request("POST", "/webhooks/stripe", headers=headers)


def stripe(header: str) -> web.Request:
    return req({"Stripe-Signature": header, "Content-Type": "application/json"})


def verifier(block: dict[str, Any] | None = None, now: float = STRIPE_T + 5) -> tuple[SignatureVerifier, Clock]:
    clock = Clock(now)
    return SignatureVerifier(SignatureAuth.model_validate(block or ISSUE_BLOCK), clock), clock


def refused(v: SignatureVerifier, request: web.Request, body: bytes) -> str:
    with pytest.raises(AuthError) as info:
        v.verify(request, body)
    return info.value.message


def test_stripe_sample_verifies_with_either_secret_of_a_rotation() -> None:
    v, _ = verifier()
    assert v.verify(stripe(STRIPE["headers"]["Stripe-Signature"]), STRIPE_BODY) is not None
    for header in (
        STRIPE["variants_for_tests"]["only_current_secret"],
        STRIPE["variants_for_tests"]["only_previous_secret"],
    ):
        fresh, _ = verifier()
        assert fresh.verify(stripe(header), STRIPE_BODY) is not None


def test_stripe_tampered_body_signature_or_shifted_timestamp_is_refused() -> None:
    v, _ = verifier()
    good = STRIPE["headers"]["Stripe-Signature"]
    assert refused(v, stripe(good), STRIPE_BODY + b" ") == "invalid signature"
    assert refused(v, stripe(good), json.dumps(json.loads(STRIPE_BODY)).encode()) == "invalid signature"
    assert refused(v, stripe(STRIPE["variants_for_tests"]["tampered_signature"]), STRIPE_BODY) == "invalid signature"
    shifted = STRIPE["variants_for_tests"]["shifted_timestamp_same_sig"]
    assert refused(v, stripe(shifted), STRIPE_BODY) == "invalid signature"
    assert refused(v, req({}), STRIPE_BODY).startswith("malformed")
    assert refused(v, stripe("t=1718093012"), STRIPE_BODY).startswith("malformed")


def test_a_retired_secret_is_refused() -> None:
    v, _ = verifier({**ISSUE_BLOCK, "secrets": [CURRENT]})
    assert refused(v, stripe(STRIPE["variants_for_tests"]["only_previous_secret"]), STRIPE_BODY) == "invalid signature"
    assert v.verify(stripe(STRIPE["variants_for_tests"]["only_current_secret"]), STRIPE_BODY) is not None


def test_a_timestamp_outside_the_tolerance_is_refused_either_way() -> None:
    header = STRIPE["headers"]["Stripe-Signature"]
    for now in (STRIPE_T + 301, STRIPE_T - 301):
        v, _ = verifier(now=now)
        assert refused(v, stripe(header), STRIPE_BODY) == "signature timestamp outside the tolerance"
    v, _ = verifier(now=STRIPE_T + 300)
    assert v.verify(stripe(header), STRIPE_BODY) is not None


def test_a_signature_seen_inside_the_window_is_a_replay_even_with_the_other_secret() -> None:
    v, clock = verifier()
    key = v.verify(stripe(STRIPE["variants_for_tests"]["only_current_secret"]), STRIPE_BODY)
    assert key is not None
    for header in (STRIPE["headers"]["Stripe-Signature"], STRIPE["variants_for_tests"]["only_previous_secret"]):
        assert refused(v, stripe(header), STRIPE_BODY) == "signature already used (replay)"
    clock.now = STRIPE_T + 301  # past the window the timestamp is refused anyway, and the entry is dropped
    assert refused(v, stripe(STRIPE["headers"]["Stripe-Signature"]), STRIPE_BODY).startswith("signature timestamp")
    assert len(v._seen) == 0


def test_a_released_signature_may_be_retried() -> None:
    v, _ = verifier()
    header = STRIPE["headers"]["Stripe-Signature"]
    key = v.verify(stripe(header), STRIPE_BODY)
    assert key is not None
    v.release(key)  # the request failed (e.g. 503): the sender's retry is not a replay
    assert v.verify(stripe(header), STRIPE_BODY) == key


def test_slack_preset_verifies_the_sample_and_slacks_documented_vector() -> None:
    signing = SLACK["signing"]
    v, _ = verifier({"preset": "slack", "secrets": [signing["signing_secret"]]}, now=signing["timestamp"] + 2)
    headers = {k: SLACK["headers"][k] for k in ("X-Slack-Request-Timestamp", "X-Slack-Signature")}
    assert v.verify(req(headers), SLACK_BODY) is not None
    assert refused(v, req(headers), SLACK_BODY) == "signature already used (replay)"
    assert refused(v, req({**headers, "X-Slack-Request-Timestamp": "1718093051"}), SLACK_BODY) == "invalid signature"
    assert refused(v, req({"X-Slack-Signature": headers["X-Slack-Signature"]}), SLACK_BODY).startswith("missing")

    doc = SLACK["doc_known_answer_vector"]
    body = (FIXTURES / doc["body_file"]).read_bytes()
    v, _ = verifier({"preset": "slack", "secrets": [doc["signing_secret"]]}, now=int(doc["X-Slack-Request-Timestamp"]))
    dh = {"X-Slack-Request-Timestamp": doc["X-Slack-Request-Timestamp"], "X-Slack-Signature": doc["X-Slack-Signature"]}
    assert v.verify(req(dh), body) is not None


def test_the_stripe_preset_equals_the_issue_block() -> None:
    preset = SignatureAuth.model_validate({"preset": "stripe", "secrets": [CURRENT]})
    block = SignatureAuth.model_validate({**ISSUE_BLOCK, "secrets": [CURRENT]})
    assert preset.model_dump(exclude={"preset", "secrets"}) == block.model_dump(exclude={"preset", "secrets"})


def test_other_algorithms_and_base64_encoding() -> None:
    import base64
    import hashlib
    import hmac

    block = {"header": "X-Sig", "format": "sha512={signature}", "signed": "{body}", "algorithm": "sha512",
             "encoding": "base64", "secrets": ["k"]}  # fmt: skip
    v, _ = verifier(block)
    sig = base64.b64encode(hmac.new(b"k", b"body", hashlib.sha512).digest()).decode()
    assert v.verify(req({"X-Sig": f"sha512={sig}"}), b"body") is None  # no timestamp: no window, no replay key
    assert refused(v, req({"X-Sig": f"sha512={sig}"}), b"bodY") == "invalid signature"


@pytest.mark.parametrize(
    "block,error",
    [
        ({"header": "X", "format": "{timestamp}", "signed": "{body}", "secrets": ["k"]}, "needs {signature}"),
        ({"header": "X", "format": "{signature}", "signed": "{timestamp}", "secrets": ["k"]}, "needs {body}"),
        (
            {"header": "X", "format": "{signature}", "signed": "{timestamp}.{body}", "secrets": ["k"]},
            "timestamp_header",
        ),
        (
            {"header": "X", "format": "t={timestamp},v1,s={signature}", "signed": "{body}", "secrets": ["k"]},
            "must be name=",
        ),
        ({"preset": "stripe", "secrets": ["", ""]}, "non-empty secret"),
        ({"preset": "stripe", "secrets": []}, "at least 1"),
        ({"preset": "stripe", "secrets": ["k"], "algorithm": "md5"}, "algorithm"),
        ({"preset": "github", "secrets": ["k"]}, "preset"),
    ],
)
def test_bad_signature_blocks_are_config_errors(block: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        SignatureAuth.model_validate(block)


def test_signature_auth_is_refused_on_formats_with_their_own_token() -> None:
    for fmt in ("pangea", "splunk_hec"):
        with pytest.raises(ValueError, match=r"auth\.signature: not for format"):
            WebhookSourceConfig.model_validate(
                {"type": "webhook", "format": fmt, "destination": "d",
                 "auth": {"signature": {"preset": "stripe", "secrets": ["k"]}}}
            )  # fmt: skip


def test_secrets_never_reach_the_config_repr() -> None:
    cfg = SignatureAuth.model_validate(ISSUE_BLOCK)
    assert CURRENT not in repr(cfg) and PREVIOUS not in str(cfg.model_dump())
