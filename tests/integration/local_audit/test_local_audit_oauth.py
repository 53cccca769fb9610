"""The local audit log's OAuth2 client-credentials server, and the gateway's upstream ``oauth2``
mode end to end against it (real HTTP over loopback, real SQLite, the CLI as a process)."""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from pydantic import SecretStr

from gateway.acks import Ack, AckStatus
from gateway.batching import Batch
from gateway.event import Event
from gateway.local_audit.server import LocalAuditServer
from gateway.local_audit.settings import DEFAULT_CONFIG_ID, LocalAuditSettings
from gateway.sinks.pangea.config import OAuth2Config, UpstreamConfig
from gateway.sinks.pangea.sink import PangeaSink
from gateway.telemetry.metrics import Metrics
from tests.integration.sinks.upstream_stub import AckLog, RecordingDeadLetters, SleepRecorder
from tests.support.procs import REPO, stored_messages

LOG = "pangea:service:audit:log"
READ = "pangea:service:audit:read"


class Clock:
    """The server's wall clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 2_000_000_000.0

    def __call__(self) -> float:
        return self.now


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "local-audit", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def make_client(db: Path, name: str = "worker", scopes: str = f"{LOG} {READ}") -> dict[str, str]:
    done = cli(
        "client", "create", "--db", str(db), "--name", name, "--configs", DEFAULT_CONFIG_ID,
        "--scopes", scopes, "--token-ttl", "1h",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    made: dict[str, str] = json.loads(done.stdout)
    return made


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def server(tmp_path: Path, clock: Clock) -> AsyncIterator[LocalAuditServer]:
    srv = LocalAuditServer(LocalAuditSettings(listen_port=0, db_path=tmp_path / "audit.db"), clock=clock)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def basic(client: dict[str, str], secret: str | None = None) -> dict[str, str]:
    raw = f"{client['client_id']}:{secret or client['client_secret']}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


async def form_post(
    http: aiohttp.ClientSession, url: str, form: dict[str, str], headers: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, str]]:
    async with http.post(url, data=form, headers=headers or {}) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if text else None), dict(resp.headers)


async def api(http: aiohttp.ClientSession, srv: LocalAuditServer, token: str, path: str, body: Any) -> tuple[int, Any]:
    async with http.post(srv.base_url + path, json=body, headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, await resp.json()


async def test_metadata_names_the_endpoints_and_both_client_auth_methods(
    server: LocalAuditServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(server.base_url + "/.well-known/oauth-authorization-server") as resp:
        assert resp.status == 200
        meta = await resp.json()
    base = server.base_url
    assert meta["issuer"] == base
    assert meta["token_endpoint"] == base + "/v1beta/oauth/token"
    assert meta["introspection_endpoint"] == base + "/v1beta/oauth/token/introspect"
    assert meta["revocation_endpoint"] == base + "/v1beta/oauth/token/revoke"
    assert meta["grant_types_supported"] == ["client_credentials"]
    assert meta["token_endpoint_auth_methods_supported"] == ["client_secret_basic", "client_secret_post"]
    assert {LOG, READ} <= set(meta["scopes_supported"])


async def test_client_credentials_tokens_work_until_revoked_or_expired_and_introspection_reports_them(
    server: LocalAuditServer, http: aiohttp.ClientSession, clock: Clock
) -> None:
    client = make_client(server.settings.db_path)
    assert client["client_id"].startswith("psa_") and client["client_secret"].startswith("pck_")
    token_url = server.base_url + "/v1beta/oauth/token"

    status, got, headers = await form_post(http, token_url, {"grant_type": "client_credentials"}, basic(client))
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert got["token_type"] == "Bearer" and got["expires_in"] == 3600
    assert got["scope"] == f"{LOG} {READ}" and got["access_token"].startswith("pts_")
    full = got["access_token"]
    assert (await api(http, server, full, "/v1/log", {"event": {"message": "by oauth"}}))[0] == 200
    status, body = await api(http, server, full, "/v1beta/config/list", {})
    assert status == 403 and body["status"] == "Unauthorized"  # no manage scope

    # client_secret_post, and a scope narrowing the client's.
    form = {"grant_type": "client_credentials", "scope": READ, **client}
    status, got, _ = await form_post(http, token_url, form)
    assert status == 200 and got["scope"] == READ
    reader = got["access_token"]
    assert (await api(http, server, reader, "/v1/log", {"event": {"message": "no"}}))[0] == 403
    status, body = await api(http, server, reader, "/v1/search", {})
    assert status == 200 and body["result"]["count"] == 1

    introspect = server.base_url + "/v1beta/oauth/token/introspect"
    status, info, _ = await form_post(http, introspect, {"token": full}, basic(client))
    assert status == 200 and info["active"] is True
    assert info["client_id"] == client["client_id"] and info["jti"].startswith("pmt_")
    assert info["exp"] - info["iat"] == 3600 and info["username"] == "worker" and info["scope"] == f"{LOG} {READ}"
    for form_body, hdrs in (
        ({"token": full}, basic(client, "pck_wrong")),
        ({"token": "pts_unknown"}, basic(client)),
        ({"token": full}, {}),
    ):
        status, info, _ = await form_post(http, introspect, form_body, hdrs)
        assert (status, info) == (200, {"active": False})

    revoke = server.base_url + "/v1beta/oauth/token/revoke"
    status, answer, _ = await form_post(http, revoke, {"token": full}, basic(client))
    assert (status, answer) == (200, None)
    status, body = await api(http, server, full, "/v1/log", {"event": {"message": "after revoke"}})
    assert status == 401 and body["status"] == "Unauthorized"
    assert (await form_post(http, introspect, {"token": full}, basic(client)))[1] == {"active": False}
    status, answer, _ = await form_post(http, revoke, {"token": full}, basic(client))
    assert (status, answer) == (200, {"error": "invalid_request", "error_description": "The token does not exist"})

    clock.now += 3601  # the reader token expires
    status, body = await api(http, server, reader, "/v1/search", {})
    assert status == 401
    assert (await form_post(http, introspect, {"token": reader}, basic(client)))[1] == {"active": False}


@pytest.mark.parametrize(
    ("form", "auth", "status", "error"),
    [
        ({}, True, 400, "invalid_request"),
        ({"grant_type": "password"}, True, 400, "unsupported_grant_type"),
        ({"grant_type": "client_credentials"}, False, 401, "invalid_client"),
        ({"grant_type": "client_credentials", "scope": "pangea:service:audit:manage"}, True, 400, "invalid_scope"),
        ({"grant_type": "client_credentials", "scope": ""}, True, 400, "invalid_scope"),
        ({"grant_type": "client_credentials", "expires_in": "99999"}, True, 400, "invalid_request"),
        ({"grant_type": "client_credentials", "expires_in": "-5"}, True, 400, "invalid_request"),
    ],
)
async def test_bad_token_requests_get_oauth_errors(
    server: LocalAuditServer, http: aiohttp.ClientSession, form: dict[str, str], auth: bool, status: int, error: str
) -> None:
    client = make_client(server.settings.db_path)
    headers = basic(client) if auth else basic(client, "pck_wrong")
    got_status, got, hdrs = await form_post(http, server.base_url + "/v1beta/oauth/token", form, headers)
    assert (got_status, got["error"]) == (status, error)
    assert client["client_secret"] not in json.dumps(got)
    if error == "invalid_client":
        assert hdrs["WWW-Authenticate"].startswith("Basic")


async def test_rotating_the_secret_refuses_the_old_one(server: LocalAuditServer, http: aiohttp.ClientSession) -> None:
    client = make_client(server.settings.db_path)
    rotated = cli("client", "rotate", "--db", str(server.settings.db_path), client["client_id"])
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(rotated.stdout)
    assert new["client_id"] == client["client_id"] and new["client_secret"] != client["client_secret"]
    url = server.base_url + "/v1beta/oauth/token"
    assert (await form_post(http, url, {"grant_type": "client_credentials"}, basic(client)))[0] == 401
    assert (await form_post(http, url, {"grant_type": "client_credentials"}, basic(new)))[0] == 200
    listed = cli("client", "list", "--db", str(server.settings.db_path))
    assert [c["name"] for c in json.loads(listed.stdout)] == ["worker"]
    assert client["client_secret"] not in listed.stdout and new["client_secret"] not in listed.stdout
    again = cli(
        "client", "create", "--db", str(server.settings.db_path), "--name", "worker", "--configs", DEFAULT_CONFIG_ID
    )
    assert again.returncode == 1 and "exists" in again.stderr
    bad = cli(
        "client",
        "create",
        "--db",
        str(server.settings.db_path),
        "--name",
        "x",
        "--configs",
        DEFAULT_CONFIG_ID,
        "--scopes",
        "root",
    )
    assert bad.returncode == 2 and "unknown scopes" in bad.stderr


# -- the gateway's upstream oauth2 mode, end to end -----------------------------------------------


def one_event_batch(acks: AckLog, key: int) -> Batch:
    return Batch("default", [Event(orjson.dumps({"event": {"message": f"m{key}"}}), Ack(acks, key), "sdk")])


async def test_gateway_oauth2_upstream_delivers_and_recovers_from_revocation_and_expiry(
    server: LocalAuditServer, http: aiohttp.ClientSession, clock: Clock
) -> None:
    client = make_client(server.settings.db_path)
    oauth2 = OAuth2Config(
        token_url=server.base_url + "/v1beta/oauth/token",
        client_id=client["client_id"],
        client_secret=SecretStr(client["client_secret"]),
        scope=LOG,
    )
    metrics, acks, dead = Metrics(), AckLog(), RecordingDeadLetters()
    sink = PangeaSink(
        "default", None, UpstreamConfig(url=server.base_url, oauth2=oauth2), metrics, dead, sleep=SleepRecorder()
    )
    await sink.start()
    try:
        await sink.send(one_event_batch(acks, 0))
        # Revoke every token the client holds, as an operator would; the sink's next call is refused.
        tokens = _issued(server)
        assert len(tokens) == 1
        assert cli("token", "revoke", "--db", str(server.settings.db_path), tokens[0]).returncode == 0
        await sink.send(one_event_batch(acks, 1))
        clock.now += 7200  # the server's clock passes the token's expiry
        await sink.send(one_event_batch(acks, 2))
    finally:
        await sink.stop()
    assert [acks.by_key[k][0] for k in range(3)] == [AckStatus.DELIVERED] * 3
    assert dead.letters == []
    assert sorted(stored_messages(server.settings.db_path)) == ["m0", "m1", "m2"]
    assert len(_issued(server)) == 3  # first, after the revocation, after the expiry
    refreshes = metrics.registry.get_sample_value("gateway_auth_token_refreshes_total", {"reason": "invalidated"})
    assert refreshes == 2


def _issued(server: LocalAuditServer) -> list[str]:
    """Ids of the access tokens issued so far, read from the database."""
    with sqlite3.connect(server.settings.db_path) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM service_tokens WHERE client_id IS NOT NULL ORDER BY rowid")]
