"""The codebase stays strictly typed and lint-clean: mypy --strict and ruff run as part of the suite."""

from __future__ import annotations

import subprocess
import sys

from tests.support.procs import REPO


def test_ruff_reports_no_findings() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "gateway", "tests"], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_strict_reports_no_errors() -> None:
    out = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
