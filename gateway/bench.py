"""``audit-gateway bench``: webhook → gateway → local audit log, each in its own process.

Reports events/s, request latency p50/p99 and the gateway's peak RSS; ``--rss-per-event``
also fills the buffer against a stalled upstream and reports RSS bytes per buffered event.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

BENCH_TOKEN = "pts_bench_token"  # noqa: S105 - a throwaway token for processes on loopback


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_secs(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("ab") as f:
        return subprocess.Popen([sys.executable, "-m", "gateway", *args], stdout=f, stderr=subprocess.STDOUT, env=env)


async def wait_answering(url: str, proc: subprocess.Popen[bytes]) -> None:
    """Until ``url`` answers at all (any status); raises if ``proc`` exits first or after ~30 s."""
    async with aiohttp.ClientSession() as s:
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError(f"a bench process exited early ({proc.returncode})")
            try:
                async with s.get(url):
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} never answered")


def _config(upstream: str, buffer: str, fsync_ms: int, spool: Path, max_events: int) -> str:
    buf = f"buffer: {{type: {buffer}, max_events: {max_events}, max_bytes: 1073741824"
    if buffer == "disk":
        buf += f", path: {spool}, fsync_interval_ms: {fsync_ms}"
    buf += "}"
    return f"""
upstream:
  url: {upstream}
  token: {BENCH_TOKEN}
  max_in_flight: 8
{buf}
destinations:
  default:
    schema: standard
    batch: {{max_events: 1000, max_bytes: 4000000, timeout_secs: 0.02}}
sources:
  sdk:
    type: webhook
    format: pangea
    destination: default
"""


def request_body(n: int, seq: int) -> bytes:
    return orjson.dumps(
        {
            "events": [
                {
                    "event": {
                        "message": f"user signed in from the admin console, request {seq}-{i}",
                        "actor": "maria.lopez@acme.example",
                        "action": "login",
                        "target": "acme-portal",
                        "status": "success",
                        "source": "203.0.113.24",
                        "timestamp": "2026-11-22T03:04:05.123Z",
                    }
                }
                for i in range(n)
            ]
        }
    )


async def post_load(
    s: aiohttp.ClientSession, url: str, seconds: float, concurrency: int, per_request: int
) -> tuple[int, int, list[float]]:
    """``concurrency`` workers POST ``per_request``-event bodies to ``url`` for ``seconds``.

    Returns (events answered 200, requests refused, each request's latency in seconds); a
    refused request is followed by a short pause so a pushing-back gateway is not hammered.
    """
    latencies: list[float] = []
    answered = 0
    errors = 0
    stop_at = time.monotonic() + seconds
    bodies = [request_body(per_request, i) for i in range(16)]

    async def worker(w: int) -> None:
        nonlocal answered, errors
        i = w
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            async with s.post(url, data=bodies[i % len(bodies)], headers={"Content-Type": "application/json"}) as r:
                await r.read()
                ok = r.status == 200
            latencies.append(time.perf_counter() - t0)
            if ok:
                answered += per_request
            else:
                errors += 1
                await asyncio.sleep(0.05)
            i += concurrency

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return answered, errors, latencies


async def _load(url: str, seconds: float, concurrency: int, per_request: int, pid: int) -> dict[str, Any]:
    peak = 0
    stop_at = time.monotonic() + seconds

    async def sampler() -> None:
        nonlocal peak
        while time.monotonic() < stop_at:
            peak = max(peak, rss_kib(pid))
            await asyncio.sleep(0.1)

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as s:
        t0 = time.monotonic()
        (sent, errors, latencies), _ = await asyncio.gather(
            post_load(s, url, seconds, concurrency, per_request), sampler()
        )
        elapsed = time.monotonic() - t0
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0

    return {
        "events_per_sec": round(sent / elapsed),
        "events": sent,
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": round(pct(0.50), 1),
        "p99_ms": round(pct(0.99), 1),
        "peak_rss_mib": round(peak / 1024, 1),
    }


async def _rss_per_event(url: str, admin: str, la_url: str, pid: int, events: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s:
        async with s.post(
            la_url + "/_faults", json={"outage": True}, headers={"Authorization": f"Bearer {BENCH_TOKEN}"}
        ) as r:
            r.raise_for_status()
        await asyncio.sleep(0.5)
        before = rss_kib(pid)
        body_n = 100
        # /v2/log_async answers 202 at once, so the connections are released and what grows is
        # the buffer alone (the events wait there for the stalled upstream).
        async_url = url.replace("/v2/log", "/v2/log_async")
        for i in range(events // body_n):
            async with s.post(async_url, data=request_body(body_n, i)) as r:
                if r.status != 202:
                    raise RuntimeError(f"log_async answered {r.status}")
        for _ in range(100):
            async with s.get(admin + "/metrics") as r:
                text = await r.text()
            buffered = metric_sum(text, "gateway_buffer_events")
            if buffered >= events * 0.99:
                break
            await asyncio.sleep(0.2)
        after = rss_kib(pid)
    return {
        "buffered_events": int(buffered),
        "rss_delta_mib": round((after - before) / 1024, 1),
        "rss_bytes_per_buffered_event": round((after - before) * 1024 / max(1, buffered)),
    }


def metric_sum(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


class _Pair:
    """A local audit log and a gateway in front of it, each in its own process."""

    def __init__(self, tmp: Path, args: argparse.Namespace) -> None:
        self.tmp = tmp
        self.args = args
        self.env = {**os.environ, "AUDIT_GATEWAY_LOCAL_TOKEN": BENCH_TOKEN}
        self.la_url = f"http://127.0.0.1:{free_port()}"
        in_port, ad_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{in_port}/v2/log"
        self.admin = f"http://127.0.0.1:{ad_port}"
        self.procs: list[subprocess.Popen[bytes]] = []

    async def start(self) -> subprocess.Popen[bytes]:
        tmp, args = self.tmp, self.args
        tmp.mkdir(parents=True, exist_ok=True)
        la = spawn(
            # --enable-test-faults: the RSS measurement holds the log in an outage through /_faults.
            [
                "local-audit",
                "serve",
                "--enable-test-faults",
                "--listen",
                self.la_url.removeprefix("http://"),
                "--db",
                str(tmp / "la.db"),
            ],
            tmp / "la.log",
            self.env,
        )
        self.procs.append(la)
        await wait_answering(self.la_url + "/v1/root", la)
        cfg = tmp / "gateway.yaml"
        cfg.write_text(_config(self.la_url, args.buffer, args.fsync_interval_ms, tmp / "spool", args.buffer_events))
        gw = spawn(
            [
                "run", "--config", str(cfg), "--listen", self.url.removeprefix("http://").removesuffix("/v2/log"),
                "--admin-listen", self.admin.removeprefix("http://"), "--data-dir", str(tmp / "data"),
            ],
            tmp / "gw.log",
            self.env,
        )  # fmt: skip
        self.procs.append(gw)
        await wait_answering(self.admin + "/healthz", gw)
        return gw

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(sig)
            p.wait(60)


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="audit-gateway-bench-"))
    pair = _Pair(tmp / "throughput", args)
    try:
        gw = await pair.start()
        await _load(pair.url, 1.0, args.concurrency, args.events_per_request, gw.pid)  # warm-up
        result = await _load(pair.url, args.seconds, args.concurrency, args.events_per_request, gw.pid)
    finally:
        pair.stop()
    result.update(
        buffer=args.buffer,
        events_per_request=args.events_per_request,
        concurrency=args.concurrency,
        cpus=os.cpu_count(),
    )
    if args.buffer == "disk":
        result["fsync_interval_ms"] = args.fsync_interval_ms
    if args.rss_per_event:
        # A fresh pair: after a throughput run the heap has already grown, and buffered
        # events would only reuse it.
        pair = _Pair(tmp / "rss", args)
        try:
            gw = await pair.start()
            await _load(pair.url, 0.5, 4, args.events_per_request, gw.pid)  # warm the code paths only
            result.update(await _rss_per_event(pair.url, pair.admin, pair.la_url, gw.pid, args.rss_per_event))
        finally:
            pair.stop(signal.SIGKILL)
    return result


def _cmd(args: argparse.Namespace) -> int:
    result = asyncio.run(_run(args))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("bench", help="benchmark webhook → gateway → local audit log (separate processes)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured duration")
    p.add_argument("--concurrency", type=int, default=32, help="concurrent webhook requests")
    p.add_argument("--events-per-request", type=int, default=100, help="events per webhook body")
    p.add_argument("--buffer", choices=["memory", "disk"], default="memory", help="buffer type")
    p.add_argument("--fsync-interval-ms", type=int, default=10, help="disk buffer group commit interval")
    p.add_argument("--buffer-events", type=int, default=200_000, help="buffer capacity in events")
    p.add_argument(
        "--rss-per-event", type=int, default=0, metavar="N", help="also buffer N events against a stalled upstream"
    )
    p.set_defaults(func=_cmd)
