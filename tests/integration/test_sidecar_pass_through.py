"""Issue 14: with ``auth: {pass_through: true}`` the caller's own token goes upstream, with its
calls and with its events, and the upstream decides: the SDK gets the audit log's answers
through the gateway (ambiguous, forbidden, custom schema), and a token's field restrictions
upstream hold for the events it writes through the gateway.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_sidecar_callers import (
    APP_A,
    APP_B,
    APP_C,
    GATEWAY_TOKEN,
    GEN,
    PAY,
    both,
    messages,
    upstream_and_destinations,
    upstream_configs,
)
from tests.support.procs import REPO, Proc, gateway, local_audit


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc]]:
    tmp = tmp_path_factory.mktemp("pass_through")
    up = tmp / "upstream"
    up.mkdir()
    with local_audit(up, GATEWAY_TOKEN, "--configs", str(upstream_configs(up))) as upstream:
        cfg = tmp / "gateway.yaml"
        cfg.write_text(
            upstream_and_destinations(upstream.url("local_audit"))
            + """sources:
  sdk:
    type: webhook
    format: pangea
    destination: general
    auth: {pass_through: true}
"""
        )
        with gateway(tmp, config=cfg) as gw:
            yield gw, upstream


def restricted_token(db: Path) -> str:
    """A token of the audit log for GEN that may only write tenant_id=acme."""
    args = ["token", "create", "--db", str(db), "--name", "r", "--configs", GEN, "--restrict", "tenant_id=acme"]
    run = subprocess.run(
        [sys.executable, "-m", "gateway", "local-audit", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    token: str = json.loads(run.stdout)["token"]
    return token


def test_ambiguous_and_forbidden_configurations_get_the_audit_logs_answers(procs: tuple[Proc, Proc]) -> None:
    assert both(procs, APP_A, lambda a: a.log("ambiguous")) == ("AmbiguousConfigID", [])
    assert both(procs, APP_A, lambda a: a.search("message:ambiguous")) == ("AmbiguousConfigID", [])
    assert both(procs, APP_B, lambda a: a.log("b into payments"), PAY) == ("MissingConfigIDScope", [])
    assert both(procs, APP_B, lambda a: a.search("message:x"), PAY) == ("MissingConfigIDScope", [])
    assert both(procs, APP_A, lambda a: a.log("a to payments"), PAY) == ("Success", [])
    assert both(procs, APP_B, lambda a: a.log("b general")) == ("Success", [])
    assert "a to payments" not in messages(procs, APP_B, None, "")
    assert "b into payments" not in messages(procs, APP_A, PAY, "")


def test_events_are_validated_against_the_schema_of_their_configuration(procs: tuple[Proc, Proc]) -> None:
    assert both(procs, APP_C, lambda a: a.log_event({"message": "custom", "amount": 5})) == ("Success", [])
    status, errors = both(procs, APP_C, lambda a: a.log_event({"message": "custom", "actor": "bob"}))
    assert status == "ValidationError" and [c for c, _ in errors] == ["UnexpectedProperty"]


def test_the_callers_token_goes_upstream_with_its_events(procs: tuple[Proc, Proc]) -> None:
    _, upstream = procs
    token = restricted_token(Path(upstream.log_path).parent / "local-audit.db")
    assert both(procs, token, lambda a: a.log_event({"message": "acme's", "tenant_id": "acme"})) == ("Success", [])
    # The gateway's own token has no such restriction: only the caller's, sent with the event, refuses it.
    status, _ = both(procs, token, lambda a: a.log_event({"message": "globex's", "tenant_id": "globex"}))
    assert status == "ForbiddenFieldValue"
