"""``audit-gateway test``: mapping tests run through the real gateway, with a diff on mismatch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "test", *args], capture_output=True, text=True, cwd=REPO, timeout=100
    )


def test_the_shipped_vendor_mapping_tests_pass() -> None:
    out = _run("examples/mapping-tests/tests.yaml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count(" ... passed") == 6
    assert out.stdout.rstrip().endswith("mapping tests: 6 passed, 0 failed")


def test_a_mismatching_case_exits_1_with_a_diff_and_a_matching_one_passes(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(
        """
tests:
  - name: maria logs in
    source: auth0
    body: [{"log_id": "1", "data": {"type": "s", "date": "2026-11-22T03:00:00Z", "user_name": "maria",
            "ip": "203.0.113.24", "description": "Success Login"}}]
    expect:
      events:
        - {message: Success Login, actor: maria, action: s, status: success, source: 203.0.113.24,
           timestamp: "2026-11-22T03:00:00.000000Z", new: '{"log_id":"1"}'}
  - name: mario logs in
    source: auth0
    body: [{"log_id": "2", "data": {"type": "s", "date": "2026-11-22T03:00:00Z", "user_name": "maria",
            "ip": "203.0.113.24", "description": "Success Login"}}]
    expect:
      events:
        - {message: Success Login, actor: mario, action: s, status: success, source: 203.0.113.24,
           timestamp: "2026-11-22T03:00:00.000000Z", new: '{"log_id":"2"}'}
"""
    )
    out = _run(str(tmp_path / "t.yaml"))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "test maria logs in ... passed" in out.stdout
    assert "test mario logs in ... FAILED" in out.stdout
    assert '-    "actor": "mario",' in out.stdout and '+    "actor": "maria",' in out.stdout
    assert "mapping tests: 1 passed, 1 failed" in out.stdout


def test_an_error_expectation_compares_status_and_error_members(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(
        """
tests:
  - name: not JSON
    source: auth0
    body: "{not json"
    expect: {status: 400, errors: [{code: BadFormat}], events: []}
  - name: not JSON, wrong expectation
    source: auth0
    body: "{not json"
    expect: {status: 200}
"""
    )
    out = _run(str(tmp_path / "t.yaml"))
    assert out.returncode == 1
    assert "test not JSON ... passed" in out.stdout
    assert "status: expected 200, got 400" in out.stdout


def test_an_invalid_test_file_exits_2_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text("tests:\n  - name: x\n    sourse: auth0\n    expect: {}\n")
    out = _run(str(tmp_path / "t.yaml"))
    assert out.returncode == 2
    assert "tests.0.sourse" in out.stderr and "Traceback" not in out.stderr
    (tmp_path / "u.yaml").write_text("tests:\n  - name: x\n    source: kafka_in\n    body: {}\n    expect: {}\n")
    out = _run(str(tmp_path / "u.yaml"))
    assert out.returncode == 2 and "no webhook source 'kafka_in'" in out.stderr
