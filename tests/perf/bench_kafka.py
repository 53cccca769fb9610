"""Kafka → upstream benchmark: the gateway beside a bare aiokafka → HTTP pipe (and quixstreams).

Not a test (pytest does not collect it: the name does not start with ``test_``).  Run::

    .venv/bin/python tests/perf/bench_kafka.py                 # tansu started here
    .venv/bin/python tests/perf/bench_kafka.py --quix          # + a quixstreams pipeline
    .venv/bin/python tests/perf/bench_kafka.py --repeat 5      # medians of 5 interleaved rounds
    KAFKA_BOOTSTRAP_SERVERS=host:9092 .venv/bin/python tests/perf/bench_kafka.py

Every contender is its own process, against the same upstream stub (its own process too: an
aiohttp server answering ``/v2/log`` 200 with one hash per event from a cache):

* ``gateway``: ``audit-gateway run`` with a ``type: kafka`` source (format ``pangea``,
  standard schema: every event is decoded, validated, normalized and re-encoded), the real
  Pangea sink, ``max_in_flight: 4``, batches of 1000.
* ``bare``: aiokafka consumer → values joined into ``/v2/log`` bodies of 1000 as they are
  (no decoding, no normalization) → aiohttp POST, 4 in flight → offsets committed past
  what was posted.  The ceiling of a Python Kafka → HTTP pipe on this machine.  It keeps
  aiokafka's defaults, so it reads ahead 1 MiB per partition where the gateway's default is
  4 MiB; given 4 MiB too, it did no better (medians 302,829 against 296,565 events/s over 5
  interleaved rounds).
* ``quix`` (``--quix``, needs ``pip install quixstreams``): a quixstreams ``Application``
  (JSON deserializer) with a batching sink that POSTs the same bodies.

Two phases per contender, one after the other on a fresh consumer group (``--repeat N``
runs N rounds of all contenders, interleaved, and reports each one's median run):

1. *throughput*: ``--events`` events are produced beforehand (6 partitions); events/s is
   counted at the stub from the first to the last event received (group join excluded).
   The contender's CPU seconds over the run are reported too (the machine may be shared).
2. *latency*: with the contender caught up, ``--rate`` events/s are produced for
   ``--latency-secs``; p50/p99 is produce → arrival at the stub, per event.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from gateway.bench import cpu_secs, free_port

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TOKEN = "pts_bench_kafka"  # a throwaway token on loopback
BATCH = 1000
IN_FLIGHT = 4
_LAT_RE = re.compile(rb'"message":"bench \d+ (\d+)')


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# -- the upstream stub (its own process) ---------------------------------------------------


def run_stub(port_file: Path) -> None:
    from aiohttp import web

    state: dict[str, Any] = {"count": 0, "first": 0.0, "last": 0.0, "lat": [], "latency": False, "requests": 0}
    answers: dict[int, bytes] = {}

    def answer(n: int) -> bytes:
        body = answers.get(n)
        if body is None:
            body = answers[n] = orjson.dumps(
                {
                    "request_id": "prq_bench",
                    "request_time": "2025-01-01T00:00:00.000000Z",
                    "response_time": "2025-01-01T00:00:00.000001Z",
                    "status": "Success",
                    "summary": "Logged",
                    "result": {"results": [{"hash": "0" * 64}] * n},
                }
            )
        return body

    async def log(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        n = body.count(b'{"event":')
        state["requests"] += 1
        if n:
            if not state["first"]:
                state["first"] = now
            state["last"] = now
            state["count"] += n
            if state["latency"]:
                now_ns = time.time_ns()
                state["lat"].extend((now_ns - int(m.group(1))) / 1e6 for m in _LAT_RE.finditer(body))
        return web.Response(body=answer(n), content_type="application/json")

    async def stats(request: web.Request) -> web.Response:
        lat = sorted(state["lat"])

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else None

        out = {k: state[k] for k in ("count", "first", "last", "requests")}
        out.update(p50_ms=pct(0.50), p99_ms=pct(0.99), max_ms=round(lat[-1], 1) if lat else None, samples=len(lat))
        return web.json_response(out)

    async def reset(request: web.Request) -> web.Response:
        state.update(count=0, first=0.0, last=0.0, lat=[], requests=0, latency=request.query.get("latency") == "1")
        return web.json_response({})

    async def other(request: web.Request) -> web.Response:
        return web.json_response({"status": "Success", "request_id": "prq_bench", "result": {}})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v2/log", log)
    app.router.add_get("/_stats", stats)
    app.router.add_post("/_reset", reset)
    app.router.add_route("*", "/{tail:.*}", other)

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        port_file.write_text(str(port))
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


# -- the bare pipe (its own process) -----------------------------------------------------


def run_bare(bootstrap: str, topic: str, group: str, url: str) -> None:
    import aiohttp
    from aiokafka import AIOKafkaConsumer

    async def main() -> None:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=4000,
            fetch_max_wait_ms=100,  # as the gateway's default: tansu holds fetches this long
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        await consumer.start()
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=IN_FLIGHT))
        slots = asyncio.Semaphore(IN_FLIGHT)
        posts: list[tuple[asyncio.Task[None], dict[Any, int]]] = []
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

        async def post(body: bytes) -> None:
            try:
                while True:
                    async with session.post(url, data=body, headers=headers) as r:
                        await r.read()
                        if r.status == 200:
                            return
                    await asyncio.sleep(0.1)
            finally:
                slots.release()

        last_commit = time.monotonic()
        try:
            while True:
                data = await consumer.getmany(timeout_ms=100, max_records=4000)
                values = [m.value for msgs in data.values() for m in msgs]
                offsets = {tp: msgs[-1].offset + 1 for tp, msgs in data.items() if msgs}
                for i in range(0, len(values), BATCH):
                    await slots.acquire()
                    body = b'{"events":[' + b",".join(values[i : i + BATCH]) + b"]}"
                    last = i + BATCH >= len(values)
                    posts.append((asyncio.create_task(post(body)), offsets if last else {}))
                done: dict[Any, int] = {}
                while posts and posts[0][0].done():
                    done.update(posts.pop(0)[1])
                if done and time.monotonic() - last_commit > 1.0:
                    await consumer.commit(done)
                    last_commit = time.monotonic()
        finally:
            await session.close()
            await consumer.stop()

    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(main())


# -- quixstreams (its own process) ---------------------------------------------------------


def run_quix(bootstrap: str, topic: str, group: str, url: str) -> None:
    import httpx
    from quixstreams import Application
    from quixstreams.sinks import BatchingSink, SinkBatch

    class HttpSink(BatchingSink):
        def setup(self) -> None:
            self.client = httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"})

        def write(self, batch: SinkBatch) -> None:
            items = [orjson.dumps({"event": it.value.get("event", it.value)}) for it in batch]
            for i in range(0, len(items), BATCH):
                body = b'{"events":[' + b",".join(items[i : i + BATCH]) + b"]}"
                self.client.post(url, content=body, headers={"Content-Type": "application/json"}).raise_for_status()

    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        commit_interval=1.0,
        loglevel="WARNING",
        auto_create_topics=False,
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000, "fetch.wait.max.ms": 100},
    )
    sdf = app.dataframe(app.topic(topic, value_deserializer="json"))
    sdf.sink(HttpSink())
    app.run()


# -- the orchestrator ----------------------------------------------------------------------


def _event(seq: int) -> bytes:
    now_ns = time.time_ns()
    # The producer's clock to the millisecond, as JavaScript's toISOString() writes it: events
    # share a timestamp only as much as a real stream's do.
    ms = now_ns // 1_000_000
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
    return orjson.dumps(
        {
            "event": {
                "message": f"bench {seq} {now_ns} user signed in from the admin console",
                "actor": "maria.lopez@acme.example",
                "action": "login",
                "target": "acme-portal",
                "status": "success",
                "source": "203.0.113.24",
                "timestamp": stamp,
            }
        }
    )


async def _produce(bootstrap: str, topic: str, n: int, start: int = 0) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        futures = []
        for i in range(n):
            futures.append(await producer.send(topic, _event(start + i), partition=i % 6))
            if len(futures) >= 10_000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _produce_at_rate(bootstrap: str, topic: str, rate: int, seconds: float, start: int) -> int:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    sent = 0
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        tick = 0.01
        futures = []
        while loop.time() - t0 < seconds:
            due = int((loop.time() - t0 + tick) * rate)
            while sent < due:
                futures.append(await producer.send(topic, _event(start + sent), partition=sent % 6))
                sent += 1
            await asyncio.sleep(tick)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


async def _stub_get(session: Any, url: str) -> dict[str, Any]:
    async with session.get(url + "/_stats") as r:
        result: dict[str, Any] = await r.json()
        return result


async def _wait_count(session: Any, url: str, n: int, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while True:
        st = await _stub_get(session, url)
        if st["count"] >= n:
            return st
        if proc.poll() is not None:
            raise RuntimeError(f"contender exited with {proc.returncode}")
        if time.monotonic() > end:
            raise TimeoutError(f"only {st['count']} of {n} events arrived in {timeout}s")
        await asyncio.sleep(0.05)


def _gateway_config(bootstrap: str, topic: str, group: str, upstream: str) -> str:
    return f"""
log_level: warning
upstream:
  url: {upstream}
  token: {TOKEN}
  max_in_flight: {IN_FLIGHT}
destinations:
  default:
    schema: standard
    batch: {{max_events: {BATCH}, max_bytes: 4000000, timeout_secs: 0.02}}
sources:
  app:
    type: kafka
    bootstrap_servers: {bootstrap}
    topics: [{topic}]
    group_id: {group}
    format: pangea
    destination: default
    session_timeout_ms: 6000
    heartbeat_interval_ms: 1000
    drain_timeout_secs: 2
"""


def _spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as f:
        return subprocess.Popen(
            [sys.executable, *args], stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **(env or {})}
        )


def _start_contender(
    kind: str, tmp: Path, bootstrap: str, topic: str, group: str, url: str, event_loop: str = "auto"
) -> subprocess.Popen[bytes]:
    me = str(Path(__file__).resolve())
    log = tmp / f"{kind}.log"
    if kind == "gateway":
        cfg = tmp / f"gateway-{group}.yaml"
        cfg.write_text(_gateway_config(bootstrap, topic, group, url))
        return _spawn(
            [
                "-m", "gateway", "run", "--config", str(cfg),
                "--listen", f"127.0.0.1:{free_port()}", "--admin-listen", f"127.0.0.1:{free_port()}",
                "--data-dir", str(tmp / f"data-{group}"), "--event-loop", event_loop,
            ],
            log,
        )  # fmt: skip
    return _spawn([me, f"_{kind}", bootstrap, topic, group, url + "/v2/log"], log)


async def _bench_one(
    kind: str, tmp: Path, bootstrap: str, stub: str, args: argparse.Namespace, session: Any
) -> dict[str, Any]:
    topic = f"bench.{kind}.{uuid.uuid4().hex[:6]}"
    from tests.kafka_broker import create_topic

    await create_topic(bootstrap, topic, 6)
    await _produce(bootstrap, topic, args.events)
    await session.post(stub + "/_reset")
    group = f"bench-{kind}-{uuid.uuid4().hex[:6]}"
    proc = _start_contender(kind, tmp, bootstrap, topic, group, stub, args.event_loop)
    try:
        first = await _wait_count(session, stub, 1, proc, args.timeout)  # the group is joined
        cpu0 = cpu_secs(proc.pid)
        st = await _wait_count(session, stub, args.events, proc, args.timeout)
        cpu = cpu_secs(proc.pid) - cpu0
        elapsed = max(1e-6, st["last"] - st["first"])
        out: dict[str, Any] = {
            "events": st["count"],
            "events_per_sec": round(args.events / elapsed),
            "cpu_us_per_event": round(cpu / max(1, args.events - first["count"]) * 1e6, 1),
            "requests": st["requests"],
        }
        await asyncio.sleep(0.5)
        await session.post(stub + "/_reset?latency=1")
        n = await _produce_at_rate(bootstrap, topic, args.rate, args.latency_secs, args.events)
        st = await _wait_count(session, stub, n, proc, args.timeout)
        out.update(latency_rate=args.rate, p50_ms=st["p50_ms"], p99_ms=st["p99_ms"], max_ms=st["max_ms"])
        out["peak_rss_mib"] = round(_rss_mib(proc.pid), 1)
        return out
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


async def _orchestrate(args: argparse.Namespace, bootstrap: str, tmp: Path) -> dict[str, Any]:
    import aiohttp

    port_file = tmp / "stub.port"
    stub_proc = _spawn([str(Path(__file__).resolve()), "_stub", str(port_file)], tmp / "stub.log")
    try:
        for _ in range(200):
            if port_file.exists() and port_file.read_text():
                break
            await asyncio.sleep(0.05)
        stub = f"http://127.0.0.1:{port_file.read_text()}"
        runs: dict[str, list[dict[str, Any]]] = {}
        kinds = ["gateway", "bare"] + (["quix"] if args.quix else [])
        async with aiohttp.ClientSession() as session:
            # Rounds interleave the contenders, so that a noisy spell of a shared machine does not
            # fall on one of them only.
            for round_no in range(args.repeat):
                for kind in kinds:
                    out = await _bench_one(kind, tmp, bootstrap, stub, args, session)
                    runs.setdefault(kind, []).append(out)
                    print(f"round {round_no + 1}", kind, out, file=sys.stderr, flush=True)
        results: dict[str, Any] = {}
        for kind in kinds:
            by_rate = sorted(runs[kind], key=lambda r: r["events_per_sec"])
            results[kind] = {
                **by_rate[len(by_rate) // 2],
                "events_per_sec_runs": [r["events_per_sec"] for r in runs[kind]],
                "cpu_us_per_event_runs": [r["cpu_us_per_event"] for r in runs[kind]],
                "cpu_us_per_event_median": statistics.median(r["cpu_us_per_event"] for r in runs[kind]),
            }
        rate = {kind: results[kind]["events_per_sec"] for kind in kinds}
        results["gateway_vs_bare"] = round(rate["gateway"] / rate["bare"], 2)
        if "quix" in rate:
            results["gateway_vs_quix"] = round(rate["gateway"] / max(1, rate["quix"]), 2)
        # The same ratios round by round (contenders of a round run back to back, so a slow
        # spell of the machine weighs on both), and their medians.
        for other in kinds[1:]:
            ratios = sorted(
                round(g["events_per_sec"] / max(1, o["events_per_sec"]), 2)
                for g, o in zip(runs["gateway"], runs[other], strict=True)
            )
            results[f"gateway_vs_{other}_per_round"] = ratios
            results[f"gateway_vs_{other}_per_round_median"] = ratios[len(ratios) // 2]
            # CPU per event, gateway over the other (below 1: the gateway spends less per event).
            results[f"gateway_vs_{other}_cpu"] = round(
                results["gateway"]["cpu_us_per_event_median"] / max(1e-9, results[other]["cpu_us_per_event_median"]),
                2,
            )
        results["machine"] = {
            "cpus": os.cpu_count(),
            "events": args.events,
            "rounds": args.repeat,
            "gateway_event_loop": args.event_loop,
        }
        return results
    finally:
        stub_proc.send_signal(signal.SIGTERM)
        stub_proc.wait(10)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        mode, rest = sys.argv[1], sys.argv[2:]
        if mode == "_stub":
            run_stub(Path(rest[0]))
        elif mode == "_bare":
            run_bare(*rest)
        elif mode == "_quix":
            run_quix(*rest)
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=200_000, help="events of the throughput phase")
    p.add_argument("--rate", type=int, default=5000, help="events/s of the latency phase")
    p.add_argument("--latency-secs", type=float, default=5.0, help="duration of the latency phase")
    p.add_argument("--quix", action="store_true", help="also run a quixstreams pipeline")
    p.add_argument("--timeout", type=float, default=300.0, help="longest wait for one phase")
    p.add_argument("--repeat", type=int, default=1, help="rounds; each contender's median run is reported")
    p.add_argument(
        "--event-loop", choices=["auto", "asyncio", "uvloop"], default="auto", help="the gateway's `run --event-loop`"
    )
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    with contextlib.ExitStack() as stack:
        if not bootstrap:
            from tests.kafka_broker import tansu_broker

            bootstrap = stack.enter_context(tansu_broker(tmp / "tansu.log"))
        results = asyncio.run(_orchestrate(args, bootstrap, tmp))
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    print(f"logs: {tmp}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
