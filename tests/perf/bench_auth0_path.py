"""CPU of the gateway's own work on the Auth0 webhook path, in process, beside the bare pipe's part.

Per 100-record Auth0 body (``gateway.bench.auth0_body``), without HTTP: the route's decode,
depth and size checks, mapping, admission (compiled schema, events, acks), the dedup window
(screen, record, forgetting the oldest of a full 200,000-id window, its writer thread) and the
acks resolved as the delivery driver would.  Beside it, the part of the same work the bare
pipe (``gateway.bench_peers``) does too: ``orjson.loads`` and ``auth0.to_event`` per record.
The difference is the gateway's own work that issue 18 cuts.  CPU time (``process_time``:
every thread), best of ``--rounds``; a shared machine makes single rounds noisy.

Run::

    .venv/bin/python tests/perf/bench_auth0_path.py --requests 400 --rounds 8

To compare two builds, run it from each tree (``PYTHONPATH=<other checkout>``), interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp.test_utils import make_mocked_request

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from gateway.acks import AckStatus  # noqa: E402
from gateway.bench import auth0_body  # noqa: E402
from gateway.buffer.memory import MemoryBuffer  # noqa: E402
from gateway.config import DestinationConfig  # noqa: E402
from gateway.dedup import DedupConfig, DedupWindow  # noqa: E402
from gateway.normalize.schema import Schema  # noqa: E402
from gateway.normalize.vendors import auth0  # noqa: E402
from gateway.pipeline import Destination  # noqa: E402
from gateway.sinks.deadletter.base import DeadLetter  # noqa: E402
from gateway.sources.intake import Admitter  # noqa: E402
from gateway.sources.webhook.config import WebhookSourceConfig  # noqa: E402
from gateway.sources.webhook.vendor_routes import VendorRoute  # noqa: E402
from gateway.telemetry.metrics import Metrics  # noqa: E402


class _NoDeadLetters:
    async def write(self, letters: list[DeadLetter]) -> None:
        raise AssertionError(f"unexpected dead letters: {letters}")

    async def close(self) -> None:
        return None


async def measure(requests: int, rounds: int) -> dict[str, float]:
    """Best µs of CPU per request for the gateway's path and for the bare pipe's part of it."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-auth0-"))
    metrics = Metrics()
    window = DedupWindow(tmp / "dedup.db", DedupConfig(), metrics)
    await window.start()
    buffer = MemoryBuffer("default", 1_000_000, 10**10, metrics)
    dest = Destination("default", DestinationConfig(), buffer, None, Schema.standard(), metrics, 0)  # type: ignore[arg-type]
    admitter = Admitter("auth0", dest, metrics, _NoDeadLetters(), dedup=window)  # type: ignore[arg-type]
    config = WebhookSourceConfig.model_validate({"type": "webhook", "format": "auth0", "destination": "default"})
    route = VendorRoute("auth0", config, admitter)
    request = make_mocked_request("POST", "/v1/log_stream", headers={"Content-Type": "application/json"})

    async def one(body: bytes) -> None:
        await route._admit(request, body)
        for event in buffer.drain_nowait():
            event.ack.resolve(AckStatus.DELIVERED, None)

    seq = 0
    for _ in range(DedupConfig().max_entries // 100 + 10):  # a full window, as under load
        await one(auth0_body(100, seq))
        seq += 1
    gateway = bare = float("inf")
    for _ in range(rounds):
        bodies = [auth0_body(100, seq + i) for i in range(requests)]
        seq += requests
        await asyncio.sleep(0.1)  # the writer's backlog flushed before the round
        gc.collect()
        t0 = time.process_time()
        for body in bodies:
            await one(body)
        gateway = min(gateway, time.process_time() - t0)
        gc.collect()
        t0 = time.process_time()
        for body in bodies:
            records: list[Any] = orjson.loads(body)
            [auth0.to_event(r)[0] for r in records]
        bare = min(bare, time.process_time() - t0)
    await window.close()
    return {"gateway_us": gateway / requests * 1e6, "bare_part_us": bare / requests * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="100-record requests per round")
    parser.add_argument("--rounds", type=int, default=8, help="rounds; the best is reported")
    args = parser.parse_args()
    r = asyncio.run(measure(args.requests, args.rounds))
    own = r["gateway_us"] - r["bare_part_us"]
    print(
        f"per 100-record request: gateway path {r['gateway_us']:.1f} us CPU, bare pipe's part of it"
        f" {r['bare_part_us']:.1f} us, the gateway's own work {own:.1f} us"
    )


if __name__ == "__main__":
    main()
