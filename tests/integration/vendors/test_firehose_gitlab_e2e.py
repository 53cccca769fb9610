"""Issue 17, end to end: Firehose (CloudTrail, CloudWatch Logs) and GitLab audit streaming webhooks.

One ``audit-gateway run`` process serves the module with the issue's configuration (the Firehose
source verbatim, its key from the environment).  Every sample is posted over loopback and each
event is found in the local audit log, mapped field by field.  Samples are copied into
``tests/fixtures/vendors`` (cited in its README).
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.vendors.harness import TOKEN, gzipped, healthy, record_count, request
from tests.integration.vendors.test_vendor_webhooks_e2e import assert_mapped, landed, row
from tests.support.procs import REPO, Proc, start_gateway

FIXTURES = REPO / "tests" / "fixtures" / "vendors"
FIREHOSE_KEY = "fh-access-key-3f9c2d7e-EXAMPLE-not-a-secret"
GITLAB_TOKEN = "g3Lq8Zt2Vx9Kp4Rm7Ns1Wc5Y"

# The Firehose source verbatim; then a CloudWatch Logs route and GitLab as the issue shows them.
CONFIG = """\
destinations:
  default:
    schema: standard
sources:
  cloudtrail:
    type: webhook
    path: /webhooks/firehose
    format: firehose
    records: cloudtrail
    auth: {header: X-Amz-Firehose-Access-Key, value: "${FIREHOSE_ACCESS_KEY}"}
    destination: default
  cloudwatch:
    type: webhook
    path: /webhooks/firehose-cwl
    format: firehose
    records: cloudwatch_logs
    auth: {header: X-Amz-Firehose-Access-Key, value: "${FIREHOSE_ACCESS_KEY}"}
    destination: default
    max_body_bytes: 65536
  app_json:
    type: webhook
    path: /webhooks/firehose-json
    format: firehose
    auth: {header: X-Amz-Firehose-Access-Key, value: "${FIREHOSE_ACCESS_KEY}"}
    destination: default
    map: {message: msg, actor: user.name, action: {const: app.event}}
  app_raw:
    type: webhook
    path: /webhooks/firehose-raw
    format: firehose
    records: raw
    auth: {header: X-Amz-Firehose-Access-Key, value: "${FIREHOSE_ACCESS_KEY}"}
    destination: default
  gitlab:
    type: webhook
    path: /webhooks/gitlab
    format: gitlab
    auth: {header: X-Gitlab-Event-Streaming-Token, value: "${GITLAB_STREAMING_TOKEN}"}
    destination: default
    max_body_bytes: 65536
    max_json_depth: 16
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("firehose")
    config = tmp / "gateway.yaml"
    config.write_text(CONFIG)
    env = {
        "AUDIT_GATEWAY_LOCAL_TOKEN": TOKEN,
        "FIREHOSE_ACCESS_KEY": FIREHOSE_KEY,
        "GITLAB_STREAMING_TOKEN": GITLAB_TOKEN,
    }
    proc = start_gateway(tmp, config=config, env=env)
    try:
        yield proc
    finally:
        proc.terminate()


def sample(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def sample_headers(name: str) -> dict[str, str]:
    headers: dict[str, str] = json.loads(sample(name))["headers"]
    return {k: v for k, v in headers.items() if k not in ("Host", "Content-Length")}


def assert_firehose_ok(reply: Any, request_id: str) -> None:
    """200 with exactly ``{requestId, timestamp}``, as Firehose requires."""
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert set(body) == {"requestId", "timestamp"}, body
    assert body["requestId"] == request_id
    assert isinstance(body["timestamp"], int) and body["timestamp"] > 1_700_000_000_000


def assert_firehose_refused(reply: Any, status: int | None = None, request_id: str | None = None) -> None:
    """A 4xx with Firehose's error body ``{requestId, timestamp, errorMessage}`` and no trace."""
    assert 400 <= reply.status < 500 if status is None else reply.status == status, (reply.status, reply.body)
    body = reply.json()
    assert set(body) == {"requestId", "timestamp", "errorMessage"}, body
    assert isinstance(body["timestamp"], int) and body["errorMessage"]
    assert "Traceback" not in body["errorMessage"]
    if request_id is not None:
        assert body["requestId"] == request_id


def new_of(event: dict[str, Any]) -> dict[str, Any]:
    new: dict[str, Any] = json.loads(event["new"])
    return new


def firehose_body(records: list[bytes], request_id: str = "3f1d7c2a-0000-4000-8000-000000000001") -> bytes:
    recs = [{"data": base64.b64encode(r).decode()} for r in records]
    return json.dumps({"requestId": request_id, "timestamp": 1718095500123, "records": recs}).encode()


def firehose_headers(request_id: str = "3f1d7c2a-0000-4000-8000-000000000001") -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Amz-Firehose-Request-Id": request_id,
        "X-Amz-Firehose-Access-Key": FIREHOSE_KEY,
    }


# -- Firehose: CloudTrail -----------------------------------------------------------------------

MARIA = "arn:aws:iam::111122223333:user/maria.lopez"
JDOE = "arn:aws:sts::111122223333:assumed-role/OpsAdmin/jdoe"
CI = "arn:aws:sts::111122223333:assumed-role/ci-deployer/gha-run-9402117731"

CLOUDTRAIL_A = [
    # actor, action, target, status, source, tenant_id, timestamp, message
    row(MARIA, "signin:ConsoleLogin", None, "success", "198.51.100.77", "111122223333", "2024-06-11T08:20:01Z",
        f"AWS signin.amazonaws.com ConsoleLogin by {MARIA}"),
    row(JDOE, "iam:CreateUser", "svc-backup-reader", "success", "203.0.113.10", "111122223333",
        "2024-06-11T08:24:37Z", f"AWS iam.amazonaws.com CreateUser by {JDOE}"),
    row(CI, "s3:PutBucketPolicy", "arn:aws:s3:::example-audit-archive", "failure", "203.0.113.45", "111122223333",
        "2024-06-11T08:30:12Z", f"AWS s3.amazonaws.com PutBucketPolicy by {CI}: AccessDenied: Access Denied"),
    row("arn:aws:iam::111122223333:root", "iam:DeactivateMFADevice", "maria.lopez", "success", "192.0.2.200",
        "111122223333", "2024-06-11T08:41:27Z",
        "AWS iam.amazonaws.com DeactivateMFADevice by arn:aws:iam::111122223333:root"),
]  # fmt: skip
CLOUDTRAIL_A_IDS = {
    "signin:ConsoleLogin": "3b1f0c52-5d6e-4a2b-9f7e-1c2d3e4f5a61",
    "iam:CreateUser": "a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d",
    "s3:PutBucketPolicy": "c4d5e6f7-0819-4a2b-bc3d-4e5f60718293",
}


def test_firehose_gzip_cloudtrail_delivery_lands_mapped_and_its_retry_is_not_stored_twice(gw: Proc) -> None:
    url = gw.url() + "/webhooks/firehose"
    rid = "ed4acda5-034f-4f42-bba1-f29aea6d7d8f"

    def send() -> None:
        headers = sample_headers("firehose_a_cloudtrail_events_gzip_headers.json")
        assert headers["Content-Encoding"] == "gzip"
        assert_firehose_ok(request(url, sample("firehose_a_cloudtrail_events_body.json.gz"), headers), rid)

    events = landed(gw, send)
    assert_mapped(events, CLOUDTRAIL_A)
    for ev in events:
        new = new_of(ev)
        if ev["action"] in CLOUDTRAIL_A_IDS:
            assert new["eventID"] == CLOUDTRAIL_A_IDS[ev["action"]], new
        assert new["eventSource"] and new["eventName"] and new["awsRegion"]
    # Firehose retries the same request id (here uncompressed): every record is already stored.
    again = landed(
        gw,
        lambda: assert_firehose_ok(
            request(
                url,
                sample("firehose_a_cloudtrail_events_body.json"),
                sample_headers("firehose_a_cloudtrail_events_headers.json"),
            ),
            rid,
        ),
    )
    assert again == []


def test_firehose_eventbridge_envelopes_and_a_cloudtrail_log_file_land_one_event_each(gw: Proc) -> None:
    url = gw.url() + "/webhooks/firehose"
    headers = sample_headers("firehose_c_eventbridge_and_logfile_headers.json")
    events = landed(
        gw,
        lambda: assert_firehose_ok(
            request(url, sample("firehose_c_eventbridge_and_logfile_body.json"), headers),
            "c2b7e9d4-1f0a-4b3c-a6d5-8e7f9a0b1c2d",
        ),
    )
    assert_mapped(
        events,
        [
            row(MARIA, "signin:ConsoleLogin", None, "success", "198.51.100.78", "111122223333",
                "2024-06-11T09:00:15Z", f"AWS signin.amazonaws.com ConsoleLogin by {MARIA}"),
            row(JDOE, "iam:AttachRolePolicy", "ci-deployer", "success", "203.0.113.10", "111122223333",
                "2024-06-11T09:01:02Z", f"AWS iam.amazonaws.com AttachRolePolicy by {JDOE}"),
            row(MARIA, "cloudtrail:UpdateTrail", "myTrail2", "failure", "198.51.100.77", "111122223333",
                "2024-06-11T09:02:40Z", f"AWS cloudtrail.amazonaws.com UpdateTrail by {MARIA}: TrailNotFoundException:"
                " Unknown trail: myTrail2 for the user: 111122223333"),
            row(MARIA, "iam:CreateRole", "CrossAccountAuditor", "success", "198.51.100.77", "111122223333",
                "2024-06-11T09:03:05Z", f"AWS iam.amazonaws.com CreateRole by {MARIA}"),
        ],
    )  # fmt: skip
    decoded = json.loads(sample("firehose_c_eventbridge_and_logfile_decoded.json"))
    # The envelope's id is EventBridge's; the vendor id kept is the CloudTrail eventID in `detail`.
    want = {
        decoded["records"][0]["decoded"]["detail"]["eventID"],
        decoded["records"][1]["decoded"]["detail"]["eventID"],
    }
    want |= {r["eventID"] for r in decoded["records"][2]["decoded"]["Records"]}
    assert {new_of(e)["eventID"] for e in events} == want


def test_firehose_cloudwatch_logs_skips_the_control_message_and_lands_each_log_event(gw: Proc) -> None:
    url = gw.url() + "/webhooks/firehose-cwl"
    headers = {**sample_headers("firehose_b_cwl_subscription_headers.json")}
    events = landed(
        gw,
        lambda: assert_firehose_ok(
            request(url, sample("firehose_b_cwl_subscription_body.json"), headers),
            "7b21c5e0-9d3a-4e61-8c2f-5a9e0b1d4c77",
        ),
    )
    assert_mapped(
        events,
        [
            row(JDOE, "cloudtrail:StopLogging", "arn:aws:cloudtrail:us-east-1:111122223333:trail/org-management-trail",
                "success", "203.0.113.10", "111122223333", "2024-06-11T08:50:44Z",
                f"AWS cloudtrail.amazonaws.com StopLogging by {JDOE}"),
            row("sam.okafor", "signin:ConsoleLogin", None, "failure", "192.0.2.66", "111122223333",
                "2024-06-11T08:51:09Z", "AWS signin.amazonaws.com ConsoleLogin by sam.okafor: Failed authentication"),
            row(MARIA, "iam:CreateAccessKey", "svc-backup-reader", "success", "198.51.100.77", "111122223333",
                "2024-06-11T08:52:30Z", f"AWS iam.amazonaws.com CreateAccessKey by {MARIA}"),
        ],
    )  # fmt: skip
    assert {new_of(e)["eventID"] for e in events} == {
        "e7f8a9b0-c1d2-4e3f-9a4b-5c6d7e8f9a0b",
        "f0e1d2c3-b4a5-4968-8776-5a4b3c2d1e0f",
        "0b1c2d3e-4f5a-4b6c-9d7e-8f9a0b1c2d3e",
    }


def test_firehose_cloudwatch_log_lines_that_are_not_cloudtrail_land_as_messages(gw: Proc) -> None:
    msg = {
        "messageType": "DATA_MESSAGE",
        "owner": "111122223333",
        "logGroup": "/aws/lambda/payments",
        "logStream": "2024/06/11/[$LATEST]abc",
        "subscriptionFilters": ["audit"],
        "logEvents": [
            {"id": "3830345716639815122561328673428", "timestamp": 1718095844000, "message": "user x denied"}
        ],
    }
    rid = "3f1d7c2a-0000-4000-8000-00000000c001"
    body = firehose_body([gzip.compress(json.dumps(msg).encode())], rid)
    events = landed(
        gw, lambda: assert_firehose_ok(request(gw.url() + "/webhooks/firehose-cwl", body, firehose_headers(rid)), rid)
    )
    assert_mapped(
        events, [row(None, None, "/aws/lambda/payments", None, None, None, "2024-06-11T08:50:44Z", "user x denied")]
    )
    assert new_of(events[0]) == {
        "id": "3830345716639815122561328673428",
        "logGroup": "/aws/lambda/payments",
        "logStream": "2024/06/11/[$LATEST]abc",
        "owner": "111122223333",
    }


def test_firehose_wrong_or_missing_access_key_gets_401_with_firehose_error_body(gw: Proc) -> None:
    before = record_count(gw.url("local_audit"))
    headers = sample_headers("firehose_a_cloudtrail_events_headers.json")
    rid = headers["X-Amz-Firehose-Request-Id"]
    body = sample("firehose_a_cloudtrail_events_body.json")
    for bad in (
        {**headers, "X-Amz-Firehose-Access-Key": "wrong"},
        {**headers, "X-Amz-Firehose-Access-Key": FIREHOSE_KEY[:-1]},
        {k: v for k, v in headers.items() if k != "X-Amz-Firehose-Access-Key"},
    ):
        reply = request(gw.url() + "/webhooks/firehose", body, bad)
        assert_firehose_refused(reply, 401, rid)
        assert FIREHOSE_KEY.encode() not in reply.body
    assert record_count(gw.url("local_audit")) == before


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


HOSTILE_FIREHOSE: dict[str, tuple[bytes, dict[str, str]]] = {
    "truncated": (sample("firehose_a_cloudtrail_events_body.json")[:-40], {}),
    "not an object": (b'["records"]', {}),
    "records not an array": (b'{"requestId":"r1","timestamp":1,"records":{"data":"e30="}}', {}),
    "no request id": (b'{"timestamp":1,"records":[]}', {}),
    "request id a number": (b'{"requestId":7,"timestamp":1,"records":[]}', {}),
    "timestamp a string": (b'{"requestId":"r1","timestamp":"1","records":[]}', {}),
    "data a number": (b'{"requestId":"r1","timestamp":1,"records":[{"data":5}]}', {}),
    "data not base64": (b'{"requestId":"r1","timestamp":1,"records":[{"data":"%%%not-b64"}]}', {}),
    "data truncated json": (firehose_body([b'{"eventName":"X","eventSource":"y.amazonaws.com"']), {}),
    "data deep json": (
        firehose_body([b'{"eventName":"X","eventSource":"iam.amazonaws.com","requestParameters":' + _deep(100) + b"}"]),
        {},
    ),
    "outer deep json": (b'{"requestId":"r1","timestamp":1,"records":' + _deep(5000) + b"}", {}),
    "Records not an array": (firehose_body([b'{"Records":{"eventName":"x"}}']), {}),
    "not gzip body": (b"\x1f\x8bnot gzip at all", {"Content-Encoding": "gzip"}),
    "oversized": (b'{"requestId":"r1","timestamp":1,"records":[' + b'{"data":"e30="},' * 700_000 + b"]}", {}),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_FIREHOSE))
def test_firehose_hostile_bodies_get_a_clear_4xx_and_land_nothing(gw: Proc, name: str) -> None:
    body, extra = HOSTILE_FIREHOSE[name]
    before = record_count(gw.url("local_audit"))
    reply = request(gw.url() + "/webhooks/firehose", body, {**firehose_headers(), **extra})
    assert_firehose_refused(reply)
    if name == "oversized":
        assert reply.status == 413
    assert record_count(gw.url("local_audit")) == before
    assert healthy(gw)


@pytest.mark.parametrize(
    "name,record",
    [
        ("gzip bomb", gzip.compress(b"{" + b" " * 5_000_000 + b"}")),
        ("truncated gzip", gzip.compress(b'{"messageType":"DATA_MESSAGE","logEvents":[]}')[:-6]),
        ("unknown messageType", gzip.compress(b'{"messageType":"OTHER","logEvents":[]}')),
        ("logEvents not an array", gzip.compress(b'{"messageType":"DATA_MESSAGE","logEvents":"x"}')),
    ],
)
def test_firehose_hostile_cloudwatch_records_get_a_clear_4xx_and_land_nothing(
    gw: Proc, name: str, record: bytes
) -> None:
    before = record_count(gw.url("local_audit"))
    reply = request(gw.url() + "/webhooks/firehose-cwl", firehose_body([record]), firehose_headers())
    assert_firehose_refused(reply, 400)
    assert record_count(gw.url("local_audit")) == before
    assert healthy(gw)


def test_firehose_an_unmappable_record_is_refused_alone_and_the_retry_stores_nothing_twice(gw: Proc) -> None:
    good = json.loads(sample("firehose_a_cloudtrail_events_decoded.json"))["records"][1]["decoded"]
    good = {**good, "eventID": "11111111-2222-4333-8444-555555555555"}
    rid = "3f1d7c2a-0000-4000-8000-0000000bad01"
    body = firehose_body([json.dumps(good).encode(), b'{"eventName": 5}'], rid)
    replies: list[Any] = []
    events = landed(gw, lambda: replies.append(request(gw.url() + "/webhooks/firehose", body, firehose_headers(rid))))
    assert_firehose_refused(replies[0], 400, rid)
    assert "/records/1" in replies[0].json()["errorMessage"]
    assert [new_of(e)["eventID"] for e in events] == ["11111111-2222-4333-8444-555555555555"]
    # Firehose retries the whole batch: the stored record is not stored again.
    again = landed(gw, lambda: request(gw.url() + "/webhooks/firehose", body, firehose_headers(rid)))
    assert again == []


def test_firehose_json_records_map_with_the_source_map_and_each_event_is_stored_once(gw: Proc) -> None:
    rid = "3f1d7c2a-0000-4000-8000-00000000j501"
    records = [
        b'{"msg": "exported report", "user": {"name": "ana"}}',
        b'{"msg": "line one", "user": {"name": "bo"}}\n{"msg": "line two", "user": {"name": "cy"}}\n',
    ]
    body = firehose_body(records, rid)
    url = gw.url() + "/webhooks/firehose-json"
    events = landed(gw, lambda: assert_firehose_ok(request(url, body, firehose_headers(rid)), rid))
    assert_mapped(
        events,
        [
            {"message": "exported report", "actor": "ana", "action": "app.event"},
            {"message": "line one", "actor": "bo", "action": "app.event"},
            {"message": "line two", "actor": "cy", "action": "app.event"},
        ],
    )
    assert landed(gw, lambda: assert_firehose_ok(request(url, body, firehose_headers(rid)), rid)) == []


def test_firehose_raw_records_become_messages(gw: Proc) -> None:
    rid = "3f1d7c2a-0000-4000-8000-00000000r401"
    body = firehose_body([b"sshd[812]: Accepted publickey for ops\n", "caf\u00e9 \u2603".encode()], rid)
    url = gw.url() + "/webhooks/firehose-raw"
    events = landed(gw, lambda: assert_firehose_ok(request(url, body, firehose_headers(rid)), rid))
    assert sorted(e["message"] for e in events) == ["caf\u00e9 \u2603", "sshd[812]: Accepted publickey for ops"]


# -- GitLab -------------------------------------------------------------------------------------------

GITLAB_EXPECTED = [
    row("Dana Whitfield", "personal_access_token_created", "Dana Whitfield", None, "198.51.100.23", "dwhitfield",
        "2024-06-11T08:31:02.114Z", "Created personal access token with id 90217"),
    row("Dana Whitfield", "project_visibility_level_updated", "billing-service", None, "198.51.100.23",
        "acme-platform/billing-service", "2024-06-11T08:33:47.902Z", "Changed visibility_level from Private to Public"),
    row("Dana Whitfield", "member_created", "Sam Okafor", None, "198.51.100.23", "acme-platform",
        "2024-06-11T08:35:10.377Z", "Membership created"),
]  # fmt: skip
GITLAB_SAMPLES = (
    "gitlab_event1_personal_access_token_created",
    "gitlab_event2_project_visibility_level_updated",
    "gitlab_event3_member_created",
)


def test_gitlab_streamed_events_land_mapped_and_a_repeat_is_not_stored_twice(gw: Proc) -> None:
    url = gw.url() + "/webhooks/gitlab"

    def send() -> None:
        for name in GITLAB_SAMPLES:
            headers = sample_headers(f"{name}_headers.json")
            assert headers["Content-Type"] == "application/x-www-form-urlencoded"  # GitLab's, for a JSON body
            reply = request(url, sample(f"{name}_body.json"), headers)
            assert reply.status == 200, reply.body

    events = landed(gw, send)
    assert_mapped(events, GITLAB_EXPECTED)
    assert {str(new_of(e)["id"]) for e in events} == {"1284077", "1284102", "1284133"}
    assert new_of(next(e for e in events if e["action"] == "member_created"))["details"]["as"] == "Developer"

    # The same event again, its integer id now a string: GitLab's id is one id.
    event3 = json.loads(sample("gitlab_event3_member_created_body.json"))
    headers = sample_headers("gitlab_event3_member_created_headers.json")

    def resend() -> None:
        for body in (
            sample("gitlab_event3_member_created_body.json"),
            json.dumps({**event3, "id": "1284133"}).encode(),
        ):
            assert request(url, body, headers).status == 200

    assert landed(gw, resend) == []


def test_gitlab_without_the_streaming_token_is_refused_and_nothing_lands(gw: Proc) -> None:
    before = record_count(gw.url("local_audit"))
    body = sample("gitlab_event1_personal_access_token_created_body.json")
    headers = sample_headers("gitlab_event1_personal_access_token_created_headers.json")
    for bad in (
        {k: v for k, v in headers.items() if k != "X-Gitlab-Event-Streaming-Token"},
        {**headers, "X-Gitlab-Event-Streaming-Token": "wrong"},
    ):
        reply = request(gw.url() + "/webhooks/gitlab", body, bad)
        assert reply.status == 401 and reply.json()["status"] == "Unauthorized"
        assert GITLAB_TOKEN.encode() not in reply.body
    assert record_count(gw.url("local_audit")) == before


GITLAB_EVENT = json.loads((FIXTURES / "gitlab_event2_project_visibility_level_updated_body.json").read_bytes())
HOSTILE_GITLAB: dict[str, bytes] = {
    "truncated": json.dumps(GITLAB_EVENT).encode()[:-30],
    "empty": b"",
    "a string": b'"event"',
    "deep": json.dumps({**GITLAB_EVENT, "details": json.loads("[" * 40 + "]" * 40)}).encode(),
    "oversized": json.dumps({**GITLAB_EVENT, "pad": "x" * 70_000}).encode(),
    "details a string": json.dumps({**GITLAB_EVENT, "details": "x"}).encode(),
    "no id": json.dumps({k: v for k, v in GITLAB_EVENT.items() if k != "id"}).encode(),
    "id an object": json.dumps({**GITLAB_EVENT, "id": {"a": 1}}).encode(),
    "event_type a list": json.dumps({**GITLAB_EVENT, "event_type": ["x"], "details": {}}).encode(),
    "gzip bomb": gzipped(b"[" + b" " * 200_000 + b"]"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_GITLAB))
def test_gitlab_hostile_bodies_get_a_clear_4xx_and_land_nothing(gw: Proc, name: str) -> None:
    before = record_count(gw.url("local_audit"))
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Gitlab-Event-Streaming-Token": GITLAB_TOKEN}
    if name == "gzip bomb":
        headers["Content-Encoding"] = "gzip"
    reply = request(gw.url() + "/webhooks/gitlab", HOSTILE_GITLAB[name], headers)
    assert 400 <= reply.status < 500, (reply.status, reply.body)
    body = reply.json()
    assert body["status"] not in ("Success", "InternalError") and body["summary"]
    assert "Traceback" not in reply.body.decode("utf-8", "replace")
    assert record_count(gw.url("local_audit")) == before
    assert healthy(gw)


def test_the_fixture_readme_cites_every_sample_copied(tmp_path: Path) -> None:
    readme = (FIXTURES / "README.md").read_text()
    missing = [p.name for p in FIXTURES.iterdir() if p.name != "README.md" and p.name not in readme]
    assert missing == []
