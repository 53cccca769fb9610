"""Issue 5: hostile input on every vendor route, against one running gateway process.

Routes: Auth0 (``/v1/log_stream``), Okta (``/webhooks/okta``), GitHub (``/webhooks/github``),
Splunk HEC (``/services/collector``) and the Pangea SDK API (``/v2/log``), each with auth and
small limits (64 KiB bodies, 16 levels of JSON, 50 events per request).

* a deterministic fuzz corpus per route (truncated, deeply nested, oversized, wrong-typed, wrongly
  signed, wrong-token, gzip-bomb, binary, invalid UTF-8, huge numbers, NaN/Infinity, duplicate
  keys, too many events...): each answer is a 4xx in the route's documented shape (Pangea
  envelope, or HEC's ``{text, code}``), never a 5xx or a trace; nothing reaches the local audit
  log; then valid control events still land;
* hypothesis properties (derandomized, bounded): random bytes, truncations and wrong credentials
  are refused and land nothing; a valid record with any JSON value in one of its fields lands
  exactly when the answer says so;
* rate limits (429 + Retry-After), slow bodies (408), slow headers (closed), TLS;
* the process stays up, its memory bounded, and no configured secret appears in its log or in any
  answer.
"""

from __future__ import annotations

import gzip
import http.client
import json
import random
import select
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.integration.vendors.harness import (
    AUTH0_AUTHORIZATION,
    GITHUB_SECRET,
    HEC_TOKEN,
    OKTA_SECRET,
    TOKEN,
    Reply,
    assert_clean_refusal,
    fixture_bytes,
    github_signature,
    healthy,
    record_count,
    request,
    sdk,
    search_all,
)
from tests.support.procs import Proc, rss_kib, start_gateway
from tests.support.tls import self_signed

SDK_TOKEN = "pts_hostile_sdk_inbound_4f9c2e7a"
MAX_BODY = 64 * 1024
MAX_DEPTH = 16
MAX_EVENTS = 50
BODY_TIMEOUT_SECS = 1.5
KEEPALIVE_SECS = 3.0
SECRETS = {
    "auth0": AUTH0_AUTHORIZATION.removeprefix("Bearer "),
    "okta": OKTA_SECRET,
    "github": GITHUB_SECRET,
    "hec": HEC_TOKEN,
    "sdk": SDK_TOKEN,
    "local audit": TOKEN,
}
RSS_GROWTH_LIMIT_KIB = 96 * 1024
RSS_LIMIT_KIB = 384 * 1024

ANSWERS: list[bytes] = []
"""Every answer body of this module, searched for secrets at the end."""


def limits() -> dict[str, Any]:
    return {"max_body_bytes": MAX_BODY, "max_json_depth": MAX_DEPTH, "max_events_per_request": MAX_EVENTS}


def gateway_config() -> dict[str, Any]:
    return {
        "log_level": "debug",
        "intake": {"body_timeout_secs": BODY_TIMEOUT_SECS, "keepalive_timeout_secs": KEEPALIVE_SECS},
        # a lone event is sent at once rather than after the default 0.2 s batch wait
        "destinations": {"default": {"schema": "standard", "batch": {"timeout_secs": 0.005}}},
        "sources": {
            "auth0": {
                "type": "webhook",
                "format": "auth0",
                "path": "/v1/log_stream",
                "auth": {"header": "Authorization", "value": AUTH0_AUTHORIZATION},
                "destination": "default",
                **limits(),
            },
            "okta": {
                "type": "webhook",
                "format": "okta",
                "path": "/webhooks/okta",
                "auth": {"header": "Authorization", "value": OKTA_SECRET},
                "destination": "default",
                **limits(),
            },
            "github": {
                "type": "webhook",
                "format": "github",
                "path": "/webhooks/github",
                "auth": {"hmac_sha256_secret": GITHUB_SECRET},
                "destination": "default",
                **limits(),
            },
            "hec": {
                "type": "webhook",
                "format": "splunk_hec",
                "path": "/services/collector",
                "auth": {"splunk_token": HEC_TOKEN},
                "destination": "default",
                **limits(),
            },
            "sdk": {
                "type": "webhook",
                "format": "pangea",
                "auth": {"header": "Authorization", "value": f"Bearer {SDK_TOKEN}"},
                "destination": "default",
                **limits(),
            },
            "limited": {
                "type": "webhook",
                "format": "json",
                "path": "/webhooks/limited",
                "destination": "default",
                "rate_limit_per_sec": 0.05,
                "rate_limit_burst": 2,
            },
            "limited_hec": {
                "type": "webhook",
                "format": "splunk_hec",
                "path": "/limited/collector",
                "auth": {"splunk_token": HEC_TOKEN},
                "destination": "default",
                "rate_limit_per_sec": 0.05,
                "rate_limit_burst": 1,
            },
        },
    }


@dataclass
class Hostile:
    gw: Proc
    rss_start_kib: int
    tls_logs: list[Path] = field(default_factory=list)

    def count(self) -> int:
        return record_count(self.gw.url("local_audit"))

    def messages(self) -> set[str]:
        return {str(e.envelope.event["message"]) for e in search_all(sdk(self.gw.url("local_audit")))}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    tmp = tmp_path_factory.mktemp("hostile")
    config = tmp / "gateway.yaml"
    config.write_text(json.dumps(gateway_config()))
    gw = start_gateway(tmp, config=config, env={"AUDIT_GATEWAY_LOCAL_TOKEN": TOKEN})
    try:
        # warm up every route once so the baseline includes what a first request loads
        for route in ROUTES.values():
            send(gw, route, route.body([route.record(f"warm-up {route.name}")]))
        yield Hostile(gw, rss_kib(gw.popen.pid))
    finally:
        gw.terminate()


# -- routes ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """A vendor route: where it is, how a valid body looks, how it authenticates."""

    name: str
    path: str
    record: Callable[[str], Any]
    """A valid record whose event's message contains the given text."""
    shape: Callable[[list[Any]], Any]
    """The body holding records (as a JSON value)."""
    hec: bool = False

    def body(self, records: list[Any]) -> bytes:
        if self.hec:  # concatenated JSON objects
            return b"".join(json.dumps(r).encode() for r in records)
        return json.dumps(self.shape(records)).encode()

    def headers(self, body: bytes) -> dict[str, str]:
        """Valid credentials for ``body``."""
        base = {"Content-Type": "application/json"}
        if self.name == "auth0":
            return {**base, "Authorization": AUTH0_AUTHORIZATION}
        if self.name == "okta":
            return {**base, "Authorization": OKTA_SECRET}
        if self.name == "github":
            return {
                **base,
                "X-GitHub-Event": "star",
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": github_signature(body),
            }
        if self.name == "hec":
            return {**base, "Authorization": f"Splunk {HEC_TOKEN}"}
        return {**base, "Authorization": f"Bearer {SDK_TOKEN}"}

    def with_credential(self, value: str) -> dict[str, str]:
        """Headers carrying ``value`` where the route expects its credential."""
        headers = self.headers(b"{}")
        key = "X-Hub-Signature-256" if self.name == "github" else "Authorization"
        headers[key] = value
        return headers

    def without_credential(self) -> dict[str, str]:
        key = "X-Hub-Signature-256" if self.name == "github" else "Authorization"
        return {k: v for k, v in self.headers(b"{}").items() if k != key}


def _auth0(msg: str) -> Any:
    return {
        "log_id": uuid.uuid4().hex,
        "data": {"type": "s", "description": msg, "date": "2024-06-11T08:15:12.345Z", "user_name": "fuzz"},
    }


def _okta(msg: str) -> Any:
    return {
        "uuid": str(uuid.uuid4()),
        "eventType": "user.session.start",
        "displayMessage": msg,
        "published": "2024-06-11T08:20:01.123Z",
        "actor": {"alternateId": "fuzz@acme.example"},
    }


def _github(msg: str) -> Any:
    return {"action": "created", "sender": {"login": msg}, "repository": {"full_name": "acme/r"}}


def _hec(msg: str) -> Any:
    return {"event": msg, "time": 1718093712, "host": "fuzz"}


def _sdk(msg: str) -> Any:
    return {"event": {"message": msg, "actor": "fuzz"}}


ROUTES: dict[str, Route] = {
    "auth0": Route("auth0", "/v1/log_stream", _auth0, lambda rs: rs),
    "okta": Route(
        "okta", "/webhooks/okta", _okta, lambda rs: {"eventType": "com.okta.event_hook", "data": {"events": rs}}
    ),
    "github": Route("github", "/webhooks/github", _github, lambda rs: rs[0]),
    "hec": Route("hec", "/services/collector", _hec, lambda rs: rs, hec=True),
    "sdk": Route("sdk", "/v2/log", _sdk, lambda rs: {"events": rs}),
}
ROUTE_NAMES = list(ROUTES)


def landed_message(route: Route, msg: str) -> str:
    """The ``message`` of the event a control record with ``msg`` becomes."""
    if route.name == "github":
        return f"GitHub star created by {msg} on acme/r"
    return msg


def send(gw: Proc, route: Route, body: bytes | Iterator[bytes] | None, headers: dict[str, str] | None = None) -> Reply:
    if headers is None:
        headers = route.headers(body if isinstance(body, bytes) else b"")
    reply = request(gw.url() + route.path, body, headers)
    ANSWERS.append(reply.body)
    for value in reply.headers.values():
        ANSWERS.append(value.encode("utf-8", "replace"))
    return reply


# -- the deterministic corpus ------------------------------------------------------------------------------


@dataclass
class Case:
    label: str
    body: bytes | Iterator[bytes]
    status: int | tuple[int, ...] = 400
    headers: dict[str, str] | None = None
    """Override of the route's valid headers (for GitHub, signed over the body when None)."""
    extra_headers: dict[str, str] = field(default_factory=dict)


def nested(depth: int) -> str:
    """JSON text of ``depth`` nested containers (objects and arrays in turn)."""
    half = depth // 2
    return '{"k":[' * half + ("{}" if depth % 2 else '"bottom"') + "]}" * half


def in_record(route: Route, value_json: str, where: str = "inner") -> bytes:
    """A one-record body of ``route`` with ``value_json`` (raw JSON text) in one of its fields."""
    placeholder = "__VALUE_PLACEHOLDER__"
    rec = route.record("fuzz")
    if route.name == "auth0":
        rec["data"]["details" if where == "inner" else "date"] = placeholder
    elif route.name == "okta":
        rec["debugContext" if where == "inner" else "published"] = placeholder
    elif route.name == "github":
        rec["hook" if where == "inner" else "action"] = placeholder
    elif route.name == "hec":
        rec["event" if where == "inner" else "time"] = placeholder
    else:
        rec["event"]["new" if where == "inner" else "timestamp"] = placeholder
    return route.body([rec]).replace(json.dumps(placeholder).encode(), value_json.encode())


def padded(route: Route, size: int) -> bytes:
    body = route.body([route.record("x" * (size + 64))])
    return body[: size + 1] if len(body) > size else body + b" " * (size + 1 - len(body))


def corpus(route: Route) -> list[Case]:
    rng = random.Random(f"hostile-{route.name}")
    one = route.body([route.record("valid but cut")])
    three = route.body([route.record(f"valid but cut {i}") for i in range(3)])
    base = one if route.hec or route.name == "github" else three
    valid = route.headers(one)["X-Hub-Signature-256" if route.name == "github" else "Authorization"]
    cases = [
        Case("empty", b"", 400),
        Case("whitespace", b" \r\n\t ", 400),
        *(Case(f"truncated-{n}", base[:n]) for n in sorted({1, 2, len(base) // 3, len(base) // 2, len(base) - 1})),
        Case("nested-beyond-orjson", nested(3000).encode()),
        Case("brackets", b"[" * 60_000),
        Case("braces", b'{"a":' * 10_000),
        Case("oversized", padded(route, MAX_BODY), 413),
        Case("oversized-chunked", iter([padded(route, MAX_BODY)[: MAX_BODY // 2], b" " * MAX_BODY]), 413),
        Case("gzip-bomb", gzip.compress(b"\0" * (4 * 1024 * 1024)), 413, extra_headers={"Content-Encoding": "gzip"}),
        Case(
            "gzip-bomb-json",
            gzip.compress(b"[" + b" " * (8 * 1024 * 1024) + b"]"),
            413,
            extra_headers={"Content-Encoding": "gzip"},
        ),
        Case("gzip-truncated", gzip.compress(one)[:-6], extra_headers={"Content-Encoding": "gzip"}),
        Case("gzip-trailing-garbage", gzip.compress(one) + b"junk", extra_headers={"Content-Encoding": "gzip"}),
        Case("gzip-not-gzip", one, extra_headers={"Content-Encoding": "gzip"}),
        Case("content-encoding-br", one, extra_headers={"Content-Encoding": "br"}),
        Case("content-encoding-deflate", one, extra_headers={"Content-Encoding": "deflate"}),
        *(Case(f"binary-{i}", rng.randbytes(rng.randint(1, 4096))) for i in range(4)),
        Case("binary-nul", b"\0" * 1000),
        Case("invalid-utf8", in_record(route, '"INVALID_UTF8"', "outer").replace(b"INVALID_UTF8", b"\xff\xfe\xfd")),
        Case("utf16", one.decode().encode("utf-16")),
        Case("lone-surrogate", in_record(route, '"\\ud800 lone"', "outer")),
        Case("huge-float", in_record(route, "1e400", "outer")),
        Case("huge-negative-float", in_record(route, "-1e400", "outer")),
        Case("huge-int-digits", in_record(route, "9" * 5000, "outer")),
        Case("nan", in_record(route, "NaN", "outer")),
        Case("infinity", in_record(route, "Infinity", "outer")),
        Case("minus-infinity", in_record(route, "-Infinity", "outer")),
        Case("json-scalar", b"42"),
        Case("json-string", b'"just a string"'),
        Case("json-null", b"null"),
        Case(
            "wrong-credential",
            one,
            403 if route.hec else 401,
            headers=route.with_credential(("Splunk " if route.hec else "") + "wrong-value"),
        ),
        Case("missing-credential", one, 401, headers=route.without_credential()),
        Case(
            "non-utf8-credential",
            one,
            403 if route.hec else 401,
            headers=route.with_credential(("Splunk " if route.hec else "") + "\xff\xfe\x80 latin-1 bytes"),
        ),
        Case(
            "secret-as-prefix",
            one,
            403 if route.hec else 401,
            headers=route.with_credential(valid + "x"),
        ),
    ]
    if route.name != "sdk":  # the SDK route does not apply max_json_depth (see test_sdk_route_applies_max_json_depth)
        cases.append(Case("nested-beyond-limit", in_record(route, nested(MAX_DEPTH + 4))))
    if route.name != "github":  # a GitHub delivery is one payload
        n = 1001 if route.name == "sdk" else MAX_EVENTS + 1
        cases.append(Case("too-many-events", route.body([route.record(f"many {i}") for i in range(n)])))
    cases += route_specific(route)
    return cases


def route_specific(route: Route) -> list[Case]:
    if route.name == "auth0":
        return [
            Case("records-not-objects", b"[1, 2, 3]"),
            Case("data-not-object", b'[{"log_id": "a", "data": 5}]'),
            Case("type-not-text", b'[{"log_id": "a", "data": {"type": {"x": 1}}}]'),
            Case("logs-not-array", b'{"logs": {"data": {"type": "s"}}}'),
            Case("duplicate-keys", b'[{"log_id": "a", "data": {"type": "s", "description": "d"}, "data": 5}]'),
            Case("date-not-a-date", in_record(route, '"yesterday"', "outer")),
            Case("date-out-of-range", in_record(route, "1e30", "outer")),
            Case("ndjson-bad-line", json.dumps(_auth0("ok")).encode() + b"\n{not json\n"),
        ]
    if route.name == "okta":
        return [
            Case("events-not-array", b'{"eventType": "com.okta.event_hook", "data": {"events": {}}}'),
            Case("event-not-object", b'{"eventType": "com.okta.event_hook", "data": {"events": [5]}}'),
            Case("no-event-type", b'{"eventType": "com.okta.event_hook", "data": {"events": [{"uuid": "x"}]}}'),
            Case("hook-without-events", b'{"eventType": "com.okta.event_hook", "data": {}}'),
            Case("duplicate-keys", b'{"eventType": "com.okta.event_hook", "data": {"events": []}, "data": 5}'),
            Case("published-not-a-date", in_record(route, '"soon"', "outer")),
            Case("verification-get-without-challenge", b"", 400, headers={"Authorization": OKTA_SECRET}),
        ]
    if route.name == "github":
        body = json.dumps(_github("x")).encode()
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        no_event = {"Content-Type": "application/json", "X-Hub-Signature-256": github_signature(body)}

        def signed(signature: str) -> dict[str, str]:
            return {**route.headers(body), "X-Hub-Signature-256": signature}

        upper = "sha256=" + github_signature(body).removeprefix("sha256=").upper()
        return [
            Case("payload-array", b"[1, 2]"),
            Case("no-event-header", body, 400, headers=no_event),
            Case("form-without-payload", b"other=1", extra_headers=form),
            Case("form-bad-percent", b"payload=%ff%fe", extra_headers=form),
            Case("form-not-json", b"payload=nope", extra_headers=form),
            Case("sha1-signature", body, 401, headers=signed("sha1=" + "0" * 40)),
            Case("uppercase-hex", body, 401, headers=signed(upper)),
            Case("signature-of-other-body", body, 401, headers=signed(github_signature(body + b" "))),
        ]
    if route.name == "hec":
        return [
            Case("array-of-events", b'[{"event": "a"}, {"event": "b"}]'),
            Case("no-event-field", b'{"time": 1}'),
            Case("blank-event", b'{"event": "   "}'),
            Case("null-event", b'{"event": null}'),
            Case("time-not-a-number", b'{"event": "x", "time": "noon"}'),
            Case("time-object", b'{"event": "x", "time": {}}'),
            Case("time-out-of-range", b'{"event": "x", "time": 100000000000000000000000000000}'),
            Case("second-object-bad", b'{"event": "x", "time": "t"}{"event": "y"}'),
            Case("duplicate-keys", b'{"event": "x", "event": ""}'),
            Case("surrogate-in-concatenated", b'{"event": "\\udc00"} {"event": "\\ud800"}'),
            Case(
                "bigint-in-concatenated",
                b'{"event": "x", "time": 1' + b"0" * 40 + b'} {"event": "y", "time": 1' + b"0" * 41 + b"}",
            ),
            Case("scheme-only", b'{"event": "x"}', 401, headers={"Authorization": "Splunk"}),
            Case("bearer-scheme", b'{"event": "x"}', 401, headers={"Authorization": f"Bearer {HEC_TOKEN}"}),
            Case("basic-garbage", b'{"event": "x"}', 401, headers={"Authorization": "Basic !!!not-base64"}),
            Case("basic-non-utf8", b'{"event": "x"}', 401, headers={"Authorization": "Basic //79"}),
            Case("basic-non-ascii", b'{"event": "x"}', 401, headers={"Authorization": "Basic \xa0"}),
        ]
    return [
        Case("events-not-array", b'{"events": {}}'),
        Case("events-empty", b'{"events": []}'),
        Case("item-not-object", b'{"events": [5]}'),
        Case("event-not-object", b'{"events": [{"event": "text"}]}'),
        Case("item-unknown-key", b'{"events": [{"event": {"message": "m"}, "evil": 1}]}'),
        Case("body-unknown-key", b'{"events": [{"event": {"message": "m"}}], "evil": 1}'),
        Case("no-message", b'{"events": [{"event": {"actor": "a"}}]}'),
        Case("action-too-long", b'{"events": [{"event": {"message": "m", "action": "' + b"a" * 33 + b'"}}]}'),
        Case("timestamp-not-a-date", in_record(route, '"yesterday"', "outer")),
        Case("duplicate-keys", b'{"events": [{"event": {"message": "m"}}], "events": 5}'),
        # A configuration the gateway does not serve: the audit log's own answer to a token
        # without access to it (issue 14).
        Case("unknown-config-id", b'{"events": [{"event": {"message": "m"}}], "config_id": "pci_nope"}', 403),
        Case("v1-on-v2", b'{"event": {"message": "m"}}'),
    ]


def case_headers(route: Route, case: Case) -> dict[str, str]:
    if case.headers is not None:
        headers = dict(case.headers)
    else:
        signed = case.body if isinstance(case.body, bytes) else b""
        headers = route.headers(signed)
    return {**headers, **case.extra_headers}


def send_case(gw: Proc, route: Route, case: Case) -> Reply:
    headers = case_headers(route, case)
    if case.label == "verification-get-without-challenge":
        return send(gw, route, None, headers)  # Okta's one-time GET
    return send(gw, route, case.body, headers)


@pytest.mark.parametrize("name", ROUTE_NAMES)
def test_the_fuzz_corpus_is_refused_cleanly_and_nothing_of_it_is_forwarded(hostile: Hostile, name: str) -> None:
    route = ROUTES[name]
    before = hostile.count()
    failures = []
    for case in corpus(route):
        reply = send_case(hostile.gw, route, case)
        try:
            assert_clean_refusal(reply, hec=route.hec, what=case.label)
            expected = case.status if isinstance(case.status, tuple) else (case.status,)
            assert reply.status in expected, (case.label, reply.status, reply.body[:200])
        except AssertionError as exc:
            failures.append(str(exc)[:400])
    assert not failures, "\n".join(failures)
    assert healthy(hostile.gw)
    assert hostile.count() == before, "a refused body reached the upstream"

    # valid control events still land, and only they do
    marks = [f"control {name} {uuid.uuid4().hex[:8]}" for _ in range(2)]
    for mark in marks:
        body = route.body([route.record(mark)])
        reply = send(hostile.gw, route, body)
        assert reply.status == 200, reply.body
    assert hostile.count() == before + 2
    assert {landed_message(route, m) for m in marks} <= hostile.messages()


def test_hec_answers_a_too_large_body_with_413_and_too_many_events_with_code_6(hostile: Hostile) -> None:
    route = ROUTES["hec"]
    reply = send(hostile.gw, route, padded(route, MAX_BODY))
    assert reply.status == 413 and reply.json()["code"] == 6
    reply = send(hostile.gw, route, route.body([route.record(f"m{i}") for i in range(MAX_EVENTS + 1)]))
    assert reply.status == 400 and reply.json() == {"text": "Invalid data format", "code": 6}


def test_a_vendor_route_refuses_an_unauthenticated_sender_before_reading_its_body(hostile: Hostile) -> None:
    route = ROUTES["auth0"]
    reply = send(hostile.gw, route, padded(route, MAX_BODY), {"Authorization": "Bearer nope"})
    assert reply.status == 401 and reply.json()["status"] == "Unauthorized"


def test_sdk_route_applies_max_json_depth(hostile: Hostile) -> None:
    route = ROUTES["sdk"]
    before = hostile.count()
    reply = send(hostile.gw, route, in_record(route, nested(MAX_DEPTH + 4)))
    assert hostile.count() == before
    assert reply.status == 400


def test_sdk_route_applies_max_events_per_request(hostile: Hostile) -> None:
    route = ROUTES["sdk"]
    before = hostile.count()
    reply = send(hostile.gw, route, route.body([route.record(f"over the cap {i}") for i in range(MAX_EVENTS + 1)]))
    assert hostile.count() == before
    assert reply.status == 400


# -- hypothesis properties ------------------------------------------------------------------------------------

PROPERTY = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


def parses_as_json(body: bytes) -> bool:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return True


@pytest.mark.parametrize("name", ROUTE_NAMES)
def test_property_random_bytes_are_refused_and_land_nothing(hostile: Hostile, name: str) -> None:
    route = ROUTES[name]
    before = hostile.count()

    ran: list[bytes] = []

    @PROPERTY
    @given(body=st.binary(max_size=1024))
    def check(body: bytes) -> None:
        assume(not parses_as_json(body))
        ran.append(body)
        reply = send(hostile.gw, route, body)
        assert_clean_refusal(reply, hec=route.hec, what=body[:60])
        assert reply.status == 400, (body[:60], reply.body)

    check()
    assert len(ran) >= 20
    assert hostile.count() == before


@pytest.mark.parametrize("name", ROUTE_NAMES)
def test_property_any_truncation_of_a_valid_body_is_refused_and_lands_nothing(hostile: Hostile, name: str) -> None:
    route = ROUTES[name]
    base = route.body([route.record("valid until cut")])
    before = hostile.count()

    @PROPERTY
    @given(cut=st.integers(min_value=0, max_value=len(base) - 1))
    def check(cut: int) -> None:
        ran.append(cut)
        reply = send(hostile.gw, route, base[:cut])
        assert_clean_refusal(reply, hec=route.hec, what=cut)

    ran: list[int] = []
    check()
    assert len(set(ran)) >= 20
    assert hostile.count() == before


LATIN1_HEADER_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0xFF, categories=("L", "M", "N", "P", "S", "Zs")),
    max_size=80,
)


@pytest.mark.parametrize("name", ROUTE_NAMES)
def test_property_wrong_credentials_are_refused_and_land_nothing(hostile: Hostile, name: str) -> None:
    route = ROUTES[name]
    body = route.body([route.record("wrong credential")])
    valid = route.headers(body)["X-Hub-Signature-256" if name == "github" else "Authorization"]
    before = hostile.count()

    @PROPERTY
    @given(value=LATIN1_HEADER_TEXT, scheme=st.sampled_from(["", "Bearer ", "Splunk ", "Basic ", "sha256="]))
    def check(value: str, scheme: str) -> None:
        credential = scheme + value
        assume(credential.strip() != valid and credential.strip())
        ran.append(credential)
        reply = send(hostile.gw, route, body, {**route.headers(body), **route.with_credential(credential)})
        assert_clean_refusal(reply, hec=route.hec, what=credential)
        assert reply.status in (401, 403), (credential, reply.body)

    ran: list[str] = []
    check()
    assert len(ran) >= 20
    assert hostile.count() == before


def test_property_any_change_to_a_signed_github_body_is_refused(hostile: Hostile) -> None:
    route = ROUTES["github"]
    body = route.body([route.record("signed")])
    headers = route.headers(body)
    before = hostile.count()

    @PROPERTY
    @given(pos=st.integers(0, len(body) - 1), byte=st.integers(0, 255))
    def check(pos: int, byte: int) -> None:
        assume(body[pos] != byte)
        ran.append(pos)
        changed = body[:pos] + bytes([byte]) + body[pos + 1 :]
        reply = send(hostile.gw, route, changed, headers)
        assert reply.status == 401 and reply.json()["status"] == "Unauthorized"

    ran: list[int] = []
    check()
    assert len(ran) >= 20
    assert hostile.count() == before


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS_TO_REPLACE = {
    "auth0": ["data", "data.type", "data.date", "data.user_name", "data.details", "data.ip", "log_id"],
    "okta": ["eventType", "published", "actor", "target", "outcome", "client", "displayMessage"],
    "github": ["action", "sender", "sender.login", "repository", "organization"],
    "hec": ["event", "time", "host", "source"],
    "sdk": ["event", "event.message", "event.timestamp", "event.actor", "event.new", "event.tenant_id"],
}


def replaced(record: Any, dotted: str, value: Any) -> Any:
    out = json.loads(json.dumps(record))
    *parents, last = dotted.split(".")
    cur = out
    for p in parents:
        cur = cur[p]
    cur[last] = value
    return out


@pytest.mark.parametrize("name", ROUTE_NAMES)
def test_property_a_record_with_any_json_in_a_field_lands_exactly_when_accepted(hostile: Hostile, name: str) -> None:
    """Valid or not: never a 5xx, and the log holds the event iff the answer accepted it."""
    route = ROUTES[name]
    counted = [hostile.count()]
    outcomes: list[int] = []

    @settings(PROPERTY, max_examples=80)
    @given(where=st.sampled_from(FIELDS_TO_REPLACE[name]), value=JSON_VALUES)
    def check(where: str, value: Any) -> None:
        body = route.body([replaced(route.record("typed"), where, value)])
        reply = send(hostile.gw, route, body)
        outcomes.append(reply.status)
        assert reply.status < 500, (where, value, reply.body)
        now = hostile.count()
        if reply.status == 200:
            assert now == counted[0] + 1, (where, value)
        else:
            assert_clean_refusal(reply, hec=route.hec, what=(where, value))
            assert now == counted[0], (where, value, reply.body)
        counted[0] = now

    check()
    assert len(outcomes) >= 60
    assert 200 in outcomes
    if name != "github":  # a GitHub payload is any object: every field is optional
        assert any(s >= 400 for s in outcomes)  # both sides of the property were exercised
    assert healthy(hostile.gw)


# -- rate limits, slow clients, TLS --------------------------------------------------------------------------------


def test_a_rate_limited_route_answers_429_with_retry_after_and_forwards_nothing_refused(hostile: Hostile) -> None:
    before = hostile.count()
    url = hostile.gw.url() + "/webhooks/limited"
    replies = [request(url, json.dumps({"message": f"limited {i}"}).encode()) for i in range(4)]
    ANSWERS.extend(r.body for r in replies)
    assert [r.status for r in replies] == [200, 200, 429, 429]
    for r in replies[2:]:
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["status"] == "TooManyRequests"
        assert_clean_refusal(r)
    assert hostile.count() == before + 2

    hec_url = hostile.gw.url() + "/limited/collector"
    headers = {"Authorization": f"Splunk {HEC_TOKEN}"}
    first, second = (request(hec_url, b'{"event": "limited hec"}', headers) for _ in range(2))
    assert first.status == 200
    assert second.status == 429 and second.json() == {"text": "Server is busy", "code": 9}
    assert int(second.headers["retry-after"]) >= 1
    assert hostile.count() == before + 3


def trickle(port: int, head: bytes, first: bytes, *, deadline: float = 15.0) -> bytes:
    """Send ``head`` and ``first``, then one more byte every 0.2 s until the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=deadline) as s:
        s.sendall(head + first)
        received = b""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            ready, _, _ = select.select([s], [], [], 0.2)
            if ready:
                chunk = s.recv(65536)
                if not chunk:
                    return received
                received += chunk
                if b"\r\n\r\n" in received:
                    head_end = received.index(b"\r\n\r\n") + 4
                    length = int(received.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                    if len(received) >= head_end + length:
                        return received
                continue
            try:
                s.sendall(b" ")
            except OSError:
                continue
        return received


@pytest.mark.parametrize(
    ("path", "auth"),
    [
        ("/v1/log_stream", AUTH0_AUTHORIZATION),
        ("/services/collector", f"Splunk {HEC_TOKEN}"),
        ("/v2/log", f"Bearer {SDK_TOKEN}"),
    ],
    ids=["auth0", "hec", "sdk"],
)
def test_a_client_trickling_its_body_past_the_body_timeout_gets_408(hostile: Hostile, path: str, auth: str) -> None:
    before = hostile.count()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    answer = trickle(hostile.gw.ports["intake"], head, b'{"events": [')
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    ANSWERS.append(answer)
    if "collector" in path:
        assert body["code"] == 6 and body["text"]
    else:
        assert body["status"] == "ValidationError" and "not received" in body["summary"]
    assert hostile.count() == before


def test_a_client_trickling_its_headers_is_disconnected(hostile: Hostile) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", hostile.gw.ports["intake"]), timeout=30) as s:
        s.sendall(b"POST /v1/log_stream HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        closed = False
        while time.monotonic() - started < KEEPALIVE_SECS + 10:
            ready, _, _ = select.select([s], [], [], 0.25)
            if ready:
                if not s.recv(1024):
                    closed = True
                    break
                continue
            try:
                s.sendall(b"X")  # a header byte at a time, never finishing the line
            except OSError:
                closed = True
                break
    assert closed, "a never-ending header kept its connection open"
    assert healthy(hostile.gw)


def raw_exchange(port: int, data: bytes, *, close_early: bool = False) -> bytes:
    """Bytes written straight on a socket; the whole answer (until the server closes or 5 s pass)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        if close_early:
            return b""
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            pass
        return out


def test_malformed_http_is_refused_by_the_server_without_a_trace_and_logs_no_credential(hostile: Hostile) -> None:
    """Requests aiohttp cannot parse never reach a route: a 400 envelope, and one clean log line.

    Neither the answer (aiohttp's own text/plain one used to quote the offending line) nor the
    log line, which holds only the error's class and the peer address, carries request bytes.
    """
    secret = AUTH0_AUTHORIZATION.encode()
    hec = f"Splunk {HEC_TOKEN}".encode()
    port = hostile.gw.ports["intake"]
    malformed = [
        b"POST /v1/log_stream HTTP/1.1\r\nHost: x\r\nAuthorization: " + secret + b"\x01\r\nContent-Length: 2\r\n\r\n[]",
        b"POST /v1/log_stream HTTP/1.1\r\nHost: x\r\nAuthorization: " + secret + b"A" * 9000 + b"\r\n\r\n",
        b"POST /v1/log_stream HTTP/1.1\r\nHost: x\r\nBad Name: " + secret + b"\r\nContent-Length: 2\r\n\r\n[]",
        b"POST /services/collector?" + hec + b" HTTP/9\r\nHost: x\r\n\r\n",
        b"POST /services/collector HTTP/1.1\r\nHost: x\r\nAuthorization: " + hec + b"\r\n"
        b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"eve\r\nzz\r\n0\r\n\r\n',
        b"POST /v2/log HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n{}{}{}",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + secret + b"\r\n\r\n",
    ]
    for data in malformed:
        answer = raw_exchange(port, data)
        assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), (data[:60], answer[:200])
        assert b"Traceback" not in answer and b".py" not in answer
        assert secret not in answer and HEC_TOKEN.encode() not in answer, answer
    # a client that goes away in the middle of its body is not an error of the gateway
    for path, auth in (
        ("/v1/log_stream", secret),
        ("/services/collector", hec),
        ("/v2/log", b"Bearer " + SDK_TOKEN.encode()),
    ):
        raw_exchange(
            port,
            b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth + b"\r\n"
            b'Content-Length: 500\r\n\r\n{"partial',
            close_early=True,
        )
    time.sleep(0.3)  # let the server notice the closed connections before the log is read
    assert healthy(hostile.gw)
    log = hostile.gw.log()
    assert "malformed HTTP request refused" in log
    for secret_value in SECRETS.values():
        assert secret_value not in log
    assert "unhandled error" not in log and "Traceback" not in log


def test_wrong_methods_and_unknown_paths_get_enveloped_answers(hostile: Hostile) -> None:
    base = hostile.gw.url()
    for method, path, status in [
        ("PUT", "/v1/log_stream", 405),
        ("DELETE", "/webhooks/github", 405),
        ("GET", "/v2/log", 405),
        ("GET", "/services/collector/event", 405),
        ("GET", "/no/such/route", 404),
        ("POST", "/services/collector/nope", 404),
    ]:
        reply = request(base + path, b"{}" if method != "GET" else None, {}, method=method)
        ANSWERS.append(reply.body)
        assert reply.status == status, (method, path, reply.body)
        assert_clean_refusal(reply, what=(method, path))


def test_the_intake_serves_https_with_the_configured_certificate(hostile: Hostile, tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path)
    config = gateway_config()
    config["intake"] = {"tls": {"cert_file": str(cert_file), "key_file": str(key_file)}}
    config["sources"] = {"auth0": config["sources"]["auth0"]}
    path = tmp_path / "gateway.yaml"
    path.write_text(json.dumps(config))
    gw = start_gateway(tmp_path, config=path, env={"AUDIT_GATEWAY_LOCAL_TOKEN": TOKEN})
    try:
        hostile.tls_logs.append(gw.log_path)
        url = f"https://127.0.0.1:{gw.ports['intake']}/v1/log_stream"
        trusted = ssl.create_default_context(cafile=str(cert_file))
        body = fixture_bytes("auth0_batch1_jsonarray.json")
        headers = {"Authorization": AUTH0_AUTHORIZATION, "Content-Type": "application/json"}
        reply = request(url, body, headers, context=trusted)
        ANSWERS.append(reply.body)
        assert reply.status == 200, reply.body
        assert record_count(gw.url("local_audit")) == 5
        wrong = request(url, body, {"Authorization": "Bearer nope"}, context=trusted)
        assert wrong.status == 401
        with pytest.raises(ssl.SSLCertVerificationError):
            request(url, body, headers, context=ssl.create_default_context())
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            request(url.replace("https://", "http://"), body, headers)
        assert record_count(gw.url("local_audit")) == 5
    finally:
        gw.terminate()


# -- last: the process after all of it -------------------------------------------------------------------------------


def test_a_burst_of_bombs_and_oversized_bodies_keeps_memory_bounded(hostile: Hostile) -> None:
    before = hostile.count()
    bomb = gzip.compress(b"\0" * (8 * 1024 * 1024))
    jobs = []
    for route in ROUTES.values():
        jobs.append((route, bomb, {**route.headers(bomb), "Content-Encoding": "gzip"}))
        big = padded(route, MAX_BODY)
        jobs.append((route, big, route.headers(big)))
    with ThreadPoolExecutor(max_workers=16) as pool:
        replies = list(pool.map(lambda job: send(hostile.gw, *job), jobs * 8))
    assert {r.status for r in replies} == {413}
    assert hostile.count() == before
    assert healthy(hostile.gw)
    rss = rss_kib(hostile.gw.popen.pid)
    assert rss < RSS_LIMIT_KIB, rss
    assert rss - hostile.rss_start_kib < RSS_GROWTH_LIMIT_KIB, (hostile.rss_start_kib, rss)


def test_the_process_stayed_up_and_no_secret_reached_its_log_or_any_answer(hostile: Hostile) -> None:
    assert healthy(hostile.gw)
    assert hostile.gw.popen.poll() is None
    logs = {"gateway": hostile.gw.log()} | {str(p): p.read_text(errors="replace") for p in hostile.tls_logs}
    assert ANSWERS  # the module's answers were recorded
    answers = b"\n".join(ANSWERS)
    for what, secret in SECRETS.items():
        for name, text in logs.items():
            assert secret not in text, f"the {what} secret is in the {name} log"
        assert secret.encode() not in answers, f"the {what} secret is in an answer"
    assert "Traceback" not in logs["gateway"], logs["gateway"][-3000:]
    assert rss_kib(hostile.gw.popen.pid) < RSS_LIMIT_KIB
