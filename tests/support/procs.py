"""Run the real gateway and local audit log as processes on loopback, for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[2]
VENDOR_FIXTURES = REPO / "tests" / "fixtures" / "vendors"
"""Vendor request samples, kept in the repository so that a bare clone runs the suite."""


def free_port() -> int:
    """A loopback TCP port free at the time of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stored_messages(db: Path) -> list[str]:
    """Every event message the local audit log stored, read from its SQLite file (read-only)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        out: list[str] = []
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for t in tables:
            if "envelope" not in [r[1] for r in con.execute(f"PRAGMA table_info({t})")]:
                continue
            for (raw,) in con.execute(f"SELECT envelope FROM {t}"):
                out.append(orjson.loads(raw)["event"]["message"])
        return out
    finally:
        con.close()


def rss_kib(pid: int) -> int:
    """Resident set size of a live process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``url`` answers (any status); fail early if ``proc`` died."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@dataclass
class Proc:
    """A child process with its log file."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)

    def url(self, name: str = "intake") -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 60.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(30)


def spawn(
    args: list[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    """``python -m gateway ARGS``; ``preexec_fn`` runs in the child first (e.g. to set rlimits)."""
    full_env = {**os.environ, **(env or {})}
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=REPO,
            preexec_fn=preexec_fn,
        )


@contextlib.contextmanager
def local_audit(tmp: Path, token: str, *extra: str, port: int | None = None) -> Iterator[Proc]:
    """``audit-gateway local-audit serve`` in its own process."""
    port = port or free_port()
    log_path = tmp / f"local-audit-{port}.log"
    p = spawn(
        ["local-audit", "serve", "--listen", f"127.0.0.1:{port}", "--db", str(tmp / "local-audit.db"), *extra],
        log_path,
        {"AUDIT_GATEWAY_LOCAL_TOKEN": token},
    )
    proc = Proc(p, log_path, {"local_audit": port})
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/root", proc=p)
        yield proc
    finally:
        proc.terminate()


def start_gateway(
    tmp: Path,
    *,
    config: Path | None = None,
    env: dict[str, str] | None = None,
    ports: dict[str, int] | None = None,
    data_dir: Path | None = None,
    preexec_fn: Callable[[], None] | None = None,
    extra_args: list[str] | None = None,
    run_args: Sequence[str] = (),
) -> Proc:
    """``audit-gateway run`` on free loopback ports (and ``extra_args``, ``run_args``: further ``run``
    options such as ``--event-loop uvloop``); waits for /healthz."""
    ports = ports or {"intake": free_port(), "admin": free_port(), "local_audit": free_port()}
    args = [
        "run",
        "--listen", f"127.0.0.1:{ports['intake']}",
        "--admin-listen", f"127.0.0.1:{ports['admin']}",
        "--local-audit-listen", f"127.0.0.1:{ports['local_audit']}",
        "--data-dir", str(data_dir or tmp / "data"),
    ]  # fmt: skip
    if config is not None:
        args += ["--config", str(config)]
    args += [*(extra_args or []), *run_args]
    log_path = tmp / f"gateway-{ports['admin']}.log"
    p = spawn(args, log_path, env, preexec_fn)
    proc = Proc(p, log_path, ports)
    try:
        wait_http(f"http://127.0.0.1:{ports['admin']}/healthz", proc=p)
    except Exception:
        proc.kill()
        raise RuntimeError(f"gateway did not start:\n{proc.log()}") from None
    return proc


@contextlib.contextmanager
def gateway(tmp: Path, **kw: object) -> Iterator[Proc]:
    proc = start_gateway(tmp, **kw)  # type: ignore[arg-type]
    try:
        yield proc
    finally:
        proc.terminate()
