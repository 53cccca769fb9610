"""The embedded local audit log alone: ``/v2/log`` with 1,000-event bodies, events/s and CPU per event.

Not a test (pytest does not collect it).  Starts ``audit-gateway local-audit serve`` in its own
process on loopback and posts ``--events-per-request`` standard-schema events per request from
``--concurrency`` clients for ``--seconds``, ``--repeat`` times; prints each run's events/s and
the server's CPU microseconds per event (its own ``/proc`` CPU time over the run), and the medians::

    .venv/bin/python tests/perf/bench_local_audit.py --seconds 5 --repeat 3

The gateway's own benchmark against it is ``audit-gateway bench --upstream local-audit``, which
prints the local log's CPU per event beside the gateway's (``upstream_cpu_us_per_event``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from gateway.bench import BENCH_TOKEN, _load, free_port, spawn, wait_answering  # noqa: E402


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-local-audit-"))
    port = free_port()
    env = {**os.environ, "AUDIT_GATEWAY_LOCAL_TOKEN": BENCH_TOKEN}
    la = spawn(
        ["local-audit", "serve", "--listen", f"127.0.0.1:{port}", "--db", str(tmp / "la.db")], tmp / "la.log", env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_answering(url + "/v1/root", la)
        headers = {"Authorization": f"Bearer {BENCH_TOKEN}"}
        await _load(url + "/v2/log", 1.0, args.concurrency, args.events_per_request, la.pid, headers=headers)
        runs = [
            await _load(
                url + "/v2/log", args.seconds, args.concurrency, args.events_per_request, la.pid, headers=headers
            )
            for _ in range(args.repeat)
        ]
    finally:
        la.terminate()
        la.wait(30)
    return {
        "events_per_request": args.events_per_request,
        "concurrency": args.concurrency,
        "runs_events_per_sec": [r["events_per_sec"] for r in runs],
        "runs_cpu_us_per_event": [r["cpu_us_per_event"] for r in runs],
        "events_per_sec": round(statistics.median(r["events_per_sec"] for r in runs)),
        "cpu_us_per_event": round(statistics.median(r["cpu_us_per_event"] or 0.0 for r in runs), 2),
        "errors": sum(r["errors"] for r in runs),
        "cpus": os.cpu_count(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0, help="measured duration of each run")
    p.add_argument("--repeat", type=int, default=3, help="runs (medians are reported)")
    p.add_argument("--concurrency", type=int, default=4, help="concurrent requests")
    p.add_argument("--events-per-request", type=int, default=1000, help="events per /v2/log body (the API's max)")
    import orjson

    print(orjson.dumps(asyncio.run(_run(p.parse_args())), option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
