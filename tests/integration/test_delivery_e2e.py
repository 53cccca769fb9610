"""Issue 2, end to end: `audit-gateway run` on its embedded default, fed by Auth0 and the SDK."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pangea.config import PangeaConfig
from pangea.exceptions import AcceptedRequestException
from pangea.services import Audit

from tests.support.procs import VENDOR_FIXTURES, Proc, gateway

TOKEN = "pts_local_e2e_token"


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def auth0_records() -> list[dict[str, Any]]:
    recs: list[dict[str, Any]] = []
    recs += json.loads((VENDOR_FIXTURES / "auth0_batch1_jsonarray.json").read_text())
    recs += json.loads((VENDOR_FIXTURES / "auth0_batch2_jsonobject.json").read_text())["logs"]
    recs += [
        json.loads(line)
        for line in (VENDOR_FIXTURES / "auth0_batch3_jsonlines.jsonl").read_text().splitlines()
        if line.strip()
    ]
    return recs


def search_all(audit: Audit, query: str = "") -> list[Any]:
    resp = audit.search(query=query, verify_events=True, limit=1000, max_results=10000)
    assert resp.success, resp.status
    return list(resp.result.events)


@pytest.fixture
def gw(tmp_path: Path) -> Proc:
    with gateway(tmp_path, env={"AUDIT_GATEWAY_LOCAL_TOKEN": TOKEN}) as proc:
        yield proc  # type: ignore[misc]


def poll_until_done(client: Audit, accepted: Any) -> Any:
    """The SDK's own poll; it raises AcceptedRequestException while the gateway still says 202."""
    for _ in range(600):
        try:
            return client.poll_result(response=accepted)
        except AcceptedRequestException:
            time.sleep(0.05)
    raise AssertionError("the async request never completed")


def sdk(base_url: str, token: str = TOKEN) -> Audit:
    return Audit(token, config=PangeaConfig(base_url_template=base_url, poll_result_timeout=60))


def test_auth0_fixture_bodies_and_sdk_calls_all_land_verified_in_the_local_audit_log(gw: Proc) -> None:
    for name in ("auth0_batch1_jsonarray.json", "auth0_batch2_jsonobject.json", "auth0_batch3_jsonlines.jsonl"):
        status, body = post(gw.url() + "/v1/log_stream", (VENDOR_FIXTURES / name).read_bytes())
        assert status == 200, (name, body)
        assert body["status"] == "Success" and body["request_id"].startswith("prq_")

    client = sdk(gw.url())
    one = client.log_event({"message": "sdk single", "actor": "alice", "action": "login"}, verbose=True)
    assert one.success and one.result.hash and one.result.envelope.event["message"] == "sdk single"
    bulk = client.log_bulk([{"message": f"sdk bulk {i}", "actor": "bob"} for i in range(5)])
    assert bulk.success and len(bulk.result.results) == 5 and all(r.hash for r in bulk.result.results)
    accepted = client.log_bulk_async([{"message": f"sdk async {i}", "actor": "carol"} for i in range(3)])
    assert accepted.http_status == 202
    done = poll_until_done(client, accepted)
    assert done.success and len(done.result.results) == 3

    store = sdk(gw.url("local_audit"))
    events = search_all(store)
    by_message = {e.envelope.event["message"]: e for e in events}
    assert "sdk single" in by_message
    assert all(f"sdk bulk {i}" in by_message for i in range(5))
    assert all(f"sdk async {i}" in by_message for i in range(3))
    assert by_message["sdk single"].envelope.event["actor"] == "alice"

    records = auth0_records()
    auth0_events = [e.envelope.event for e in events if not str(e.envelope.event["message"]).startswith("sdk ")]
    assert len(auth0_events) == len(records)
    for rec in records:
        data = rec["data"]
        when = datetime.fromisoformat(data["date"].replace("Z", "+00:00"))
        matches = [
            ev
            for ev in auth0_events
            if datetime.fromisoformat(str(ev["timestamp"]).replace("Z", "+00:00")) == when
            and (ev.get("source") == data.get("ip"))
        ]
        assert len(matches) == 1, rec["log_id"]
        assert matches[0]["message"]
        assert len(matches[0].get("action", "")) <= 32
    # every hash was verified by the SDK while searching
    assert all(e.hash for e in events)


def test_an_invalid_event_is_reported_and_the_valid_ones_are_delivered(gw: Proc) -> None:
    body = {
        "events": [
            {"event": {"message": "good 1"}},
            {"event": {"message": "bad", "action": "x" * 33}},
            {"event": {"message": "good 2"}},
        ]
    }
    status, answer = post(gw.url() + "/v2/log", json.dumps(body).encode())
    assert status == 400
    assert answer["status"] == "ValidationError"
    assert [e["source"] for e in answer["result"]["errors"]] == ["/events/1/event/action"]
    messages = {e.envelope.event["message"] for e in search_all(sdk(gw.url("local_audit")))}
    assert messages == {"good 1", "good 2"}


def test_validation_errors_have_the_pangea_shape(gw: Proc) -> None:
    status, answer = post(gw.url() + "/v2/log", b'{"events": []}')
    assert status == 400
    assert set(answer) == {"request_id", "request_time", "response_time", "status", "summary", "result"}
    err = answer["result"]["errors"][0]
    assert set(err) >= {"code", "detail", "source"} and err["source"] == "/events"
    status, answer = post(gw.url() + "/v1/log_stream", b"\x00\x01not json")
    assert status == 400 and answer["status"] == "ValidationError"


def test_metrics_health_and_readiness_are_served(gw: Proc) -> None:
    post(gw.url() + "/v2/log", json.dumps({"events": [{"event": {"message": "m"}}]}).encode())
    with urllib.request.urlopen(gw.url("admin") + "/readyz", timeout=10) as r:
        assert r.status == 200
    with urllib.request.urlopen(gw.url("admin") + "/metrics", timeout=10) as r:
        text = r.read().decode()
    assert 'gateway_events_received_total{destination="default",source="sdk"} 1.0' in text
    assert 'gateway_events_forwarded_total{destination="default",source="sdk"} 1.0' in text
