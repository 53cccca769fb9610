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
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from gateway.runtime import EVENT_LOOPS

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


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (a ``run --workers`` supervisor's workers), from /proc."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            pass
    return out


def tree_cpu_secs(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants: a gateway's, with all of its workers."""
    return sum(cpu_secs(p) for p in process_tree(pid))


def tree_rss_kib(pid: int) -> int:
    """Resident KiB of ``pid`` and its live descendants."""
    return sum(rss_kib(p) for p in process_tree(pid))


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
  auth0:
    type: webhook
    format: auth0
    path: /v1/log_stream
    destination: default
  stalled:
    # The RSS measure's route: answered 503 soon while the upstream is stalled, its events
    # staying queued, so the connections are released and what grows is the buffer alone.
    type: webhook
    format: pangea
    path: /stalled
    destination: default
    ack_timeout_secs: 0.05
"""


def request_body(n: int, seq: int) -> bytes:
    """A ``/v2/log`` body of ``n`` standard-schema events."""
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


def auth0_body(n: int, seq: int) -> bytes:
    """An Auth0 log-stream body (JSON array) of ``n`` records with ids unique to ``seq``.

    The record's shape follows Auth0's log event schema (``log_id``, ``data.{date, type,
    description, client_id, client_name, ip, user_agent, user_id, user_name, details}``), as in
    the samples under ``tests/fixtures/vendors/auth0_*``.  Ids must differ between requests: the
    gateway deduplicates Auth0 records on ``log_id``.
    """
    return orjson.dumps(
        [
            {
                "log_id": f"90020221122030405{seq:09d}{i:04d}",
                "data": {
                    "date": "2026-11-22T03:04:05.123Z",
                    "type": "s",
                    "description": "Success Login",
                    "connection": "Username-Password-Authentication",
                    "client_id": "AaiyAPdpYdesoKnqjj8HJqRn4T5titww",
                    "client_name": "Acme Portal",
                    "ip": "203.0.113.24",
                    "user_agent": "Chrome 120.0.0 / Mac OS X 10.15.7",
                    "user_id": "auth0|6561d9c2e4b0a8f1c2d3e4f5",
                    "user_name": "maria.lopez@acme.example",
                    "tenant_name": "acme",
                    "details": {"prompts": [], "initiatedAt": 1700622245000, "completedAt": 1700622245123},
                    "log_id": f"90020221122030405{seq:09d}{i:04d}",
                },
            }
            for i in range(n)
        ]
    )


BODIES: dict[str, tuple[str, Callable[[int, int], bytes]]] = {
    "auth0": ("/v1/log_stream", auth0_body),
    "v2log": ("/v2/log", request_body),
}
"""Body kinds: the route both contenders serve them on, and how a body is made."""


async def post_load(
    s: aiohttp.ClientSession,
    url: str,
    seconds: float,
    concurrency: int,
    per_request: int,
    make_body: Callable[[int, int], bytes] = request_body,
    unique: bool = False,
    headers: dict[str, str] | None = None,
    rate: float | None = None,
) -> tuple[int, int, list[float]]:
    """``concurrency`` workers POST ``per_request``-event bodies to ``url`` for ``seconds``.

    Bodies come from ``make_body(per_request, seq)``: 16 made beforehand and reused, or one per
    request when ``unique`` (a sender that deduplicates must not see a body twice).  Returns
    (events answered 200, requests refused, each request's latency in seconds); a refused request
    is followed by a short pause so a pushing-back gateway is not hammered.

    ``rate``: offer about that many events/s in all (each worker sends on a fixed schedule, and
    at once when it fell behind) instead of as many as the receiver answers: CPU per event then
    compares contenders at the same load, below what saturates the machine.
    """
    latencies: list[float] = []
    answered = 0
    errors = 0
    stop_at = time.monotonic() + seconds
    bodies = [] if unique else [make_body(per_request, i) for i in range(16)]
    seq = int(time.time() * 1000) % 10**8 * 10  # new ids per call, so rounds do not repeat a body
    send_headers = {"Content-Type": "application/json", **(headers or {})}

    interval = concurrency * per_request / rate if rate else 0.0  # one worker's seconds between sends

    async def worker(w: int) -> None:
        nonlocal answered, errors, seq
        i = w
        next_at = time.monotonic() + interval * w / concurrency  # staggered over one interval
        while time.monotonic() < stop_at:
            if interval:
                now = time.monotonic()
                if next_at > now:
                    await asyncio.sleep(next_at - now)
                next_at = max(next_at + interval, now)  # behind: no burst to catch up
            if unique:
                seq += 1
                body = make_body(per_request, seq)
            else:
                body = bodies[i % len(bodies)]
            t0 = time.perf_counter()
            async with s.post(url, data=body, headers=send_headers) as r:
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


async def _load(
    url: str,
    seconds: float,
    concurrency: int,
    per_request: int,
    pid: int,
    make_body: Callable[[int, int], bytes] = request_body,
    unique: bool = False,
    headers: dict[str, str] | None = None,
    other_pid: int | None = None,
    rate: float | None = None,
) -> dict[str, Any]:
    """One measured run against ``url``; the process ``pid`` is the one whose CPU and RSS count.

    ``other_pid``: a second process (the upstream) whose CPU per event is reported too."""
    peak = 0
    stop_at = time.monotonic() + seconds

    async def sampler() -> None:
        nonlocal peak
        while time.monotonic() < stop_at:
            peak = max(peak, tree_rss_kib(pid))
            await asyncio.sleep(0.1)

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as s:
        cpu0 = tree_cpu_secs(pid)
        other0 = cpu_secs(other_pid) if other_pid else 0.0
        t0 = time.monotonic()
        (sent, errors, latencies), _ = await asyncio.gather(
            post_load(s, url, seconds, concurrency, per_request, make_body, unique, headers, rate), sampler()
        )
        elapsed = time.monotonic() - t0
        cpu = tree_cpu_secs(pid) - cpu0
        other = cpu_secs(other_pid) - other0 if other_pid else 0.0
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0

    out: dict[str, Any] = {
        "events_per_sec": round(sent / elapsed),
        "events": sent,
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": round(pct(0.50), 1),
        "p99_ms": round(pct(0.99), 1),
        "cpu_us_per_event": round(cpu * 1e6 / sent, 2) if sent else None,
        "peak_rss_mib": round(peak / 1024, 1),
    }
    if other_pid:
        out["upstream_cpu_us_per_event"] = round(other * 1e6 / sent, 2) if sent else None
    return out


async def _rss_per_event(url: str, admin: str, la_url: str, pid: int, events: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s:
        async with s.post(
            la_url + "/_faults", json={"outage": True}, headers={"Authorization": f"Bearer {BENCH_TOKEN}"}
        ) as r:
            r.raise_for_status()
        await asyncio.sleep(0.5)
        before = tree_rss_kib(pid)
        body_n = 100
        # The stalled route answers 503 once its short ack timeout passes; the events stay
        # queued for the stalled upstream (a 202 would promise what a restart loses).
        stalled_url = url.replace("/v2/log", "/stalled/v2/log")
        sem = asyncio.Semaphore(8)  # few bodies at once: their transient memory is not the buffer's

        async def one(i: int) -> None:
            async with sem, s.post(stalled_url, data=request_body(body_n, i)) as r:
                if r.status != 503:
                    raise RuntimeError(f"the stalled route answered {r.status}")

        await asyncio.gather(*(one(i) for i in range(events // body_n)))
        for _ in range(100):
            async with s.get(admin + "/metrics") as r:
                text = await r.text()
            buffered = metric_sum(text, "gateway_buffer_events")
            if buffered >= events * 0.99:
                break
            await asyncio.sleep(0.2)
        after = tree_rss_kib(pid)
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
    """An upstream and a gateway in front of it (and, to compare, the bare pipe), each its own process.

    The upstream is the local audit log (``upstream="local-audit"``) or the fast stub of
    :mod:`gateway.bench_peers` (``"stub"``), which both contenders then share.
    """

    def __init__(self, tmp: Path, args: argparse.Namespace, upstream: str = "local-audit") -> None:
        self.tmp = tmp
        self.args = args
        self.upstream_kind = upstream
        self.env = {**os.environ, "AUDIT_GATEWAY_LOCAL_TOKEN": BENCH_TOKEN}
        self.la_url = f"http://127.0.0.1:{free_port()}"
        in_port, ad_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{in_port}"
        self.url = self.base + "/v2/log"
        self.admin = f"http://127.0.0.1:{ad_port}"
        self.bare_base = f"http://127.0.0.1:{free_port()}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.event_loop = ""
        """The event loop the gateway logged that it runs on (``run --event-loop``)."""

    async def _start_upstream(self) -> None:
        tmp = self.tmp
        if self.upstream_kind == "stub":
            port_file = tmp / "stub.port"
            stub = _spawn_module("gateway.bench_peers", ["stub", str(port_file)], tmp / "stub.log", self.env)
            self.procs.append(stub)
            for _ in range(600):
                if port_file.exists() and port_file.read_text():
                    break
                if stub.poll() is not None:
                    raise RuntimeError(f"the upstream stub exited early ({stub.returncode})")
                await asyncio.sleep(0.05)
            self.la_url = f"http://127.0.0.1:{port_file.read_text()}"
            await wait_answering(self.la_url + "/_stats", stub)
            return
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

    async def start(self, workers: str | None = None, *, upstream: bool = True) -> subprocess.Popen[bytes]:
        """Start the upstream (unless ``upstream`` is false: another pair's, at ``la_url``) and the
        gateway with ``workers`` (default ``args.workers``); returns the gateway's process."""
        tmp, args = self.tmp, self.args
        tmp.mkdir(parents=True, exist_ok=True)
        if upstream:
            await self._start_upstream()
        cfg = tmp / "gateway.yaml"
        cfg.write_text(_config(self.la_url, args.buffer, args.fsync_interval_ms, tmp / "spool", args.buffer_events))
        gw = spawn(
            [
                "run", "--config", str(cfg), "--listen", self.base.removeprefix("http://"),
                "--admin-listen", self.admin.removeprefix("http://"), "--data-dir", str(tmp / "data"),
                "--event-loop", args.event_loop, "--workers", workers or worker_counts(args)[0],
            ],
            tmp / "gw.log",
            self.env,
        )  # fmt: skip
        self.procs.append(gw)
        await wait_answering(self.admin + "/healthz", gw)
        self.event_loop = logged_event_loop(tmp / "gw.log")
        return gw

    async def start_bare(self) -> subprocess.Popen[bytes]:
        """Start the bare pipe against the same upstream; returns its process."""
        bare = _spawn_module(
            "gateway.bench_peers",
            ["bare", self.bare_base.removeprefix("http://"), self.la_url, BENCH_TOKEN],
            self.tmp / "bare.log",
            self.env,
        )
        self.procs.append(bare)
        await wait_answering(self.bare_base + "/healthz", bare)
        return bare

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(sig)
            p.wait(60)


def logged_event_loop(log: Path) -> str:
    """The event loop a gateway's log says it runs on (its ``event loop`` line at start)."""
    for line in log.read_bytes().splitlines():
        if line.startswith(b"{") and b'"event loop"' in line:
            return str(orjson.loads(line).get("event_loop", "?"))
    return "?"


def _spawn_module(module: str, args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("ab") as f:
        return subprocess.Popen([sys.executable, "-m", module, *args], stdout=f, stderr=subprocess.STDOUT, env=env)


def peak_rss_mib(pid: int) -> float:
    """Peak resident set size (VmHWM) of a live process and its live descendants (summed), in MiB."""
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 1024, 1)


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def worker_counts(args: argparse.Namespace) -> list[str]:
    """``--workers``: one count (``2``, ``auto``) or several to compare side by side (``1,2``)."""
    return [w.strip() for w in str(args.workers).split(",") if w.strip()] or ["1"]


async def _compare(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Gateway and bare pipe, same upstream, interleaved rounds per body kind; medians and ratios.

    With several ``--workers`` counts, a gateway per count (``gateway`` the first, then
    ``gateway_w<N>``), all in the same interleaved rounds against the same upstream."""
    pair = _Pair(tmp / "compare", args, upstream=args.upstream)
    others: list[_Pair] = []
    counts = worker_counts(args)
    try:
        gw = await pair.start()
        contenders = {"gateway": (pair.base, gw)}
        for count in counts[1:]:
            other = _Pair(tmp / f"compare-w{count}", args, upstream=args.upstream)
            other.la_url = pair.la_url
            others.append(other)
            contenders[f"gateway_w{count}"] = (other.base, await other.start(count, upstream=False))
        bare = await pair.start_bare()
        contenders["bare"] = (pair.bare_base, bare)
        upstream_pid = pair.procs[0].pid  # the stub or the local audit log, shared by both
        kinds = list(BODIES) if args.body == "both" else [args.body]
        for kind in kinds:  # warm-up: code paths, connection pools, caches
            path, make = BODIES[kind]
            for base, proc in contenders.values():
                await _load(base + path, 1.0, args.concurrency, args.events_per_request, proc.pid, make, True)
        rounds: dict[str, dict[str, list[dict[str, Any]]]] = {k: {c: [] for c in contenders} for k in kinds}
        for r in range(args.rounds):
            for kind in kinds:
                path, make = BODIES[kind]
                # Alternate who goes first, so a slow spell of a shared machine hits both alike.
                order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
                for name in order:
                    base, proc = contenders[name]
                    run = await _load(
                        base + path,
                        args.seconds,
                        args.concurrency,
                        args.events_per_request,
                        proc.pid,
                        make,
                        True,
                        other_pid=upstream_pid,
                        rate=args.rate,
                    )
                    rounds[kind][name].append(run)
        peaks = {name: peak_rss_mib(proc.pid) for name, (_b, proc) in contenders.items()}
    finally:
        for other in others:
            other.stop()
        pair.stop()
    out: dict[str, Any] = {"event_loop": pair.event_loop}
    for kind, by_name in rounds.items():
        summary: dict[str, Any] = {}
        for name, runs in by_name.items():
            cpu = [x["cpu_us_per_event"] for x in runs if x["cpu_us_per_event"] is not None]
            up = [x["upstream_cpu_us_per_event"] for x in runs if x.get("upstream_cpu_us_per_event") is not None]
            summary[name] = {
                "events_per_sec": round(_median([x["events_per_sec"] for x in runs])),
                "rounds_events_per_sec": [x["events_per_sec"] for x in runs],
                "p50_ms": round(_median([x["p50_ms"] for x in runs]), 1),
                "p99_ms": round(_median([x["p99_ms"] for x in runs]), 1),
                "cpu_us_per_event": round(_median(cpu), 2) if cpu else None,
                "upstream_cpu_us_per_event": round(_median(up), 2) if up else None,
                "errors": sum(x["errors"] for x in runs),
                "peak_rss_mib": peaks[name],
            }
        g, b = summary["gateway"], summary["bare"]
        summary["ratio"] = round(g["events_per_sec"] / b["events_per_sec"], 2) if b["events_per_sec"] else None
        summary["rounds_ratio"] = [
            round(x / y, 2) if y else None
            for x, y in zip(g["rounds_events_per_sec"], b["rounds_events_per_sec"], strict=True)
        ]
        for name in [n for n in by_name if n.startswith("gateway_w")]:
            # CPU per event of this worker count over the first gateway's, round by round (the
            # rounds run back to back, so a slow spell of the machine falls on both alike).
            per_round = [
                round(x["cpu_us_per_event"] / y["cpu_us_per_event"], 2)
                for x, y in zip(by_name[name], by_name["gateway"], strict=True)
                if x["cpu_us_per_event"] and y["cpu_us_per_event"]
            ]
            summary[name]["ratio"] = (
                round(summary[name]["events_per_sec"] / b["events_per_sec"], 2) if b["events_per_sec"] else None
            )
            summary[name]["cpu_vs_gateway"] = round(_median(per_round), 2) if per_round else None
            summary[name]["rounds_cpu_vs_gateway"] = per_round
        out[kind] = summary
    return out


def format_table(result: dict[str, Any]) -> str:
    """The side-by-side table ``audit-gateway bench`` prints: ratios first, then the figures."""
    lines = [
        f"audit-gateway bench: {result['rounds']} interleaved rounds of {result['seconds']:g} s, "
        f"{result['events_per_request']}-event bodies, {result['concurrency']} connections, "
        f"upstream {result['upstream']}, {result['buffer']} buffer, gateway on {result['event_loop']} "
        f"x {result['workers']} worker(s), "
        + (f"{result['rate']:,.0f} events/s offered, " if result.get("rate") else "")
        + f"{result['cpus']} CPUs (medians)",
        "",
        f"{'body':<7} {'contender':<9} {'ratio':>6} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'CPU us/ev':>10} {'peak RSS MiB':>13}  rounds (events/s)",
    ]
    for kind in BODIES:
        s = result.get(kind)
        if s is None:
            continue
        names = ["gateway"] + [n for n in s if n.startswith("gateway_w")] + ["bare"]
        for name in names:
            c = s[name]
            r = s["ratio"] if name == "gateway" else c.get("ratio")
            ratio = f"{r:.2f}x" if name != "bare" and r is not None else ""
            cpu = f"{c['cpu_us_per_event']:.1f}" if c["cpu_us_per_event"] is not None else "-"
            label = "gw x" + name.removeprefix("gateway_w") if name.startswith("gateway_w") else name
            lines.append(
                f"{kind:<7} {label:<9} {ratio:>6} {c['events_per_sec']:>10,} {c['p50_ms']:>8} {c['p99_ms']:>8} "
                f"{cpu:>10} {c['peak_rss_mib']:>13}  {', '.join(f'{x:,}' for x in c['rounds_events_per_sec'])}"
            )
        lines.append(f"{'':<7} {'ratio':<9} {'':>6} per round: {', '.join(str(x) for x in s['rounds_ratio'])}")
        for name in names[1:-1]:
            c = s[name]
            lines.append(
                f"{'':<7} {'workers':<9} {'':>6} CPU us/event, {name.removeprefix('gateway_w')} workers over "
                f"the first gateway's: {c['cpu_vs_gateway']} (per round: "
                f"{', '.join(str(x) for x in c['rounds_cpu_vs_gateway'])})"
            )
        up = [s[n]["upstream_cpu_us_per_event"] for n in ("gateway", "bare")]
        if all(x is not None for x in up):
            lines.append(
                f"{'':<7} {'upstream':<9} {'':>6} CPU us/event while serving the gateway {up[0]}, the bare pipe {up[1]}"
            )
    return "\n".join(lines)


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="audit-gateway-bench-"))
    result: dict[str, Any] = {
        "rounds": args.rounds,
        "seconds": args.seconds,
        "events_per_request": args.events_per_request,
        "concurrency": args.concurrency,
        "upstream": args.upstream,
        "buffer": args.buffer,
        "workers": args.workers,
        "rate": args.rate,
        "cpus": os.cpu_count(),
    }
    if args.buffer == "disk":
        result["fsync_interval_ms"] = args.fsync_interval_ms
    result.update(await _compare(args, tmp))
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
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print(format_table(result))
        if "rss_bytes_per_buffered_event" in result:
            print(
                f"\nRSS per buffered event: {result['rss_bytes_per_buffered_event']} bytes "
                f"({result['buffered_events']:,} events buffered against a stalled upstream)"
            )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark the webhook path side by side with a bare pipe (separate processes, interleaved rounds)",
    )
    p.add_argument("--seconds", type=float, default=5.0, help="measured duration of each contender's round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per body kind (medians are reported)")
    p.add_argument("--body", choices=["auth0", "v2log", "both"], default="both", help="body kinds to send")
    p.add_argument(
        "--upstream",
        choices=["stub", "local-audit"],
        default="stub",
        help="what both contenders forward to: a fast stub (default) or the embedded local audit log",
    )
    p.add_argument("--concurrency", type=int, default=32, help="concurrent webhook requests")
    p.add_argument("--events-per-request", type=int, default=100, help="events per webhook body")
    p.add_argument("--buffer", choices=["memory", "disk"], default="memory", help="the gateway's buffer type")
    p.add_argument("--fsync-interval-ms", type=int, default=10, help="disk buffer group commit interval")
    p.add_argument("--buffer-events", type=int, default=200_000, help="buffer capacity in events")
    p.add_argument(
        "--rss-per-event", type=int, default=0, metavar="N", help="also buffer N events against a stalled upstream"
    )
    p.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default="auto",
        help="the gateway's event loop (`run --event-loop`); the bare pipe always runs on asyncio's own",
    )
    p.add_argument(
        "--workers",
        default="1",
        help="the gateway's `run --workers` (CPU and RSS then count the supervisor and every worker); "
        "several counts, as `1,2`, start a gateway per count, compared in the same rounds",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        metavar="EVENTS_PER_SEC",
        help="offer this many events/s to each contender instead of all it takes (CPU per event at equal load)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of the table")
    p.set_defaults(func=_cmd)
