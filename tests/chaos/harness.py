"""Fault-injection harness: unique events in, SIGKILLs and upstream faults in between, reconcile.

Processes (all on loopback):

* the upstream: ``audit-gateway local-audit serve`` on its own SQLite file, whose faults are
  changed at run time (``POST /_faults``): 5xx and 429 answers, every Nth call answered 202,
  added latency, and an outage (every call 503) for ``outage_secs``;
* the gateway: ``audit-gateway run`` with ``buffer: {type: disk, fsync_interval_ms: 10}``,
  an Auth0 log-stream route, the Pangea-compatible routes and (with a broker) a Kafka
  source; SIGKILLed ``kills`` times and restarted on the same data directory;
* a Kafka broker (tansu) when ``kafka_events`` > 0.

Senders behave like the vendors: an Auth0 sender posts bodies of unique ``log_id`` records
and resends a body until it is answered 2xx; an SDK sender posts ``/v2/log`` bodies and
resends with ``X-Pangea-Retried-Request-Ids`` as ``pangea-sdk`` does; a Kafka producer writes
unique values with ``acks=all``.  *Acknowledged* means a 2xx answer, or a produced message.

At the end the faults are lifted, the gateway drains and is stopped with SIGTERM (it must
exit 0), the upstream is stopped and its database read: every acknowledged id must be there
(``lost == 0``); ids stored more than once are counted as ``duplicated``.  Before the SIGTERM
the last gateway's ``/metrics`` must balance (issue 16): per source and destination,
``received + recovered = forwarded + duplicates + rejected + refused + dropped + in_flight``
(``recovered``: what its spool held from the SIGKILLed runs; see ``tests/support/accounting.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.support.accounting import scrape_and_check
from tests.support.accounting import table as accounting_table
from tests.support.procs import Proc, free_port, local_audit, start_gateway

TOKEN = "pts_chaosharnesstoken"
RUN = uuid.uuid4().hex[:8]


@dataclass
class Plan:
    """What to send and what to break."""

    auth0_events: int = 1500
    sdk_events: int = 1000
    kafka_events: int = 1500
    per_request: int = 50
    """Events per HTTP body and per Kafka produce batch."""
    senders: int = 3
    """Concurrent senders per HTTP kind."""
    send_secs: float = 20.0
    """Sending is paced to last about this long (kills and the outage happen meanwhile)."""
    kills: int = 3
    first_kill_secs: float = 3.0
    down_secs: float = 0.5
    """How long the gateway stays dead before it is restarted."""
    outage_at_secs: float = 8.0
    outage_secs: float = 3.0
    faults: dict[str, Any] = field(
        default_factory=lambda: {
            "error_5xx_ratio": 0.1,
            "error_429_ratio": 0.05,
            "retry_after_secs": 1,
            "accept_every_nth": 3,
            "latency_ms": 20,
        }
    )
    drain_secs: float = 60.0
    """After sending: longest wait for the upstream to hold everything acknowledged."""
    request_timeout_secs: float = 15.0


@dataclass
class Tally:
    sent: set[str] = field(default_factory=set)
    acked: set[str] = field(default_factory=set)


@dataclass
class Report:
    sent: int
    acked: int
    delivered: int
    lost: int
    duplicated: int
    by_kind: dict[str, dict[str, int]]
    kills: int
    sigterm_exit: int | None
    elapsed_secs: float
    lost_ids: list[str]
    upstream_faults: dict[str, int] = field(default_factory=dict)
    accounts: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    """The last gateway's accounting terms per (source, destination), before its SIGTERM."""
    accounting_error: str | None = None
    """Why the accounting equation did not hold (with every term), or None."""

    def line(self) -> str:
        return (
            f"sent={self.sent} acked={self.acked} delivered={self.delivered} lost={self.lost} "
            f"duplicated={self.duplicated}"
        )

    def table(self) -> str:
        rows = [f"{'kind':8} {'sent':>7} {'acked':>7} {'delivered':>9} {'lost':>5} {'duplicated':>10}"]
        for kind, v in self.by_kind.items():
            rows.append(
                f"{kind:8} {v['sent']:>7} {v['acked']:>7} {v['delivered']:>9} {v['lost']:>5} {v['duplicated']:>10}"
            )
        rows.append(
            f"{'total':8} {self.sent:>7} {self.acked:>7} {self.delivered:>9} {self.lost:>5} {self.duplicated:>10}"
        )
        rows.append(f"kills={self.kills} sigterm_exit={self.sigterm_exit} elapsed={self.elapsed_secs:.1f}s")
        rows.append(
            "upstream faults injected: " + ", ".join(f"{k}={v}" for k, v in sorted(self.upstream_faults.items()))
        )
        rows.append("accounting of the last gateway run:")
        rows.append(accounting_table(self.accounts))
        if self.accounting_error is not None:
            rows.append(self.accounting_error)
        return "\n".join(rows)


def gateway_config(tmp: Path, upstream_port: int, bootstrap: str | None, topic: str, group: str) -> Path:
    sources: dict[str, Any] = {
        "auth0": {"type": "webhook", "format": "auth0", "path": "/v1/log_stream", "destination": "default"},
        "sdk": {"type": "webhook", "format": "pangea", "destination": "default"},
    }
    if bootstrap is not None:
        sources["kafka"] = {
            "type": "kafka",
            "bootstrap_servers": bootstrap,
            "topics": [topic],
            "group_id": group,
            "format": "pangea",
            "destination": "default",
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
            "drain_timeout_secs": 2.0,
            "commit_interval_secs": 0.5,
        }
    config = {
        "upstream": {
            "url": f"http://127.0.0.1:{upstream_port}",
            "token": TOKEN,
            "retry": {"initial_backoff_secs": 0.1, "max_backoff_secs": 2.0},
            "timeout_secs": 10,
        },
        "buffer": {"type": "disk", "fsync_interval_ms": 10, "max_bytes": 512 * 1024 * 1024},
        "shutdown_timeout_secs": 10,
        "destinations": {"default": {"batch": {"max_events": 100, "timeout_secs": 0.05}}},
        "sources": sources,
    }
    path = tmp / "gateway.yaml"
    path.write_bytes(orjson.dumps(config))  # JSON is YAML
    return path


class Harness:
    def __init__(self, tmp: Path, plan: Plan) -> None:
        self.tmp = tmp
        self.plan = plan
        self.tallies: dict[str, Tally] = {"auth0": Tally(), "sdk": Tally(), "kafka": Tally()}
        self.gateway: Proc | None = None
        self.ports = {"intake": free_port(), "admin": free_port(), "local_audit": free_port()}
        self.data_dir = tmp / "data"
        self.kills = 0
        self._restarting = asyncio.Event()
        self._alive = asyncio.Event()
        self.config: Path | None = None
        self.upstream_port = 0
        self.bootstrap: str | None = None
        self.topic = f"chaos.in.{RUN}"
        self.group = f"chaos-{RUN}"
        self.accounts: dict[tuple[str, str], dict[str, float]] = {}
        self.accounting_error: str | None = None

    # -- processes ---------------------------------------------------------------------------

    async def start_gateway(self) -> None:
        assert self.config is not None
        self.gateway = await asyncio.to_thread(
            start_gateway, self.tmp, config=self.config, ports=self.ports, data_dir=self.data_dir
        )
        self._alive.set()

    def kill_gateway(self) -> None:
        assert self.gateway is not None
        self._alive.clear()
        self.gateway.kill()  # SIGKILL
        self.kills += 1

    async def fault_stats(self, session: aiohttp.ClientSession) -> dict[str, int]:
        url = f"http://127.0.0.1:{self.upstream_port}/_stats"
        async with session.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            body = await r.json()
        injected = body.get("result", {}).get("faults_injected", {})
        return {str(k): int(v) for k, v in injected.items()}

    async def faults(self, session: aiohttp.ClientSession, body: dict[str, Any]) -> None:
        url = f"http://127.0.0.1:{self.upstream_port}/_faults"
        async with session.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200, await r.text()

    # -- senders -----------------------------------------------------------------------------

    def _chunks(self, kind: str, n: int) -> list[list[str]]:
        ids = [f"chaos-{RUN}-{kind}-{i}" for i in range(n)]
        k = self.plan.per_request
        return [ids[i : i + k] for i in range(0, len(ids), k)]

    async def _post_until_acked(
        self, session: aiohttp.ClientSession, url: str, ids: list[str], body: bytes, kind: str, deadline: float
    ) -> None:
        tally = self.tallies[kind]
        tally.sent.update(ids)
        retried: list[str] = []
        while time.monotonic() < deadline:
            headers = {"Content-Type": "application/json"}
            if kind == "sdk":
                headers["Authorization"] = "Bearer sdk"
                if retried:
                    headers["X-Pangea-Retried-Request-Ids"] = ",".join(retried)
            wait = 0.2
            try:
                async with session.post(
                    url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=self.plan.request_timeout_secs)
                ) as r:
                    await r.read()
                    rid = r.headers.get("X-Request-Id")
                    if rid:
                        retried.append(rid)
                    if r.status == 200:
                        tally.acked.update(ids)
                        return
                    if r.status not in (429, 500, 502, 503, 504):
                        raise AssertionError(f"{kind}: unexpected answer {r.status}: {await r.text()}")
                    wait = min(float(r.headers.get("Retry-After", "0.2")), 2.0)
            except (aiohttp.ClientError, TimeoutError, ConnectionError):
                wait = 0.2
            await asyncio.sleep(wait * (0.5 + random.random()))

    async def http_sender(self, kind: str, chunks: list[list[str]], pace: float, deadline: float) -> None:
        url = f"http://127.0.0.1:{self.ports['intake']}" + ("/v1/log_stream" if kind == "auth0" else "/v2/log")
        connector = aiohttp.TCPConnector(limit=4, force_close=False)
        async with aiohttp.ClientSession(connector=connector) as session:
            start = time.monotonic()
            for n, ids in enumerate(chunks):
                await asyncio.sleep(max(0.0, start + n * pace - time.monotonic()))
                if kind == "auth0":
                    body = orjson.dumps(
                        [
                            {
                                "log_id": i,
                                "data": {
                                    "date": "2026-01-01T00:00:00.000Z",
                                    "type": "s",
                                    "description": i,
                                    "log_id": i,
                                },
                            }
                            for i in ids
                        ]
                    )
                else:
                    body = orjson.dumps({"events": [{"event": {"message": i, "actor": "chaos"}} for i in ids]})
                await self._post_until_acked(session, url, ids, body, kind, deadline)

    async def kafka_sender(self, chunks: list[list[str]], pace: float) -> None:
        from aiokafka import AIOKafkaProducer

        assert self.bootstrap is not None
        tally = self.tallies["kafka"]
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            start = time.monotonic()
            for n, ids in enumerate(chunks):
                await asyncio.sleep(max(0.0, start + n * pace - time.monotonic()))
                tally.sent.update(ids)
                futures = [
                    await producer.send(self.topic, value=orjson.dumps({"event": {"message": i, "actor": "chaos"}}))
                    for i in ids
                ]
                results = await asyncio.gather(*futures, return_exceptions=True)
                tally.acked.update(i for i, r in zip(ids, results, strict=True) if not isinstance(r, BaseException))
        finally:
            await producer.stop()

    # -- chaos -------------------------------------------------------------------------------

    async def killer(self) -> None:
        p = self.plan
        if p.kills <= 0:
            return
        interval = max(1.0, (p.send_secs - p.first_kill_secs) / p.kills)
        await asyncio.sleep(p.first_kill_secs)
        for _ in range(p.kills):
            self.kill_gateway()
            await asyncio.sleep(p.down_secs)
            await self.start_gateway()
            await asyncio.sleep(interval * (0.7 + 0.6 * random.random()))

    async def upstream_faults(self, session: aiohttp.ClientSession) -> None:
        p = self.plan
        await self.faults(session, p.faults)
        if p.outage_secs > 0:
            await asyncio.sleep(p.outage_at_secs)
            await self.faults(session, {"outage": True})
            await asyncio.sleep(p.outage_secs)
            await self.faults(session, {"outage": False})

    # -- reconcile ---------------------------------------------------------------------------

    def upstream_ids(self, db_path: Path) -> Counter[str]:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE name LIKE 'records_%'")]
            out: Counter[str] = Counter()
            for t in tables:
                for (msg,) in db.execute(f"SELECT json_extract(envelope, '$.event.message') FROM {t}"):
                    if isinstance(msg, str) and msg.startswith(f"chaos-{RUN}-"):
                        out[msg] += 1
            return out
        finally:
            db.close()

    async def wait_drained(self, db_path: Path) -> None:
        acked: set[str] = set().union(*(t.acked for t in self.tallies.values()))
        deadline = time.monotonic() + self.plan.drain_secs
        while time.monotonic() < deadline:
            held = await asyncio.to_thread(self.upstream_ids, db_path)
            if acked <= held.keys():
                return
            await asyncio.sleep(1.0)

    async def check_accounting(self) -> None:
        """The equation on the last gateway's /metrics (exact with what is still in flight)."""
        pairs = {(kind, "default") for kind, t in self.tallies.items() if t.sent}
        try:
            self.accounts = await scrape_and_check(f"http://127.0.0.1:{self.ports['admin']}", pairs=pairs)
        except AssertionError as exc:
            self.accounting_error = str(exc)

    def report(self, held: Counter[str], started: float, sigterm_exit: int | None, faults: dict[str, int]) -> Report:
        by_kind: dict[str, dict[str, int]] = {}
        lost_ids: list[str] = []
        for kind, t in self.tallies.items():
            mine = {i: c for i, c in held.items() if f"-{kind}-" in i}
            lost = sorted(t.acked - mine.keys())
            lost_ids += lost
            by_kind[kind] = {
                "sent": len(t.sent),
                "acked": len(t.acked),
                "delivered": len(t.acked & mine.keys()),
                "lost": len(lost),
                "duplicated": sum(c - 1 for c in mine.values()),
            }
        tot = {k: sum(v[k] for v in by_kind.values()) for k in ("sent", "acked", "delivered", "lost", "duplicated")}
        return Report(
            **tot,
            by_kind=by_kind,
            kills=self.kills,
            sigterm_exit=sigterm_exit,
            elapsed_secs=time.monotonic() - started,
            lost_ids=lost_ids[:20],
            upstream_faults=faults,
            accounts=self.accounts,
            accounting_error=self.accounting_error,
        )

    async def run(self) -> Report:
        p = self.plan
        started = time.monotonic()
        with contextlib.ExitStack() as stack:
            if p.kafka_events > 0:
                # tansu_broker waits with asyncio.run: enter it on a thread without a loop.
                self.bootstrap = await asyncio.to_thread(stack.enter_context, _broker(self.tmp))
                from tests.kafka_broker import create_topic

                await create_topic(self.bootstrap, self.topic, 6)
            upstream_tmp = self.tmp / "upstream"
            upstream_tmp.mkdir()
            upstream = stack.enter_context(
                local_audit(upstream_tmp, TOKEN, "--enable-test-faults", port=self.ports["local_audit"])
            )
            self.upstream_port = upstream.ports["local_audit"]
            self.ports["local_audit"] = free_port()  # the gateway's own (unused) embedded port
            self.config = gateway_config(self.tmp, self.upstream_port, self.bootstrap, self.topic, self.group)
            sigterm_exit: int | None = None
            faults: dict[str, int] = {}
            async with aiohttp.ClientSession() as control:
                await self.start_gateway()
                try:
                    deadline = time.monotonic() + p.send_secs + p.drain_secs
                    tasks = [asyncio.create_task(self.killer()), asyncio.create_task(self.upstream_faults(control))]
                    senders = []
                    for kind, total in (("auth0", p.auth0_events), ("sdk", p.sdk_events)):
                        chunks = self._chunks(kind, total)
                        per = [chunks[i :: p.senders] for i in range(p.senders)]
                        for mine in per:
                            pace = p.send_secs / max(1, len(mine))
                            senders.append(asyncio.create_task(self.http_sender(kind, mine, pace, deadline)))
                    if p.kafka_events > 0:
                        chunks = self._chunks("kafka", p.kafka_events)
                        senders.append(asyncio.create_task(self.kafka_sender(chunks, p.send_secs / len(chunks))))
                    await asyncio.gather(*senders, *tasks)
                    await self.faults(control, {"reset": True})
                    await self._alive.wait()
                    await self.wait_drained(upstream_tmp / "local-audit.db")
                    faults = await self.fault_stats(control)
                    await self.check_accounting()
                finally:
                    if self.gateway is not None and self.gateway.popen.poll() is None:
                        sigterm_exit = await asyncio.to_thread(self.gateway.terminate, 60.0)
            upstream.terminate()
            held = self.upstream_ids(upstream_tmp / "local-audit.db")
        return self.report(held, started, sigterm_exit, faults)


@contextlib.contextmanager
def _broker(tmp: Path) -> Iterator[str]:
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    from tests.kafka_broker import tansu_broker

    with tansu_broker(tmp / "tansu.log") as bootstrap:
        yield bootstrap
