"""The spool in the running gateway: 2xx at durability, SIGTERM keeps the rest, a full spool pushes back."""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from tests.support.procs import Proc, free_port, local_audit, start_gateway

TOKEN = "pts_spool_gateway_tests"


def post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    req = urllib.request.Request(
        url, data=orjson.dumps(body), method="POST", headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}"), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}"), dict(err.headers)


def faults(upstream: Proc, **knobs: Any) -> None:
    status, body, _ = post(upstream.url("local_audit") + "/_faults", knobs, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, body


def stored(db: Path) -> list[str]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE name LIKE 'records_%'")]
        return [
            str(m) for t in tables for (m,) in con.execute(f"SELECT json_extract(envelope, '$.event.message') FROM {t}")
        ]
    finally:
        con.close()


def wait_stored(db: Path, n: int, timeout: float = 60) -> list[str]:
    end = time.monotonic() + timeout
    got: list[str] = []
    while time.monotonic() < end:
        got = stored(db)
        if len(got) >= n:
            return got
        time.sleep(0.2)
    return got


def config(tmp: Path, upstream: Proc, **buffer: Any) -> Path:
    path = tmp / "gateway.yaml"
    path.write_bytes(
        orjson.dumps(
            {
                "upstream": {
                    "url": upstream.url("local_audit"),
                    "token": TOKEN,
                    "retry": {"initial_backoff_secs": 0.1, "max_backoff_secs": 0.5},
                },
                "buffer": {"type": "disk", "fsync_interval_ms": 10, **buffer},
                "shutdown_timeout_secs": 3,
                "destinations": {"default": {}},
                "sources": {
                    "sdk": {"type": "webhook", "format": "pangea", "destination": "default"},
                    "auth0": {"type": "webhook", "format": "auth0", "destination": "default"},
                },
            }
        )
    )
    return path


def ports() -> dict[str, int]:
    return {"intake": free_port(), "admin": free_port(), "local_audit": free_port()}


def test_answers_come_at_durability_and_sigterm_leaves_the_rest_for_the_next_start(tmp_path: Path) -> None:
    up_dir = tmp_path / "upstream"
    up_dir.mkdir()
    with local_audit(up_dir, TOKEN, "--enable-test-faults") as upstream:
        faults(upstream, outage=True)  # the upstream is away: nothing can be delivered
        cfg = config(tmp_path, upstream)
        p = ports()
        gw = start_gateway(tmp_path, config=cfg, ports=p)
        try:
            url = gw.url() + "/v2/log"
            events = [{"event": {"message": f"spooled-{i}"}} for i in range(30)]
            for i in range(0, 30, 10):
                status, body, _ = post(url, {"events": events[i : i + 10]})
                # 2xx means durable in the spool; the upstream has nothing yet, so no hashes.
                assert status == 200 and body["result"] == {"results": []}, body
            status, _, _ = post(
                gw.url() + "/v1/log_stream",
                [{"log_id": "a1", "data": {"date": "2026-01-01T00:00:00Z", "type": "s", "description": "auth0-1"}}],
            )
            assert status == 200
            started = time.monotonic()
            code = gw.terminate(timeout=30)
            assert code == 0
            assert time.monotonic() - started < 3 + 5  # shutdown_timeout_secs plus process teardown
        finally:
            gw.kill()
        assert stored(up_dir / "local-audit.db") == []

        faults(upstream, reset=True)
        gw = start_gateway(tmp_path, config=cfg, ports=p)
        try:
            got = wait_stored(up_dir / "local-audit.db", 31)
            assert sorted(got) == sorted([f"spooled-{i}" for i in range(30)] + ["auth0-1"])
        finally:
            assert gw.terminate() == 0


def test_a_full_spool_answers_503_with_retry_after_on_the_sdk_routes_and_is_not_ready(tmp_path: Path) -> None:
    up_dir = tmp_path / "upstream"
    up_dir.mkdir()
    with local_audit(up_dir, TOKEN, "--enable-test-faults") as upstream:
        faults(upstream, outage=True)
        gw = start_gateway(tmp_path, config=config(tmp_path, upstream, max_bytes=8192))
        try:
            url = gw.url() + "/v2/log"
            accepted = 0
            refused: tuple[int, dict[str, Any], dict[str, str]] | None = None
            for i in range(100):
                status, body, headers = post(url, {"events": [{"event": {"message": f"m{i}-{'x' * 200}"}}] * 5})
                if status != 200:
                    refused = (status, body, headers)
                    break
                accepted += 5
            assert refused is not None and accepted > 0
            status, body, headers = refused
            # 503, not 429, on the SDK routes: the status pangea-sdk retries by itself
            assert status == 503 and body["status"] == "ServiceNotAvailable" and int(headers["Retry-After"]) >= 1
            with urllib.request.urlopen(gw.url("admin") + "/metrics", timeout=10) as r:
                metrics = r.read().decode()
            assert f'gateway_buffer_events{{destination="default"}} {float(accepted)}' in metrics
            try:
                urllib.request.urlopen(gw.url("admin") + "/readyz", timeout=10)
                ready = True
            except urllib.error.HTTPError:
                ready = False
            assert not ready
            faults(upstream, reset=True)
            assert len(wait_stored(up_dir / "local-audit.db", accepted)) == accepted
        finally:
            assert gw.terminate() == 0
