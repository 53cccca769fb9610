"""Issue 5, end to end: the issue's configuration as written, every vendor sample, real HTTP.

One ``audit-gateway run`` process (embedded local audit log, intake on 127.0.0.1) serves the whole
module.  Each test measures what it added to the local audit log (records before and after), so
tests do not depend on each other's order.  Expected mappings follow the fixtures README table and
the vendor modules' documented mappings (gateway/normalize/vendors/*.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.integration.vendors.harness import (
    AUTH0_AUTHORIZATION,
    GITHUB_SECRET,
    HEC_TOKEN,
    OKTA_SECRET,
    TOKEN,
    Reply,
    fixture_bytes,
    fixture_headers,
    github_signature,
    gzipped,
    record_count,
    request,
    sdk,
    search_all,
)
from tests.support.procs import REPO, VENDOR_FIXTURES, Proc, start_gateway

# The configuration of issue 5, verbatim, then the samples' secrets filled in.  No
# `upstream:` (the embedded local audit log) and no `listen:` (the tests pass 127.0.0.1:<port>).
ISSUE_CONFIG = """\
destinations:
  default:
    schema: standard
sources:
  auth0:
    type: webhook
    path: /v1/log_stream
    format: auth0
    auth: {header: Authorization, value: "Bearer <token>"}
    destination: default
  okta:
    type: webhook
    path: /webhooks/okta
    format: okta
    auth: {header: Authorization, value: "<shared secret>"}
    destination: default
  github:
    type: webhook
    path: /webhooks/github
    format: github
    auth: {hmac_sha256_secret: "<secret>"}
    destination: default
  hec:
    type: webhook
    path: /services/collector
    format: splunk_hec
    auth: {splunk_token: "<token>"}
    destination: default
"""


def issue_config() -> str:
    text = ISSUE_CONFIG.replace('"Bearer <token>"', f'"{AUTH0_AUTHORIZATION}"', 1)
    text = text.replace('"<shared secret>"', f'"{OKTA_SECRET}"').replace('"<secret>"', f'"{GITHUB_SECRET}"')
    text = text.replace('"<token>"', f'"{HEC_TOKEN}"')
    assert "<" not in text
    return text


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("vendors")
    config = tmp / "gateway.yaml"
    config.write_text(issue_config())
    proc = start_gateway(tmp, config=config, env={"AUDIT_GATEWAY_LOCAL_TOKEN": TOKEN})
    try:
        yield proc
    finally:
        proc.terminate()


def landed(gw: Proc, send: Callable[[], None]) -> list[dict[str, Any]]:
    """The events that ``send`` added to the local audit log (hashes verified by pangea-sdk)."""
    store = sdk(gw.url("local_audit"))
    before = {e.hash for e in search_all(store)}
    send()
    return [e.envelope.event for e in search_all(store) if e.hash not in before]


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def assert_mapped(events: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Each expected event landed exactly once with exactly these mapped fields (``None``: absent)."""
    assert len(events) == len(expected), [e.get("action") for e in events]
    unmatched = list(events)
    for exp in expected:
        key = {k: v for k, v in exp.items() if k in ("action", "timestamp", "message") and v is not None}
        matches = [
            ev
            for ev in unmatched
            if all((when(ev[k]) == when(v)) if k == "timestamp" and k in ev else ev.get(k) == v for k, v in key.items())
        ]
        assert len(matches) == 1, (exp, events)
        ev = matches[0]
        unmatched.remove(ev)
        for field, value in exp.items():
            if value is None:
                assert field not in ev, (field, ev)
            elif field == "timestamp":
                assert when(ev["timestamp"]) == when(value), ev
            else:
                assert ev.get(field) == value, (field, ev)
        assert len(ev.get("action", "")) <= 32


FIELDS = ("actor", "action", "target", "status", "source", "tenant_id", "timestamp", "message")


def row(*values: str | None) -> dict[str, str | None]:
    return dict(zip(FIELDS, values, strict=True))


# -- the configuration --------------------------------------------------------------------------


def test_the_issue_configuration_passes_check_config(gw: Proc) -> None:
    path = gw.log_path.parent / "gateway.yaml"
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(path)], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    assert "127.0.0.1" in gw.url()


# -- Auth0 ------------------------------------------------------------------------------------------

AUTH0_EXPECTED = [
    # actor, action, target, status, source, tenant_id, timestamp, message
    row("maria.lopez@acme.example", "s", "Acme Portal", "success", "203.0.113.24", None,
        "2024-06-11T08:15:12.345Z", "Success Login"),
    row(None, "f", "acme-prod.us.auth0.com", "failure", "198.51.100.77", None, "2024-06-11T08:16:09.876Z",
        "Callback URL mismatch. https://portal.acme.example/cb is not in the list of allowed callback URLs"),
    row("maria.lopez@acme.example", "fp", "Acme Portal", "failure", "198.51.100.77", None,
        "2024-06-11T08:17:33.001Z", "Wrong email or password."),
    row("maria.lopez@acme.example", "seacft", "Acme Portal", "success", "35.160.3.103", None,
        "2024-06-11T08:15:13.000Z", "Authorization Code for Access Token"),
    row("maria.lopez@acme.example", "slo", "Acme Portal", "success", "203.0.113.24", None,
        "2024-06-11T09:01:00.555Z", "Success Logout"),
    row("google-oauth2|104857600000000000001", "sapi", "/api/v2/clients", "success", "192.0.2.15", None,
        "2024-06-11T09:30:05.123Z", "Create a client"),
    row("Billing Worker", "fapi", "/api/v2/users/auth0%7C6668a1b2c3d4e5f601234567", "failure", "192.0.2.99", None,
        "2024-06-11T09:31:11Z", "Delete a user"),
    row("maria.lopez@acme.example", "limit_wc", "Acme Portal", "failure", "2001:db8:85a3::8a2e:370:7334", None,
        "2024-06-11T09:45:00Z",
        "An IP address is blocked with 10 failed login attempts into a single account from the same IP address."),
    row("old.contractor@acme.example", "du", "Username-Password-Authentication", "success", "192.0.2.15", None,
        "2024-06-11T09:59:59.999Z", "User has been deleted"),
    row("new.user@acme.example", "ss", "Acme Portal", "success", "203.0.113.50", None,
        "2024-06-12T10:10:10.101Z", "Success Signup"),
    row("weak.pw@acme.example", "fs", "Acme Portal", "failure", "203.0.113.51", None,
        "2024-06-12T10:11:11.222Z", "Password is too weak"),
    row("admin", "fu", "Acme Portal", "failure", "198.51.100.200", None,
        "2024-06-12T10:12:12.333Z", "Wrong email or password."),
    row("Acme Portal", "feacft", "acme-prod.us.auth0.com", "failure", "35.160.3.103", None,
        "2024-06-12T10:13:13.444Z", "Invalid authorization code"),
    row("kQ3xV8pL2sN5rT9wY1zA4bC6dE8fG0hJ", "w", "google-oauth2", "warning", "203.0.113.24", None,
        "2024-06-12T10:14:14.555Z",
        "You are using Auth0 development keys which are only intended for use in development and testing."),
    row("Acme Portal", "fsa", "https://api.acme.example", "failure", "203.0.113.24", None,
        "2024-06-12T10:15:15.666Z", "Login required"),
]  # fmt: skip


AUTH0_BODIES = ("auth0_batch1_jsonarray.json", "auth0_batch2_jsonobject.json", "auth0_batch3_jsonlines.jsonl")


def test_auth0_samples_in_all_three_content_formats_land_with_the_documented_mapping(gw: Proc) -> None:
    headers = fixture_headers("auth0_request_headers.json")
    assert headers["Authorization"] == AUTH0_AUTHORIZATION

    def send() -> None:
        for name in AUTH0_BODIES:
            reply = request(gw.url() + "/v1/log_stream", fixture_bytes(name), headers)
            assert reply.status == 200, (name, reply.body)
            assert reply.json()["status"] == "Success"

    events = landed(gw, send)
    assert_mapped(events, AUTH0_EXPECTED)
    sapi = next(e for e in events if e["action"] == "sapi")
    assert json.loads(sapi["new"])["response"]["statusCode"] == 201
    # Issue 17: each record keeps Auth0's log_id, so an auditor can find it in Auth0's console.
    sent_ids = set(re.findall(rb'"log_id"\s*:\s*"([^"]+)"', b"".join(fixture_bytes(n) for n in AUTH0_BODIES)))
    assert {json.loads(e["new"])["log_id"].encode() for e in events} == sent_ids
    assert len(sent_ids) == len(events)


def test_auth0_without_the_configured_authorization_is_refused_and_nothing_lands(gw: Proc) -> None:
    before = record_count(gw.url("local_audit"))
    body = fixture_bytes("auth0_batch1_jsonarray.json")
    for headers in (
        {"Content-Type": "application/json"},
        {"Content-Type": "application/json", "Authorization": "Bearer wrong"},
        {"Content-Type": "application/json", "Authorization": AUTH0_AUTHORIZATION.removeprefix("Bearer ")},
    ):
        reply = request(gw.url() + "/v1/log_stream", body, headers)
        assert reply.status == 401, reply.body
        assert reply.json()["status"] == "Unauthorized"
    assert record_count(gw.url("local_audit")) == before


# -- Okta ----------------------------------------------------------------------------------------------

OKTA_EXPECTED = [
    row("maria.lopez@acme.example", "user.session.start", None, "failure", "198.51.100.77", None,
        "2024-06-11T08:20:01.123Z", "User login to Okta"),
    row("maria.lopez@acme.example", "policy.evaluate_sign_on", "Default Policy, 00p1abvweGGDW10Ur4x6", "challenge",
        "198.51.100.77", None, "2024-06-11T08:20:15.456Z", "Evaluation of sign-on policy"),
    row("maria.lopez@acme.example", "user.session.start", None, "success", "198.51.100.77", None,
        "2024-06-11T08:20:31.789Z", "User login to Okta"),
    row("it.admin@acme.example", "user.lifecycle.deactivate", "old.contractor@acme.example", "success",
        "192.0.2.15", None, "2024-06-11T09:05:00Z", "Deactivate Okta user"),
    row("it.admin@acme.example", "group.user_membership.add", "new.hire@acme.example, Super Admins", "success",
        "192.0.2.15", None, "2024-06-11T09:06:12.345Z", "Add user to group membership"),
    row("new.hire@acme.example", "user.authentication.auth_via_mfa", None, "failure", "192.0.2.15", None,
        "2024-06-11T09:07:40Z", "Authentication of user via MFA"),
]  # fmt: skip


def test_okta_one_time_verification_echoes_the_challenge(gw: Proc) -> None:
    sample = json.loads(fixture_bytes("okta_verification_request.json"))
    headers = sample["request"]["headers"]
    reply = request(gw.url() + "/webhooks/okta", None, headers)
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json() == sample["expected_response"]["body"] == {"verification": "mVm1qbkA5SwPZ5r6Xb9Q1hSrJ2Kp0Dys"}
    # The auth header is checked when Okta sends it (it does), but not required.
    without = {k: v for k, v in headers.items() if k != "Authorization"}
    assert request(gw.url() + "/webhooks/okta", None, without).json() == {
        "verification": "mVm1qbkA5SwPZ5r6Xb9Q1hSrJ2Kp0Dys"
    }
    wrong = {**headers, "Authorization": "not-the-secret"}
    refused = request(gw.url() + "/webhooks/okta", None, wrong)
    assert refused.status == 401 and b"mVm1qbkA5SwPZ5r6Xb9Q1hSrJ2Kp0Dys" not in refused.body


def test_okta_event_hook_posts_answer_an_empty_200_and_land_with_the_documented_mapping(gw: Proc) -> None:
    headers = fixture_headers("okta_request_headers.json")
    assert headers["Authorization"] == OKTA_SECRET

    def send() -> None:
        for name in ("okta_eventhook_post1.json", "okta_eventhook_post2.json"):
            reply = request(gw.url() + "/webhooks/okta", fixture_bytes(name), headers)
            assert reply.status == 200 and reply.body == b"", (name, reply.status, reply.body)

    events = landed(gw, send)
    assert_mapped(events, OKTA_EXPECTED)
    group_add = next(e for e in events if e["action"] == "group.user_membership.add")
    assert [t["type"] for t in json.loads(group_add["new"])["target"]] == ["User", "UserGroup"]
    # Issue 17: each record keeps Okta's uuid.
    posts = [json.loads(fixture_bytes(n)) for n in ("okta_eventhook_post1.json", "okta_eventhook_post2.json")]
    uuids = [e["uuid"] for p in posts for e in p["data"]["events"]]
    assert sorted(json.loads(e["new"])["uuid"] for e in events) == sorted(uuids) and len(uuids) == len(events)


def test_okta_post_with_a_wrong_secret_is_refused_and_nothing_lands(gw: Proc) -> None:
    before = record_count(gw.url("local_audit"))
    reply = request(
        gw.url() + "/webhooks/okta",
        fixture_bytes("okta_eventhook_post1.json"),
        {"Content-Type": "application/json", "Authorization": OKTA_SECRET + "x"},
    )
    assert reply.status == 401 and reply.json()["status"] == "Unauthorized"
    assert record_count(gw.url("local_audit")) == before


# -- GitHub ----------------------------------------------------------------------------------------------

GITHUB_EXPECTED = [
    row("Codertocat", "repository.privatized", "Octocoders/Hello-World", None, None, "Octocoders", None,
        "GitHub repository privatized by Codertocat on Octocoders/Hello-World"),
    row("Codertocat", "organization.member_invited", "hacktocat", None, None, "Octocoders", None,
        "GitHub organization member_invited by Codertocat on hacktocat"),
]  # fmt: skip


def github_delivery(n: int) -> tuple[bytes, dict[str, str]]:
    [body] = (p.name for p in VENDOR_FIXTURES.glob(f"github_delivery{n}_*_body.json"))
    return fixture_bytes(body), fixture_headers(body.replace("_body", "_headers"))


def test_github_ping_is_answered_2xx_and_creates_no_record(gw: Proc) -> None:
    body, headers = github_delivery(1)
    assert headers["X-GitHub-Event"] == "ping"
    before = record_count(gw.url("local_audit"))
    reply = request(gw.url() + "/webhooks/github", body, headers)
    assert 200 <= reply.status < 300, reply.body
    assert record_count(gw.url("local_audit")) == before


def test_github_deliveries_are_verified_over_the_exact_bytes_and_land_with_the_readme_mapping(gw: Proc) -> None:
    sent: dict[str, dict[str, str]] = {}

    def send() -> None:
        for n in (2, 3):
            body, headers = github_delivery(n)
            assert headers["X-Hub-Signature-256"] == github_signature(body)  # the sample's own signature
            reply = request(gw.url() + "/webhooks/github", body, headers)
            assert reply.status == 200, reply.body
            sent[headers["X-GitHub-Delivery"]] = headers

    events = landed(gw, send)
    assert_mapped(events, GITHUB_EXPECTED)
    for ev in events:
        assert "timestamp" not in ev  # no event time in a delivery: the log's received_at stands
        # Issue 17: the unsigned headers the action came from are bound to the record as received.
        new = json.loads(ev["new"])
        headers = sent[new["X-GitHub-Delivery"]]
        assert new["X-GitHub-Event"] == headers["X-GitHub-Event"] == ev["action"].split(".")[0]
    assert len({json.loads(e["new"])["X-GitHub-Delivery"] for e in events}) == 2


def test_github_form_encoded_delivery_lands_like_the_json_one(gw: Proc) -> None:
    payload, headers = github_delivery(2)
    form = urllib.parse.urlencode({"payload": payload.decode()}).encode()
    headers = {**headers, "Content-Type": "application/x-www-form-urlencoded", "X-Hub-Signature-256": ""}
    headers["X-GitHub-Delivery"] = "9f1c2e30-27f6-11ef-8e4a-3c1d7e2f9a01"  # a new delivery, not a resend
    headers["X-Hub-Signature-256"] = github_signature(form)

    def send() -> None:
        reply = request(gw.url() + "/webhooks/github", form, headers)
        assert reply.status == 200, reply.body

    assert_mapped(landed(gw, send), GITHUB_EXPECTED[:1])


def test_github_wrong_or_missing_signature_is_401_and_nothing_lands(gw: Proc) -> None:
    body, headers = github_delivery(2)
    before = record_count(gw.url("local_audit"))
    variants: list[tuple[bytes, dict[str, str]]] = [
        (body, {**headers, "X-Hub-Signature-256": github_signature(body, "another secret")}),
        (body + b" ", headers),  # the signature no longer covers the bytes
        (body, {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"}),
        (body, {**headers, "X-Hub-Signature-256": headers["X-Hub-Signature"]}),  # sha1 is not accepted
    ]
    for data, hdrs in variants:
        reply = request(gw.url() + "/webhooks/github", data, hdrs)
        assert reply.status == 401, reply.body
        assert reply.json()["status"] == "Unauthorized"
    # a ping with a bad signature is refused too
    ping, ping_headers = github_delivery(1)
    assert request(gw.url() + "/webhooks/github", ping + b"\n", ping_headers).status == 401
    assert record_count(gw.url("local_audit")) == before


# -- Splunk HEC ----------------------------------------------------------------------------------------------

HEC_BATCH_EXPECTED = [
    row("maria-lopez", "repo.create", "acme-eng/payments-service", None, None, "acme-eng",
        "2024-06-11T11:21:03.961Z", "GitHub audit repo.create by maria-lopez on acme-eng/payments-service"),
    row("ci-bot", "api.request", "acme-eng", "200", "github.com", "acme-eng", "2024-06-11T11:21:05.102Z",
        "GitHub audit api.request by ci-bot on acme-eng"),
    row("jdoe", "protected_b~.rejected_ref_update", "acme-eng/payments-service", None, None, "acme-eng",
        "2024-06-11T11:21:10Z",
        "GitHub audit protected_branch.rejected_ref_update by jdoe on acme-eng/payments-service"),
    row("maria-lopez", "audit_log_streaming.update", "acme-corp", None, None, "acme-corp",
        "2024-06-11T11:21:20.123Z", "GitHub audit audit_log_streaming.update by maria-lopez on acme-corp"),
    row(None, None, None, None, None, None, "2024-06-11T11:21:30.5Z", "plain string event from a generic HEC client"),
    row(None, None, None, None, None, None, "2024-06-11T11:21:31Z", '{"level":"INFO","message":"first glued object"}'),
    row(None, None, None, None, None, None, "2024-06-11T11:21:32Z",
        '{"level":"WARN","message":"second glued object, no newline or comma"}'),
]  # fmt: skip

HEC_SINGLE_EXPECTED = [
    row("maria-lopez", "repo.create", "acme-eng/payments-service", None, "github.com", "acme-eng",
        "2024-06-11T11:21:03.961Z", "GitHub audit repo.create by maria-lopez on acme-eng/payments-service"),
]  # fmt: skip


def hec_headers(**extra: str) -> dict[str, str]:
    sample = json.loads(fixture_bytes("splunk_hec_request_headers.json"))
    headers = {k: v for k, v in sample["event_endpoint"]["headers"].items() if k != "Content-Encoding"}
    assert headers["Authorization"] == f"Splunk {HEC_TOKEN}"
    return {**headers, **extra}


def hec_ok(reply: Reply) -> None:
    assert reply.status == 200, reply.body
    assert reply.json() == {"text": "Success", "code": 0}


def resent(body: bytes, tag: str) -> bytes:
    """The same HEC records under new ``_document_id`` values: a new delivery, not a resend that
    deduplication would (rightly) drop."""
    return re.sub(rb'("_document_id"\s*:\s*")([^"]+)', lambda m: m.group(1) + m.group(2) + b"-" + tag.encode(), body)


def test_hec_single_event_on_the_event_endpoint_lands_mapped(gw: Proc) -> None:
    def send() -> None:
        body = fixture_bytes("splunk_hec_event_single.json")
        hec_ok(request(gw.url() + "/services/collector/event", body, hec_headers()))

    events = landed(gw, send)
    assert_mapped(events, HEC_SINGLE_EXPECTED)
    assert json.loads(events[0]["new"])["_document_id"] == "Nm4EoecTsz6kAS-87bAEfA"


def test_hec_concatenated_batch_on_the_collector_endpoint_lands_all_seven_events(gw: Proc) -> None:
    def send() -> None:
        body = resent(fixture_bytes("splunk_hec_batch_concatenated.txt"), "batch")
        hec_ok(request(gw.url() + "/services/collector", body, hec_headers()))

    assert_mapped(landed(gw, send), HEC_BATCH_EXPECTED)


def test_hec_gzip_body_and_basic_auth_are_accepted(gw: Proc) -> None:
    import base64

    basic = "Basic " + base64.b64encode(f"x:{HEC_TOKEN}".encode()).decode()

    def send() -> None:
        hec_ok(
            request(
                gw.url() + "/services/collector/event/1.0",
                gzipped(resent(fixture_bytes("splunk_hec_event_single.json"), "gzip")),
                hec_headers(**{"Content-Encoding": "gzip", "Authorization": basic}),
            )
        )

    assert_mapped(landed(gw, send), HEC_SINGLE_EXPECTED)


def test_hec_raw_endpoint_needs_a_channel_and_lands_one_event_per_line(gw: Proc) -> None:
    sample = json.loads(fixture_bytes("splunk_hec_request_headers.json"))["raw_endpoint"]
    body = fixture_bytes("splunk_hec_raw_body.txt")
    lines = [line for line in body.decode().splitlines() if line.strip()]
    before = record_count(gw.url("local_audit"))
    no_channel = {k: v for k, v in sample["headers"].items() if k != "X-Splunk-Request-Channel"}
    reply = request(gw.url() + "/services/collector/raw", body, no_channel)
    assert reply.status == 400 and reply.json() == {"text": "Data channel is missing", "code": 10}
    assert record_count(gw.url("local_audit")) == before

    def send() -> None:
        hec_ok(request(gw.url() + sample["path"], body, sample["headers"]))  # channel header
        hec_ok(request(gw.url() + "/services/collector/raw?channel=FE0ECFAD", body, no_channel))  # ?channel=

    events = landed(gw, send)
    assert sorted(e["message"] for e in events) == sorted(lines * 2)
    assert all(set(e) == {"message"} for e in events)


def test_hec_health_and_auth_answers_use_hec_codes(gw: Proc) -> None:
    health = request(gw.url() + "/services/collector/health")
    assert health.status == 200 and health.json() == {"text": "HEC is healthy", "code": 17}
    before = record_count(gw.url("local_audit"))
    body = fixture_bytes("splunk_hec_event_single.json")
    url = gw.url() + "/services/collector/event"
    cases = [
        ({"Content-Type": "application/json"}, 401, 2, "Token is required"),
        (hec_headers(Authorization=HEC_TOKEN), 401, 3, "Invalid authorization"),
        (hec_headers(Authorization="Bearer " + HEC_TOKEN), 401, 3, "Invalid authorization"),
        (hec_headers(Authorization="Splunk"), 401, 3, "Invalid authorization"),
        (hec_headers(Authorization="Splunk 00000000-0000-0000-0000-000000000000"), 403, 4, "Invalid token"),
    ]
    for headers, status, code, text in cases:
        reply = request(url, body, headers)
        assert (reply.status, reply.json()) == (status, {"text": text, "code": code}), headers
    for empty in (b"", b"  \n\t "):
        reply = request(url, empty, hec_headers())
        assert (reply.status, reply.json()) == (400, {"text": "No data", "code": 5})
    reply = request(url, b'{"time": 1}', hec_headers())
    assert reply.status == 400 and reply.json()["code"] == 12
    reply = request(url, b'{"event": ""}', hec_headers())
    assert reply.status == 400 and reply.json()["code"] == 13
    reply = request(url, b"[1, 2]", hec_headers())
    assert reply.status == 400 and reply.json()["code"] == 6
    assert record_count(gw.url("local_audit")) == before


def test_a_vendor_resend_after_a_lost_reply_creates_no_second_record(gw: Proc) -> None:
    body = fixture_bytes("okta_eventhook_post2.json")
    headers = {"Content-Type": "application/json", "Authorization": OKTA_SECRET}
    # The first delivery (an earlier test may have made it already; either way it is recorded).
    assert request(gw.url() + "/webhooks/okta", body, headers).status == 200
    before = metric(gw, 'gateway_duplicates_dropped_total{destination="default",source="okta"}')

    def send() -> None:
        assert request(gw.url() + "/webhooks/okta", body, headers).status == 200

    assert landed(gw, send) == []
    assert metric(gw, 'gateway_duplicates_dropped_total{destination="default",source="okta"}') == before + 3


def metric(gw: Proc, sample: str) -> float:
    with urllib.request.urlopen(gw.url("admin") + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(sample + " "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_no_configured_secret_reached_the_gateway_log(gw: Proc) -> None:
    log = gw.log()
    assert "gateway started" in log
    for secret in (AUTH0_AUTHORIZATION.removeprefix("Bearer "), OKTA_SECRET, GITHUB_SECRET, HEC_TOKEN, TOKEN):
        assert secret not in log
    assert "Traceback" not in log
