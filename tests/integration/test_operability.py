"""What an operator sees: the version, the log level from the command line, build and process metrics."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import orjson

from gateway.bench import free_port
from tests.support.procs import Proc, spawn, wait_http

REPO = Path(__file__).resolve().parents[2]


def test_version_prints_the_package_version() -> None:
    from importlib.metadata import version

    out = subprocess.run([sys.executable, "-m", "gateway", "--version"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0
    assert out.stdout.strip() == f"audit-gateway {version('audit-gateway')}"


def test_log_level_flag_wins_over_the_config_and_metrics_carry_build_and_process_figures(tmp_path: Path) -> None:
    ports = {"intake": free_port(), "admin": free_port(), "local_audit": free_port()}
    log_path = tmp_path / "gw.log"
    p = spawn(
        [
            "run", "--log-level", "warning",
            "--listen", f"127.0.0.1:{ports['intake']}", "--admin-listen", f"127.0.0.1:{ports['admin']}",
            "--local-audit-listen", f"127.0.0.1:{ports['local_audit']}", "--data-dir", str(tmp_path / "data"),
        ],
        log_path,
    )  # fmt: skip
    proc = Proc(p, log_path, ports)
    try:
        wait_http(f"http://127.0.0.1:{ports['admin']}/healthz", proc=p)
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['admin']}/metrics", timeout=10) as r:
            metrics = r.read().decode()
    finally:
        assert proc.terminate() == 0
    # The configuration (the built-in default) says info; the flag's warning wins: not even
    # "gateway started" (info) is logged.
    levels = {orjson.loads(line)["level"] for line in proc.log().splitlines() if line.startswith("{")}
    assert levels <= {"warning", "error", "critical"}, proc.log()
    assert "gateway started" not in proc.log()
    from importlib.metadata import version

    assert (
        f'gateway_build_info{{python="{sys.version.split()[0]}",version="{version("audit-gateway")}"}} 1.0' in metrics
    )
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
        assert any(line.startswith(name + " ") for line in metrics.splitlines()), name
