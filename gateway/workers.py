"""``audit-gateway run --workers N``: N worker processes, one supervisor (issue 18).

A Python process uses one core.  With ``--workers N`` (``auto``: the CPUs this process may run on)
``run`` becomes a supervisor that starts N copies of itself, each a whole gateway:

* **intake**: every worker listens on the same ``HOST:PORT`` with ``SO_REUSEPORT``; the kernel
  spreads new connections over them.  A worker that dies stops getting connections at once.
* **Kafka sources**: every worker runs them with the same ``group_id``, so they join one consumer
  group and split the partitions (a dead worker's partitions move at the next rebalance).
* **state**: each worker has its own data directory, ``<data_dir>/worker-<i>`` (its disk spool,
  dead letters, dedup window and poll cursors); an explicit ``buffer.path`` gets ``/worker-<i>``.
  A restarted worker ``i`` finds its own spool again.  Pull (poll) sources run in worker 0 only:
  two pollers of one vendor API would fetch every page twice.
* **the embedded local audit log** (no ``upstream:``) runs in the supervisor, once, and every
  worker delivers to it.
* **admin**: the supervisor serves the admin port: ``/metrics`` is every worker's metrics summed
  (same name and labels), ``/healthz`` answers while every worker is alive, ``/readyz`` while
  every worker is ready.
* **signals**: SIGTERM, SIGINT and SIGHUP go to every worker; after SIGTERM/SIGINT the supervisor
  waits for them all and exits 0 when each did, else with the first failing worker's code
  (128 + signal for one killed by a signal).  A worker that dies while the gateway runs is logged
  and started again after :data:`RESTART_DELAY_SECS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from gateway.errors import ConfigError, GatewayError
from gateway.httpserver import ADMIN_MAX_CONNECTIONS, Listener
from gateway.sinks.pangea.config import UpstreamConfig

log = logging.getLogger(__name__)

RESTART_DELAY_SECS = 1.0
"""How long after a worker died unexpectedly the supervisor starts it again."""

WORKER_UPSTREAM_URL_ENV = "AUDIT_GATEWAY_WORKER_UPSTREAM_URL"
WORKER_UPSTREAM_TOKEN_ENV = "AUDIT_GATEWAY_WORKER_UPSTREAM_TOKEN"  # noqa: S105 - a variable's name
"""The supervisor's embedded local audit log, handed to its workers (environment, never argv)."""


def worker_upstream() -> UpstreamConfig | None:
    """In a worker: the supervisor's embedded local audit log, if it handed one (taken out of the environment)."""
    url = os.environ.pop(WORKER_UPSTREAM_URL_ENV, None)
    token = os.environ.pop(WORKER_UPSTREAM_TOKEN_ENV, None)
    if url is None:
        return None
    return UpstreamConfig(url=url, token=SecretStr(token or ""))


def resolve_workers(value: str) -> int:
    """``--workers`` value → a count: ``auto`` is the CPUs this process may run on."""
    if value == "auto":
        return max(1, len(os.sched_getaffinity(0)))
    try:
        n = int(value)
    except ValueError:
        raise ConfigError(f"{value!r} is neither a number nor auto", "--workers") from None
    if n < 1:
        raise ConfigError(f"{n} workers: at least 1", "--workers")
    return n


def worker_data_dir(data_dir: Path, index: int) -> Path:
    """Worker ``index``'s own data directory (spool, dead letters, dedup window, cursors)."""
    return data_dir / f"worker-{index}"


def hold_port(host: str, port: int) -> socket.socket:
    """A bound, not listening ``SO_REUSEPORT`` socket on ``host:port``, kept by the supervisor.

    It pins the port (``0``: a free one, read from it) for the workers' listeners, which bind it
    with ``SO_REUSEPORT`` too; not listening, it is never handed a connection.
    """
    info = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(info[0], info[1], info[2])
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if info[0] == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(info[4])
    except OSError:
        sock.close()
        raise
    return sock


def merge_metrics(texts: Sequence[str]) -> str:
    """Prometheus text expositions summed sample by sample (same name and labels).

    Counters, histogram buckets, sums and counts add up across workers; gauges do too (buffered
    events, in-flight calls, partitions' lag: each worker holds its own share).  ``_created``
    samples (a start time, not an amount) are left out.
    """
    order: list[str] = []
    families: dict[str, tuple[str, str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text):
            if fam.name not in families:
                families[fam.name] = (fam.type, fam.documentation, {})
                order.append(fam.name)
            samples = families[fam.name][2]
            for s in fam.samples:
                if s.name.endswith("_created"):
                    continue
                key = (s.name, tuple(sorted(s.labels.items())))
                samples[key] = samples.get(key, 0.0) + s.value
    lines: list[str] = []
    for name in order:
        type_, doc, samples = families[name]
        exposed = name + "_total" if type_ == "counter" else name
        doc = doc.replace("\\", "\\\\").replace("\n", "\\n")
        lines += [f"# HELP {exposed} {doc}", f"# TYPE {exposed} {type_}"]
        for (sample, labels), value in samples.items():
            lines.append(f"{sample}{_labels(labels)} {_number(value)}")
    return "\n".join(lines) + "\n"


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    esc = [(k, v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')) for k, v in labels]
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def exit_code(returncode: int) -> int:
    """A worker's ``Popen.returncode`` as a shell would report it (killed by signal N: 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class Worker:
    """One worker process and where its admin port is."""

    index: int
    admin_port: int
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0


@dataclass
class SupervisorSpec:
    """What the supervisor needs from ``run``'s command line and configuration."""

    workers: int
    worker_args: list[str]
    """``run`` options every worker gets as they are (``--config``, ``--log-level``, ``--event-loop``)."""
    listen: tuple[str, int]
    admin_listen: tuple[str, int]
    data_dir: Path
    embedded_upstream: UpstreamConfig | None = None
    """The supervisor's embedded local audit log (None: the configuration's ``upstream:``)."""


class Supervisor:
    """Starts the workers, serves the merged admin port, forwards signals, restarts the dead."""

    def __init__(self, spec: SupervisorSpec) -> None:
        self.spec = spec
        self.workers = [Worker(i, _free_loopback_port()) for i in range(spec.workers)]
        self._stopping = False
        self._signal: signal.Signals | None = None
        self._wake = asyncio.Event()
        self._listener: Listener | None = None
        self._held: socket.socket | None = None
        self._session: aiohttp.ClientSession | None = None

    def _start(self, w: Worker) -> None:
        host, port = self.spec.listen
        cmd = [
            sys.executable, "-m", "gateway", "run", *self.spec.worker_args,
            "--listen", f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            "--admin-listen", f"127.0.0.1:{w.admin_port}",
            "--data-dir", str(worker_data_dir(self.spec.data_dir, w.index)),
            "--workers", "1", "--worker-index", str(w.index),
        ]  # fmt: skip
        env = dict(os.environ)
        up = self.spec.embedded_upstream
        if up is not None:
            env[WORKER_UPSTREAM_URL_ENV] = str(up.url)
            env[WORKER_UPSTREAM_TOKEN_ENV] = up.token.get_secret_value() if up.token is not None else ""
        # stdout/stderr inherited: the workers' JSON log lines go where the supervisor's go.
        w.proc = subprocess.Popen(cmd, env=env, preexec_fn=_terminate_with_parent)
        log.info("worker started", extra={"worker": w.index, "pid": w.proc.pid, "admin_port": w.admin_port})

    async def run(self) -> int:
        """Until SIGTERM/SIGINT and every worker's exit; the exit code (see the module docstring)."""
        loop = asyncio.get_running_loop()
        host, port = self.spec.listen
        self._held = hold_port(host, port)
        self.spec.listen = (host, int(self._held.getsockname()[1]))
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._on_signal, sig)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        try:
            for w in self.workers:
                self._start(w)
            await self._wait_started()
            await self._serve_admin()
            log.info(
                "workers started",
                extra={"workers": len(self.workers), "intake": f"{host}:{self.spec.listen[1]}"},
            )
            return await self._supervise()
        finally:
            for w in self.workers:
                if w.proc is not None and w.proc.poll() is None:
                    w.proc.kill()
                    w.proc.wait()
            if self._listener is not None:
                await self._listener.stop()
            await self._session.close()
            self._held.close()

    async def _wait_started(self, timeout_secs: float = 120.0) -> None:
        """Until every worker's admin port answers (the admin port opens last in a worker's start).

        Raises :class:`GatewayError` if a worker exits first (a bad configuration, a port in use).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_secs
        pending = list(self.workers)
        while pending:
            w = pending[0]
            assert w.proc is not None
            if w.proc.poll() is not None:
                raise GatewayError(f"worker {w.index} exited while starting (exit code {exit_code(w.proc.returncode)})")
            if self._stopping:
                return
            status, _body = await self._scrape(w, "/healthz")
            if status == 200:
                pending.pop(0)
                continue
            if loop.time() > deadline:
                raise GatewayError(f"worker {w.index} did not start within {timeout_secs:g} s")
            await asyncio.sleep(0.05)

    def _on_signal(self, sig: signal.Signals) -> None:
        for w in self.workers:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.send_signal(sig)
        log.info("signal forwarded to the workers", extra={"signal": sig.name})
        if sig in (signal.SIGTERM, signal.SIGINT):
            self._stopping = True
            self._signal = sig
        self._wake.set()

    async def _supervise(self) -> int:
        codes: dict[int, int] = {}
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)
            self._wake.clear()
            for w in self.workers:
                if w.proc is None or w.index in codes:
                    continue
                rc = w.proc.poll()
                if rc is None:
                    continue
                if self._stopping:
                    codes[w.index] = exit_code(rc)
                    log.info("worker exited", extra={"worker": w.index, "exit_code": codes[w.index]})
                    continue
                log.error(
                    "worker died; starting it again",
                    extra={"worker": w.index, "exit_code": exit_code(rc), "delay_secs": RESTART_DELAY_SECS},
                )
                w.restarts += 1
                w.proc = None
                asyncio.get_running_loop().call_later(RESTART_DELAY_SECS, self._restart, w)
            if self._stopping and len(codes) == len([w for w in self.workers if w.proc is not None]):
                failed = [c for _i, c in sorted(codes.items()) if c != 0]
                return failed[0] if failed else 0

    def _restart(self, w: Worker) -> None:
        if not self._stopping:
            self._start(w)

    async def _scrape(self, w: Worker, path: str) -> tuple[int, str]:
        assert self._session is not None
        try:
            async with self._session.get(f"http://127.0.0.1:{w.admin_port}{path}") as r:
                return r.status, await r.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 0, type(exc).__name__

    async def _metrics(self, _request: web.Request) -> web.Response:
        got = await asyncio.gather(*(self._scrape(w, "/metrics") for w in self.workers))
        text = merge_metrics([body for status, body in got if status == 200])
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def _healthz(self, _request: web.Request) -> web.Response:
        # The supervisor is alive and restarts dead workers itself: a worker down is /readyz's
        # business, not a reason for a liveness probe to restart the whole pod.
        down = [w.index for w in self.workers if w.proc is None or w.proc.poll() is not None]
        return web.json_response({"status": "ok", "workers": len(self.workers), "workers_down": down})

    async def _readyz(self, _request: web.Request) -> web.Response:
        if self._stopping:
            return web.json_response({"status": "not ready", "reasons": ["draining"]}, status=503)
        got = await asyncio.gather(*(self._scrape(w, "/readyz") for w in self.workers))
        reasons = [
            f"worker {w.index}: {'not ready' if st else 'down'}"
            for w, (st, _b) in zip(self.workers, got, strict=True)
            if st != 200
        ]
        if reasons:
            return web.json_response({"status": "not ready", "reasons": reasons}, status=503)
        return web.json_response({"status": "ready"})

    async def _serve_admin(self) -> None:
        app = web.Application()
        app.add_routes(
            [web.get("/metrics", self._metrics), web.get("/healthz", self._healthz), web.get("/readyz", self._readyz)]
        )
        host, port = self.spec.admin_listen
        self._listener = Listener(
            app,
            host,
            port,
            max_connections=ADMIN_MAX_CONNECTIONS,
            render_error=lambda status, summary: web.json_response(
                {"status": "error", "summary": summary}, status=status
            ),
        )
        await self._listener.start()


def _terminate_with_parent() -> None:
    """In a worker before exec: SIGTERM when the supervisor dies (Linux ``PR_SET_PDEATHSIG``).

    A supervisor killed with SIGKILL cannot forward anything; its workers drain and exit
    rather than serve on, unsupervised, a port the next supervisor wants.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
