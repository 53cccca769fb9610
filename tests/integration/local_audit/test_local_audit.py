"""The local audit log over real HTTP and a real SQLite file, driven by pangea-sdk and raw calls.

The SDK is synchronous: it runs in a worker thread (``asyncio.to_thread``) while the server
runs on the test's event loop.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import signal
import stat
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pangea.exceptions as pe
import pydantic
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from pangea.config import PangeaConfig
from pangea.services import Audit
from pangea.services.audit.models import EventVerification, SearchOrder

from gateway.local_audit.server import TOKEN_ENV, LocalAuditServer
from gateway.local_audit.settings import DEFAULT_CONFIG_ID, AuditConfigSettings, FaultSettings, LocalAuditSettings

T = TypeVar("T")
PASS = EventVerification.PASS
CONFIG_A = "pci_" + "a" * 32
CONFIG_B = "pci_" + "b" * 32
CONFIG_C = "pci_" + "c" * 32
CUSTOM = "pci_" + "d" * 32


@contextmanager
def sdk(server: LocalAuditServer, token: str | None = None, **kwargs: Any) -> Iterator[Audit]:
    """An SDK client for the server; its HTTP session is closed on exit."""
    audit = Audit(token or server.token, config=PangeaConfig(base_url_template=server.base_url), **kwargs)
    try:
        yield audit
    finally:
        audit.request.session.close()


async def call(fn: Callable[[], T]) -> T:
    """Run a blocking SDK call off the loop that serves it."""
    return await asyncio.to_thread(fn)


async def post(
    http: aiohttp.ClientSession,
    server: LocalAuditServer,
    path: str,
    body: Any,
    token: str | None = None,
    raw: bytes | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"Content-Type": "application/json"}
    if token != "":
        headers["Authorization"] = f"Bearer {token or server.token}"
    data = raw if raw is not None else json.dumps(body).encode()
    async with http.post(server.base_url + path, data=data, headers=headers) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


async def get(
    http: aiohttp.ClientSession, server: LocalAuditServer, url: str, token: str | None = None
) -> tuple[int, dict[str, Any]]:
    full = url if url.startswith("http") else server.base_url + url
    async with http.get(full, headers={"Authorization": f"Bearer {token or server.token}"}) as resp:
        return resp.status, await resp.json()


def assert_envelope(body: dict[str, Any], status: str) -> None:
    assert set(body) == {"request_id", "request_time", "response_time", "status", "summary", "result"}
    assert re.fullmatch(r"prq_[a-z2-7]{32}", body["request_id"])
    assert body["status"] == status


def events(n: int, **fields: str) -> list[dict[str, Any]]:
    return [{"event": {"message": f"event {i}", **fields}} for i in range(n)]


# -- the SDK end to end ---------------------------------------------------------------------


async def test_sdk_logs_single_bulk_and_async_events_and_search_verifies_them(server: LocalAuditServer) -> None:
    with sdk(server) as audit:
        plain = await call(lambda: audit.log(message="plain one", actor="alice"))
        assert plain.status == "Success" and plain.result is not None
        assert plain.result.envelope is None and plain.result.hash is not None and len(plain.result.hash) == 64

        verbose = await call(lambda: audit.log(message="verbose one", actor="bob", verbose=True, verify=True))
        assert verbose.result is not None and verbose.result.envelope is not None
        assert verbose.result.envelope.event == {"message": "verbose one", "actor": "bob"}
        assert verbose.result.envelope.received_at is not None
        assert verbose.result.membership_verification == PASS
        # The SDK sent the previous root it knew: the answer proves the log only grew.
        again = await call(lambda: audit.log(message="verbose two", verify=True))
        assert again.result is not None and again.result.consistency_verification == PASS

        bulk = await call(lambda: audit.log_bulk([{"message": f"bulk {i}"} for i in range(3)]))
        assert bulk.result is not None and len(bulk.result.results) == 3
        assert all(r.envelope is None for r in bulk.result.results)
        bulk_v = await call(lambda: audit.log_bulk([{"message": f"bulk v {i}"} for i in range(3)], verbose=True))
        assert bulk_v.result is not None
        # AuditLogResponseV2 has envelope and hash only: no proof, so nothing to verify membership with.
        assert [r.envelope is not None for r in bulk_v.result.results] == [True] * 3
        assert [r.membership_verification for r in bulk_v.result.results] == [EventVerification.NONE] * 3

        accepted = await call(lambda: audit.log_bulk_async([{"message": f"async {i}"} for i in range(2)]))
        assert accepted.http_status == 202 and accepted.status == "Accepted"
        assert accepted.accepted_result is not None
        assert accepted.accepted_result.location == f"{server.base_url}/request/{accepted.request_id}"
        with pytest.raises(pe.AcceptedRequestException):  # pending_polls defaults to 1
            await call(lambda: audit.poll_result(response=accepted))
        done = await call(lambda: audit.poll_result(response=accepted))
        assert done.status == "Success" and done.request_id == accepted.request_id
        assert done.result is not None and len(done.result.results) == 2  # type: ignore[attr-defined]

        found = await call(lambda: audit.search("", verify_events=True, verify_consistency=True, limit=100))
        assert found.result is not None and found.result.count == 11
        messages = {e.envelope.event["message"] for e in found.result.events if e.envelope.event}
        assert {"plain one", "verbose one", "bulk 0", "bulk v 2", "async 1"} <= messages
        assert all(e.membership_verification == PASS for e in found.result.events)
        assert plain.result.hash in {e.hash for e in found.result.events}
        assert found.result.unpublished_root is not None and found.result.unpublished_root.size == 11

        terse = await call(lambda: audit.search("plain", verbose=False, verify_events=True))
        assert terse.result is not None and terse.result.count == 1
        assert terse.result.events[0].membership_proof is None and terse.result.unpublished_root is None


async def test_field_queries_match_only_their_field_and_terms_combine(server: LocalAuditServer) -> None:
    with sdk(server) as audit:
        await call(
            lambda: audit.log_bulk(
                [
                    {"message": "alice logged in", "actor": "bob"},
                    {"message": "hello", "actor": "alice"},
                    {"message": "bye", "actor": "alice", "action": "logout"},
                    {"message": "done by Jane", "actor": "Jane Doe"},
                ]
            )
        )

        async def count(query: str) -> int:
            resp = await call(lambda: audit.search(query, verify_events=True))
            assert resp.result is not None
            return resp.result.count

        assert await count("actor:alice") == 2
        assert await count("alice") == 3
        assert await count("actor:alice action:logout") == 1
        assert await count('actor:"Jane Doe"') == 1
        assert await count("actor:Alice") == 0  # values are case-sensitive
        assert await count("message:logged actor:bob") == 1
        with pytest.raises(pe.ValidationException) as info:
            await call(lambda: audit.search("colour:red"))
        assert info.value.errors[0].source == "/query"


async def test_results_page_through_a_search_in_order(server: LocalAuditServer) -> None:
    with sdk(server) as audit:
        for start in (0, 10, 20):
            batch: list[dict[str, Any]] = [{"message": f"m{i:02d}"} for i in range(start, start + 10)]
            await call(functools.partial(audit.log_bulk, batch))
        first = await call(lambda: audit.search("", order=SearchOrder.ASC, limit=10, max_results=25))
        assert first.result is not None and first.result.count == 25
        seen = [e.envelope.event["message"] for e in first.result.events if e.envelope.event]
        search_id = first.result.id
        for offset in (10, 20):
            page = await call(functools.partial(audit.results, search_id, limit=10, offset=offset))
            assert page.result is not None and page.result.count == 25
            seen += [e.envelope.event["message"] for e in page.result.events if e.envelope.event]
        assert seen == [f"m{i:02d}" for i in range(25)]

        newest = await call(lambda: audit.search("", limit=1))
        assert newest.result is not None and newest.result.events[0].envelope.event == {"message": "m29"}
        with pytest.raises(pe.BadOffsetException):
            await call(functools.partial(audit.results, search_id, offset=26))
        with pytest.raises(pe.ValidationException):
            await call(lambda: audit.results("pas_unknown"))


async def test_search_time_range_bounds_received_at(server: LocalAuditServer) -> None:
    with sdk(server) as audit:
        await call(lambda: audit.log_bulk([{"message": "now"}]))

        async def count(**kwargs: Any) -> int:
            resp = await call(lambda: audit.search("", **kwargs))
            assert resp.result is not None
            return resp.result.count

        assert await count(start="1h") == 1
        assert await count(end="1d") == 0
        assert await count(start="2099-01-01T00:00:00Z") == 0
        assert await count(start="2000-01-01T00:00:00Z", end="2099-01-01T00:00:00+01:00") == 1
        with pytest.raises(pe.ValidationException):
            await call(lambda: audit.search("", start="yesterday"))


async def test_signed_events_keep_their_signature_for_sdk_verification(
    server: LocalAuditServer, tmp_path: Path
) -> None:
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with sdk(server, private_key_file=str(key_file)) as audit:
        logged = await call(lambda: audit.log(message="signed", sign_local=True, verbose=True, verify=True))
        assert logged.result is not None and logged.result.signature_verification == PASS
        await call(lambda: audit.log_bulk([{"message": "signed bulk"}], sign_local=True))
        found = await call(lambda: audit.search("signed", verify_events=True))
        assert found.result is not None and found.result.count == 2
        assert [e.signature_verification for e in found.result.events] == [PASS, PASS]


# -- errors -----------------------------------------------------------------------------------


async def test_validation_errors_point_at_each_offending_event_field(
    server: LocalAuditServer, http: aiohttp.ClientSession
) -> None:
    batch = events(5)
    del batch[1]["event"]["message"]
    batch[3]["event"].update(actor="x" * 129, colour="red")
    batch[4]["event"]["timestamp"] = "2026-11-22 03:04:05"
    status, body, _ = await post(http, server, "/v2/log", {"events": batch})
    assert status == 400
    assert_envelope(body, "ValidationError")
    errors = [(e["code"], e["source"]) for e in body["result"]["errors"]]
    assert errors == [
        ("FieldRequired", "/events/1/event/message"),
        ("AboveMaxLength", "/events/3/event/actor"),
        ("UnexpectedProperty", "/events/3/event/colour"),
        ("BadFormatDateTime", "/events/4/event/timestamp"),
    ]
    assert all(e["detail"] for e in body["result"]["errors"])

    # The whole request was rejected: nothing of it is stored.
    status, stats = await get(http, server, "/_stats")
    assert stats["result"]["stored_events"] == 0 and stats["result"]["rejected_calls"] == 1

    for payload, code, source in [
        ({}, "FieldRequired", "/events"),
        ({"events": []}, "BelowMinItems", "/events"),
        ({"events": events(1001)}, "AboveMaxItems", "/events"),
        ({"events": [{"event": {"message": "m"}, "extra": 1}]}, "UnexpectedProperty", "/events/0/extra"),
        ({"events": [{"event": {"message": 5}}]}, "InvalidString", "/events/0/event/message"),
        ({"events": events(1), "verbose": "yes"}, "InvalidBool", "/verbose"),
    ]:
        status, body, _ = await post(http, server, "/v2/log", payload)
        assert status == 400 and [(e["code"], e["source"]) for e in body["result"]["errors"]] == [(code, source)]

    status, body, _ = await post(http, server, "/v1/log", {"event": {"message": "m", "action": "a" * 33}})
    assert status == 400 and body["result"]["errors"][0]["source"] == "/event/action"
    status, body, _ = await post(http, server, "/v1/log", None, raw=b"{not json")
    assert status == 400 and body["status"] == "ValidationError" and body["result"]["errors"][0]["source"] == ""

    with sdk(server) as audit, pytest.raises(pe.ValidationException) as info:
        await call(lambda: audit.log_bulk([{"message": "ok"}, {"message": "m", "status": "s" * 40}]))
    assert [(e.code, e.source) for e in info.value.errors] == [("AboveMaxLength", "/events/1/event/status")]


async def test_missing_or_wrong_token_is_unauthorized(server: LocalAuditServer, http: aiohttp.ClientSession) -> None:
    for token in ("", "pts_wrong"):
        status, body, _ = await post(http, server, "/v2/log", {"events": events(1)}, token=token)
        assert status == 401 and body["status"] == "Unauthorized" and body["result"] is None
    async with http.post(
        server.base_url + "/v1/search", json={}, headers={"Authorization": f"Basic {server.token}"}
    ) as resp:
        assert resp.status == 401
    with sdk(server, token="pts_wrong") as audit, pytest.raises(pe.UnauthorizedException):
        await call(lambda: audit.log(message="nope"))


async def test_unknown_routes_and_requests_are_pangea_not_found(
    server: LocalAuditServer, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await post(http, server, "/v9/nothing", {})
    assert status == 404
    assert_envelope(body, "NotFound")
    status, body = await get(http, server, "/request/prq_doesnotexist")
    assert status == 404 and body["status"] == "NotFound"


async def test_token_for_several_configs_needs_config_id(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    settings = LocalAuditSettings(
        listen_port=0,
        db_path=tmp_path / "audit.db",
        configs=[
            AuditConfigSettings(id=CONFIG_A),
            AuditConfigSettings(id=CONFIG_B),
            AuditConfigSettings.model_validate({"id": CONFIG_C, "tokens": ["pts_c_only"]}),
        ],
    )
    server = LocalAuditServer(settings)
    await server.start()
    try:
        status, body, _ = await post(http, server, "/v2/log", {"events": events(1)})
        assert status == 400
        assert_envelope(body, "AmbiguousConfigID")
        status, body, _ = await post(http, server, "/v2/log", {"events": events(2), "config_id": CONFIG_A})
        assert status == 200 and len(body["result"]["results"]) == 2
        status, body, _ = await post(http, server, "/v2/log", {"events": events(1), "config_id": CONFIG_C})
        assert status == 403 and body["status"] == "MissingConfigIDScope"
        status, body, _ = await post(http, server, "/v2/log", {"events": events(1), "config_id": ""})
        assert status == 400 and body["status"] == "MissingConfigID"
        status, body, _ = await post(http, server, "/v2/log", {"events": events(1)}, token="pts_c_only")
        assert status == 200

        with sdk(server) as ambiguous, pytest.raises(pe.PangeaAPIException) as info:
            await call(lambda: ambiguous.log(message="which one?"))
        assert info.value.response.status == "AmbiguousConfigID"
        with sdk(server, config_id=CONFIG_B) as audit_b:
            await call(lambda: audit_b.log(message="for b"))
            found = await call(lambda: audit_b.search("", verify_events=True))
            assert found.result is not None
            assert [e.envelope.event for e in found.result.events] == [{"message": "for b"}]
        with sdk(server, config_id=CONFIG_C) as no_scope, pytest.raises(pe.MissingConfigID):
            await call(lambda: no_scope.log(message="not mine"))
    finally:
        await server.stop()


async def test_custom_schema_configuration_validates_and_searches_its_fields(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    fields: list[dict[str, Any]] = [
        {"id": "message", "type": "text", "required": True},
        {"id": "amount", "type": "integer"},
        {"id": "approved", "type": "boolean"},
        {"id": "happened", "type": "datetime"},
        {"id": "user", "type": "string", "size": 8, "redact": True},
    ]
    settings = LocalAuditSettings.model_validate(
        {
            "listen_port": 0,
            "db_path": tmp_path / "audit.db",
            "configs": [{"id": CUSTOM, "tokens": ["pts_custom"], "schema": {"fields": fields}}],
        }
    )
    server = LocalAuditServer(settings)
    await server.start()
    try:
        assert server.token == "pts_custom"
        status, body, _ = await post(http, server, "/v1/schema", {})
        assert status == 200
        assert [(f["id"], f["type"], f["required"]) for f in body["result"]["fields"]] == [
            (f["id"], f["type"], f.get("required", False)) for f in fields
        ]
        assert body["result"]["fields"][4]["size"] == 8 and body["result"]["fields"][4]["redact"] is True

        good = {"message": "paid", "amount": 5, "approved": True, "happened": "2026-01-01T00:00:00Z", "user": "abc"}
        with sdk(server) as audit:
            logged = await call(lambda: audit.log_event(dict(good), verbose=True, verify=True))
            assert logged.result is not None and logged.result.envelope is not None
            assert logged.result.envelope.event == good
            found = await call(lambda: audit.search("user:abc", verify_events=True, order_by="amount"))
            assert found.result is not None and found.result.count == 1

        bad = {
            "message": "m",
            "amount": "5",
            "approved": 1,
            "happened": "yesterday",
            "user": "toolongname",
            "actor": "x",
        }
        status, body, _ = await post(http, server, "/v2/log", {"events": [{"event": bad}]})
        assert status == 400
        assert [(e["code"], e["source"]) for e in body["result"]["errors"]] == [
            ("InvalidInteger", "/events/0/event/amount"),
            ("InvalidBool", "/events/0/event/approved"),
            ("BadFormatDateTime", "/events/0/event/happened"),
            ("AboveMaxLength", "/events/0/event/user"),
            ("UnexpectedProperty", "/events/0/event/actor"),
        ]
        status, body, _ = await post(http, server, "/v1/search", {"query": "", "order_by": "actor"})
        assert status == 400 and body["result"]["errors"][0]["code"] == "NotEnumMember"
    finally:
        await server.stop()


async def test_a_failure_inside_the_write_rolls_back_and_answers_internal_error(
    server: LocalAuditServer, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    await post(http, server, "/v2/log", {"events": events(3)})
    store = server._store
    assert store is not None

    def broken(*args: Any, **kwargs: Any) -> list[str]:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(store, "membership_proofs", broken)  # fails after the row is inserted
    async with http.post(
        server.base_url + "/v1/log",
        json={"event": {"message": "lost"}, "verbose": True},
        headers={"Authorization": f"Bearer {server.token}"},
    ) as resp:
        text = await resp.text()
        assert resp.status == 500
    body = json.loads(text)
    assert_envelope(body, "InternalError")
    assert "secret detail" not in text and "Traceback" not in text
    monkeypatch.undo()

    status, body, _ = await post(http, server, "/v2/log", {"events": events(2)})
    assert status == 200
    with sdk(server) as audit:
        found = await call(lambda: audit.search("", verify_events=True, verify_consistency=True))
        root = await call(audit.root)
    assert found.result is not None and found.result.count == 5
    assert all(e.membership_verification == PASS for e in found.result.events)
    assert root.result is not None and root.result.data.size == 5


async def test_a_second_server_on_the_same_database_is_refused(server: LocalAuditServer) -> None:
    second = LocalAuditServer(server.settings)
    with pytest.raises(OSError, match="in use"):
        await second.start()
    await second.stop()


# -- faults -----------------------------------------------------------------------------------


@pytest.fixture
async def faulty(tmp_path: Path) -> AsyncIterator[LocalAuditServer]:
    """A server started with the test-only fault-injection endpoints."""
    srv = LocalAuditServer(LocalAuditSettings(listen_port=0, db_path=tmp_path / "audit.db", enable_test_faults=True))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def test_fault_endpoints_exist_only_with_the_test_flag(
    server: LocalAuditServer, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await post(http, server, "/_faults", {"outage": True})
    assert status == 404 and body["status"] == "NotFound"
    status, body = await get(http, server, "/_faults")
    assert status == 404
    status, _, _ = await post(http, server, "/v2/log", {"events": events(1)})
    assert status == 200
    with pytest.raises(pydantic.ValidationError, match="enable_test_faults"):
        LocalAuditSettings(faults=FaultSettings(outage=True))


async def set_faults(http: aiohttp.ClientSession, faulty: LocalAuditServer, **knobs: Any) -> dict[str, Any]:
    status, body, _ = await post(http, faulty, "/_faults", knobs)
    assert status == 200, body
    return body["result"]  # type: ignore[no-any-return]


async def stored(http: aiohttp.ClientSession, faulty: LocalAuditServer) -> int:
    _, body = await get(http, faulty, "/_stats")
    return body["result"]["stored_events"]  # type: ignore[no-any-return]


async def test_outage_answers_503_and_stores_nothing_until_lifted(
    faulty: LocalAuditServer, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, faulty, outage=True, retry_after_secs=4)
    for path, payload in [
        ("/v2/log", {"events": events(3)}),
        ("/v1/log", {"event": {"message": "m"}}),
        ("/v2/log_async", {"events": events(1)}),
        ("/v1/search", {}),
    ]:
        status, body, headers = await post(http, faulty, path, payload)
        assert status == 503 and headers["Retry-After"] == "4"
        assert_envelope(body, "ServiceNotAvailable")
    assert await stored(http, faulty) == 0
    await set_faults(http, faulty, outage=False)
    status, _, _ = await post(http, faulty, "/v2/log", {"events": events(3)})
    assert status == 200 and await stored(http, faulty) == 3
    _, stats = await get(http, faulty, "/_stats")
    assert stats["result"]["faults_injected"]["outage"] == 4


async def test_429_ratio_answers_too_many_requests_with_retry_after(
    faulty: LocalAuditServer, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, faulty, error_429_ratio=1.0, retry_after_secs=7)
    status, body, headers = await post(http, faulty, "/v2/log", {"events": events(2)})
    assert status == 429 and headers["Retry-After"] == "7"
    assert_envelope(body, "TooManyRequests")
    with sdk(faulty) as audit, pytest.raises(pe.RateLimitException):
        await call(lambda: audit.log(message="m"))
    assert await stored(http, faulty) == 0
    await set_faults(http, faulty, reset=True)
    status, _, _ = await post(http, faulty, "/v2/log", {"events": events(2)})
    assert status == 200


async def test_5xx_ratio_fails_calls_with_server_errors_and_stores_nothing(
    faulty: LocalAuditServer, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, faulty, error_5xx_ratio=1.0, seed=5)
    seen = set()
    for _ in range(30):
        status, body, _ = await post(http, faulty, "/v2/log", {"events": events(1)})
        seen.add((status, body["status"]))
    assert seen == {(503, "ServiceNotAvailable"), (500, "InternalError"), (502, "InternalError")}
    assert await stored(http, faulty) == 0
    _, stats = await get(http, faulty, "/_stats")
    assert stats["result"]["faults_injected"]["error_5xx"] == 30


async def test_latency_knob_delays_answers(faulty: LocalAuditServer, http: aiohttp.ClientSession) -> None:
    await set_faults(http, faulty, latency_ms=60)
    started = time.monotonic()
    status, _, _ = await post(http, faulty, "/v2/log", {"events": events(1)})
    assert status == 200 and time.monotonic() - started >= 0.05
    _, stats = await get(http, faulty, "/_stats")
    assert stats["result"]["faults_injected"]["latency"] == 1


async def test_every_nth_log_call_is_accepted_then_resolves_at_request_location(
    faulty: LocalAuditServer, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, faulty, accept_every_nth=2, pending_polls=2)
    status, _, _ = await post(http, faulty, "/v2/log", {"events": events(2)})
    assert status == 200
    status, accepted, _ = await post(http, faulty, "/v2/log", {"events": events(3, actor="second")})
    assert status == 202
    assert_envelope(accepted, "Accepted")
    result = accepted["result"]
    assert set(result) == {"location", "retry_counter", "ttl_mins"}
    assert result["location"] == f"{faulty.base_url}/request/{accepted['request_id']}"
    assert await stored(http, faulty) == 5  # accepted events are stored already

    for counter in (1, 2):
        status, body = await get(http, faulty, result["location"])
        assert status == 202 and body["status"] == "Accepted" and body["result"]["retry_counter"] == counter
        assert body["request_id"] == accepted["request_id"]
    status, final = await get(http, faulty, result["location"])
    assert status == 200
    assert_envelope(final, "Success")
    assert final["request_id"] == accepted["request_id"]
    assert len(final["result"]["results"]) == 3
    status, again = await get(http, faulty, result["location"])
    assert status == 200 and again == final

    with sdk(faulty) as audit:
        found = await call(lambda: audit.search("actor:second", verify_events=True))
        assert found.result is not None
        assert {e.hash for e in found.result.events} == {r["hash"] for r in final["result"]["results"]}


async def test_sdk_polls_an_accepted_log_call_to_its_result(
    faulty: LocalAuditServer, http: aiohttp.ClientSession
) -> None:
    await set_faults(http, faulty, accept_every_nth=1, pending_polls=0)
    with sdk(faulty) as audit:
        logged = await call(lambda: audit.log(message="via 202", verbose=True, verify=True))
        assert logged.status == "Success" and logged.http_status == 200
        assert logged.result is not None and logged.result.membership_verification == PASS


async def test_fault_admin_needs_a_token_and_valid_knobs(faulty: LocalAuditServer, http: aiohttp.ClientSession) -> None:
    status, body, _ = await post(http, faulty, "/_faults", {"outage": True}, token="")
    assert status == 401
    status, body, _ = await post(http, faulty, "/_faults", {"error_429_ratio": 3})
    assert status == 400 and body["result"]["errors"][0]["source"] == "/error_429_ratio"
    status, body = await get(http, faulty, "/_faults")
    assert status == 200 and body["result"]["outage"] is False


# -- tamper evidence and persistence ------------------------------------------------------------


async def test_root_grows_with_the_log_and_old_roots_stay_reproducible(
    server: LocalAuditServer, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await post(http, server, "/v1/root", {})
    assert status == 200 and body["status"] == "TreeNotFound"
    with sdk(server) as audit:
        with pytest.raises(pe.TreeNotFoundException):
            await call(audit.root)
        first = await call(lambda: audit.log(message="one", verbose=True))
        root1 = await call(audit.root)
        assert root1.result is not None and root1.result.data.size == 1
        assert first.result is not None and root1.result.data.root_hash == first.result.unpublished_root
        await call(lambda: audit.log_bulk([{"message": "two"}, {"message": "three"}]))
        root3 = await call(audit.root)
        assert root3.result is not None and root3.result.data.size == 3
        assert root3.result.data.root_hash != root1.result.data.root_hash
        assert root3.result.data.tree_name == root1.result.data.tree_name
        old = await call(lambda: audit.root(tree_size=1))
        assert old.result is not None and old.result.data.root_hash == root1.result.data.root_hash
    status, body, _ = await post(http, server, "/v1/root", {})
    assert body["result"]["size"] == 3 and body["result"]["root_hash"] == body["result"]["data"]["root_hash"]
    status, body, _ = await post(http, server, "/v1/root", {"tree_size": 4})
    assert status == 400 and body["result"]["errors"][0]["source"] == "/tree_size"


async def test_restart_on_the_same_database_keeps_records_tree_and_token(tmp_path: Path) -> None:
    settings = LocalAuditSettings(listen_port=0, db_path=tmp_path / "data" / "audit.db")
    first = LocalAuditServer(settings)
    await first.start()
    try:
        token = first.token
        assert re.fullmatch(r"pts_[a-z2-7]{32}", token)
        token_file = tmp_path / "data" / "audit.db.token"
        assert token_file.read_text().strip() == token
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        with sdk(first) as audit:
            await call(lambda: audit.log_bulk([{"message": f"before {i}"} for i in range(300)]))
            root_before = await call(audit.root)
    finally:
        await first.stop()

    second = LocalAuditServer(settings)
    await second.start()
    try:
        assert second.token == token
        with sdk(second) as audit:
            root_after = await call(audit.root)
            assert root_after.result is not None and root_before.result is not None
            assert root_after.result.data == root_before.result.data
            await call(lambda: audit.log(message="after restart"))
            found = await call(
                lambda: audit.search("", verify_events=True, verify_consistency=True, max_results=400, limit=400)
            )
            assert found.result is not None and found.result.count == 301
            assert all(e.membership_verification == PASS for e in found.result.events)
    finally:
        await second.stop()


async def test_default_token_comes_from_the_environment_when_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "pts_from_env")
    server = LocalAuditServer(LocalAuditSettings(listen_port=0, db_path=tmp_path / "audit.db"))
    await server.start()
    try:
        assert server.token == "pts_from_env" and server.config_ids == [DEFAULT_CONFIG_ID]
        assert not (tmp_path / "audit.db.token").exists()
        with sdk(server) as audit:
            assert (await call(lambda: audit.log(message="m"))).status == "Success"
    finally:
        await server.stop()


# -- the command line ---------------------------------------------------------------------------

_HARNESS = """
import argparse, sys
from gateway.local_audit import cli
parser = argparse.ArgumentParser()
cli.register(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args()
sys.exit(args.func(args))
"""


async def test_cli_serve_runs_until_sigterm_and_logs_json_without_the_token(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    db = tmp_path / "cli.db"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _HARNESS,
        "local-audit",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--db",
        str(db),
        "--enable-test-faults",
        "--fault-429-ratio",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        banner = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        match = re.search(r"(http://127\.0\.0\.1:\d+), configurations: (\S+)", banner)
        assert match and match.group(2) == DEFAULT_CONFIG_ID, banner
        token_line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        token = token_line.rsplit(": ", 1)[1].strip()
        assert token == (tmp_path / "cli.db.token").read_text().strip()
        async with http.post(
            match.group(1) + "/v2/log", json={"events": events(2)}, headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.strip()]
    assert {line["logger"] for line in lines} == {"gateway.local_audit"}
    assert any(line["message"] == "local audit log listening" for line in lines)
    # the one log schema of every command (issue 16)
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines), lines
    assert token not in stderr.decode()


async def test_cli_refuses_an_invalid_configs_file(tmp_path: Path) -> None:
    bad = tmp_path / "configs.yaml"
    bad.write_text("configs:\n  - id: not-a-config-id\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _HARNESS,
        "local-audit",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--db",
        str(tmp_path / "x.db"),
        "--configs",
        str(bad),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2 and b"invalid configuration" in stderr
