"""Issue 14: on the SDK routes a full buffer answers 503 + Retry-After, the status pangea-sdk
retries by itself, so an app logging through its sidecar rides out a full buffer unaided.

Real processes on loopback: the local audit log (with its test faults) as the upstream and
``audit-gateway run`` with a tiny memory buffer in front of it; the app is pangea-sdk itself.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from pangea.config import PangeaConfig
from pangea.services import Audit

from tests.support.procs import Proc, gateway, local_audit, stored_messages

TOKEN = "pts_backpressure_upstream_token"


def write_config(tmp: Path, upstream: Proc) -> Path:
    cfg = tmp / "gateway.yaml"
    cfg.write_text(
        f"""
shutdown_timeout_secs: 5
buffer: {{type: memory, max_events: 10}}
upstream:
  url: {upstream.url("local_audit")}
  token: ${{UPSTREAM_TOKEN}}
  max_in_flight: 1
  retry: {{initial_backoff_secs: 0.05, max_backoff_secs: 0.2}}
destinations:
  default:
    schema: standard
    batch: {{max_events: 10, timeout_secs: 0.05}}
sources:
  sdk:
    type: webhook
    format: pangea
    destination: default
    ack_timeout_secs: 60
"""
    )
    return cfg


def set_faults(upstream: Proc, **knobs: Any) -> None:
    req = urllib.request.Request(
        upstream.url("local_audit") + "/_faults",
        data=orjson.dumps(knobs),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200


async def metric(proc: Proc, line_start: str) -> float:
    async with aiohttp.ClientSession() as s, s.get(proc.url("admin") + "/metrics") as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def wait_metric(proc: Proc, line_start: str, at_least: float, at_most: float = float("inf")) -> None:
    for _ in range(600):
        if at_least <= await metric(proc, line_start) <= at_most:
            return
        await asyncio.sleep(0.05)
    async with aiohttp.ClientSession() as s, s.get(proc.url("admin") + "/metrics") as r:
        text = await r.text()
    seen = [line for line in text.splitlines() if line.startswith(line_start.split("{")[0])]
    raise AssertionError(f"{line_start} never within {at_least}..{at_most}: {seen}\n{proc.log()}")


async def test_a_full_buffer_makes_the_sdk_retry_by_itself_and_succeed_once_space_returns(tmp_path: Path) -> None:
    up_dir = tmp_path / "upstream"
    up_dir.mkdir()
    with local_audit(up_dir, TOKEN, "--enable-test-faults") as upstream:
        set_faults(upstream, outage=True)
        with gateway(tmp_path, config=write_config(tmp_path, upstream), env={"UPSTREAM_TOKEN": TOKEN}) as gw:
            async with aiohttp.ClientSession() as s:

                async def fill(prefix: str) -> int:
                    body = orjson.dumps({"events": [{"event": {"message": f"{prefix}-{i}"}} for i in range(10)]})
                    async with s.post(gw.url() + "/v2/log", data=body) as r:
                        return r.status

                # Batches in flight (retried against the outage), then ten events that fill the buffer.
                fills: list[asyncio.Task[int]] = []
                buffered = 'gateway_buffer_events{destination="default"}'
                while await metric(gw, buffered) < 10:
                    fills.append(asyncio.create_task(fill(f"fill{len(fills)}")))
                    await wait_metric(
                        gw, 'gateway_events_received_total{destination="default",source="sdk"}', 10 * len(fills)
                    )
                    assert len(fills) < 10, gw.log()

                # The app logs with the SDK's own retry loop (more patient than its default of 3).
                sdk = Audit(
                    "any-token",
                    config=PangeaConfig(base_url_template=gw.url(), request_retries=10, request_backoff=0.2),
                )
                outcome: dict[str, Any] = {}

                def log() -> None:
                    try:
                        outcome["response"] = sdk.log("the app's event", verbose=True)
                    except Exception as exc:  # reported by the assertion below
                        outcome["error"] = exc

                app = threading.Thread(target=log)
                app.start()
                refused = 'gateway_intake_requests_refused_total{reason="buffer_full",source="sdk"}'
                await wait_metric(gw, refused, 1)  # the SDK was answered "full" at least once...
                set_faults(upstream, outage=False)  # ...and space returns with the upstream
                await asyncio.to_thread(app.join, 60)
                assert await asyncio.gather(*fills) == [200] * len(fills)

        assert "error" not in outcome, outcome.get("error")
        response = outcome["response"]
        assert response.success and response.result.hash
        # It retried: its last attempt names the earlier ones, each answered 503 + Retry-After.
        assert response.raw_response.request.headers.get("X-Pangea-Retried-Request-Ids")
        stored = stored_messages(up_dir / "local-audit.db")
    expected = [f"fill{n}-{i}" for n in range(len(fills)) for i in range(10)] + ["the app's event"]
    assert sorted(stored) == sorted(expected)  # none lost, none doubled
