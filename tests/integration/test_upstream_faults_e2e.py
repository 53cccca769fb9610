"""Issue 12, cases 3 and 5, end to end: the upstream's answers and the gateway's own credentials.

Real processes on loopback: the local audit log (the real upstream) and the gateway.  Between
them, a small aiohttp front that the gateway takes for its upstream: it forwards every call to
the local audit log, except when a test makes it misbehave, as a wrong URL, a proxy or a
misconfigured upstream would (answers 200 with garbage; 403 to the gateway's token), and it is
the OAuth2 token endpoint (which can refuse the client while echoing its request back, or issue
a token the upstream refuses).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.integration.test_tap import start_tap, wait_watching
from tests.integration.vendors.harness import deadletters
from tests.support.accounting import scrape_and_check
from tests.support.http import serve_on_loopback
from tests.support.procs import REPO, Proc, local_audit, start_gateway, stored_messages

TOKEN = "pts_issue12_upstream_token_0001"
CLIENT_ID = "psa_issue12_client"
CLIENT_SECRET = "pck_issue12_client_secret_value_7f3a"
BASIC = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
WRONG_TOKEN = "pts_issue12_token_the_upstream_refuses"
FIXTURES = REPO / "tests" / "fixtures" / "vendors"
REFUSED = "upstream refused credentials"


class Front:
    """The upstream as the gateway sees it (see the module doc)."""

    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url
        self.token_mode = "good"
        """``echo_refuse``: 401 invalid_client, echoing the request; ``wrong``: issues WRONG_TOKEN;
        ``good``: issues the token the upstream accepts."""
        self.forbid = False
        """Answer 403 to every API call, echoing its Authorization header."""
        self.log_answers: deque[tuple[int, bytes]] = deque()
        """Answers (status, body) that replace the next ``/v2/log`` calls (nothing is forwarded)."""
        self.served: list[tuple[str, int]] = []
        self.base_url = ""
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._client = aiohttp.ClientSession()
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/oauth/token", self._token)
        app.router.add_route("*", "/{tail:.*}", self._api)
        self._runner, self.base_url = await serve_on_loopback(app)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()

    def count(self, path: str, status: int) -> int:
        return self.served.count((path, status))

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.text()
        assert request.headers.get("Authorization") == f"Basic {BASIC}"
        if self.token_mode == "echo_refuse":
            # A debugging endpoint that tells the client everything it received, decoded.
            echo = f"bad client; you sent {dict(request.headers)} {form} as {base64.b64decode(BASIC).decode()}"
            self.served.append(("/oauth/token", 401))
            return web.json_response({"error": "invalid_client", "error_description": echo}, status=401)
        token = TOKEN if self.token_mode == "good" else WRONG_TOKEN
        self.served.append(("/oauth/token", 200))
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": 3600})

    async def _api(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if self.forbid:
            self.served.append((request.path, 403))
            echo = f"forbidden: {request.headers.get('Authorization')} (client {CLIENT_ID}:{CLIENT_SECRET})"
            envelope = {"request_id": "prq_forbid", "status": "Forbidden", "summary": echo, "result": {}}
            return web.json_response(envelope, status=403)
        if request.path == "/v2/log" and self.log_answers:
            status, answer = self.log_answers.popleft()
            self.served.append((request.path, status))
            return web.Response(status=status, body=answer, content_type="application/json")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        assert self._client is not None
        async with self._client.request(
            request.method, self.upstream_url + request.path_qs, data=body, headers=headers
        ) as resp:
            data = await resp.read()
            self.served.append((request.path, resp.status))
            return web.Response(status=resp.status, body=data, content_type="application/json")


@pytest.fixture
async def front(tmp_path: Path) -> AsyncIterator[Front]:
    with local_audit(tmp_path, TOKEN) as upstream:
        f = Front(upstream.url("local_audit"))
        await f.start()
        try:
            yield f
        finally:
            await f.stop()


def write_config(tmp: Path, front: Front, credentials: str, extra: str = "", max_batch_events: int = 1000) -> Path:
    cfg = tmp / "gateway.yaml"
    cfg.write_text(
        f"""
shutdown_timeout_secs: 10
{extra}
upstream:
  url: {front.base_url}
  {credentials}
  retry: {{initial_backoff_secs: 0.05, max_backoff_secs: 0.2}}
destinations:
  default:
    schema: standard
    batch: {{max_events: {max_batch_events}, timeout_secs: 0.05}}
sources:
  sdk: {{type: webhook, format: pangea, destination: default, ack_timeout_secs: 60}}
  sdk_short: {{type: webhook, format: pangea, path: /short, destination: default, ack_timeout_secs: 0.5}}
  auth0: {{type: webhook, format: auth0, path: /v1/log_stream, destination: default, ack_timeout_secs: 60}}
  okta: {{type: webhook, format: okta, path: /webhooks/okta, destination: default, ack_timeout_secs: 60}}
"""
    )
    return cfg


async def start(tmp: Path, front: Front, credentials: str, env: dict[str, str] | None = None, **kw: Any) -> Proc:
    # In a thread: the front answers on this test's event loop while the gateway starts.
    return await asyncio.to_thread(start_gateway, tmp, config=write_config(tmp, front, credentials, **kw), env=env)


def sdk_body(messages: list[str]) -> bytes:
    return orjson.dumps({"events": [{"event": {"message": m, "actor": "alice"}} for m in messages]})


async def post(s: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    async with s.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
        return r.status, dict(r.headers), await r.read()


async def metric(s: aiohttp.ClientSession, gw: Proc, name: str, **labels: str) -> float:
    async with s.get(gw.url("admin") + "/metrics") as r:
        text = await r.text()
    total = 0.0  # summed over the series matching ``labels``
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            series, value = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(value)
    return total


async def until(predicate: Any, what: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- case 3: a 200 is not proof of delivery ---------------------------------------------------------


async def test_garbage_200s_from_the_upstream_are_retried_until_the_real_one_stores_every_acknowledged_event(
    tmp_path: Path, front: Front
) -> None:
    wrong_count = {"request_id": "prq_count", "status": "Success", "summary": "ok", "result": {"results": [{}]}}
    garbage = [b"<html><body>It works!</body></html>", b"{}", orjson.dumps(wrong_count), b"junk " * (2 << 20)]
    front.log_answers.extend((200, g) for g in garbage)
    gw = await start(tmp_path, front, "token: ${UPSTREAM_TOKEN}", {"UPSTREAM_TOKEN": TOKEN})
    try:
        sent = [[f"garbage-{i}-{j}" for j in range(5)] for i in range(4)]
        async with aiohttp.ClientSession() as s:
            answers = await asyncio.gather(*(post(s, gw.url() + "/v2/log", sdk_body(m)) for m in sent))
            invalid = await metric(s, gw, "gateway_upstream_retries_total", reason="invalid_answer")
            rejected = await metric(s, gw, "gateway_events_rejected_total")
            # Every answer is in: every event is accounted for, none still in flight.
            await scrape_and_check(gw.url("admin"), quiescent=True, pairs={("sdk", "default")})
    finally:
        gw.terminate()
    acked = [m for (status, _h, _b), msgs in zip(answers, sent, strict=True) if status == 200 for m in msgs]
    stored = stored_messages(tmp_path / "local-audit.db")
    print(f"answered 200: {len(acked)} events; stored: {len(stored)} ({len(stored) - len(set(stored))} duplicates)")
    assert [a[0] for a in answers] == [200] * len(sent)
    assert sorted(stored) == sorted(acked)  # exact: the garbage answers stored nothing
    assert front.log_answers == deque()  # every garbage answer was served ...
    assert invalid == 4  # ... and each was retried as the upstream's fault
    assert rejected == 0


# -- case 5: the gateway's own credential refused -----------------------------------------------------


async def test_a_refused_gateway_credential_holds_events_blames_no_sender_leaks_no_secret_and_delivers_once_fixed(
    tmp_path: Path, front: Front
) -> None:
    front.token_mode = "echo_refuse"
    credentials = (
        f"oauth2: {{token_url: '{front.base_url}/oauth/token', client_id: {CLIENT_ID}, "
        "client_secret: '${OAUTH_SECRET}'}"
    )
    gw = await start(tmp_path, front, credentials, {"OAUTH_SECRET": CLIENT_SECRET})
    auth0 = (FIXTURES / "auth0_batch1_jsonarray.json").read_bytes()
    okta = (FIXTURES / "okta_eventhook_post1.json").read_bytes()
    n_auth0 = len(json.loads(auth0))
    n_okta = len(json.loads(okta)["data"]["events"])
    sdk_msgs = [f"sdk-{i}" for i in range(3)]
    short_msgs = [f"short-{i}" for i in range(2)]
    readyz: list[tuple[int, bytes]] = []
    try:
        async with aiohttp.ClientSession() as s:

            async def ready_reasons() -> list[str]:
                async with s.get(gw.url("admin") + "/readyz") as r:
                    raw = await r.read()
                readyz.append((r.status, raw))
                return list(json.loads(raw).get("reasons", []))

            async def refused(detail: str) -> bool:
                return any(REFUSED in r and detail in r for r in await ready_reasons())

            waiting = [
                asyncio.create_task(post(s, gw.url() + "/v2/log", sdk_body(sdk_msgs))),
                asyncio.create_task(post(s, gw.url() + "/v1/log_stream", auth0)),
                asyncio.create_task(post(s, gw.url() + "/webhooks/okta", okta)),
            ]
            # A sender that does not wait long gets 503 + Retry-After: its events stay queued.
            short = await post(s, gw.url() + "/short/v2/log", sdk_body(short_msgs))

            # 1. the token endpoint refuses the client (and echoes the request, secret included)
            await until(lambda: refused("HTTP 401 invalid_client"), "readiness naming the token endpoint's refusal")
            # 2. it issues a token, which the upstream refuses (the real local audit log's 401)
            front.token_mode = "wrong"
            await until(lambda: refused("HTTP 401 Unauthorized"), "readiness naming the upstream's 401")
            assert front.count("/v2/log", 401) > 0
            # 3. the upstream answers 403 to it, echoing the gateway's credentials
            front.forbid = True
            await until(lambda: refused("HTTP 403 Forbidden"), "readiness naming the upstream's 403")
            assert not any(t.done() for t in waiting)  # nobody was answered meanwhile
            retries = await metric(s, gw, "gateway_upstream_retries_total", reason="credentials")
            # 4. fixed: the events go through, and every waiting sender gets its 2xx
            front.forbid, front.token_mode = False, "good"
            answers = await asyncio.wait_for(asyncio.gather(*waiting), 30)

            async def ready() -> bool:
                return await ready_reasons() == []

            await until(ready, "readiness once the credential works")
            rejected = await metric(s, gw, "gateway_events_rejected_total")
            deadlettered = await metric(s, gw, "gateway_deadletters_total")
            acc = await scrape_and_check(gw.url("admin"), quiescent=True)
    finally:
        gw.terminate()
    log = gw.log()

    statuses = [a[0] for a in answers]
    assert statuses == [200, 200, 200], answers
    # The short sender's 503 kept its 2 events queued: every event was forwarded, none refused.
    assert sum(t["refused"] for t in acc.values()) == 0
    assert sum(t["forwarded"] for t in acc.values()) == 3 + n_auth0 + n_okta + 2
    assert answers[2][2] == b""  # Okta's empty 200
    assert short[0] == 503 and short[1].get("Retry-After"), short
    assert retries > 0 and rejected == 0 and deadlettered == 0
    stored = stored_messages(tmp_path / "local-audit.db")
    expected = 3 + n_auth0 + n_okta + 2
    print(f"answered 2xx: {3 + n_auth0 + n_okta} events, 503: 2 (kept queued); stored: {len(stored)}")
    assert len(stored) == expected  # every event kept, none stored twice
    assert set(sdk_msgs + short_msgs) <= set(stored)

    texts = [b for _s, _h, b in [*answers, short]] + [raw for _s, raw in readyz] + [log.encode()]
    for text in texts:
        for secret in (CLIENT_SECRET, BASIC, WRONG_TOKEN, TOKEN):
            assert secret.encode() not in text, (secret, text[:300])
    assert "bad client; you sent" not in log and "forbidden: " not in log  # no peer text at all
    assert REFUSED in log


async def test_an_upstream_rejection_reaches_the_sender_as_code_and_pointer_only_never_the_upstreams_text(
    tmp_path: Path, front: Front
) -> None:
    echo = f"actor refused; your request had Authorization: Bearer {TOKEN}"
    rejection = {
        "request_id": "prq_reject",
        "status": "ValidationError",
        "summary": echo,
        "result": {"errors": [{"code": "AboveMaxLength", "detail": echo, "source": "/events/1/event/actor"}]},
    }
    front.log_answers.append((400, orjson.dumps(rejection)))
    gw = await start(tmp_path, front, "token: ${UPSTREAM_TOKEN}", {"UPSTREAM_TOKEN": TOKEN})
    tap = start_tap(gw.ports["admin"], "--stage", "rejected", "--limit", "1")
    try:
        await asyncio.to_thread(wait_watching, gw.url("admin"), 1, tap)
        async with aiohttp.ClientSession() as s:
            status, _headers, body = await post(s, gw.url() + "/v2/log", sdk_body(["kept", "refused"]))
            acc = await scrape_and_check(gw.url("admin"), quiescent=True)
        tapped, _ = await asyncio.to_thread(tap.communicate, timeout=30)
    finally:
        tap.kill()
        gw.terminate()
    # The tap shows the upstream's refusal (stage rejected), from the delivery driver, masked.
    [line] = [json.loads(x) for x in tapped.splitlines()]
    assert (line["stage"], line["source"], line["destination"]) == ("rejected", "sdk", "default")
    assert line["event"]["message"] == "refused" and line["errors"][0]["code"] == "AboveMaxLength"
    assert TOKEN not in tapped
    answer = json.loads(body)
    assert status == 400 and answer["summary"] == "1 of 2 events accepted; 1 refused"
    assert answer["result"]["errors"] == [
        {
            "code": "AboveMaxLength",
            "detail": "the upstream audit log refused this event (AboveMaxLength)",
            "source": "/events/1/event/actor",
        }
    ]
    assert TOKEN.encode() not in body and b"your request had" not in body
    assert stored_messages(tmp_path / "local-audit.db") == ["kept"]
    assert TOKEN not in gw.log() and "your request had" not in gw.log()
    # The dead-letter store keeps the upstream's words for the operator, the token masked.
    [letter] = deadletters(tmp_path / "data")
    assert letter["reason"] == "upstream_rejected"
    # One forwarded, one rejected upstream under the dead letter's reason (the code stays in its detail).
    assert acc[("sdk", "default")]["forwarded"] == 1 and acc[("sdk", "default")]["rejected"] == 1
    assert "AboveMaxLength" in letter["detail"]
    assert "your request had Authorization: Bearer ***" in letter["detail"] and TOKEN not in letter["detail"]


async def test_a_buffer_full_of_events_waiting_for_a_fixed_credential_answers_503_and_the_rest_is_delivered_once_fixed(
    tmp_path: Path, front: Front
) -> None:
    token_file = tmp_path / "upstream-token"
    token_file.write_text(WRONG_TOKEN + "\n")
    # One batch of 2 in flight at a time; the buffer holds 10 events.
    gw = await start(
        tmp_path,
        front,
        f"token_file: {token_file}\n  max_in_flight: 1",
        extra="buffer: {type: memory, max_events: 10, max_bytes: 1048576}",
        max_batch_events=2,
    )
    okta = (FIXTURES / "okta_eventhook_post1.json").read_bytes()
    queued = [f"queued-{i}" for i in range(10)]
    try:
        async with aiohttp.ClientSession() as s:

            async def refused() -> bool:
                async with s.get(gw.url("admin") + "/readyz") as r:
                    return any(REFUSED in x for x in (await r.json()).get("reasons", []))

            waiting = asyncio.create_task(post(s, gw.url() + "/v2/log", sdk_body(queued)))
            await until(refused, "readiness naming the refused token")
            full_sdk = await post(s, gw.url() + "/short/v2/log", sdk_body(["over-0", "over-1", "over-2"]))
            full_okta = await post(s, gw.url() + "/webhooks/okta", okta)
            assert not waiting.done()
            token_file.write_text(TOKEN + "\n")  # the operator fixes the mounted Secret
            answer = await asyncio.wait_for(waiting, 30)
            rejected = await metric(s, gw, "gateway_events_rejected_total")
            acc = await scrape_and_check(gw.url("admin"), quiescent=True)
            refused_full = await metric(s, gw, "gateway_events_refused_total", reason="credentials")
    finally:
        gw.terminate()
    for status, headers, body in (full_sdk, full_okta):
        assert status == 503 and headers.get("Retry-After"), (status, body)
        assert json.loads(body)["status"] == "ServiceNotAvailable"
    assert answer[0] == 200, answer
    assert rejected == 0
    # Every event received is accounted for once (scrape_and_check): here forwarded (the 10
    # queued) or refused with a 503 (the others, while the credential was refused).
    total = {t: sum(terms[t] for terms in acc.values()) for t in ("received", "forwarded", "refused")}
    assert total["forwarded"] == 10
    assert refused_full == total["refused"] == total["received"] - 10
    stored = stored_messages(tmp_path / "local-audit.db")
    assert sorted(stored) == sorted(queued)  # exactly what was answered 200; the 503s were not kept
    assert WRONG_TOKEN not in gw.log() and TOKEN not in gw.log()
