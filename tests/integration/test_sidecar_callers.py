"""Issue 14: with ``callers:``, the caller's token decides the configuration, as upstream.

Real processes: the local audit log serving three configurations (two with the standard
schema, one custom) to tokens scoped as the gateway's callers are, and ``audit-gateway run``
in front of it with its own token for all three.  For each case the SDK gets the audit log's
answer through the gateway: ambiguous (400 AmbiguousConfigID), forbidden (403
MissingConfigIDScope, writing and searching), a custom schema (validated against that
configuration's own schema).  A caller cannot write or search outside its configurations.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pangea.config import PangeaConfig
from pangea.exceptions import PangeaAPIException
from pangea.services import Audit

from tests.support.procs import Proc, gateway, local_audit

PAY = "pci_" + "p" * 32
GEN = "pci_" + "g" * 32
CUST = "pci_" + "c" * 32
GATEWAY_TOKEN = "pts_gateway_all_three"
APP_A = "pts_app_a_payments_and_general"
APP_B = "pts_app_b_general_only"
APP_C = "pts_app_c_custom_schema"


def upstream_configs(up: Path) -> Path:
    """The audit log's three configurations (two standard, one custom) and the tokens each takes."""
    custom = {"fields": [{"id": "message", "type": "text", "required": True}, {"id": "amount", "type": "integer"}]}
    configs = [
        {"id": PAY, "tokens": [GATEWAY_TOKEN, APP_A]},
        {"id": GEN, "tokens": [GATEWAY_TOKEN, APP_A, APP_B]},
        {"id": CUST, "tokens": [GATEWAY_TOKEN, APP_C], "schema": custom},
    ]
    path = up / "configs.json"
    path.write_text(json.dumps({"configs": configs}))
    return path


def upstream_and_destinations(upstream_url: str) -> str:
    """The gateway configuration's ``upstream`` (its own token for all three) and one
    destination per configuration."""
    return f"""
upstream:
  url: {upstream_url}
  token: {GATEWAY_TOKEN}
destinations:
  payments: {{config_id: {PAY}}}
  general: {{config_id: {GEN}}}
  custom: {{config_id: {CUST}, schema: upstream}}
"""


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc]]:
    tmp = tmp_path_factory.mktemp("callers")
    up = tmp / "upstream"
    up.mkdir()
    (tmp / "app-b-token").write_text(APP_B + "\n")
    with local_audit(up, GATEWAY_TOKEN, "--configs", str(upstream_configs(up))) as upstream:
        cfg = tmp / "gateway.yaml"
        cfg.write_text(
            upstream_and_destinations(upstream.url("local_audit"))
            + f"""sources:
  sdk:
    type: webhook
    format: pangea
    destination: general
    callers:
      - token: {APP_A}
        destinations: [payments, general]
        endpoints: [log, search, root]
        restrictions: {{tenant_id: [acme]}}
      - token_file: {tmp / "app-b-token"}
        destinations: [general]
      - token: {APP_C}
        destinations: [custom]
"""
        )
        with gateway(tmp, config=cfg) as gw:
            yield gw, upstream


def sdk(url: str, token: str, config_id: str | None = None) -> Audit:
    return Audit(token, config=PangeaConfig(base_url_template=url, request_retries=0), config_id=config_id)


def outcome(call: Callable[[], Any]) -> tuple[str, list[tuple[str, str]]]:
    """The Pangea status of a call and its errors' (code, source)."""
    try:
        response = call()
    except PangeaAPIException as exc:
        errors = [(e.code, e.source) for e in exc.errors]
        return exc.response.status, errors
    return response.status, []


def both(procs: tuple[Proc, Proc], token: str, call: Callable[[Audit], Any], config_id: str | None = None) -> Any:
    """The outcome of ``call`` through the gateway, asserted the same as straight upstream."""
    gw, upstream = procs
    via = outcome(lambda: call(sdk(gw.url(), token, config_id)))
    direct = outcome(lambda: call(sdk(upstream.url("local_audit"), token, config_id)))
    assert via == direct
    return via


def messages(procs: tuple[Proc, Proc], token: str, config_id: str | None, query: str) -> list[str]:
    found = sdk(procs[0].url(), token, config_id).search(query, verify_events=False)
    assert found.result is not None
    return sorted(e.envelope.event["message"] for e in found.result.events)


def test_a_caller_of_several_configurations_must_name_one(procs: tuple[Proc, Proc]) -> None:
    assert both(procs, APP_A, lambda a: a.log_event({"message": "ambiguous", "tenant_id": "acme"})) == (
        "AmbiguousConfigID",
        [],
    )
    assert both(procs, APP_A, lambda a: a.search("message:ambiguous")) == ("AmbiguousConfigID", [])
    assert both(procs, APP_A, lambda a: a.log_event({"message": "to payments", "tenant_id": "acme"}), PAY) == (
        "Success",
        [],
    )


def test_a_caller_cannot_write_or_search_outside_its_configurations(procs: tuple[Proc, Proc]) -> None:
    assert both(procs, APP_A, lambda a: a.log_event({"message": "secret payment", "tenant_id": "acme"}), PAY) == (
        "Success",
        [],
    )
    assert both(procs, APP_B, lambda a: a.log("b into payments"), PAY) == ("MissingConfigIDScope", [])
    assert both(procs, APP_B, lambda a: a.search("message:secret"), PAY) == ("MissingConfigIDScope", [])
    assert both(procs, APP_C, lambda a: a.log("c into general"), GEN) == ("MissingConfigIDScope", [])
    # Without config_id, B reads and writes only its one configuration.
    assert both(procs, APP_B, lambda a: a.log("b general")) == ("Success", [])
    assert "secret payment" not in messages(procs, APP_B, None, "")
    assert "b into payments" not in messages(procs, APP_A, PAY, "")
    assert "b general" in messages(procs, APP_A, GEN, "")


def test_events_are_validated_against_the_schema_of_their_configuration(procs: tuple[Proc, Proc]) -> None:
    assert both(procs, APP_C, lambda a: a.log_event({"message": "custom", "amount": 5})) == ("Success", [])
    status, errors = both(procs, APP_C, lambda a: a.log_event({"message": "custom", "actor": "bob"}))
    assert status == "ValidationError" and [c for c, _ in errors] == ["UnexpectedProperty"]


def test_a_callers_endpoints_and_field_restrictions_hold_through_the_gateway(procs: tuple[Proc, Proc]) -> None:
    gw, _ = procs
    assert (
        outcome(lambda: sdk(gw.url(), APP_A, PAY).log_event({"message": "not acme", "tenant_id": "globex"}))[0]
        == "ForbiddenFieldValue"
    )
    assert outcome(lambda: sdk(gw.url(), APP_A, PAY).export())[0] == "Unauthorized"
    # Managing configurations (with the gateway's own credential) is never implied by `endpoints: null`.
    for path in ("/v1beta/config/list", "/v1beta/config/delete"):
        req = urllib.request.Request(gw.url() + path, data=json.dumps({"id": GEN}).encode())
        req.add_header("Authorization", f"Bearer {APP_B}")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        with refused.value as answer:
            assert (answer.code, json.loads(answer.read())["status"]) == (403, "Unauthorized")
    req = urllib.request.Request(gw.url() + "/v1/log", data=b'{"event": {"message": "m"}}')
    req.add_header("Authorization", "Bearer pts_not_a_caller")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    with info.value as answer:
        assert answer.code == 401
