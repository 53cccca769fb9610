"""Issue 12, cases 1 and 6: what a 2xx/202 from the SDK routes promises, kept through SIGTERM and SIGKILL.

Real processes on loopback: ``audit-gateway run`` with the default memory buffer, and the
local audit log as its upstream, started only once the scenario wants the upstream back.
The accounting is exact: the events answered 2xx/202 are the events stored upstream
(duplicates printed), and every event not stored was answered otherwise and is counted.
The last test reads the dropped-events counter itself, in process: the real sink and buffer
with nothing listening upstream and the sink's backoff sleep injected.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from pydantic import SecretStr

from gateway.acks import AckGroup, AckStatus
from gateway.buffer.memory import MemoryBuffer
from gateway.config import DestinationConfig
from gateway.errors import Draining
from gateway.event import Event
from gateway.normalize.schema import Schema
from gateway.pipeline import Destination
from gateway.sinks.deadletter.local import LocalDeadLetterStore
from gateway.sinks.pangea.config import UpstreamConfig
from gateway.sinks.pangea.sink import PangeaSink
from gateway.telemetry.metrics import Metrics
from tests.support.procs import Proc, free_port, gateway, local_audit, start_gateway, stored_messages

TOKEN = "pts_ack_token"
SDK_TOKEN = "pts_ack_sdk_token"
DROPPED_LINE = "shutdown deadline: events dropped undelivered"


def write_config(
    tmp: Path, upstream_port: int, *, ack_timeout_secs: float, buffer: str = "memory", shutdown_timeout_secs: float = 1
) -> Path:
    cfg = tmp / "gateway.yaml"
    cfg.write_text(
        f"""
shutdown_timeout_secs: {shutdown_timeout_secs}
buffer: {{type: {buffer}}}
upstream:
  url: http://127.0.0.1:{upstream_port}
  token: ${{UPSTREAM_TOKEN}}
  retry: {{initial_backoff_secs: 0.05, max_backoff_secs: 0.2}}
  max_in_flight: 1
destinations:
  default:
    schema: standard
    # One request's 10 events per batch, one batch in flight: the other requests wait buffered.
    batch: {{max_events: 10, timeout_secs: 0.05}}
sources:
  sdk:
    type: webhook
    format: pangea
    destination: default
    ack_timeout_secs: {ack_timeout_secs}
"""
    )
    return cfg


class Sender:
    """Posts batches to ``/v2/log_async`` and keeps each batch's outcome."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.outcomes: list[tuple[list[str], str]] = []
        self.locations: list[str] = []

    async def send(self, messages: list[str]) -> None:
        body = orjson.dumps({"events": [{"event": {"message": m}} for m in messages]})
        try:
            async with self.session.post(self.url + "/v2/log_async", data=body) as r:
                payload = await r.json(content_type=None)
                outcome = str(r.status)
                if r.status == 202:
                    assert payload["status"] == "Accepted"
                    self.locations.append(payload["result"]["location"])
                elif r.status == 503:
                    # The retriable answer: the SDK resends a 503; Retry-After says when.
                    assert payload["status"] == "ServiceNotAvailable" and int(r.headers["Retry-After"]) >= 1
        except aiohttp.ClientError:
            outcome = "connection lost"
        self.outcomes.append((messages, outcome))

    @property
    def acked(self) -> list[str]:
        return [m for msgs, outcome in self.outcomes if outcome in ("200", "202") for m in msgs]

    def not_acked(self) -> Counter[str]:
        """Events answered otherwise than 2xx/202, by the answer they got."""
        return Counter(outcome for msgs, outcome in self.outcomes if outcome not in ("200", "202") for _ in msgs)


def batches(prefix: str) -> list[list[str]]:
    return [[f"{prefix}-{i}-{j}" for j in range(10)] for i in range(5)]


async def metric(proc: Proc, line_start: str) -> float:
    async with aiohttp.ClientSession() as s, s.get(proc.url("admin") + "/metrics") as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def wait_admitted(proc: Proc, n: int) -> None:
    """Until the SDK source has admitted ``n`` events (admission puts them in the buffer in the
    same turn of the event loop as it counts them, and /metrics is served by that loop)."""
    for _ in range(600):
        if await metric(proc, 'gateway_events_received_total{destination="default",source="sdk"}') >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the gateway did not admit {n} events:\n{proc.log()}")


def dropped_in_log(proc: Proc) -> list[dict[str, Any]]:
    """The gateway's log lines saying it dropped events."""
    return [orjson.loads(line) for line in proc.log().splitlines() if DROPPED_LINE in line]


async def outage_then_stop(
    tmp: Path, upstream_port: int, *, kill: bool, ack_timeout_secs: float, buffer: str = "memory"
) -> tuple[Sender, Proc]:
    """The issue's scenario: the upstream is down, 5 x 10 events through /v2/log_async, then the stop."""
    cfg = write_config(tmp, upstream_port, ack_timeout_secs=ack_timeout_secs, buffer=buffer)
    gw = start_gateway(tmp, config=cfg, env={"UPSTREAM_TOKEN": TOKEN})
    try:
        async with aiohttp.ClientSession() as s:
            sender = Sender(s, gw.url())
            tasks = [asyncio.create_task(sender.send(b)) for b in batches("outage")]
            await wait_admitted(gw, 50)
            if kill:
                await asyncio.gather(*tasks)  # every sender has its answer before the crash
                gw.kill()
            else:
                code = await asyncio.to_thread(gw.terminate)
                await asyncio.gather(*tasks)
                assert code == 0, gw.log()
    finally:
        gw.kill()
    return sender, gw


async def upstream_back(tmp: Path, upstream_port: int, sender: Sender, buffer: str = "memory") -> None:
    """Restart with the upstream up; 5 x 10 more events, then a graceful stop."""
    cfg = write_config(tmp, upstream_port, ack_timeout_secs=30, buffer=buffer)
    with local_audit(tmp, TOKEN, port=upstream_port), gateway(tmp, config=cfg, env={"UPSTREAM_TOKEN": TOKEN}) as gw:
        async with aiohttp.ClientSession() as s:
            again = Sender(s, gw.url())
            await asyncio.gather(*(again.send(b) for b in batches("after")))
            assert [o for _m, o in again.outcomes] == ["202"] * 5, gw.log()
            for location in again.locations:  # a 202 is settled: its result is there at once
                async with s.get(location) as r:
                    result = await r.json()
                    assert r.status == 200 and result["status"] == "Success", result
                    # The memory buffer answered after the upstream: its hashes; the spool, at durability.
                    assert len(result["result"]["results"]) == (10 if buffer == "memory" else 0)
        sender.outcomes += again.outcomes
        assert gw.terminate() == 0


def accounting(tmp: Path, sender: Sender) -> tuple[set[str], list[str]]:
    stored = stored_messages(tmp / "local-audit.db")
    dupes = {m: n for m, n in Counter(stored).items() if n > 1}
    print(f"answered 2xx/202: {len(sender.acked)}; stored: {len(set(stored))}; duplicates: {dupes}")
    print(f"not answered 2xx/202, by answer: {dict(sender.not_acked())}")
    return set(stored), sender.acked


async def test_log_async_during_an_outage_then_sigterm_answers_503_and_counts_every_dropped_event(
    tmp_path: Path,
) -> None:
    port = free_port()
    sender, first = await outage_then_stop(tmp_path, port, kill=False, ack_timeout_secs=60)
    # Stopped while they waited: each sender got a 503 it retries, none a 202.
    assert [o for _m, o in sender.outcomes] == ["503"] * 5, first.log()
    # Whatever the stop could not deliver is counted (in flight and buffered alike) and logged.
    [dropped] = dropped_in_log(first)
    counts = [dropped[k] for k in ("reason", "events", "in_flight", "buffered")]
    assert counts == ["shutdown", 50, 10, 40], first.log()

    await upstream_back(tmp_path, port, sender)
    stored, acked = accounting(tmp_path, sender)
    assert stored == set(acked)
    outage = {m for b in batches("outage") for m in b}
    assert dropped["events"] == len(outage - stored)


async def test_log_async_during_an_outage_answers_503_when_the_wait_ends_so_a_sigkill_loses_no_202(
    tmp_path: Path,
) -> None:
    port = free_port()
    sender, _first = await outage_then_stop(tmp_path, port, kill=True, ack_timeout_secs=0.5)
    # The upstream stayed away past ack_timeout_secs: a 503 + Retry-After, never a 202.
    assert [o for _m, o in sender.outcomes] == ["503"] * 5

    await upstream_back(tmp_path, port, sender)
    stored, acked = accounting(tmp_path, sender)
    assert stored == set(acked)
    assert sender.not_acked() == Counter({"503": 50})


async def test_a_retried_request_id_dedups_only_the_same_events(tmp_path: Path) -> None:
    first_events = [f"first-{i}" for i in range(3)]
    other_events = [f"other-{i}" for i in range(3)]
    with gateway(tmp_path, env={"AUDIT_GATEWAY_LOCAL_TOKEN": SDK_TOKEN}) as gw:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {SDK_TOKEN}"}) as s:

            async def log(messages: list[str], retried: str | None = None) -> tuple[int, Any, str]:
                body = orjson.dumps({"events": [{"event": {"message": m}} for m in messages]})
                headers = {"X-Pangea-Retried-Request-Ids": retried} if retried else {}
                async with s.post(gw.url() + "/v2/log", data=body, headers=headers) as r:
                    return r.status, await r.json(), r.headers["X-Request-Id"]

            status, _body, first_id = await log(first_events)
            assert status == 200
            # Names the first request but carries other events: new events, stored, with their hashes.
            status, body, other_id = await log(other_events, retried=first_id)
            assert status == 200 and len(body["result"]["results"]) == 3, body
            assert all(re.fullmatch(r"[0-9a-f]{64}", r["hash"]) for r in body["result"]["results"])
            # A true retry of the first request (the same events): answered 200, not stored again.
            status, _body, _ = await log(first_events, retried=f"{other_id},{first_id}")
            assert status == 200
            duplicates = await metric(gw, 'gateway_duplicates_dropped_total{destination="default",source="sdk"}')
    assert sorted(stored_messages(tmp_path / "data" / "local-audit.db")) == sorted(first_events + other_events)
    assert duplicates == 3


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
async def test_with_the_disk_spool_log_async_answers_202_at_once_during_an_outage_and_a_stop_loses_none(
    tmp_path: Path, stop: str
) -> None:
    port = free_port()
    sender, first = await outage_then_stop(tmp_path, port, kill=stop == "sigkill", ack_timeout_secs=60, buffer="disk")
    # Written and fsynced in the spool: as safe as a /v2/log 200 with this buffer, so 202 at once.
    assert [o for _m, o in sender.outcomes] == ["202"] * 5, first.log()
    assert dropped_in_log(first) == []  # nothing dropped: the spool keeps it

    await upstream_back(tmp_path, port, sender, buffer="disk")  # the restart replays the spool
    stored, acked = accounting(tmp_path, sender)
    assert stored == set(acked) and len(acked) == 100


async def test_a_sigterm_during_an_outage_delivers_and_answers_202_when_the_upstream_returns_before_the_deadline(
    tmp_path: Path,
) -> None:
    port = free_port()
    cfg = write_config(tmp_path, port, ack_timeout_secs=60, shutdown_timeout_secs=60)
    gw = start_gateway(tmp_path, config=cfg, env={"UPSTREAM_TOKEN": TOKEN})
    try:
        async with aiohttp.ClientSession() as s:
            sender = Sender(s, gw.url())
            tasks = [asyncio.create_task(sender.send(b)) for b in batches("drain")]
            await wait_admitted(gw, 50)
            gw.popen.send_signal(signal.SIGTERM)
            while "shutdown requested" not in gw.log():
                await asyncio.sleep(0.05)
            # The upstream returns while the stop drains: the waiting senders get their 202s.
            with local_audit(tmp_path, TOKEN, port=port):
                await asyncio.gather(*tasks)
                assert await asyncio.to_thread(gw.popen.wait, 60) == 0
    finally:
        gw.kill()
    assert [o for _m, o in sender.outcomes] == ["202"] * 5, gw.log()
    assert dropped_in_log(gw) == []
    stored, acked = accounting(tmp_path, sender)
    assert stored == set(acked) and len(acked) == 50


async def test_a_stop_that_cuts_the_flush_counts_in_flight_and_buffered_events_as_dropped(tmp_path: Path) -> None:
    metrics = Metrics()
    in_backoff, never = asyncio.Event(), asyncio.Event()

    async def stalled(_secs: float) -> None:  # the backoff outlasts the stop's deadline
        in_backoff.set()
        await never.wait()

    # Nothing listens there: the one batch in flight fails, then waits in its backoff.
    upstream = UpstreamConfig(url=f"http://127.0.0.1:{free_port()}", token=SecretStr(TOKEN), max_in_flight=1)
    sink = PangeaSink(
        "default", None, upstream, metrics, LocalDeadLetterStore(tmp_path / "dl.db", metrics), sleep=stalled
    )
    await sink.start()
    config = DestinationConfig.model_validate({"batch": {"max_events": 10, "timeout_secs": 0.01}})
    dest = Destination(
        "default", config, MemoryBuffer("default", 1000, 1 << 20, metrics), sink, Schema.standard(), metrics, 1
    )
    dest.start()
    groups = [AckGroup(10) for _ in range(5)]
    for g in groups:
        await dest.submit([Event(b'{"event":{"message":"m"}}', g.ack(i), "sdk") for i in range(10)])
    await in_backoff.wait()

    await dest.stop(asyncio.get_running_loop().time())
    await sink.stop()
    assert [g.status for g in groups if g.done] == [AckStatus.ERRORED] * 5  # none answered 2xx
    dropped = metrics.registry.get_sample_value(
        "gateway_events_dropped_total", {"source": "sdk", "destination": "default", "reason": "shutdown"}
    )
    assert dropped == 50  # 10 in flight + 40 buffered


async def test_a_stopping_memory_buffer_refuses_with_a_503_that_senders_retry() -> None:
    buffer = MemoryBuffer("default", 10, 1 << 20, Metrics())
    buffer.close()
    with pytest.raises(Draining) as info:
        await buffer.put([Event(b'{"event":{"message":"m"}}', AckGroup(1).ack(0), "sdk")])
    # Not a 429: the SDK retries 5xx only, and a stopping gateway is not a busy one.
    assert (info.value.http_status, info.value.pangea_status) == (503, "ServiceNotAvailable")
    assert info.value.retriable and info.value.retry_after_secs
