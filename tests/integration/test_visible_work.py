"""Issue 16, visible work: the opt-in access log, the periodic stats line and ``GET /status``."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.procs import VENDOR_FIXTURES, Proc, gateway


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def log_lines(proc: Proc) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.log().splitlines() if line.startswith("{")]


def wait_for(what: str, check: Any, timeout: float = 30.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"never: {what}")


def test_status_the_stats_line_and_the_access_log_show_an_event_through(tmp_path: Path) -> None:
    body = (VENDOR_FIXTURES / "auth0_batch1_jsonarray.json").read_bytes()
    n = len(json.loads(body))
    cfg = tmp_path / "g.yaml"
    cfg.write_text(
        "destinations: {audit: {schema: standard}}\n"
        "sources: {auth0: {type: webhook, format: auth0, path: /v1/log_stream, destination: audit}}\n"
        "access_log: true\n"
        "stats_interval_secs: 100ms\n"
    )
    with gateway(tmp_path, config=cfg) as gw:
        before = get_json(gw.url("admin") + "/status")
        req = urllib.request.Request(
            gw.url() + "/v1/log_stream?token=QUERY_SECRET_1f2e",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200
        status = wait_for(
            "/status counts the delivery",
            lambda: (s := get_json(gw.url("admin") + "/status"))["destinations"]["audit"]["delivered"] == n and s,
        )
        stats = wait_for(
            "a stats line with the delivery",
            lambda: [
                line
                for line in log_lines(gw)
                if line["message"] == "stats" and line["destinations"]["audit"]["delivered"] == n
            ],
        )[0]
    assert before["sources"]["auth0"]["received"] == 0 and before["destinations"]["audit"]["delivered"] == 0
    assert status["status"] == "ready" and status["reasons"] == []
    assert status["sources"]["auth0"] == {
        "received": n, "rejected": 0, "dead_lettered": 0, "refused": 0, "refused_requests": 0, "duplicates": 0,
    }  # fmt: skip
    dest = status["destinations"]["audit"]
    assert (dest["delivered"], dest["rejected"], dest["dropped"], dest["buffered"]) == (n, 0, 0, 0)
    assert dest["in_flight"] == 0  # read from the delivery driver's gauge (None if it were not found)
    assert dest["upstream"] == "ok" and dest["buffer_use"] == 0.0
    assert stats["sources"]["auth0"]["received"] == n and stats["logger"] == "gateway.app"
    lines = log_lines(gw)
    access = [line for line in lines if line["logger"] == "gateway.access"]
    assert len(access) == 1, access
    assert access[0]["method"] == "POST" and access[0]["path"] == "/v1/log_stream" and access[0]["status"] == 200
    assert "QUERY_SECRET" not in gw.log()
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)


def test_no_access_log_unless_asked(tmp_path: Path) -> None:
    with gateway(tmp_path) as gw:
        req = urllib.request.Request(gw.url() + "/v1/log_stream", data=b"[]", method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
        status = get_json(gw.url("admin") + "/status")
    assert not [line for line in log_lines(gw) if line["logger"] == "gateway.access"]
    assert set(status["sources"]) == {"auth0", "sdk"} and set(status["destinations"]) == {"default"}
