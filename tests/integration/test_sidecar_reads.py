"""Issue 14: the Audit API's read and management calls through the gateway, with pangea-sdk.

The gateway runs with its embedded local audit log as the upstream; one SDK client points at
the gateway (the sidecar), one straight at the audit log, and both must get the same answers:
search (dates, order, ``verify_events``, ``verify_consistency``), results, root, export +
``poll_result`` + download_results, schema.  Answers come back as the upstream gave them.
"""

from __future__ import annotations

import datetime
import gzip
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pangea.config import PangeaConfig
from pangea.services import Audit
from pangea.services.audit.models import DownloadFormat, EventVerification, SearchOrder

from tests.support.procs import gateway, local_audit

TOKEN = "pts_sidecar_reads_token"


def post(url: str, body: dict[str, Any], token: str = TOKEN) -> tuple[int, dict[str, Any], dict[str, str]]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read()), dict(e.headers)


def calls_by_endpoint(upstream_url: str) -> dict[str, int]:
    req = urllib.request.Request(upstream_url + "/_stats", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        calls: dict[str, int] = json.loads(r.read())["result"]["calls_by_endpoint"]
    return calls


def test_reads_through_the_gateway_answer_as_the_audit_log_does(tmp_path: Path) -> None:
    with gateway(tmp_path, env={"AUDIT_GATEWAY_LOCAL_TOKEN": TOKEN}) as gw:
        via = Audit("any-token-on-loopback", config=PangeaConfig(base_url_template=gw.url(), poll_result_timeout=30))
        direct = Audit(TOKEN, config=PangeaConfig(base_url_template=gw.url("local_audit"), poll_result_timeout=30))
        start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)

        assert via.log("read 0", actor="reader", verbose=True).success
        assert via.log_bulk([{"message": f"read {i}", "actor": "reader"} for i in (1, 2, 3)]).success

        # search: the same events, hashes and verifications either way, in both orders
        for order in (SearchOrder.ASC, SearchOrder.DESC):
            kw: dict[str, Any] = {"order": order, "start": start, "verify_events": True, "verify_consistency": True}
            got = via.search("actor:reader", **kw)
            want = direct.search("actor:reader", **kw)
            assert got.success and want.success and got.result and want.result
            assert [e.hash for e in got.result.events] == [e.hash for e in want.result.events]
            assert [e.envelope.event["message"] for e in got.result.events] == [
                f"read {i}" for i in ((0, 1, 2, 3) if order == SearchOrder.ASC else (3, 2, 1, 0))
            ]
            assert [(e.membership_verification, e.consistency_verification) for e in got.result.events] == [
                (e.membership_verification, e.consistency_verification) for e in want.result.events
            ]
            assert all(e.signature_verification == EventVerification.NONE for e in got.result.events)

        # results of a search made through the gateway, read through the gateway
        found = via.search("actor:reader", order=SearchOrder.ASC, limit=2)
        assert found.result is not None and found.result.count == 4
        page = via.results(found.result.id, limit=2, offset=2)
        assert page.success and page.result is not None
        assert [e.envelope.event["message"] for e in page.result.events] == ["read 2", "read 3"]

        # root: the same tree either way
        assert via.root().result.data.root_hash == direct.root().result.data.root_hash  # type: ignore[union-attr]

        # export (202), polled through the gateway's /request/{id}, then downloaded
        exported = via.export(format=DownloadFormat.JSON, order=SearchOrder.ASC, start=start)
        assert exported.http_status == 202 and exported.status == "Accepted"
        assert via.poll_result(request_id=exported.request_id).status == "Success"
        link = via.download_results(request_id=exported.request_id, format=DownloadFormat.JSON)
        assert link.result is not None
        with urllib.request.urlopen(link.result.dest_url, timeout=30) as r:
            lines = gzip.decompress(r.read()).decode().splitlines()
        assert [json.loads(line)["envelope"]["event"]["message"] for line in lines] == [f"read {i}" for i in range(4)]

        # schema: the upstream's answer, unchanged but for its request's own id and times
        status, body, headers = post(gw.url() + "/v1/schema", {})
        d_status, d_body, _ = post(gw.url("local_audit") + "/v1/schema", {})
        assert (status, body["status"], body["result"]) == (d_status, d_body["status"], d_body["result"])
        assert body["request_id"].startswith("prq_") and headers["X-Request-Id"] == body["request_id"]

        # a configuration the gateway does not serve cannot be read through it
        status, body, _ = post(gw.url() + "/v1/search", {"query": "", "config_id": "pci_not_served_here"})
        assert (status, body["status"]) == (403, "MissingConfigIDScope")


def test_idempotent_reads_are_retried_with_the_sinks_classifier_and_others_sent_once(tmp_path: Path) -> None:
    up_dir = tmp_path / "upstream"
    up_dir.mkdir()
    with local_audit(up_dir, TOKEN, "--enable-test-faults", "--fault-outage") as upstream:
        cfg = tmp_path / "gateway.yaml"
        cfg.write_text(
            f"""
upstream:
  url: {upstream.url("local_audit")}
  token: {TOKEN}
  retry: {{initial_backoff_secs: 0.01, max_backoff_secs: 0.05}}
destinations:
  default: {{}}
sources:
  sdk: {{type: webhook, format: pangea, destination: default}}
"""
        )
        with gateway(tmp_path, config=cfg) as gw:
            before = calls_by_endpoint(upstream.url("local_audit"))
            status, body, _ = post(gw.url() + "/v1/root", {})
            # The upstream's own answer, unchanged, once its retries are spent...
            assert (status, body["status"]) == (503, "ServiceNotAvailable")
            status, body, _ = post(gw.url() + "/v1/export", {})
            assert (status, body["status"]) == (503, "ServiceNotAvailable")
            after = calls_by_endpoint(upstream.url("local_audit"))
    calls = {k: after.get(k, 0) - before.get(k, 0) for k in ("v1/root", "v1/export")}
    # ...the idempotent read sent MAX_ATTEMPTS times, the export (it starts a job) once.
    assert calls == {"v1/root": 3, "v1/export": 1}
