"""Helpers of the issue-5 end-to-end tests: raw HTTP on loopback, the local audit log, dead letters.

Requests go through ``http.client`` so that a test controls every byte of a body and every header
(urllib adds its own ``Content-Type`` and refuses some bodies).  Each call opens and closes its own
connection, so no socket outlives a test (pytest turns ``ResourceWarning`` into errors).
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import http.client
import json
import sqlite3
import ssl
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pangea.config import PangeaConfig
from pangea.services import Audit

from tests.support.procs import VENDOR_FIXTURES, Proc

TOKEN = "pts_vendor_e2e_local_token_0001"
"""The embedded local audit log's token (``AUDIT_GATEWAY_LOCAL_TOKEN``)."""

# The sample headers' credentials, used as the configured secrets (the fixtures README says so).
AUTH0_AUTHORIZATION = "Bearer 6Xq0pV3cT8mZ1rL5wN9bK2yH7dF4sJ0a"
OKTA_SECRET = "okta-shared-secret-4b1d2c3e"
GITHUB_SECRET = "It's a Secret to Everybody"
HEC_TOKEN = "12345678-1234-1234-1234-1234567890AB"

ENVELOPE_KEYS = {"request_id", "request_time", "response_time", "status", "summary", "result"}
_TRACE_MARKERS = ("Traceback", 'File "', "site-packages", '.py", line')


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    url: str,
    body: bytes | Iterator[bytes] | None = None,
    headers: dict[str, str] | None = None,
    *,
    method: str | None = None,
    timeout: float = 60.0,
    context: ssl.SSLContext | None = None,
) -> Reply:
    """One HTTP request on its own connection; any status is returned, never raised.

    A ``body`` given as an iterator of chunks is sent with ``Transfer-Encoding: chunked``.
    """
    u = urllib.parse.urlsplit(url)
    conn: http.client.HTTPConnection
    if u.scheme == "https":
        conn = http.client.HTTPSConnection(u.hostname or "127.0.0.1", u.port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=timeout)
    path = u.path + (f"?{u.query}" if u.query else "")
    try:
        conn.request(method or ("GET" if body is None else "POST"), path or "/", body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def fixture_bytes(name: str) -> bytes:
    return (VENDOR_FIXTURES / name).read_bytes()


def fixture_headers(name: str) -> dict[str, str]:
    """The request headers of a ``*_headers.json`` sample, minus those http.client sets itself."""
    data = json.loads(fixture_bytes(name))
    headers: dict[str, str] = data.get("headers") or data["request"]["headers"]
    return {k: v for k, v in headers.items() if k not in ("Host", "Content-Length")}


def github_signature(body: bytes, secret: str = GITHUB_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


# -- the local audit log -------------------------------------------------------------------------


def sdk(base_url: str, token: str = TOKEN, **kw: Any) -> Audit:
    return Audit(token, config=PangeaConfig(base_url_template=base_url, poll_result_timeout=60), **kw)


def search_all(audit: Audit, query: str = "") -> list[Any]:
    """Every event of the client's configuration, hashes verified by pangea-sdk while searching."""
    resp = audit.search(query=query, verify_events=True, limit=1000, max_results=10000)
    assert resp.success and resp.result is not None, resp.status
    return list(resp.result.events)


def record_count(base_url: str, token: str = TOKEN, config_id: str | None = None) -> int:
    """Records in a configuration's log: ``POST /v1/root`` size (0 while the tree is empty)."""
    body = json.dumps({"config_id": config_id} if config_id else {}).encode()
    reply = request(
        base_url + "/v1/root", body, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    )
    answer = reply.json()
    if answer["status"] == "TreeNotFound":
        return 0
    assert reply.status == 200, answer
    return int(answer["result"]["size"])


def events_by_hash(audit: Audit) -> dict[str, dict[str, Any]]:
    return {e.hash: e for e in search_all(audit)}


# -- dead letters, process state -------------------------------------------------------------------


def deadletters(data_dir: Path) -> list[dict[str, Any]]:
    """Rows of ``<data-dir>/deadletters.db`` (oldest first)."""
    db = sqlite3.connect(data_dir / "deadletters.db")
    try:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM deadletters ORDER BY id")]
    finally:
        db.close()


def healthy(gw: Proc) -> bool:
    if gw.popen.poll() is not None:
        return False
    try:
        return request(gw.url("admin") + "/healthz", timeout=10).status == 200
    except OSError:
        return False


def assert_clean_refusal(reply: Reply, *, hec: bool = False, what: object = "") -> None:
    """A 4xx whose body is the route's documented shape and holds no trace of the code."""
    assert 400 <= reply.status < 500, (what, reply.status, reply.body[:300])
    text = reply.body.decode("utf-8", "replace")
    assert not any(m in text for m in _TRACE_MARKERS), (what, text[:500])
    body = reply.json()
    if hec and set(body) <= {"text", "code", "invalid-event-number"}:
        assert isinstance(body["text"], str) and body["text"] and isinstance(body["code"], int), (what, body)
        return
    assert set(body) == ENVELOPE_KEYS, (what, body)
    assert body["status"] not in ("Success", "InternalError") and body["summary"], (what, body)
    assert body["request_id"].startswith("prq_")


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not met within {timeout}s")
