"""Issue 5, end to end: custom-schema destinations, misfit policies, dead letters, field restrictions.

A ``local-audit serve --configs FILE`` process holds five configurations (four with one custom
schema, one standard); one gateway process (``upstream:`` that local audit log) has a destination
per configuration:

=============  ==============================================================================
``inline``     the schema given inline in the gateway configuration (misfits rejected)
``fetched``    ``schema: upstream``: fetched from the local audit log's ``/v1/schema``
``truncate``   fetched; ``on_oversize: truncate``
``fold``       fetched; ``on_unknown_field: fold`` into ``extra``
``standard``   the standard schema; the routes feeding it restrict ``tenant_id`` to ``acme``
=============  ==============================================================================

The SDK route picks the destination by the body's ``config_id`` (as pangea-sdk sends it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.vendors.harness import (
    TOKEN,
    Reply,
    deadletters,
    record_count,
    request,
    sdk,
    search_all,
)
from tests.support.procs import Proc, local_audit, start_gateway


def config_id(name: str) -> str:
    return "pci_" + name.ljust(32, "a")


INLINE, FETCHED, TRUNCATE, FOLD, STANDARD = (
    config_id(n) for n in ("inline", "fetched", "truncate", "fold", "standard")
)

FIELDS = [
    {"id": "message", "type": "text", "required": True},
    {"id": "amount", "type": "integer"},
    {"id": "when", "type": "datetime"},
    {"id": "ok", "type": "boolean"},
    {"id": "user", "type": "string", "size": 16},
    {"id": "tenant_id", "type": "string", "size": 32},
    {"id": "extra", "type": "text", "size": 2000},
]


class Setup:
    def __init__(self, upstream: Proc, gw: Proc, data_dir: Path) -> None:
        self.upstream = upstream
        self.gw = gw
        self.data_dir = data_dir

    @property
    def store_url(self) -> str:
        return self.upstream.url("local_audit")

    def count(self, cid: str) -> int:
        return record_count(self.store_url, config_id=cid)

    def events(self, cid: str) -> list[dict[str, Any]]:
        return [e.envelope.event for e in search_all(sdk(self.store_url, config_id=cid))]

    def log(self, cid: str | None, events: list[dict[str, Any]], prefix: str = "") -> Reply:
        body: dict[str, Any] = {"events": [{"event": e} for e in events]}
        if cid is not None:
            body["config_id"] = cid
        return request(
            self.gw.url() + prefix + "/v2/log", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("schema")
    configs = tmp / "configs.yaml"
    configs.write_text(
        json.dumps(
            {
                "configs": [
                    *({"id": cid, "schema": {"fields": FIELDS}} for cid in (INLINE, FETCHED, TRUNCATE, FOLD)),
                    {"id": STANDARD},
                ]
            }
        )
    )
    with local_audit(tmp, TOKEN, "--configs", str(configs)) as upstream:
        gateway_config = {
            "upstream": {"url": upstream.url("local_audit"), "token": TOKEN},
            "destinations": {
                "inline": {"config_id": INLINE, "schema": {"fields": FIELDS}},
                "fetched": {"config_id": FETCHED, "schema": "upstream"},
                "truncate": {
                    "config_id": TRUNCATE,
                    "schema": "upstream",
                    "schema_policy": {"on_oversize": "truncate"},
                },
                "fold": {
                    "config_id": FOLD,
                    "schema": "upstream",
                    "schema_policy": {"on_unknown_field": "fold", "fold_into": "extra"},
                },
                "standard": {"config_id": STANDARD, "schema": "standard"},
            },
            "sources": {
                "sdk": {"type": "webhook", "format": "pangea", "destination": "inline"},
                "acme_sdk": {
                    "type": "webhook",
                    "format": "pangea",
                    "path": "/acme",
                    "destination": "standard",
                    "restrictions": {"tenant_id": ["acme"]},
                },
                "orders": {
                    "type": "webhook",
                    "format": "json",
                    "path": "/webhooks/orders",
                    "destination": "fetched",
                    "map": {
                        "message": ["msg", "data.description"],
                        "amount": "data.amount",
                        "when": "data.ts",
                        "user": ["data.user", "data.login"],
                        "ok": {"const": True},
                        "tenant_id": {"path": "data.org", "default": "acme"},
                    },
                },
                "acme_json": {
                    "type": "webhook",
                    "format": "json",
                    "path": "/webhooks/acme",
                    "destination": "standard",
                    "restrictions": {"tenant_id": ["acme"]},
                },
            },
        }
        path = tmp / "gateway.yaml"
        path.write_text(json.dumps(gateway_config))
        gw = start_gateway(tmp, config=path)
        try:
            yield Setup(upstream, gw, tmp / "data")
        finally:
            gw.terminate()


def letters_since(env: Setup, n: int) -> list[dict[str, Any]]:
    return deadletters(env.data_dir)[n:]


# -- correctly typed events arrive -----------------------------------------------------------------


@pytest.mark.parametrize("cid", [INLINE, FETCHED], ids=["inline-schema", "upstream-schema"])
def test_a_custom_schema_destination_receives_events_coerced_to_the_declared_types(env: Setup, cid: str) -> None:
    reply = env.log(
        cid,
        [
            {"message": f"typed 1 {cid}", "amount": "42", "when": 1718093712345, "ok": "true", "user": "alice"},
            {"message": f"typed 2 {cid}", "amount": 7.0, "when": "2024-06-11T10:15:12+02:00", "ok": False},
            {"message": f"typed 3 {cid}", "amount": -3, "when": "1718093712", "user": 12345},
        ],
    )
    assert reply.status == 200, reply.body
    assert len(reply.json()["result"]["results"]) == 3
    got = {e["message"]: e for e in env.events(cid) if e["message"].startswith("typed")}
    assert got[f"typed 1 {cid}"] == {
        "message": f"typed 1 {cid}",
        "amount": 42,
        "when": "2024-06-11T08:15:12.345000Z",
        "ok": True,
        "user": "alice",
    }
    assert got[f"typed 2 {cid}"] == {
        "message": f"typed 2 {cid}",
        "amount": 7,
        "when": "2024-06-11T08:15:12.000000Z",
        "ok": False,
    }
    assert got[f"typed 3 {cid}"]["when"] == "2024-06-11T08:15:12.000000Z"  # epoch seconds in a string
    assert got[f"typed 3 {cid}"]["user"] == "12345"
    assert type(got[f"typed 1 {cid}"]["amount"]) is int and type(got[f"typed 1 {cid}"]["ok"]) is bool


def test_a_declarative_map_feeds_a_custom_schema_from_a_generic_json_webhook(env: Setup) -> None:
    before = env.count(FETCHED)
    lines = [
        {"msg": "order placed", "data": {"amount": "120", "ts": 1718093712345, "login": "carol", "org": "acme"}},
        {"data": {"description": "order refunded", "amount": 5, "ts": "2024-06-11T08:15:12Z", "user": "dave"}},
    ]
    body = b"\n".join(json.dumps(x).encode() for x in lines) + b"\n"  # NDJSON
    reply = request(env.gw.url() + "/webhooks/orders", body, {"Content-Type": "application/x-ndjson"})
    assert reply.status == 200, reply.body
    assert env.count(FETCHED) == before + 2
    got = {e["message"]: e for e in env.events(FETCHED)}
    assert got["order placed"] == {
        "message": "order placed",
        "amount": 120,
        "when": "2024-06-11T08:15:12.345000Z",
        "user": "carol",
        "ok": True,
        "tenant_id": "acme",
    }
    assert got["order refunded"]["user"] == "dave" and got["order refunded"]["tenant_id"] == "acme"


# -- misfits: refused, dead-lettered, never forwarded ------------------------------------------------


def test_events_that_violate_the_schema_are_refused_with_pointers_and_dead_lettered(env: Setup) -> None:
    before = env.count(INLINE)
    letters = len(deadletters(env.data_dir))
    events: list[dict[str, Any]] = [
        {"message": "fits"},
        {"message": "bad amount", "amount": "forty-two"},
        {"message": "bad when", "when": "yesterday"},
        {"amount": 1},
        {"message": "long user", "user": "u" * 17},
        {"message": "unknown field", "color": "red"},
        {"message": "bad bool", "ok": "yes"},
        {"message": "amount too big", "amount": 2**63},
    ]
    reply = env.log(INLINE, events)
    assert reply.status == 400, reply.body
    answer = reply.json()
    assert answer["status"] == "ValidationError"
    assert answer["summary"] == "1 of 8 events accepted; 7 refused"
    errors = {e["source"]: e["code"] for e in answer["result"]["errors"]}
    assert errors == {
        "/events/1/event/amount": "InvalidInteger",
        "/events/2/event/when": "BadFormatDateTime",
        "/events/3/event/message": "FieldRequired",
        "/events/4/event/user": "AboveMaxLength",
        "/events/5/event/color": "UnexpectedProperty",
        "/events/6/event/ok": "InvalidBool",
        "/events/7/event/amount": "InvalidInteger",
    }
    # only the fitting event reached the upstream
    assert env.count(INLINE) == before + 1
    refused_messages = {x["message"] for x in events[1:] if "message" in x}
    assert not refused_messages & {e["message"] for e in env.events(INLINE)}

    rows = letters_since(env, letters)
    assert len(rows) == 7
    for row, sent in zip(rows, events[1:], strict=True):
        assert row["reason"] == "invalid_event"
        assert row["source"] == "sdk" and row["destination"] == "inline"
        assert json.loads(row["payload"]) == {"event": sent}
        [err] = json.loads(row["detail"])
        assert err["source"] in errors and err["code"] == errors[err["source"]]


def test_a_wrong_typed_record_of_a_json_webhook_is_dead_lettered_and_the_rest_delivered(env: Setup) -> None:
    before = env.count(FETCHED)
    letters = len(deadletters(env.data_dir))
    body = json.dumps(
        [
            {"msg": "json fits", "data": {"amount": 1}},
            {"msg": "json misfit", "data": {"amount": "abc", "ts": "not a time"}},
        ]
    ).encode()
    reply = request(env.gw.url() + "/webhooks/orders", body, {"Content-Type": "application/json"})
    assert reply.status == 400, reply.body
    assert sorted(e["source"] for e in reply.json()["result"]["errors"]) == ["/1/amount", "/1/when"]
    assert env.count(FETCHED) == before + 1
    [row] = letters_since(env, letters)
    assert row["reason"] == "invalid_event" and row["source"] == "orders"
    assert json.loads(row["payload"])["msg"] == "json misfit"
    assert {e["code"] for e in json.loads(row["detail"])} == {"InvalidInteger", "BadFormatDateTime"}


def test_the_truncate_policy_cuts_oversize_strings_to_the_field_size(env: Setup) -> None:
    reply = env.log(TRUNCATE, [{"message": "truncated", "user": "u" * 40, "tenant_id": "t" * 33}])
    assert reply.status == 200, reply.body
    [ev] = [e for e in env.events(TRUNCATE) if e["message"] == "truncated"]
    assert ev["user"] == "u" * 16 and ev["tenant_id"] == "t" * 32
    # the same event is refused where the policy is reject
    reply = env.log(FETCHED, [{"message": "not truncated", "user": "u" * 40}])
    assert reply.status == 400 and reply.json()["result"]["errors"][0]["source"] == "/events/0/event/user"


def test_the_fold_policy_moves_unknown_fields_into_the_chosen_field_as_json(env: Setup) -> None:
    reply = env.log(FOLD, [{"message": "folded", "amount": 3, "color": "red", "nested": {"b": [1, 2], "a": None}}])
    assert reply.status == 200, reply.body
    [ev] = [e for e in env.events(FOLD) if e["message"] == "folded"]
    assert set(ev) == {"message", "amount", "extra"}
    assert json.loads(ev["extra"]) == {"color": "red", "nested": {"a": None, "b": [1, 2]}}
    assert ev["extra"] == '{"color":"red","nested":{"a":null,"b":[1,2]}}'  # compact, sorted


# -- field restrictions --------------------------------------------------------------------------------


def test_a_restricted_field_refuses_other_values_as_forbidden_and_forwards_nothing_of_them(env: Setup) -> None:
    before = env.count(STANDARD)
    letters = len(deadletters(env.data_dir))
    reply = env.log(None, [{"message": "evil tenant", "tenant_id": "evil"}, {"message": "no tenant"}], prefix="/acme")
    assert reply.status == 403, reply.body
    answer = reply.json()
    assert answer["status"] == "ForbiddenFieldValue"
    assert [(e["code"], e["source"]) for e in answer["result"]["errors"]] == [
        ("ForbiddenFieldValue", "/events/0/event/tenant_id"),
        ("ForbiddenFieldValue", "/events/1/event/tenant_id"),
    ]
    assert "evil" not in reply.body.decode()  # the refused value is not echoed
    assert env.count(STANDARD) == before
    rows = letters_since(env, letters)
    assert [r["reason"] for r in rows] == ["forbidden_field_value"] * 2

    # the allowed value passes; a mixed request delivers only the allowed event
    reply = env.log(None, [{"message": "acme ok", "tenant_id": "acme"}], prefix="/acme")
    assert reply.status == 200, reply.body
    reply = env.log(
        None, [{"message": "acme ok 2", "tenant_id": "acme"}, {"message": "evil 2", "tenant_id": "x"}], prefix="/acme"
    )
    assert reply.status == 403 and reply.json()["summary"] == "1 of 2 events accepted; 1 refused"
    assert env.count(STANDARD) == before + 2
    messages = {e["message"] for e in env.events(STANDARD)}
    assert {"acme ok", "acme ok 2"} <= messages and not messages & {"evil tenant", "no tenant", "evil 2"}


def test_restrictions_apply_to_a_vendor_route_too_and_a_schema_error_is_still_a_400(env: Setup) -> None:
    before = env.count(STANDARD)
    body = json.dumps([{"message": "json evil", "tenant_id": "evil"}]).encode()
    reply = request(env.gw.url() + "/webhooks/acme", body, {"Content-Type": "application/json"})
    assert reply.status == 403 and reply.json()["result"]["errors"][0]["code"] == "ForbiddenFieldValue"
    # forbidden and invalid together: not every refusal is a forbidden value, so 400
    body = json.dumps([{"message": "json evil", "tenant_id": "evil"}, {"message": "x", "action": "a" * 33}]).encode()
    reply = request(env.gw.url() + "/webhooks/acme", body, {"Content-Type": "application/json"})
    assert reply.status == 400
    assert {e["code"] for e in reply.json()["result"]["errors"]} == {"ForbiddenFieldValue", "AboveMaxLength"}
    assert env.count(STANDARD) == before
