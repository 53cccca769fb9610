"""Configurations (/v1beta/config*), service tokens and the spec fixes of the local audit log.

Real server over loopback HTTP and a real SQLite file; pangea-sdk where the SDK has the call;
the ``local-audit token`` commands and ``local-audit serve`` as real processes.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pangea.exceptions as pe
import pangea.services.audit.util as pangea_audit_util
import pytest
from pangea.config import PangeaConfig
from pangea.services import Audit
from pangea.services.audit.models import DownloadFormat, EventVerification, SearchEvent, SearchOrder
from pangea.services.audit.util import verify_envelope_hash

import gateway.local_audit.server as server_module
from gateway.local_audit.server import LocalAuditServer
from gateway.local_audit.settings import DEFAULT_CONFIG_ID, LocalAuditSettings
from gateway.local_audit.tokens import create_token
from tests.support.procs import REPO, local_audit

T = TypeVar("T")
PASS = EventVerification.PASS
CONFIG_A = "pci_" + "a" * 32
CONFIG_B = "pci_" + "b" * 32
CONFIG_C = "pci_" + "c" * 32
CUSTOM_SCHEMA: dict[str, Any] = {
    "fields": [
        {"id": "message", "type": "text", "required": True, "name": "Message"},
        {"id": "amount", "type": "integer"},
        {"id": "approved", "type": "boolean"},
        {"id": "tenant_id", "type": "string", "size": 16, "partitioned": True},
    ]
}


@contextmanager
def sdk(base_url: str, token: str, **kwargs: Any) -> Iterator[Audit]:
    audit = Audit(token, config=PangeaConfig(base_url_template=base_url), **kwargs)
    try:
        yield audit
    finally:
        audit.request.session.close()


async def call(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


async def post(
    http: aiohttp.ClientSession, base_url: str, token: str, path: str, body: Any
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(base_url + path, data=data, headers=headers) as resp:
        return resp.status, await resp.json()


def codes(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["code"], e["source"]) for e in body["result"]["errors"]]


async def create_config(http: aiohttp.ClientSession, srv: LocalAuditServer, body: dict[str, Any]) -> dict[str, Any]:
    status, answer = await post(http, srv.base_url, srv.token, "/v1beta/config/create", body)
    assert status == 200, answer
    assert answer["status"] == "Success"
    return answer["result"]  # type: ignore[no-any-return]


# -- configurations -------------------------------------------------------------------------


async def test_a_configuration_created_with_a_custom_schema_accepts_and_validates_events_at_once(
    server: LocalAuditServer, http: aiohttp.ClientSession
) -> None:
    created = await create_config(http, server, {"name": "payments", "version": 2, "schema": CUSTOM_SCHEMA})
    cid = created["id"]
    assert cid.startswith("pci_") and len(cid) == 36 and cid != DEFAULT_CONFIG_ID
    assert created["name"] == "payments" and created["version"] == 2
    assert created["schema"]["fields"][1] == {"id": "amount", "type": "integer", "required": False, "redact": False}
    assert created["created_at"] == created["updated_at"]

    # The default token now reaches two configurations: config_id is required, as the spec says.
    status, body = await post(http, server.base_url, server.token, "/v2/log", {"events": [{"event": {"message": "x"}}]})
    assert status == 400 and body["status"] == "AmbiguousConfigID"

    bad = {"message": "m", "amount": "5", "approved": 1, "actor": "x"}
    status, body = await post(
        http, server.base_url, server.token, "/v2/log", {"config_id": cid, "events": [{"event": bad}]}
    )
    assert status == 400
    assert codes(body) == [
        ("InvalidInteger", "/events/0/event/amount"),
        ("InvalidBool", "/events/0/event/approved"),
        ("UnexpectedProperty", "/events/0/event/actor"),
    ]

    with sdk(server.base_url, server.token, config_id=cid) as audit:
        logged = await call(lambda: audit.log_event({"message": "paid", "amount": 5, "approved": True}, verbose=True))
        assert logged.result is not None and logged.result.envelope is not None and logged.result.hash
        found = await call(lambda: audit.search("amount:5", verify_events=True, verify_consistency=True))
        assert found.result is not None
        assert [e.envelope.event for e in found.result.events] == [{"message": "paid", "amount": 5, "approved": True}]
        assert all(e.membership_verification == PASS for e in found.result.events)
    status, body = await post(http, server.base_url, server.token, "/v1/schema", {"config_id": cid})
    assert status == 200 and [f["id"] for f in body["result"]["fields"]] == [
        "message",
        "amount",
        "approved",
        "tenant_id",
    ]
    # Its own Merkle tree: the default configuration's tree is still empty.
    status, body = await post(http, server.base_url, server.token, "/v1/root", {"config_id": DEFAULT_CONFIG_ID})
    assert status == 200 and body["status"] == "TreeNotFound"
    status, body = await post(http, server.base_url, server.token, "/v1/root", {"config_id": cid})
    assert status == 200 and body["result"]["size"] == 1

    status, body = await post(http, server.base_url, server.token, "/v1beta/config", {"id": cid})
    assert status == 200 and body["result"] == created
    status, body = await post(http, server.base_url, server.token, "/v1beta/config/list", {})
    assert status == 200 and body["result"]["count"] == 2
    assert {c["id"] for c in body["result"]["items"]} == {cid, DEFAULT_CONFIG_ID}


async def test_created_configurations_and_published_roots_survive_a_restart(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    settings = LocalAuditSettings(listen_port=0, db_path=tmp_path / "audit.db")
    first = LocalAuditServer(settings)
    await first.start()
    try:
        created = await create_config(http, first, {"name": "kept", "version": 2, "schema": CUSTOM_SCHEMA})
        await post(
            http, first.base_url, first.token, "/v1/log", {"config_id": created["id"], "event": {"message": "a"}}
        )
        first.publish_roots()
        _, published = await post(http, first.base_url, first.token, "/v1/root", {"config_id": created["id"]})
    finally:
        await first.stop()
    second = LocalAuditServer(settings)
    await second.start()
    try:
        status, body = await post(http, second.base_url, second.token, "/v1beta/config", {"id": created["id"]})
        assert status == 200 and body["result"] == created
        status, body = await post(http, second.base_url, second.token, "/v1/root", {"config_id": created["id"]})
        kept = ("root_hash", "size", "published_at", "tree_name")
        assert [body["result"][k] for k in kept] == [published["result"][k] for k in kept]
        assert body["result"]["url"].startswith(second.base_url + "/arweave/")
        status, body = await post(
            http,
            second.base_url,
            second.token,
            "/v1/log",
            {"config_id": created["id"], "event": {"message": "after restart", "amount": 1}},
        )
        assert status == 200
    finally:
        await second.stop()


async def test_update_needs_the_current_updated_at_and_keeps_the_schema_then_delete_removes_access(
    server: LocalAuditServer, http: aiohttp.ClientSession
) -> None:
    created = await create_config(http, server, {"name": "old name", "version": 2, "schema": CUSTOM_SCHEMA})
    cid = created["id"]
    # To the letter of the spec: an update is a whole AuditServiceConfigV2, schema included (unchanged).
    update = {
        "id": cid,
        "name": "new name",
        "version": 2,
        "schema": CUSTOM_SCHEMA,
        "updated_at": "2020-01-01T00:00:00Z",
        "retention": "90d",
    }
    status, body = await post(http, server.base_url, server.token, "/v1beta/config/update", update)
    assert status == 400 and codes(body) == [("BadState", "/updated_at")]

    other_schema = {"fields": [{"id": "message", "type": "text"}]}
    status, body = await post(
        http,
        server.base_url,
        server.token,
        "/v1beta/config/update",
        {**update, "updated_at": created["updated_at"], "schema": other_schema},
    )
    assert status == 400 and codes(body) == [("BadState", "/schema")]

    status, body = await post(
        http, server.base_url, server.token, "/v1beta/config/update", {**update, "updated_at": created["updated_at"]}
    )
    assert status == 200, body
    updated = body["result"]
    assert updated["name"] == "new name" and updated["retention"] == "90d"
    assert updated["schema"] == created["schema"] and updated["created_at"] == created["created_at"]
    assert updated["updated_at"] >= created["updated_at"]

    status, body = await post(http, server.base_url, server.token, "/v1beta/config/delete", {"id": cid})
    assert status == 200 and body["result"]["id"] == cid
    status, body = await post(
        http, server.base_url, server.token, "/v1/log", {"config_id": cid, "event": {"message": "gone"}}
    )
    assert status == 403 and body["status"] == "MissingConfigIDScope"
    status, body = await post(http, server.base_url, server.token, "/v1beta/config", {"id": cid})
    assert status == 403 and body["status"] == "MissingConfigIDScope"
    # Only the default configuration is left: calls without config_id resolve again.
    status, body = await post(http, server.base_url, server.token, "/v1/log", {"event": {"message": "default"}})
    assert status == 200


async def test_settings_configurations_are_read_only_over_the_api(
    server: LocalAuditServer, http: aiohttp.ClientSession
) -> None:
    status, body = await post(http, server.base_url, server.token, "/v1beta/config", {"id": DEFAULT_CONFIG_ID})
    assert status == 200 and body["result"]["version"] == 1
    for path, extra in (("/v1beta/config/delete", {}), ("/v1beta/config/update", {"name": "x", "updated_at": "1d"})):
        status, body = await post(http, server.base_url, server.token, path, {"id": DEFAULT_CONFIG_ID, **extra})
        assert status == 400 and codes(body) == [("ReadOnly", "/id")], path


async def test_retention_hides_older_records_from_search(
    server: LocalAuditServer, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = await create_config(http, server, {"name": "short", "retention": "1d"})
    cid = created["id"]
    status, _ = await post(
        http, server.base_url, server.token, "/v1/log", {"config_id": cid, "event": {"message": "m"}}
    )
    assert status == 200
    status, body = await post(http, server.base_url, server.token, "/v1/search", {"config_id": cid, "start": "7d"})
    assert body["result"]["count"] == 1
    later = datetime.now(UTC) + timedelta(days=2)
    monkeypatch.setattr(server_module, "utc_now", lambda: later)
    status, body = await post(http, server.base_url, server.token, "/v1/search", {"config_id": cid, "start": "7d"})
    assert status == 200 and body["result"]["count"] == 0


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/v1beta/config/create", {"version": 1}, [("FieldRequired", "/name")]),
        ("/v1beta/config/create", {"name": "x", "id": CONFIG_A}, [("UnexpectedProperty", "/id")]),
        ("/v1beta/config/create", {"name": "x", "colour": "red"}, [("UnexpectedProperty", "/colour")]),
        ("/v1beta/config/create", {"name": 5}, [("InvalidString", "/name")]),
        ("/v1beta/config/create", {"name": "x", "version": "2"}, [("NotEnumMember", "/version")]),
        ("/v1beta/config/create", {"name": "x", "shards": 101}, [("NotWithinRange", "/shards")]),
        ("/v1beta/config/create", {"name": "x", "retention": "forever"}, [("DoesNotMatchPattern", "/retention")]),
        ("/v1beta/config/create", {"name": "x", "version": 2}, [("FieldRequired", "/schema")]),
        ("/v1beta/config/create", {"name": "x", "cold_storage": "200d"}, [("UnexpectedProperty", "/cold_storage")]),
        (
            "/v1beta/config/create",
            {"name": "x", "version": 3, "schema": CUSTOM_SCHEMA, "cold_storage": "30d"},
            [("NotWithinRange", "/cold_storage")],
        ),
        (
            "/v1beta/config/create",
            {"name": "x", "version": 2, "schema": {"fields": [{"id": "Bad", "type": "text"}]}},
            [("DoesNotMatchPattern", "/schema/fields/0/id")],
        ),
        (
            "/v1beta/config/create",
            {"name": "x", "version": 2, "schema": {"fields": [{"id": "a", "type": "float"}]}},
            [("NotEnumMember", "/schema/fields/0/type")],
        ),
        ("/v1beta/config/create", [1, 2], [("InvalidObject", "")]),
        ("/v1beta/config", {}, [("FieldRequired", "/id")]),
        ("/v1beta/config", {"id": 5}, [("InvalidString", "/id")]),
        ("/v1beta/config", {"id": CONFIG_A, "x": 1}, [("UnexpectedProperty", "/x")]),
        ("/v1beta/config/update", {"id": CONFIG_A}, [("FieldRequired", "/name"), ("FieldRequired", "/updated_at")]),
        ("/v1beta/config/delete", {}, [("FieldRequired", "/id")]),
        ("/v1beta/config/list", {"size": 0}, [("NotWithinRange", "/size")]),
        ("/v1beta/config/list", {"order_by": "name"}, [("NotEnumMember", "/order_by")]),
        ("/v1beta/config/list", {"filter": {"name": "x"}}, [("UnexpectedProperty", "/filter/name")]),
        (
            "/v1beta/config/list",
            {"filter": {"created_at__gt": "soon"}},
            [("BadFormatDateTime", "/filter/created_at__gt")],
        ),
        ("/v1beta/config/partition_overrides", {"id": DEFAULT_CONFIG_ID}, [("FieldRequired", "/overrides")]),
    ],
)
async def test_bad_input_to_the_config_endpoints_gets_validation_errors(
    server: LocalAuditServer, http: aiohttp.ClientSession, path: str, body: Any, expected: list[tuple[str, str]]
) -> None:
    status, answer = await post(http, server.base_url, server.token, path, body)
    assert status == 400, answer
    assert answer["status"] == "ValidationError"
    assert codes(answer) == expected


@pytest.fixture
async def two_configs(tmp_path: Path) -> AsyncIterator[LocalAuditServer]:
    """A server with configurations A (its own token's) and C (only ``pts_c_only``'s)."""
    settings = LocalAuditSettings.model_validate(
        {
            "listen_port": 0,
            "db_path": tmp_path / "audit.db",
            "configs": [{"id": CONFIG_A}, {"id": CONFIG_C, "tokens": ["pts_c_only"]}],
        }
    )
    srv = LocalAuditServer(settings)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def test_other_configurations_ids_and_partition_overrides_get_the_spec_errors(
    two_configs: LocalAuditServer, http: aiohttp.ClientSession
) -> None:
    srv = two_configs
    for path in ("/v1beta/config", "/v1beta/config/delete"):
        status, body = await post(http, srv.base_url, srv.token, path, {"id": CONFIG_C})
        assert status == 403 and body["status"] == "MissingConfigIDScope"
    status, body = await post(http, srv.base_url, srv.token, "/v1beta/config/list", {})
    assert [c["id"] for c in body["result"]["items"]] == [CONFIG_A]

    overrides = {"acme": {"warm_storage": "30d", "cold_storage": "365d"}}

    async def set_overrides(config: dict[str, Any]) -> tuple[int, Any]:
        path = "/v1beta/config/partition_overrides"
        return await post(http, srv.base_url, srv.token, path, {"id": config["id"], "overrides": overrides})

    v2 = await create_config(http, srv, {"name": "v2", "version": 2, "schema": CUSTOM_SCHEMA})
    status, body = await set_overrides(v2)
    assert status == 400 and body["status"] == "InvalidSchema"
    v3 = await create_config(http, srv, {"name": "v3", "version": 3, "schema": CUSTOM_SCHEMA})
    status, body = await set_overrides(v3)
    assert status == 200 and body["result"] == {}
    status, body = await post(http, srv.base_url, srv.token, "/v1beta/config", {"id": v3["id"]})
    assert body["result"]["partition_overrides"] == overrides
    # The token that created them may use them; another token may not.
    status, body = await post(http, srv.base_url, "pts_c_only", "/v1beta/config", {"id": v3["id"]})
    assert status == 403 and body["status"] == "MissingConfigIDScope"


# -- service tokens ---------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "local-audit", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


async def test_service_tokens_from_the_command_line_limit_configs_endpoints_fields_and_time(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    db = tmp_path / "local-audit.db"
    configs = tmp_path / "configs.yaml"
    configs.write_text(f"configs:\n  - id: {CONFIG_A}\n  - id: {CONFIG_B}\n  - id: {CONFIG_C}\n")
    made = cli(
        "token", "create", "--db", str(db), "--name", "app-a", "--configs", f"{CONFIG_A},{CONFIG_B}",
        "--endpoints", "log,search,root", "--restrict", "tenant_id=acme", "--expires-in", "30d",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    app_a = json.loads(made.stdout)
    assert set(app_a) == {"id", "token", "expires_at"}
    assert app_a["id"].startswith("pmt_") and app_a["token"].startswith("pts_")
    expires = datetime.fromisoformat(app_a["expires_at"])
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
    with sqlite3.connect(db) as conn:  # only a hash of the token is kept
        assert app_a["token"] not in repr(conn.execute("SELECT * FROM service_tokens").fetchall())

    base_token = "pts_base_token_of_this_test"
    with local_audit(tmp_path, base_token, "--configs", str(configs)) as proc:
        url = proc.url("local_audit")
        token = app_a["token"]
        status, body = await post(http, url, token, "/v1/log", {"event": {"message": "m", "tenant_id": "acme"}})
        assert status == 400 and body["status"] == "AmbiguousConfigID"
        status, body = await post(
            http, url, token, "/v1/log", {"config_id": CONFIG_C, "event": {"message": "m", "tenant_id": "acme"}}
        )
        assert status == 403 and body["status"] == "MissingConfigIDScope"
        good = [{"event": {"message": "ok", "tenant_id": "acme"}}]
        status, body = await post(http, url, token, "/v2/log", {"config_id": CONFIG_A, "events": good})
        assert status == 200
        mixed = [*good, {"event": {"message": "no", "tenant_id": "globex"}}, {"event": {"message": "none"}}]
        status, body = await post(http, url, token, "/v2/log", {"config_id": CONFIG_A, "events": mixed})
        assert status == 403 and body["status"] == "ForbiddenFieldValue"
        assert codes(body) == [
            ("ForbiddenFieldValue", "/events/1/event/tenant_id"),
            ("ForbiddenFieldValue", "/events/2/event/tenant_id"),
        ]
        # Another tenant's events, logged with the base token, are invisible to app-a's searches.
        status, _ = await post(http, url, base_token, "/v2/log", {"config_id": CONFIG_A, "events": mixed[1:]})
        assert status == 200
        with sdk(url, token, config_id=CONFIG_A) as audit:
            found = await call(lambda: audit.search("", verify_events=True, verify_consistency=True))
            assert found.result is not None
            assert [e.envelope.event["message"] for e in found.result.events if e.envelope.event] == ["ok"]
            assert all(e.membership_verification == PASS for e in found.result.events)
            with pytest.raises(pe.PangeaAPIException) as forbidden:
                await call(lambda: audit.search("", search_restriction={"tenant_id": ["globex"]}))
            assert forbidden.value.response.status == "ForbiddenFieldValue"
            assert forbidden.value.response.http_status == 403
            root = await call(audit.root)
            assert root.result is not None and root.result.data.size == 3
        status, body = await post(http, url, token, "/v1/schema", {"config_id": CONFIG_A})
        assert status == 403 and body["status"] == "Unauthorized"
        # Nor can it page through (or download) a search made without its restriction.
        status, base_search = await post(http, url, base_token, "/v1/search", {"config_id": CONFIG_A})
        assert status == 200 and base_search["result"]["count"] == 3
        status, body = await post(http, url, token, "/v1/results", {"id": base_search["result"]["id"]})
        assert status == 400 and codes(body) == [("DoesNotExist", "/id")]
        status, body = await post(http, url, token, "/v1/download_results", {"result_id": base_search["result"]["id"]})
        assert status == 400 and codes(body) == [("DoesNotExist", "/result_id")]

        # A token made while the server runs works at once; one limited to `log` cannot search.
        made = cli("token", "create", "--db", str(db), "--name", "writer", "--configs", CONFIG_B, "--endpoints", "log")
        writer = json.loads(made.stdout)["token"]
        status, _ = await post(http, url, writer, "/v1/log", {"event": {"message": "only b"}})
        assert status == 200
        status, body = await post(http, url, writer, "/v1/search", {})
        assert status == 403 and body["status"] == "Unauthorized"

        with sqlite3.connect(db) as conn:
            expired = create_token(
                conn, name="old", configs=[CONFIG_B], endpoints=None, restrict={}, expires_at=time.time() - 1
            )
        status, body = await post(http, url, expired["token"], "/v1/log", {"event": {"message": "late"}})
        assert status == 401 and body["status"] == "Unauthorized"

        listed = cli("token", "list", "--db", str(db))
        assert listed.returncode == 0
        rows = json.loads(listed.stdout)
        assert [r["name"] for r in rows] == ["app-a", "writer", "old"]
        assert rows[0]["configs"] == [CONFIG_A, CONFIG_B] and rows[0]["restrict"] == {"tenant_id": ["acme"]}
        assert token not in listed.stdout and writer not in listed.stdout

        revoked = cli("token", "revoke", "--db", str(db), app_a["id"])
        assert revoked.returncode == 0, revoked.stderr
        status, body = await post(http, url, token, "/v1/root", {"config_id": CONFIG_A})
        assert status == 401 and body["status"] == "Unauthorized"
        again = cli("token", "revoke", "--db", str(db), app_a["id"])
        assert again.returncode == 1 and "no active token" in again.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--configs", "pci_Bad-Id"], "not configuration ids"),
        (["--configs", "cfg_aaa"], "not configuration ids"),
        (["--configs", CONFIG_A, "--endpoints", "log,delete_everything"], "unknown endpoints"),
        (["--configs", CONFIG_A, "--restrict", "tenant_id"], "expected FIELD=VALUE"),
        (["--configs", CONFIG_A, "--expires-in", "soon"], "expected a duration"),
    ],
)
def test_token_create_refuses_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    done = cli("token", "create", "--db", str(tmp_path / "a.db"), "--name", "x", *args)
    assert done.returncode == 2 and message in done.stderr


def test_the_issue_token_create_line_works_as_written(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    done = cli(
        "token", "create", "--db", str(db), "--name", "app-a", "--configs", "pci_aaa,pci_bbb",
        "--endpoints", "log,search,root", "--restrict", "tenant_id=acme", "--expires-in", "30d",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert set(created) == {"id", "token", "expires_at"}
    assert created["id"].startswith("pmt_") and created["token"].startswith("pts_")
    listed = json.loads(cli("token", "list", "--db", str(db)).stdout)
    assert [(t["name"], t["configs"], t["restrict"]) for t in listed] == [
        ("app-a", ["pci_aaa", "pci_bbb"], {"tenant_id": ["acme"]})
    ]


def test_serve_refuses_fault_flags_without_the_test_flag(tmp_path: Path) -> None:
    done = cli("serve", "--listen", "127.0.0.1:0", "--db", str(tmp_path / "a.db"), "--fault-outage")
    assert done.returncode == 2 and "--enable-test-faults" in done.stderr


# -- spec fixes ----------------------------------------------------------------------------------


async def test_v2_log_verbose_answers_are_shaped_as_audit_log_response_v2(
    server: LocalAuditServer, http: aiohttp.ClientSession
) -> None:
    events = [{"event": {"message": f"m{i}"}} for i in range(3)]
    status, body = await post(http, server.base_url, server.token, "/v2/log", {"events": events, "verbose": True})
    assert status == 200
    assert [set(r) for r in body["result"]["results"]] == [{"envelope", "hash"}] * 3
    status, body = await post(http, server.base_url, server.token, "/v2/log_async", {"events": events, "verbose": True})
    assert status == 202
    # /v1/log keeps AuditLogResponse's unpublished root and membership proof.
    status, body = await post(
        http, server.base_url, server.token, "/v1/log", {"event": {"message": "one"}, "verbose": True}
    )
    assert set(body["result"]) == {"envelope", "hash", "unpublished_root", "membership_proof"}


async def test_empty_quoted_values_and_naive_date_times_are_accepted(
    server: LocalAuditServer, http: aiohttp.ClientSession
) -> None:
    events = [
        {"event": {"message": "with actor", "actor": "alice", "timestamp": "2026-01-01T10:00:00"}},
        {"event": {"message": "no actor", "timestamp": "2026-01-01T10:00:00.5"}},
    ]
    status, body = await post(http, server.base_url, server.token, "/v2/log", {"events": events})
    assert status == 200, body
    with sdk(server.base_url, server.token) as audit:
        everything = await call(lambda: audit.search('message:""', verify_events=True, verify_consistency=True))
        assert everything.result is not None and everything.result.count == 2
        assert all(e.membership_verification == PASS for e in everything.result.events)
        with_actor = await call(lambda: audit.search('actor:""'))
        assert with_actor.result is not None
        assert [e.envelope.event["message"] for e in with_actor.result.events if e.envelope.event] == ["with actor"]
    naive_start = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    status, body = await post(http, server.base_url, server.token, "/v1/search", {"start": naive_start})
    assert status == 200 and body["result"]["count"] == 2
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    status, body = await post(http, server.base_url, server.token, "/v1/search", {"start": future})
    assert status == 200 and body["result"]["count"] == 0


# -- published roots -------------------------------------------------------------------------------


async def test_published_roots_let_the_sdk_verify_consistency_offline(
    server: LocalAuditServer, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pangea-sdk reads published roots from Arweave; the local log serves the same shape itself.
    monkeypatch.setattr(pangea_audit_util, "ARWEAVE_BASE_URL", server.base_url + "/arweave")
    status, _ = await post(
        http, server.base_url, server.token, "/v2/log", {"events": [{"event": {"message": f"p{i}"}} for i in range(5)]}
    )
    assert status == 200
    assert server.publish_roots() == [DEFAULT_CONFIG_ID]
    assert server.publish_roots() == []  # nothing new: nothing published
    status, _ = await post(
        http, server.base_url, server.token, "/v2/log", {"events": [{"event": {"message": f"u{i}"}} for i in range(2)]}
    )
    assert status == 200

    status, body = await post(http, server.base_url, server.token, "/v1/root", {"tree_size": 3})
    root3 = body["result"]
    assert status == 200 and root3["size"] == 3 and len(root3["consistency_proof"]) >= 1
    assert root3["url"].startswith(server.base_url + "/arweave/") and root3["published_at"]
    async with http.get(root3["url"]) as resp:
        assert resp.status == 200
        assert {k: v for k, v in (await resp.json()).items()} == {k: v for k, v in root3.items() if k != "data"}
    status, body = await post(http, server.base_url, server.token, "/v1/root", {})
    assert body["result"]["size"] == 7 and "url" not in body["result"] and "published_at" not in body["result"]

    with sdk(server.base_url, server.token) as audit:
        found = await call(lambda: audit.search("", verify_events=True, verify_consistency=True, order=SearchOrder.ASC))
        assert found.result is not None and found.result.root is not None and found.result.root.size == 5
        by_message = {e.envelope.event["message"]: e for e in found.result.events if e.envelope.event}
        for i in range(5):
            event = by_message[f"p{i}"]
            assert event.published and event.leaf_index == i
            assert (event.membership_verification, event.consistency_verification) == (PASS, PASS), i
        for i in range(2):
            event = by_message[f"u{i}"]
            assert not event.published and event.leaf_index is None
            assert event.membership_verification == PASS
            assert event.consistency_verification == EventVerification.NONE
        root = await call(lambda: audit.root(tree_size=5))
        assert root.result is not None and root.result.data.published_at is not None
        page = await call(
            lambda: audit.results(found.result.id, limit=3, offset=1, verify_consistency=True, verify_events=True)  # type: ignore[union-attr]
        )
        assert page.result is not None and page.result.root is not None and len(page.result.events) == 3
        assert [(e.membership_verification, e.consistency_verification) for e in page.result.events] == [
            (PASS, PASS)
        ] * 3


async def test_the_publication_store_answers_only_published_sizes(
    server: LocalAuditServer, http: aiohttp.ClientSession
) -> None:
    await post(http, server.base_url, server.token, "/v1/log", {"event": {"message": "one"}})
    tree_name = (await post(http, server.base_url, server.token, "/v1/root", {}))[1]["result"]["tree_name"]
    query = (
        '{ transactions(tags: [{ name: "tree_size" values: ["1", "2"] }, '
        f'{{ name: "tree_name" values: ["{tree_name}"] }}]) {{ edges {{ node {{ id }} }} }} }}'
    )
    async with http.post(server.base_url + "/arweave/graphql", json={"query": query}) as resp:
        assert (await resp.json())["data"]["transactions"]["edges"] == []
    async with http.get(f"{server.base_url}/arweave/{tree_name}_1/") as resp:
        assert resp.status == 404
    server.publish_roots()
    async with http.post(server.base_url + "/arweave/graphql", json={"query": query}) as resp:
        edges = (await resp.json())["data"]["transactions"]["edges"]
    assert [e["node"]["id"] for e in edges] == [f"{tree_name}_1"]
    async with http.post(server.base_url + "/arweave/graphql", json={"query": 5}) as resp:
        assert resp.status == 400


# -- export and download ---------------------------------------------------------------------------


async def fetch_gzip(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as resp:  # no Authorization: the URL itself is the credential
        assert resp.status == 200 and resp.content_type == "application/gzip"
        return gzip.decompress(await resp.read()).decode()


async def test_export_then_download_gives_gzip_csv_and_json_lines_that_verify(
    server: LocalAuditServer, http: aiohttp.ClientSession
) -> None:
    events = [{"event": {"message": f"e{i}", "actor": "alice" if i % 2 else "bob"}} for i in range(4)]
    status, _ = await post(http, server.base_url, server.token, "/v2/log", {"events": events})
    assert status == 200
    server.publish_roots()
    with sdk(server.base_url, server.token) as audit:
        exported = await call(lambda: audit.export(format=DownloadFormat.JSON, order=SearchOrder.ASC))
        assert exported.http_status == 202 and exported.status == "Accepted"
        done = await call(lambda: audit.poll_result(request_id=exported.request_id))
        assert done.status == "Success"
        link = await call(lambda: audit.download_results(request_id=exported.request_id, format=DownloadFormat.JSON))
        assert link.result is not None and link.result.expires_at
        lines = (await fetch_gzip(http, link.result.dest_url)).splitlines()
        records = [SearchEvent(**json.loads(line)) for line in lines]
        assert [r.envelope.event["message"] for r in records if r.envelope.event] == ["e0", "e1", "e2", "e3"]
        assert all(verify_envelope_hash(r.envelope, r.hash) for r in records)
        assert all(r.published and r.membership_proof for r in records)

        found = await call(lambda: audit.search("actor:alice", order=SearchOrder.ASC))
        assert found.result is not None
        csv_link = await call(lambda: audit.download_results(result_id=found.result.id))
        assert csv_link.result is not None
        rows = list(csv.reader(io.StringIO(await fetch_gzip(http, csv_link.result.dest_url))))
    assert rows[0][:4] == ["received_at", "timestamp", "actor", "action"]
    message_col = rows[0].index("message")
    assert [r[message_col] for r in rows[1:]] == ["e1", "e3"]
    assert [r[rows[0].index("hash")] for r in rows[1:]] == [e.hash for e in found.result.events]


@pytest.mark.parametrize(
    ("path", "body", "status", "expected"),
    [
        ("/v1/export", {"format": "xml"}, 400, [("NotEnumMember", "/format")]),
        ("/v1/export", {"start": "whenever"}, 400, [("BadFormatDateTime", "/start")]),
        (
            "/v1/export",
            {"verbose": "yes", "limit": 3},
            400,
            [("UnexpectedProperty", "/limit"), ("InvalidBool", "/verbose")],
        ),
        ("/v1/export", {"order_by": "colour"}, 400, [("NotEnumMember", "/order_by")]),
        ("/v1/download_results", {}, 400, [("FieldRequired", "/result_id")]),
        ("/v1/download_results", {"result_id": "pas_x"}, 400, [("DoesNotMatchPattern", "/result_id")]),
        ("/v1/download_results", {"request_id": 7}, 400, [("InvalidString", "/request_id")]),
        (
            "/v1/download_results",
            {"result_id": "pas_" + "a" * 32, "request_id": "prq_" + "a" * 32},
            400,
            [("UnexpectedProperty", "/request_id")],
        ),
        ("/v1/download_results", {"result_id": "pas_" + "a" * 32}, 400, [("DoesNotExist", "/result_id")]),
        (
            "/v1/download_results",
            {"request_id": "prq_" + "a" * 32, "format": "pdf"},
            400,
            [("NotEnumMember", "/format")],
        ),
    ],
)
async def test_bad_input_to_export_and_download_gets_validation_errors(
    server: LocalAuditServer,
    http: aiohttp.ClientSession,
    path: str,
    body: dict[str, Any],
    status: int,
    expected: list[tuple[str, str]],
) -> None:
    got, answer = await post(http, server.base_url, server.token, path, body)
    assert (got, answer["status"]) == (status, "ValidationError")
    assert codes(answer) == expected


async def test_downloads_of_another_configurations_results_and_unknown_links_are_refused(
    two_configs: LocalAuditServer, http: aiohttp.ClientSession
) -> None:
    srv = two_configs
    await post(http, srv.base_url, "pts_c_only", "/v1/log", {"event": {"message": "c"}})
    _, found = await post(http, srv.base_url, "pts_c_only", "/v1/search", {})
    status, body = await post(
        http, srv.base_url, srv.token, "/v1/download_results", {"result_id": found["result"]["id"]}
    )
    assert status == 400 and codes(body) == [("DoesNotExist", "/result_id")]
    async with http.get(srv.base_url + "/v1/download/pdl_" + "a" * 32) as resp:
        assert resp.status == 404 and (await resp.json())["status"] == "NotFound"


# -- log streams ----------------------------------------------------------------------------------

AUTH0_BODY = Path(__file__).resolve().parents[2] / "fixtures" / "vendors" / "auth0_batch2_jsonobject.json"


async def test_sdk_log_stream_stores_auth0_records_as_standard_events(server: LocalAuditServer) -> None:
    data = json.loads(AUTH0_BODY.read_text())
    with sdk(server.base_url, server.token) as audit:
        streamed = await call(lambda: audit.log_stream(data))
        assert streamed.status == "Success" and streamed.http_status == 200
        assert streamed.raw_response is not None and streamed.raw_response.json()["result"] == {}
        found = await call(lambda: audit.search("", order=SearchOrder.ASC, verify_events=True, verify_consistency=True))
    assert found.result is not None and found.result.count == 4
    events = [e.envelope.event for e in found.result.events if e.envelope.event]
    assert [(e["action"], e["status"]) for e in events] == [
        ("sapi", "success"),
        ("fapi", "failure"),
        ("limit_wc", "failure"),
        ("du", "success"),
    ]
    assert events[0]["message"] == "Create a client" and events[0]["timestamp"] == "2024-06-11T09:30:05.123Z"
    assert events[2]["actor"] == "maria.lopez@acme.example"
    assert all(e.membership_verification == PASS for e in found.result.events)


@pytest.mark.parametrize(
    ("body", "status", "pangea_status", "expected"),
    [
        ({"logs": 5}, 400, "ValidationError", [("InvalidObject", "/logs")]),
        ({"logs": []}, 400, "ValidationError", [("BelowMinItems", "/logs")]),
        (
            {"logs": [{"log_id": "1", "data": {"date": "x"}}]},
            400,
            "ValidationError",
            [("InvalidObject", "/logs/0/data/type")],
        ),
        (
            {"logs": [{"log_id": "1", "data": {"type": "s", "date": "yesterday"}}]},
            400,
            "ValidationError",
            [("BadFormatDateTime", "/logs/0/timestamp")],
        ),
        (b"{not json", 400, "ValidationError", [("InvalidObject", "/logs")]),
    ],
)
async def test_bad_log_stream_bodies_get_validation_errors(
    server: LocalAuditServer,
    http: aiohttp.ClientSession,
    body: Any,
    status: int,
    pangea_status: str,
    expected: list[tuple[str, str]],
) -> None:
    got, answer = await post(http, server.base_url, server.token, "/v1/log_stream", body)
    assert (got, answer["status"]) == (status, pangea_status), answer
    assert codes(answer) == expected


async def test_log_stream_needs_the_standard_schema_and_its_scope(
    server: LocalAuditServer, http: aiohttp.ClientSession
) -> None:
    data = json.loads(AUTH0_BODY.read_text())
    custom = await create_config(http, server, {"name": "custom", "version": 2, "schema": CUSTOM_SCHEMA})
    status, body = await post(
        http, server.base_url, server.token, "/v1/log_stream", {**data, "config_id": custom["id"]}
    )
    assert status == 400 and body["status"] == "InvalidSchema"
    with sqlite3.connect(server.settings.db_path) as conn:
        logger = create_token(
            conn, name="w", configs=[DEFAULT_CONFIG_ID], endpoints=["log"], restrict={}, expires_at=None
        )
    status, body = await post(http, server.base_url, logger["token"], "/v1/log_stream", data)
    assert status == 403 and body["status"] == "Unauthorized"


# -- hostile input ---------------------------------------------------------------------------------

HOSTILE_BODIES: list[Any] = [
    b"",
    b"null",
    b"[]",
    b'"text"',
    b"{bad json",
    b'{"id": null}',
    b'{"id": [], "name": {}, "version": 9}',
    b'{"name": "n", "version": 2, "schema": "x"}',
    b'{"name": "n", "version": 2, "schema": {"fields": "x"}}',
    b'{"name": "n", "version": 3, "schema": {"fields": [{"id": "a", "type": "integer", "size": 5}]}}',
    b'{"name": "n", "ui_metadata": [], "forwarding_configuration": 1, "partition_overrides": "x"}',
    b'{"filter": [], "size": "1", "last": "x"}',
    b'{"filter": {"id__in": "x", "updated_at__lte": 5}}',
    b'{"id": "pci_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "overrides": {"acme": {"cold_storage": 5}}}',
    b'{"result_id": null, "request_id": null, "format": null}',
    b'{"assert_search_restriction": "x", "result_id": "pas_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}',
    b'{"start": 5, "end": [], "order": 1, "verbose": "x", "format": {}}',
    b'{"logs": [null, 1, "x", {"data": []}, {"data": {"type": 5}}]}',
    b'{"logs": {"data": {"type": "s"}}, "config_id": 5}',
    b'{"config_id": "", "tree_size": "big"}',
    '{"name": "\u0000\ud7ff", "version": 1}'.encode(),
]
NEW_ENDPOINTS = [
    "/v1beta/config",
    "/v1beta/config/create",
    "/v1beta/config/update",
    "/v1beta/config/delete",
    "/v1beta/config/list",
    "/v1beta/config/partition_overrides",
    "/v1/export",
    "/v1/download_results",
    "/v1/log_stream",
    "/v1/root",
]


async def test_hostile_bodies_to_every_new_endpoint_get_pangea_errors_never_a_500(
    server: LocalAuditServer, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    await post(http, server.base_url, server.token, "/v1/log", {"event": {"message": "m"}})
    for path in NEW_ENDPOINTS:
        for raw in HOSTILE_BODIES:
            status, answer = await post(http, server.base_url, server.token, path, raw)
            assert status in (200, 202, 400, 403), (path, raw, answer)
            assert set(answer) == {"request_id", "request_time", "response_time", "status", "summary", "result"}
            if status == 400 and answer["status"] == "ValidationError":
                assert all({"code", "detail", "source"} <= set(e) for e in answer["result"]["errors"])
    assert "unhandled error" not in caplog.text
    for path in ("/v1beta/oauth/token", "/v1beta/oauth/token/introspect", "/v1beta/oauth/token/revoke"):
        for raw in HOSTILE_BODIES:
            async with http.post(
                server.base_url + path, data=raw, headers={"Authorization": "Basic !!!", "Content-Type": "text/plain"}
            ) as resp:
                assert resp.status in (200, 400, 401), (path, raw)
