"""Issue 17, end to end: pull sources (``type: poll``) against loopback stubs of the vendors' APIs.

Each test runs a real ``audit-gateway run`` whose poll sources read a :class:`VendorStub` serving
the recorded exchanges (paging, rate-limit headers) and finds every event in the embedded local
audit log, mapped field by field.  The Okta source is the issue's snippet as written.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.bench import free_port
from tests.integration.vendors.harness import TOKEN, request, sdk, search_all, wait_for
from tests.integration.vendors.poll_stub import Answer, VendorStub
from tests.integration.vendors.test_vendor_webhooks_e2e import assert_mapped, row
from tests.support.procs import REPO, Proc, local_audit, start_gateway

FIXTURES = REPO / "tests" / "fixtures" / "vendors"
OKTA_TOKEN = "00ExampleOktaApiTokenNotReal0000000000000"
AUTH0_TOKEN = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.EXAMPLE-management-api-token.not-a-real-signature"
GITHUB_TOKEN = "ghp_EXAMPLE-classic-pat-not-a-real-token"
ONEPASSWORD_TOKEN = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImV4YW1wbGUifQ.EXAMPLE-events-reporting-token.not-a-real-signature"

OKTA = """\
  okta_log:
    type: poll
    vendor: okta_system_log
    url: {okta}
    token: ${{OKTA_API_TOKEN}}
    interval_secs: 15
    destination: default
    since: "2024-06-11T09:00:00.000Z"
    page_size: 2
"""
AUTH0 = """\
  auth0_log:
    type: poll
    vendor: auth0_logs
    url: {auth0}
    token: ${{AUTH0_MGMT_TOKEN}}
    destination: default
    since: "90020240611090000000176000000000000001223372052035100001"
    page_size: 2
"""
GITHUB = """\
  github_audit:
    type: poll
    vendor: github_audit_log
    url: {github}
    enterprise: acme-enterprise
    token: ${{GITHUB_AUDIT_TOKEN}}
    destination: default
    since: "2024-06-11T09:00:00Z"
    page_size: 2
"""
ONEPASSWORD = """\
  onepassword:
    type: poll
    vendor: onepassword_audit_events
    url: {onepassword}
    token: ${{ONEPASSWORD_EVENTS_TOKEN}}
    destination: default
    since: "2024-06-11T09:00:00Z"
    page_size: 2
"""

OKTA_EXPECTED = [
    row("maria.lopez@acme.example", "user.session.start", None, "failure", "203.0.113.99", None,
        "2024-06-11T09:10:02.511Z", "User login to Okta"),
    row("maria.lopez@acme.example", "user.account.lock", None, "success", "203.0.113.99", None,
        "2024-06-11T09:10:40.003Z", "Max sign in attempts exceeded"),
    row("it.admin@acme.example", "application.user_membership.add",
        "maria.lopez@acme.example, Workday, maria.lopez@acme.example", "success", "192.0.2.15", None,
        "2024-06-11T09:12:17.880Z", "Add user to application membership"),
]  # fmt: skip
AUTH0_EXPECTED = [
    row("maria.lopez@acme.example", "fp", "Acme Portal", "failure", "203.0.113.99", "acme",
        "2024-06-11T09:10:02.511Z", "Wrong email or password."),
    row("google-oauth2|108123456789012345678", "sapi", "/api/v2/client-grants", "success", "192.0.2.15", "acme",
        "2024-06-11T09:10:40.003Z", "Create client grant"),
    row("google-oauth2|108123456789012345678", "mgmt_api_read", "/api/v2/clients/RXhhbXBsZUxvZ1JlYWRlckNsaWVudDAx",
        "success", "192.0.2.15", "acme", "2024-06-11T09:12:17.880Z", "Get client by ID"),
]  # fmt: skip
GITHUB_EXPECTED = [
    row("acme-owner", "team.add_member", "dev-jlee", None, None, "acme-platform", "2024-06-11T09:10:02.114Z",
        "GitHub audit team.add_member by acme-owner on dev-jlee"),
    row("dev-jlee", "repo.destroy", "acme-platform/legacy-billing", None, None, "acme-platform",
        "2024-06-11T09:10:30.517Z", "GitHub audit repo.destroy by dev-jlee on acme-platform/legacy-billing"),
    row("acme-owner", "repo.create", "acme-platform/payments-api", None, None, "acme-platform",
        "2024-06-11T09:11:41.961Z", "GitHub audit repo.create by acme-owner on acme-platform/payments-api"),
    row("acme-owner", "business_advanced_secu~.disabled", "acme-owner", None, None, "acme-enterprise",
        "2024-06-11T09:12:07.672Z", "GitHub audit business_advanced_security.disabled by acme-owner on acme-owner"),
]  # fmt: skip


def stub(name: str) -> VendorStub:
    return VendorStub(FIXTURES / f"{name}_exchanges.json")


def vendor_ids(name: str, key: str) -> list[str]:
    return [r[key] for p in sorted(FIXTURES.glob(f"{name}_page*.json")) for r in json.loads(p.read_bytes())]


def run_gateway(
    tmp: Path, sources: str, data_dir: Path | None = None, upstream: str | None = None, **urls: str
) -> Proc:
    config = tmp / "gateway.yaml"
    head = f"upstream: {{url: {upstream}, token: {TOKEN}}}\n" if upstream else ""
    config.write_text(head + "destinations:\n  default:\n    schema: standard\nsources:\n" + sources.format(**urls))
    env = {
        "AUDIT_GATEWAY_LOCAL_TOKEN": TOKEN,
        "OKTA_API_TOKEN": OKTA_TOKEN,
        "AUTH0_MGMT_TOKEN": AUTH0_TOKEN,
        "GITHUB_AUDIT_TOKEN": GITHUB_TOKEN,
        "ONEPASSWORD_EVENTS_TOKEN": ONEPASSWORD_TOKEN,
    }
    return start_gateway(tmp, config=config, env=env, data_dir=data_dir)


def stored(gw: Proc) -> list[dict[str, Any]]:
    return [e.envelope.event for e in search_all(sdk(gw.url("local_audit")))]


def wait_stored(gw: Proc, n: int) -> list[dict[str, Any]]:
    wait_for(lambda: len(stored(gw)) >= n, 60, f"{n} events stored")
    return stored(gw)


def cursor_of(data_dir: Path, source: str) -> str:
    url: str = json.loads((data_dir / "poll" / f"{source}.cursor.json").read_bytes())["cursor"]
    return url


def metric(gw: Proc, name: str) -> str:
    text = request(gw.url("admin") + "/metrics").body.decode()
    return "\n".join(line for line in text.splitlines() if line.startswith(name))


@pytest.fixture
def stubs() -> Iterator[dict[str, VendorStub]]:
    with stub("okta_logs") as okta, stub("auth0_logs") as auth0, stub("github_auditlog") as github:
        yield {"okta": okta, "auth0": auth0, "github": github}


def test_three_vendors_pages_land_mapped_and_each_cursor_rests_on_the_last_next_link(
    tmp_path: Path, stubs: dict[str, VendorStub]
) -> None:
    urls = {k: s.base for k, s in stubs.items()}
    gw = run_gateway(tmp_path, OKTA + AUTH0 + GITHUB, **urls)
    try:
        events = wait_stored(gw, 10)
        okta, gh = stubs["okta"], stubs["github"]
        wait_for(lambda: okta.count(okta.exchanges[2]["request"]["url"]) >= 1, 30, "okta tail asked")
        assert_mapped([e for e in events if "." in e.get("action", "") and not e["message"].startswith("GitHub")],
                      OKTA_EXPECTED)  # fmt: skip
        assert_mapped([e for e in events if e["action"] in ("fp", "sapi", "mgmt_api_read")], AUTH0_EXPECTED)
        assert_mapped([e for e in events if e["message"].startswith("GitHub audit")], GITHUB_EXPECTED)
        assert len(events) == 10
        # The vendors' own ids are kept (issue 17).
        news = [json.loads(e["new"]) for e in events]
        assert sorted(n["uuid"] for n in news if "uuid" in n) == sorted(vendor_ids("okta_logs", "uuid"))
        assert sorted(n["log_id"] for n in news if "log_id" in n) == sorted(vendor_ids("auth0_logs", "log_id"))
        assert sorted(n["_document_id"] for n in news if "_document_id" in n) == sorted(
            vendor_ids("github_auditlog", "_document_id")
        )
        # Each source sent its own credentials, as the vendor expects them.
        assert {a for _, a in okta.asked} == {f"SSWS {OKTA_TOKEN}"}
        assert {a for _, a in stubs["auth0"].asked} == {f"Bearer {AUTH0_TOKEN}"}
        assert {a for _, a in gh.asked} == {f"Bearer {GITHUB_TOKEN}"}
        # Pages with events were read once; the cursors rest on the tail (Okta, Auth0: its next link;
        # GitHub: the last page, which has no next link).
        for s in stubs.values():
            for ex in s.exchanges[:2]:
                assert s.count(ex["request"]["url"]) == 1, ex["request"]["url"]
        data = tmp_path / "data"
        wait_for(
            lambda: cursor_of(data, "auth0_log") == stubs["auth0"].url(stubs["auth0"].exchanges[2]["request"]["url"])
        )
        assert cursor_of(data, "okta_log") == okta.url(okta.exchanges[2]["request"]["url"])
        assert cursor_of(data, "github_audit") == gh.url(gh.exchanges[2]["request"]["url"])
        assert 'gateway_poll_pages_total{source="okta_log"}' in metric(gw, "gateway_poll_pages_total")
        lag = metric(gw, "gateway_poll_lag_seconds")
        assert 'source="okta_log"' in lag and 'source="github_audit"' in lag
        assert request(gw.url("admin") + "/readyz").status == 200
        for token in (OKTA_TOKEN, AUTH0_TOKEN, GITHUB_TOKEN):
            assert token not in gw.log()
    finally:
        gw.terminate()


ONEPASSWORD_EXPECTED = [
    row("it.admin@acme.example", "user.suspend", "M4RZ6TQ2KX7WNB3YA5PCHEJDLG", None, "192.0.2.15",
        "VZSYVT2LGHTBWBQGUJAIZVRABM", "2024-06-11T09:16:52.827288Z",
        "1Password suspend user by it.admin@acme.example on M4RZ6TQ2KX7WNB3YA5PCHEJDLG"),
    row("it.admin@acme.example", "gm.grant", "sam.okafor@acme.example", None, "192.0.2.15",
        "VZSYVT2LGHTBWBQGUJAIZVRABM", "2024-06-11T09:17:30.104511Z",
        "1Password grant gm by it.admin@acme.example on sam.okafor@acme.example"),
    row("it.admin@acme.example", "vault.delete", "JQK2PQRSTUVWXYZ234567ABCDE", None, "192.0.2.15",
        "VZSYVT2LGHTBWBQGUJAIZVRABM", "2024-06-11T09:20:03.9Z",
        "1Password delete vault by it.admin@acme.example on JQK2PQRSTUVWXYZ234567ABCDE"),
]  # fmt: skip


def test_onepassword_cursor_feed_lands_mapped_and_the_cursor_rests_on_the_last_one(tmp_path: Path) -> None:
    with stub("onepassword_auditevents") as op:
        reqs = [ex["request"] for ex in op.exchanges]
        gw = run_gateway(tmp_path, ONEPASSWORD.replace("destination:", "interval_secs: 0.2\n    destination:"),
                         onepassword=op.base)  # fmt: skip
        try:
            events = wait_stored(gw, 3)
            wait_for(lambda: op.count(reqs[2]["url"], reqs[2]["body"]) >= 2, 30, "the tail polled again")
            assert_mapped(stored(gw), ONEPASSWORD_EXPECTED)
            assert sorted(json.loads(e["new"])["uuid"] for e in events) == sorted(
                r["uuid"]
                for n in (1, 2)
                for r in json.loads((FIXTURES / f"onepassword_auditevents_page{n}.json").read_bytes())["items"]
            )
            # The reset request once, each cursor page once, then the same cursor again and again.
            assert op.count(reqs[0]["url"], reqs[0]["body"]) == 1
            assert op.count(reqs[1]["url"], reqs[1]["body"]) == 1
            assert cursor_of(tmp_path / "data", "onepassword") == reqs[2]["body"]["cursor"]
            assert {a for _, a in op.asked} == {f"Bearer {ONEPASSWORD_TOKEN}"}
        finally:
            gw.terminate()


def test_sigkill_mid_page_and_restart_lose_nothing_and_reread_at_most_that_page(tmp_path: Path) -> None:
    with stub("okta_logs") as okta:
        page1, page2, tail = (ex["request"]["url"] for ex in okta.exchanges[:3])
        gate = okta.hold(page2)  # the gateway is killed while page 2 is in flight
        data = tmp_path / "data"
        gw = run_gateway(tmp_path, OKTA, data_dir=data, okta=okta.base)
        try:
            wait_for(lambda: okta.count(page2) == 1, 30, "page 2 asked")
            assert len(stored(gw)) == 2  # page 1 delivered
            assert cursor_of(data, "okta_log") == okta.url(page2)  # and only then the cursor moved
        finally:
            gw.popen.send_signal(signal.SIGKILL)
            gw.popen.wait(30)
        gate.set()
        again = run_gateway(tmp_path, OKTA, data_dir=data, okta=okta.base)
        try:
            events = wait_stored(again, 3)
            wait_for(lambda: okta.count(tail) >= 1, 30, "tail asked")
            assert_mapped(stored(again), OKTA_EXPECTED)  # each exactly once
            assert okta.count(page1) == 1  # delivered before the kill: never read again
            assert okta.count(page2) == 2  # the page in flight, read again once
            assert len(events) == 3
        finally:
            again.terminate()


def test_sigkill_while_a_page_awaits_delivery_rereads_it_after_restart(tmp_path: Path) -> None:
    """The cursor moves only once the page's events are delivered: killed before, the page is read again."""
    port = free_port()
    upstream = f"http://127.0.0.1:{port}"  # nothing listens yet: the page's events cannot be delivered
    with stub("okta_logs") as okta:
        page1, page2 = (ex["request"]["url"] for ex in okta.exchanges[:2])
        data = tmp_path / "data"
        gw = run_gateway(tmp_path, OKTA, data_dir=data, upstream=upstream, okta=okta.base)
        try:
            wait_for(
                lambda: (
                    'gateway_events_received_total{destination="default",source="okta_log"} 2.0'
                    in metric(gw, "gateway_events_received")
                ),
                30,
                "page 1 admitted",
            )
            assert not (data / "poll" / "okta_log.cursor.json").exists()
            assert okta.count(page2) == 0
        finally:
            gw.popen.send_signal(signal.SIGKILL)
            gw.popen.wait(30)
        with local_audit(tmp_path, TOKEN, port=port) as store:
            again = run_gateway(tmp_path, OKTA, data_dir=data, upstream=upstream, okta=okta.base)
            try:
                wait_for(lambda: len(search_all(sdk(store.url("local_audit")))) >= 3, 60, "3 events stored")
                wait_for(lambda: okta.count(okta.exchanges[2]["request"]["url"]) >= 1, 30, "tail asked")
                assert_mapped([e.envelope.event for e in search_all(sdk(store.url("local_audit")))], OKTA_EXPECTED)
                assert okta.count(page1) == 2 and okta.count(page2) == 1
            finally:
                again.terminate()


def test_a_malformed_page_is_reported_in_metrics_and_readyz_and_never_skipped(tmp_path: Path) -> None:
    with stub("auth0_logs") as auth0:
        page2, tail = (ex["request"]["url"] for ex in auth0.exchanges[1:3])
        good = auth0.exchange_answer(2)
        for _ in range(3):
            auth0.queue_first(page2, Answer(200, good.headers, b'[{"log_id": "x", "data": '))  # truncated
        gw = run_gateway(
            tmp_path, AUTH0.replace("destination:", "interval_secs: 0.2\n    destination:"), auth0=auth0.base
        )
        try:
            wait_for(lambda: auth0.count(page2) >= 2, 30, "page 2 asked again")
            assert len(stored(gw)) == 2  # page 1 only
            assert auth0.count(tail) == 0  # nothing past the bad page
            ready = request(gw.url("admin") + "/readyz")
            assert ready.status == 503 and any(
                r.startswith("auth0_log: malformed_page") for r in ready.json()["reasons"]
            ), ready.body
            assert 'reason="malformed_page",source="auth0_log"' in metric(gw, "gateway_poll_errors_total")
            events = wait_stored(gw, 3)  # the page comes good: it is read, not skipped
            assert_mapped(events, AUTH0_EXPECTED)
            wait_for(lambda: request(gw.url("admin") + "/readyz").status == 200, 30, "ready again")
        finally:
            gw.terminate()
