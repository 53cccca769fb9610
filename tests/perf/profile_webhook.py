"""Where the webhook path's CPU goes: py-spy samples a gateway under ``audit-gateway bench`` load.

    .venv/bin/pip install py-spy
    .venv/bin/python tests/perf/profile_webhook.py --body auth0 --seconds 10
    .venv/bin/python tests/perf/profile_webhook.py --body v2log --seconds 10

Starts the upstream stub and a gateway (memory buffer) as ``audit-gateway bench`` does, loads it
with 100-event bodies, and samples the gateway with ``py-spy record --format raw``.  Prints the
share of samples per function (self: the function itself; total: with what it calls) and per
stage of the path (``--stages``: substrings of ``file:function`` frames), so that the figures
name where to optimise.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from gateway.bench import BODIES, _load, _Pair  # noqa: E402

STAGES = {
    "read body": "webhook/body.py:",
    "decode (JSON parse, split)": "vendors/json.py:",
    "map records (vendor)": "vendors/auth0.py:to_event",
    "schema checks": "normalize/schema.py:",
    "fast path (msgspec)": "normalize/fastpath.py:",
    "dedup window": "dedup.py:",
    "admission": "sources/intake.py:",
    "answer building": "webhook/answers.py:",
    "buffer": "buffer/memory.py:",
    "batching": "batching.py:",
    "delivery (sink)": "sinks/pangea/",
    "aiohttp server": "aiohttp/web_protocol.py:",
    "aiohttp client": "aiohttp/client",
    "event loop": "asyncio/base_events.py:_run_once",
}


def frames_of(line: str) -> tuple[list[str], int]:
    """A ``py-spy --format raw`` line: its frames (outermost first) and its sample count."""
    stack, _, count = line.rpartition(" ")
    frames = []
    for f in stack.split(";"):
        # "function (path/file.py:line)" -> "path/file.py:function"
        name, _, where = f.partition(" (")
        frames.append(f"{where.rsplit(':', 1)[0]}:{name}" if where else name)
    return frames, int(count)


def report(raw: Path, top: int) -> str:
    selfs: collections.Counter[str] = collections.Counter()
    totals: collections.Counter[str] = collections.Counter()
    stages: collections.Counter[str] = collections.Counter()
    n = 0
    for line in raw.read_text().splitlines():
        if not line.strip():
            continue
        frames, count = frames_of(line)
        n += count
        selfs[frames[-1]] += count
        for f in set(frames):
            totals[f] += count
        for stage, needle in STAGES.items():
            if any(needle in f for f in frames):
                stages[stage] += count
    out = [f"{n} samples", "", "stage (inclusive; stages overlap)"]
    out += [f"  {100 * c / n:5.1f}%  {s}" for s, c in stages.most_common()]
    out += ["", f"top {top} self"]
    out += [f"  {100 * c / n:5.1f}%  {f}" for f, c in selfs.most_common(top)]
    out += ["", f"top {top} total (gateway/ frames)"]
    out += [f"  {100 * c / n:5.1f}%  {f}" for f, c in totals.most_common() if "gateway/" in f][:top]
    return "\n".join(out)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--body", choices=sorted(BODIES), default="auth0")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--events-per-request", type=int, default=100)
    ap.add_argument("--event-loop", default="auto")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--raw", type=Path, help="keep py-spy's raw output here")
    args = ap.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    bench_args = argparse.Namespace(
        buffer="memory", fsync_interval_ms=10, buffer_events=200_000, event_loop=args.event_loop, workers="1"
    )
    tmp = Path(tempfile.mkdtemp(prefix="audit-gateway-profile-"))
    pair = _Pair(tmp, bench_args, upstream="stub")
    raw = args.raw or tmp / "profile.txt"
    try:
        gw = await pair.start()
        path, make = BODIES[args.body]
        url = pair.base + path
        await _load(url, 2.0, args.concurrency, args.events_per_request, gw.pid, make, True)  # warm-up
        sample = ["--format", "raw", "--rate", "200", "--nonblocking", "--gil", "-d", str(int(args.seconds))]
        spy = subprocess.Popen(
            [pyspy, "record", *sample, "-o", str(raw), "-p", str(gw.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        run = await _load(url, args.seconds, args.concurrency, args.events_per_request, gw.pid, make, True)
        await asyncio.to_thread(spy.wait, 60)
    finally:
        pair.stop()
    print(f"{args.body}: {run['events_per_sec']:,} events/s, {run['cpu_us_per_event']} CPU us/event while sampled")
    print(report(raw, args.top))


if __name__ == "__main__":
    asyncio.run(main())
