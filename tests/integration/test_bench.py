"""``audit-gateway bench`` compares the gateway with the bare pipe in one run: its shape, never its figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from gateway.bench import format_table

REPO = Path(__file__).resolve().parents[2]


def test_bench_reports_gateway_and_bare_pipe_side_by_side_for_both_body_kinds() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "bench", "--seconds", "0.5", "--rounds", "2", "--concurrency", "4", "--json"],
        capture_output=True,
        cwd=REPO,
        timeout=110,
        check=True,
    )
    result = orjson.loads(out.stdout)
    assert result["rounds"] == 2 and result["upstream"] == "stub" and result["buffer"] == "memory"
    # `--event-loop auto` (the default) on a machine with uvloop installed (the test extra has it)
    assert result["event_loop"] == "uvloop"
    for kind in ("auth0", "v2log"):
        s = result[kind]
        for name in ("gateway", "bare"):
            c = s[name]
            # Each contender answered every body 200 (the stub's answers are valid), in each round.
            assert c["errors"] == 0, (kind, name, c)
            assert len(c["rounds_events_per_sec"]) == 2 and all(x > 0 for x in c["rounds_events_per_sec"])
            assert c["events_per_sec"] > 0 and c["p99_ms"] >= c["p50_ms"] > 0
            assert c["cpu_us_per_event"] > 0 and c["peak_rss_mib"] > 0
        assert s["ratio"] == round(s["gateway"]["events_per_sec"] / s["bare"]["events_per_sec"], 2)
        assert len(s["rounds_ratio"]) == 2
    table = format_table(result)
    lines = table.splitlines()
    assert lines[0].startswith("audit-gateway bench: 2 interleaved rounds of 0.5 s")
    assert "gateway on uvloop" in lines[0]
    rows = [ln.split() for ln in lines if ln.startswith(("auth0", "v2log"))]
    assert [(r[0], r[1]) for r in rows] == [
        ("auth0", "gateway"),
        ("auth0", "bare"),
        ("v2log", "gateway"),
        ("v2log", "bare"),
    ]
    assert rows[0][2] == f"{result['auth0']['ratio']:.2f}x"


def test_bench_compares_worker_counts_in_the_same_rounds_at_an_offered_rate() -> None:
    cmd = [sys.executable, "-m", "gateway", "bench", "--body", "v2log", "--seconds", "1", "--rounds", "2"]
    cmd += ["--concurrency", "4", "--rate", "4000", "--workers", "1,2", "--json"]
    out = subprocess.run(cmd, capture_output=True, cwd=REPO, timeout=110, check=True)
    result = orjson.loads(out.stdout)
    assert result["rate"] == 4000 and result["workers"] == "1,2" and "auth0" not in result
    s = result["v2log"]
    for name in ("gateway", "gateway_w2", "bare"):
        c = s[name]
        assert c["errors"] == 0 and c["cpu_us_per_event"] > 0 and len(c["rounds_events_per_sec"]) == 2
        # Paced: each gets about the offered load, never the flood a closed loop sends (far
        # above 10,000 events/s on any machine that runs this suite).
        assert 0 < c["events_per_sec"] <= 6000, c
    w2 = s["gateway_w2"]
    assert len(w2["rounds_cpu_vs_gateway"]) == 2 and w2["cpu_vs_gateway"] > 0 and w2["ratio"] > 0
    # The two workers' peak RSS is the supervisor's and both workers': above one gateway's.
    assert w2["peak_rss_mib"] > s["gateway"]["peak_rss_mib"]
    lines = format_table(result).splitlines()
    assert "4,000 events/s offered" in lines[0] and "x 1,2 worker(s)" in lines[0]
    assert [ln.split()[1] for ln in lines if ln.startswith("v2log")] == ["gateway", "gw", "bare"]
    assert any("2 workers over the first gateway's" in ln for ln in lines)
