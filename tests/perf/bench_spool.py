"""Spool throughput next to the memory buffer's: webhook → gateway → local audit log.

Each run starts the local audit log and the gateway in their own processes, loads the
gateway's ``/v2/log`` with ``--concurrency`` requests of ``--events-per-request`` events for
``--seconds``, then waits until the buffer is empty.  Reported per buffer:

* ``intake_eps``: events answered 2xx per second during the load;
* ``forwarded_eps``: events the upstream accepted per second during the load;
* ``sustained_eps``: events answered during the load / (load time + time to drain after),
  i.e. the end-to-end rate the gateway keeps up;
* request latency p50 / p99;
* ``gateway_cpu`` / ``upstream_cpu``: cores used by each process during the load.

Run (on this 2-core machine, about a minute)::

    .venv/bin/python tests/perf/bench_spool.py --seconds 10 --fsync-interval-ms 10

Target: the spool's sustained rate >= 50 % of the memory buffer's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from gateway.bench import cpu_secs, free_port, spawn, wait_answering
from gateway.bench import metric_sum as metric
from gateway.bench import post_load as load

TOKEN = "pts_benchspooltoken"


def config(upstream: str, buffer: str, fsync_ms: int, spool: Path) -> str:
    buf = "buffer: {type: memory, max_events: 200000, max_bytes: 1073741824}"
    if buffer == "disk":
        buf = f"buffer: {{type: disk, path: {spool}, max_bytes: 1073741824, fsync_interval_ms: {fsync_ms}}}"
    return f"""
upstream:
  url: {upstream}
  token: {TOKEN}
  max_in_flight: 8
{buf}
destinations:
  default:
    batch: {{max_events: 1000, max_bytes: 4000000, timeout_secs: 0.02}}
sources:
  sdk: {{type: webhook, format: pangea, destination: default}}
"""


async def metrics(s: aiohttp.ClientSession, admin: str) -> str:
    async with s.get(admin + "/metrics") as r:
        return await r.text()


async def run_one(args: argparse.Namespace, buffer: str) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-spool-{buffer}-"))
    env = {**os.environ, "AUDIT_GATEWAY_LOCAL_TOKEN": TOKEN}
    la_port, in_port, ad_port = free_port(), free_port(), free_port()
    procs = [
        spawn(
            ["local-audit", "serve", "--listen", f"127.0.0.1:{la_port}", "--db", str(tmp / "la.db")],
            tmp / "la.log",
            env,
        )
    ]
    conn = aiohttp.TCPConnector(limit=args.concurrency + 4)
    try:
        async with aiohttp.ClientSession(connector=conn) as s:
            la = f"http://127.0.0.1:{la_port}"
            await wait_answering(la + "/v1/root", procs[0])
            cfg = tmp / "gateway.yaml"
            cfg.write_text(config(la, buffer, args.fsync_interval_ms, tmp / "spool"))
            gw_args = [
                "run", "--config", str(cfg), "--listen", f"127.0.0.1:{in_port}",
                "--admin-listen", f"127.0.0.1:{ad_port}", "--data-dir", str(tmp / "data"),
            ]  # fmt: skip
            procs.append(spawn(gw_args, tmp / "gw.log", env))
            admin = f"http://127.0.0.1:{ad_port}"
            await wait_answering(admin + "/healthz", procs[1])
            url = f"http://127.0.0.1:{in_port}/v2/log"
            await load(s, url, 1.0, args.concurrency, args.events_per_request)  # warm-up
            while metric(await metrics(s, admin), "gateway_buffer_events") > 0:
                await asyncio.sleep(0.1)
            before = metric(await metrics(s, admin), "gateway_events_forwarded_total")
            cpu0 = cpu_secs(procs[1].pid), cpu_secs(procs[0].pid)
            t0 = time.monotonic()
            answered, errors, lat = await load(s, url, args.seconds, args.concurrency, args.events_per_request)
            elapsed = time.monotonic() - t0
            forwarded = metric(await metrics(s, admin), "gateway_events_forwarded_total") - before
            cpu1 = cpu_secs(procs[1].pid), cpu_secs(procs[0].pid)
            t1 = time.monotonic()
            while metric(await metrics(s, admin), "gateway_buffer_events") > 0 and time.monotonic() - t1 < 300:
                await asyncio.sleep(0.05)
            drain = time.monotonic() - t1
        lat.sort()

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1) if lat else 0.0

        return {
            "buffer": buffer if buffer == "memory" else f"disk fsync_interval_ms={args.fsync_interval_ms}",
            "intake_eps": round(answered / elapsed),
            "forwarded_eps": round(forwarded / elapsed),
            "sustained_eps": round(answered / (elapsed + drain)),
            "drain_secs": round(drain, 2),
            "p50_ms": pct(0.5),
            "p99_ms": pct(0.99),
            "errors": errors,
            "gateway_cpu": round((cpu1[0] - cpu0[0]) / elapsed, 2),
            "upstream_cpu": round((cpu1[1] - cpu0[1]) / elapsed, 2),
        }
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            p.wait(60)


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    return [await run_one(args, "memory"), await run_one(args, "disk")]


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--events-per-request", type=int, default=100)
    p.add_argument("--fsync-interval-ms", type=int, default=10)
    args = p.parse_args(argv)
    mem, disk = asyncio.run(main(args))
    cols = ["buffer", "intake_eps", "forwarded_eps", "sustained_eps", "drain_secs", "p50_ms", "p99_ms", "errors"]
    cols += ["gateway_cpu", "upstream_cpu"]
    print("  ".join(f"{c:>32}" if c == "buffer" else f"{c:>13}" for c in cols))
    for r in (mem, disk):
        print("  ".join(f"{r[c]!s:>32}" if c == "buffer" else f"{r[c]!s:>13}" for c in cols))
    ratio = disk["sustained_eps"] / max(1, mem["sustained_eps"])
    print(f"spool / memory (sustained): {ratio:.0%}  (target >= 50%)")
    print(orjson.dumps({"memory": mem, "disk": disk, "ratio": round(ratio, 3)}).decode())
    return 0 if ratio >= 0.5 else 1


if __name__ == "__main__":
    sys.exit(cli())
